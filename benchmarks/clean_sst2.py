"""TuneLab's data cleaning on SST-2 vs what a user would do by hand with pandas, side by side.

    python benchmarks/clean_sst2.py [--rows N]

Runs the cleaning report (``tunelab.data.clean``) on SST-2 train.tsv with validation.tsv, exactly as
``recipes/bert_cls.py`` loads them, and the pandas baseline: ``drop_duplicates`` on (text, label), a
lowercased/punctuation-stripped key for near duplicates, ``groupby(...).nunique()`` for conflicting
labels and ``isin`` for train/validation overlap. Prints the counts of both (they must agree) and the
times of the counting alone (files already read: pandas.read_csv for pandas, the recipe's loader for
TuneLab, which reads them anyway).
Then the full cleaning (normalization, near-duplicate, conflict and leakage removal) with its row counts.
Times vary with the machine's load (other jobs shared this 2-core VM when the JSON was written).
Writes benchmarks/results/clean_sst2.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sst2"


def pandas_key(text: str) -> str:
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return re.sub(r"[\W_]+", "", "".join(c for c in text if not unicodedata.combining(c)))


def run_pandas(train_file: Path, validation_file: Path, rows: int | None) -> dict:
    import pandas as pd

    read_start = time.perf_counter()
    read = dict(sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str)
    train = pd.read_csv(train_file, **read, nrows=rows)
    validation = pd.read_csv(validation_file, **read)
    start = time.perf_counter()
    train["key"] = train["sentence"].map(pandas_key)
    validation["key"] = validation["sentence"].map(pandas_key)
    exact = train.duplicated(["sentence", "label"])
    near = train[~exact].duplicated(["key", "label"])
    labels = train.groupby("key")["label"].nunique()
    conflicting = set(labels[labels > 1].index)
    counts = {
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": int(near.sum()),
        "conflicting_label_rows": int(train["key"].isin(conflicting).sum()),
        "conflicting_texts": len(conflicting),
        "train_rows_in_validation": int(train["key"].isin(set(validation["key"])).sum()),
        "validation_rows_in_train": int(validation["key"].isin(set(train["key"])).sum()),
    }
    return {"counts": counts, "seconds": time.perf_counter() - start, "read_seconds": start - read_start}


def counts_of(report) -> dict:
    return {
        "exact_duplicates": report.exact_duplicates.found,
        "near_duplicates": report.near_duplicates.found,
        "conflicting_label_rows": report.conflicting_labels.found,
        "conflicting_texts": report.conflicting_texts,
        "train_rows_in_validation": report.leakage.found,
        "validation_rows_in_train": report.leaked_eval_rows.get("validation", 0),
    }


def run_tunelab(train_file: Path, validation_file: Path, rows: int | None, **options) -> dict:
    from tunelab.data.classification import load_classification_data
    from tunelab.data.clean import DataCleaningArguments, clean_classification_data

    data = load_classification_data(str(train_file), str(validation_file))
    if rows:
        data.train = data.train.select(range(min(rows, len(data.train))))
    start = time.perf_counter()
    report = clean_classification_data(data, DataCleaningArguments(**options))
    seconds = time.perf_counter() - start
    return {
        "counts": counts_of(report),
        "seconds": seconds,
        "rows_before": report.train_rows_before,
        "rows_after": report.train_rows_after,
        "removed": {rule: getattr(report, rule).removed for rule in report.RULES if rule != "normalized"},
        "summary": report.summary_lines(),
    }


def main() -> None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="Only the first N training rows.")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/clean_sst2.json"))
    args = parser.parse_args()
    train_file, validation_file = SST2 / "train.tsv", SST2 / "validation.tsv"
    import datasets

    datasets.disable_progress_bars()

    baseline = run_pandas(train_file, validation_file, args.rows)
    report_only = run_tunelab(train_file, validation_file, args.rows)
    full = run_tunelab(
        train_file,
        validation_file,
        args.rows,
        normalize_text=True,
        remove_duplicates="near",
        drop_conflicting_labels=True,
        remove_leakage=True,
    )
    print(f"SST-2 {train_file.name} ({report_only['rows_before']} rows) + {validation_file.name}")
    print(f"{'count':28} {'tunelab':>9} {'pandas':>9}")
    for key, value in report_only["counts"].items():
        print(f"{key:28} {value:>9} {baseline['counts'][key]:>9}")
    ratio = baseline["seconds"] / report_only["seconds"]
    print(
        f"time to count (files already read): tunelab {report_only['seconds']:.2f} s, "
        f"pandas {baseline['seconds']:.2f} s; pandas/tunelab = {ratio:.2f}"
    )
    print(
        f"full cleaning: {full['rows_before']} -> {full['rows_after']} training rows; removed {full['removed']}"
    )
    agree = report_only["counts"] == baseline["counts"]
    print("counts agree" if agree else "COUNTS DIFFER")
    result = {
        "data": str(SST2),
        "rows": args.rows,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "note": "times measured while other jobs shared the machine; counts are exact",
        "tunelab_report_only": report_only,
        "tunelab_full_cleaning": full,
        "pandas": baseline,
        "counts_agree": agree,
        "time_ratio_pandas_over_tunelab": ratio,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
