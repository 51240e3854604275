"""Finding and reading data files: formats, folders, Hub ids, and raw records with their line numbers.

The raw readers exist for preflight: they walk a file the way a person reads it, so an error can name
the line. Training data itself is loaded with ``datasets`` (cached, memory-mapped).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

TABLE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TEXT_FORMATS = {".txt": "text", ".text": "text", ".md": "text"}
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class DataSource:
    """Where a split comes from: local files of one format, or a Hub dataset id."""

    spec: str
    files: tuple[Path, ...] = ()
    builder: str | None = None  # csv | json | parquet | text (local files) ; None for a Hub id
    hub_id: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.hub_id is not None

    def describe(self) -> str:
        return self.hub_id if self.is_hub else self.spec


def resolve_source(spec: str, allowed: dict[str, str]) -> DataSource:
    """A file, a folder of files of one format, or (when no such path exists) a Hub dataset id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in allowed)
        if not files:
            raise DataError(f"{spec}: the folder has no data files ({', '.join(sorted(allowed))}).")
        builders = {allowed[p.suffix.lower()] for p in files}
        suffixes = {p.suffix.lower() for p in files}
        if len(builders) > 1 or ({".csv", ".tsv"} <= suffixes):
            raise DataError(f"{spec}: the folder mixes formats ({', '.join(sorted(suffixes))}); keep one format.")
        return DataSource(spec, tuple(files), builders.pop())
    if path.exists():
        if path.suffix.lower() not in allowed:
            raise DataError(
                f"{spec}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(sorted(allowed))}."
            )
        return DataSource(spec, (path,), allowed[path.suffix.lower()])
    if path.suffix.lower() in allowed or spec.startswith((".", "/", "~")) or "\\" in spec:
        raise DataError(f"{spec}: file not found.")
    return DataSource(spec, hub_id=spec)


def read_text(path: Path) -> str:
    """The file's text as UTF-8; a decoding error names the line and column."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror}).") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}, column {column}: byte 0x{raw[e.start]:02x} is not valid UTF-8. "
            "Save the file as UTF-8 (for example: iconv -f latin1 -t utf-8 in.csv > out.csv)."
        ) from e


def csv_delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def iter_csv_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Header and (line number, record) pairs; quoted multi-line fields count from their first line."""
    text = read_text(path)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=csv_delimiter(path), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty (no header row).") from None
    except csv.Error as e:
        raise DataError(f"{path}: line 1: cannot parse the header ({e}).") from None
    header = [h.strip() for h in header]
    if any(not h for h in header):
        raise DataError(f"{path}: line 1: the header has an empty column name ({header}).")

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(f"{path}: line {line}: cannot parse the row ({e}). Check its quotes.") from None
            if row:  # a blank line is not a row
                if len(row) != len(header):
                    raise DataError(
                        f"{path}: line {line}: the row has {len(row)} fields but the header has {len(header)} "
                        f"({', '.join(header)}). Check the delimiter and the quoting on that line."
                    )
                yield line, dict(zip(header, row, strict=True))
            line = reader.line_num + 1

    return header, records()


def iter_json_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Records of a JSON Lines file or a JSON array (or {"data": [...]}) with their line numbers."""
    text = read_text(path)
    stripped = text.lstrip()
    pairs: list[tuple[int, Any]] = []
    if stripped.startswith("[") or (path.suffix.lower() == ".json" and stripped.startswith("{") and "\n{" not in stripped):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}).") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{path}: expected a list of records (or JSON Lines, one object per line).")
            data = lists[0]
        pairs = [(i + 1, rec) for i, rec in enumerate(data)]
        where = "record"
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {number}, column {e.colno}: invalid JSON ({e.msg}).") from None
        where = "line"
    for number, rec in pairs:
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {where} {number}: expected a JSON object, got {type(rec).__name__}.")
    header = list(dict.fromkeys(k for _, rec in pairs for k in rec))
    return header, ((n, rec) for n, rec in pairs)


def iter_parquet_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    return table.column_names, ((i + 1, rec) for i, rec in enumerate(table.to_pylist()))


def iter_records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]], str]:
    """(columns, records with their position, the word for a position: 'line' | 'record' | 'row')."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return (*iter_csv_records(path), "line")
    if suffix in (".json", ".jsonl"):
        header, recs = iter_json_records(path)
        return header, recs, "line"
    if suffix == ".parquet":
        return (*iter_parquet_records(path), "row")
    raise DataError(f"{path}: unsupported file type {suffix!r}.")


def load_source(source: DataSource, config_name: str | None = None, split: str = "train"):
    """Load a source with ``datasets`` (cached); Hub failures become a clear DataError."""
    import datasets

    if source.is_hub:
        try:
            loaded = datasets.load_dataset(source.hub_id, config_name)
        except Exception as e:  # offline, unknown id, gated: all reach the user as one message
            raise DataError(
                f"{source.hub_id}: not a local file or folder, and loading it as a Hugging Face Hub dataset "
                f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                "Check the path, or the dataset id and your network."
            ) from None
        if split not in loaded:
            raise DataError(f"{source.hub_id}: has no split {split!r}; it has {', '.join(loaded)}.")
        return loaded[split]
    kwargs: dict[str, Any] = {}
    if source.builder == "csv":
        kwargs["delimiter"] = csv_delimiter(source.files[0])
        # Keep strings as strings ("007" stays "007", "NA" is not a null).
        kwargs["keep_default_na"] = False
        # Read every column as text, as preflight did: "007" stays "007" and labels map the same way.
        with open(source.files[0], encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=kwargs["delimiter"]))
        kwargs["features"] = datasets.Features({h.strip(): datasets.Value("string") for h in header})
        kwargs["column_names"] = [h.strip() for h in header]
        kwargs["skiprows"] = 1
    files = [str(p) for p in source.files]
    return datasets.load_dataset(source.builder, data_files={"data": files}, split="data", **kwargs)
