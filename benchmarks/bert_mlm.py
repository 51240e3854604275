"""Masked-LM domain adaptation: TuneLab's recipe vs the HF Trainer (run_mlm's setup), and what the
adaptation does to a classifier fine-tuned afterwards.

    python benchmarks/bert_mlm.py [--steps 300] [--cls-samples 4000]

1. Adaptation, side by side: the embedded all-MiniLM-L6-v2 continues masked-LM training on the SST-2
   training sentences (labels unused; the last 2% held out, 1,000 of them scored), line by line, max
   length 64, batch 32, lr 1e-4, 6% warmup, weight decay 0.01, `--steps` steps, same precision.
   TuneLab runs as a user runs it (`accelerate launch recipes/bert_mlm.py`); the Trainer runs
   AutoModelForMaskedLM + DataCollatorForLanguageModeling on the same tokenized examples. Both are then
   scored on the SAME fixed validation masks (tunelab.data.mlm.mask_once): masked-LM loss before and after.
2. Downstream: recipes/bert_cls.py on `--cls-samples` SST-2 sentences (1 epoch, the sst2_minilm config),
   scored on the SST-2 validation set, from the base MiniLM and from the adapted encoder.
Writes benchmarks/results/bert_mlm_cpu.json. Timings on a shared VM move by 10% or more between runs;
on a VM whose cores other jobs also use, `--threads 1` (both sides) avoids OpenMP threads spinning
against them (measured here: a step 10x slower with 2 threads than with 1 under a load of 6).
"""

from __future__ import annotations

import argparse
import json
import math
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
MODEL = "embedded:all-MiniLM-L6-v2"
SETTINGS = {
    "max_seq_length": 64,
    "batch_size": 32,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.06,
    "weight_decay": 0.01,
    "mlm_probability": 0.15,
    "validation_split_percentage": 2.0,
    "max_eval_samples": 1000,
    "seed": 42,
}
THREADS: int | None = None  # --threads: torch threads of both sides (default: the libraries' choice)


def launch(recipe: str, *args: str) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "recipes" / recipe), *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    if THREADS:
        env["TUNELAB_NUM_THREADS"] = str(THREADS)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{recipe} failed:\n{proc.stderr[-3000:]}")


def data():
    """The same texts, examples and fixed validation masks the recipe builds."""
    from tunelab.data.mlm import load_mlm_texts, mask_once, tokenize_mlm
    from tunelab.models import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    texts = load_mlm_texts(
        str(SST2 / "train.tsv"), None, "sentence", None, SETTINGS["validation_split_percentage"]
    )
    length = SETTINGS["max_seq_length"]
    train = tokenize_mlm(texts.train, tokenizer, length, True, False, "train")
    val = tokenize_mlm(texts.validation, tokenizer, length, True, False, "v", SETTINGS["max_eval_samples"])
    return tokenizer, train, mask_once(val, tokenizer, SETTINGS["mlm_probability"], False)


def masked_lm_loss(model, examples, pad_id: int) -> float:
    """Mean cross-entropy over every masked token of the fixed validation masks."""
    import torch

    from tunelab.data.mlm import pad_masked

    model.eval()
    total = tokens = 0.0
    with torch.no_grad():
        for i in range(0, len(examples), 128):
            batch = pad_masked(examples[i : i + 128], pad_id)
            n = int((batch["labels"] != -100).sum())
            total += model(**batch).loss.item() * n
            tokens += n
    return total / tokens


def run_tunelab(steps: int, precision: str, out: Path) -> dict:
    start = time.perf_counter()
    launch(
        "bert_mlm.py",
        "--config",
        str(ROOT / "recipes/configs/bert_mlm/sst2_minilm.yaml"),
        "--train_file",
        str(SST2 / "train.tsv"),
        "--max_train_steps",
        str(steps),
        "--eval_steps",
        "100000",
        "--mixed_precision",
        precision,
        "--output_dir",
        str(out),
    )
    report = json.loads((out / "eval_results.json").read_text())
    samples = steps * SETTINGS["batch_size"]
    return {
        "train_s": report["train_seconds"],
        "wall_s": time.perf_counter() - start,
        "samples_per_s": samples / report["train_seconds"],
        "eval_loss_before": report["eval/loss_before"],
        "eval_loss": report["eval/loss"],
        "precision": precision,
    }


