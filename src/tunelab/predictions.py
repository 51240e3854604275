"""Prediction files, for `tunelab classify --file` and the app's Classify tab: the texts of a txt (one text a
line), csv, tsv, json, jsonl or parquet file, written back with every column of the file plus the predicted
label, its probability (``score``) and the probability of each label (``prob_<label>``)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import DataError


def read_texts(
    path: Path, text_column: str | None = None, how_to_name: str = "name it with --text-column"
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """(texts, the file's records, its columns). The text column is ``text_column``, else the first of the
    usual names (text, sentence, review, ...), else the only column; ``how_to_name`` ends the error that
    finds none."""
    from .data.classification import TEXT_CANDIDATES
    from .data.files import iter_records, read_text

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() in (".txt", ".text", ""):
        texts = [line for line in read_text(path).splitlines() if line.strip()]
        return texts, [{"text": t} for t in texts], ["text"]
    columns, records, _ = iter_records(path)
    rows = [record for _, record in records]
    if text_column is None:
        lower = {c.lower(): c for c in columns}
        found = [lower[c] for c in TEXT_CANDIDATES if c in lower]
        text_column = found[0] if found else (columns[0] if len(columns) == 1 else None)
    if text_column not in columns:
        raise DataError(
            f"{path.name}: no text column {text_column or ''!r} (columns: {', '.join(columns)}); {how_to_name}"
        )
    return [str(r.get(text_column) or "") for r in rows], rows, columns


def prediction_table(
    records: list[dict[str, Any]],
    columns: list[str],
    probabilities: list[dict[str, float]],
    labels: list[str],
    thresholds: dict[str, float] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, columns): each record with ``prediction``, ``score`` and ``prob_<label>`` added; a
    regression model's (one output, not a probability) with ``prediction`` only, the number; a
    multi-label model's (``thresholds``: its own) with ``prediction`` the labels at or above their
    threshold, most probable first, joined by ";" (empty for none), and no ``score``."""
    if len(labels) == 1:
        rows = [
            {**r, "prediction": round(p[labels[0]], 6)} for r, p in zip(records, probabilities, strict=True)
        ]
        return rows, [*columns, "prediction"]
    rows = []
    probability_columns = [f"prob_{k}" for k in labels]
    if thresholds is not None:
        for record, probs in zip(records, probabilities, strict=True):
            chosen = sorted((k for k in labels if probs[k] >= thresholds[k]), key=lambda k: -probs[k])
            rows.append(
                {
                    **record,
                    "prediction": ";".join(chosen),
                    **{f"prob_{k}": round(v, 6) for k, v in probs.items()},
                }
            )
        return rows, [*columns, "prediction", *probability_columns]
    for record, probs in zip(records, probabilities, strict=True):
        label = max(probs, key=probs.get)
        rows.append(
            {
                **record,
                "prediction": label,
                "score": round(probs[label], 6),
                **{f"prob_{k}": round(v, 6) for k, v in probs.items()},
            }
        )
    return rows, [*columns, "prediction", "score", *probability_columns]


def write_predictions(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A csv (tsv for .tsv) or, for .json/.jsonl, one JSON object a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(
            f,
            fieldnames=columns,
            delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
            extrasaction="ignore",
        )
        writer.writeheader()
        writer.writerows(rows)


def remove_older_than(folder: Path, seconds: float) -> int:
    """Delete the files under ``folder`` last written more than ``seconds`` ago, and the folders that this
    leaves empty (or that were empty that long); returns how many files went. Safe to run from several
    requests at once: what another one removed meanwhile is skipped."""
    cutoff, removed = time.time() - seconds, 0
    for root, _, files in os.walk(folder, topdown=False):  # files before their folders; os.walk
        here, emptied = Path(root), False  # skips folders that vanish while it walks
        for name in files:
            try:
                if (here / name).stat().st_mtime < cutoff:
                    (here / name).unlink()
                    removed, emptied = removed + 1, True
            except OSError:  # removed by another request, or in use
                continue
        if here != folder:
            try:
                if emptied or here.stat().st_mtime < cutoff:
                    here.rmdir()  # refused (OSError) while something is in it
            except OSError:
                continue
    return removed
