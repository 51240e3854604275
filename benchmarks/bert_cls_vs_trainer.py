"""TuneLab's classification recipe vs the HF Trainer, side by side on the same data and settings.

    python benchmarks/bert_cls_vs_trainer.py [--samples 4000]

Both fine-tune the embedded all-MiniLM-L6-v2 on the same 4,000 SST-2 training sentences (the subset the
recipe draws with its seed), 1 epoch, batch 16, max length 64, lr 1e-4 with 10% warmup, weight decay 0.01,
and are scored on the full SST-2 validation set. TuneLab's config batches sentences of similar length
(`group_by_length: true`). The Trainer runs at its defaults (fp32, random batches) and at its best honest
settings: `group_by_length=True`, plus bf16 (`bf16=True, use_cpu=True`) where the CPU runs bf16 natively.
TuneLab runs as a user runs it: `accelerate launch recipes/bert_cls.py` (it picks bf16 itself where fast).
Training time is the training loop's wall time (no evaluation inside it for either side). With
`--repeats N` TuneLab and the grouped Trainer run alternately N times each and the median is reported
(all times are in the JSON): on a shared VM one run's time moves by 10% or more.
Writes benchmarks/results/bert_cls_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sst2"
SETTINGS = {
    "max_length": 64,
    "batch_size": 16,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "epochs": 1,
    "seed": 42,
}


def median_run(runs: list[dict], samples: int) -> dict:
    """The first run's figures with the median training time of all runs (and every time listed)."""
    import statistics

    times = [r["train_s"] for r in runs]
    median = statistics.median(times)
    return {**runs[0], "train_s": median, "samples_per_s": samples / median, "train_s_all": times}


def run_tunelab(samples: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--quiet",
        "--num_processes",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "recipes" / "bert_cls.py"),
        "--config",
        str(ROOT / "recipes/configs/bert_cls/sst2_minilm.yaml"),
        "--train_file",
        str(SST2 / "train.tsv"),
        "--validation_file",
        str(SST2 / "validation.tsv"),
        "--max_train_samples",
        str(samples),
        "--eval_steps",
        "100000",
        "--output_dir",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(
        cmd,
        check=True,
        cwd=ROOT,
        env={**os.environ, "ACCELERATE_USE_CPU": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    result = json.loads((out / "eval_results.json").read_text())
    precision = next(
        line for line in (out / "train.log").read_text().splitlines() if "mixed precision" in line
    )
    return {
        "train_s": result["train_seconds"],
        "wall_s": wall,
        "accuracy": result["eval/accuracy"],
        "samples_per_s": samples / result["train_seconds"],
        "precision": precision.split("=")[-1].strip(),
    }


def run_trainer(samples: int, bf16: bool, out: Path, group_by_length: bool = False) -> dict:
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunelab.data.classification import load_classification_data
    from tunelab.models import resolve_model_path

    start = time.perf_counter()
    data = load_classification_data(
        str(SST2 / "train.tsv"),
        str(SST2 / "validation.tsv"),
        max_train_samples=samples,
        seed=SETTINGS["seed"],
    )
    path = resolve_model_path("embedded:all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=SETTINGS["max_length"])

    train = data.train.map(tokenize, batched=True, remove_columns=["text"])
    validation = data.validation.map(tokenize, batched=True, remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(data.labels))
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=128,
        learning_rate=SETTINGS["learning_rate"],
        warmup_steps=SETTINGS["warmup_ratio"],  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=SETTINGS["weight_decay"],
        num_train_epochs=SETTINGS["epochs"],
        seed=SETTINGS["seed"],
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        bf16=bf16,
        use_cpu=True,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
    )

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    train_s = trainer.train().metrics["train_runtime"]
    acc = trainer.evaluate()["eval_accuracy"]
    return {
        "train_s": train_s,
        "wall_s": time.perf_counter() - start,
        "accuracy": acc,
        "samples_per_s": samples / train_s,
        "precision": "bf16" if bf16 else "fp32",
        "group_by_length": group_by_length,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate runs of TuneLab and the grouped Trainer"
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bert_cls_cpu.json"))
    args = parser.parse_args()
    if not SST2.exists():
        sys.exit(f"needs SST-2 at {SST2} (set TUNELAB_SHARED_DATA)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    from tunelab.hardware import cpu_has_fast_bf16

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, list[dict]] = {"tunelab": [], "trainer_fp32_grouped": []}
        for i in range(args.repeats):
            runs["tunelab"].append(run_tunelab(args.samples, Path(tmp) / f"tunelab{i}"))
            # The Trainer at its best honest settings: length-grouped batches as ours (and bf16 below,
            # where it is native).
            runs["trainer_fp32_grouped"].append(
                run_trainer(args.samples, False, Path(tmp) / f"trainer32g{i}", True)
            )
        results["tunelab"] = median_run(runs["tunelab"], args.samples)
        results["trainer_fp32"] = run_trainer(args.samples, False, Path(tmp) / "trainer32")
        results["trainer_fp32_grouped"] = median_run(runs["trainer_fp32_grouped"], args.samples)
        if cpu_has_fast_bf16():
            results["trainer_bf16_grouped"] = run_trainer(args.samples, True, Path(tmp) / "trainer16g", True)
    print(f"\n{'run':<22}{'precision':>10}{'train s':>10}{'samples/s':>11}{'accuracy':>10}{'speed-up':>10}")
    for name, r in results.items():
        ratio = results["tunelab"]["samples_per_s"] / r["samples_per_s"]
        print(
            f"{name:<14}{r['precision']:>10}{r['train_s']:>10.1f}{r['samples_per_s']:>11.1f}{r['accuracy']:>10.4f}"
            f"{'' if name == 'tunelab' else f'{ratio:>9.2f}x':>10}"
        )
    if "trainer_bf16_grouped" not in results:
        print(
            "(no bf16 Trainer run: this CPU has no native bf16, where bf16 is emulated and slower than fp32)"
        )
    report = {
        "settings": {**SETTINGS, "samples": args.samples, "repeats": args.repeats},
        "results": results,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "native_bf16": cpu_has_fast_bf16(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