def run_trainer(steps: int, precision: str, out: Path, tokenizer, train, examples) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tunelab.mlm import load_masked_lm

    start = time.perf_counter()
    model = load_masked_lm(MODEL, SETTINGS["max_seq_length"])
    before = masked_lm_loss(model, examples, tokenizer.pad_token_id)
    model.train()
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=SETTINGS["batch_size"],
        learning_rate=SETTINGS["learning_rate"],
        warmup_steps=SETTINGS["warmup_ratio"],  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=SETTINGS["weight_decay"],
        max_steps=steps,
        seed=SETTINGS["seed"],
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        bf16=precision == "bf16",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=SETTINGS["mlm_probability"]),
    )
    train_s = trainer.train().metrics["train_runtime"]
    after = masked_lm_loss(trainer.model, examples, tokenizer.pad_token_id)
    return {
        "train_s": train_s,
        "wall_s": time.perf_counter() - start,
        "samples_per_s": steps * SETTINGS["batch_size"] / train_s,
        "eval_loss_before": before,
        "eval_loss": after,
        "precision": precision,
    }


def run_classifier(base: str, samples: int, out: Path) -> dict:
    launch(
        "bert_cls.py",
        "--config",
        str(ROOT / "recipes/configs/bert_cls/sst2_minilm.yaml"),
        "--model_name_or_path",
        base,
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
    )
    report = json.loads((out / "eval_results.json").read_text())
    return {
        "accuracy": report["eval/accuracy"],
        "f1": report.get("eval/f1"),
        "train_s": report["train_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="masked-LM optimizer steps")
    parser.add_argument("--cls-samples", type=int, default=4000, help="SST-2 sentences for the classifier")
    parser.add_argument("--no-downstream", action="store_true", help="skip the two classification runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both sides")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bert_mlm_cpu.json"))
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    if not SST2.exists():
        sys.exit(f"needs SST-2 at {SST2} (set TUNELAB_SHARED_DATA)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    from tunelab.hardware import cpu_has_fast_bf16

    precision = "bf16" if cpu_has_fast_bf16() else "no"
    if THREADS:
        torch.set_num_threads(THREADS)
    tokenizer, train, examples = data()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        adapted = Path(tmp) / "tunelab-mlm"
        results["tunelab"] = run_tunelab(args.steps, precision, adapted)
        results["trainer"] = run_trainer(
            args.steps, precision, Path(tmp) / "trainer", tokenizer, train, examples
        )
        if not args.no_downstream:
            results["classifier_from_base"] = run_classifier(MODEL, args.cls_samples, Path(tmp) / "cls-base")
            results["classifier_from_adapted"] = run_classifier(
                str(adapted), args.cls_samples, Path(tmp) / "cls-adapted"
            )
    tl, tr = results["tunelab"], results["trainer"]
    print(
        f"\n{'adaptation':<12}{'precision':>10}{'train s':>9}{'samples/s':>11}{'loss before':>13}{'loss after':>12}"
    )
    for name, r in (("tunelab", tl), ("trainer", tr)):
        print(
            f"{name:<12}{r['precision']:>10}{r['train_s']:>9.1f}{r['samples_per_s']:>11.1f}"
            f"{r['eval_loss_before']:>13.3f}{r['eval_loss']:>12.3f}"
        )
    print(
        f"speed-up {tl['samples_per_s'] / tr['samples_per_s']:.2f}x; perplexity after: TuneLab "
        f"{math.exp(tl['eval_loss']):.1f}, Trainer {math.exp(tr['eval_loss']):.1f} (same validation masks)"
    )
    if not args.no_downstream:
        base, adapt = results["classifier_from_base"], results["classifier_from_adapted"]
        print(
            f"SST-2 accuracy after {args.cls_samples} sentences, 1 epoch: from the base MiniLM "
            f"{base['accuracy']:.4f}, from the adapted encoder {adapt['accuracy']:.4f} "
            f"({adapt['accuracy'] - base['accuracy']:+.4f})"
        )
    report = {
        "settings": {**SETTINGS, "steps": args.steps, "cls_samples": args.cls_samples, "threads": THREADS},
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
