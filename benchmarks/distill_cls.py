"""Distillation on SST-2: a fine-tuned all-MiniLM-L6-v2 teacher (6 layers) vs its 3-layer student.

    python benchmarks/distill_cls.py [--teacher RUN_DIR] [--samples 4000] [--unlabeled 16000] [--threads N]

1. Teacher: `accelerate launch recipes/bert_cls.py` with recipes/configs/bert_cls/sst2_minilm.yaml on 4,000
   SST-2 training sentences, 1 epoch (~0.84 validation accuracy). `--teacher` reuses a finished run instead.
2. Student: `accelerate launch recipes/distill_cls.py` with recipes/configs/distill_cls/sst2_minilm_3layer.yaml:
   the teacher's layers 0, 2, 4, trained on the same 4,000 labeled sentences plus `--unlabeled` other
   SST-2 training sentences whose labels are ignored (the teacher's soft labels only).
3. Both are scored on the whole SST-2 validation set (872 sentences); parameters and size on disk are read
   from the saved folders; CPU latency per example at batch 1 and 32 is measured here with the recipe's
   own timing code (`tunelab.distill.cpu_latency`: fp32, both models taking turns in every repeat, median
   of the repeats) on the first `--latency-samples` validation sentences.
The bar: the student within 2.5 accuracy points of the teacher and >= 1.7x faster on CPU. Latency on a
shared machine moves with other programs' load; the ratio of one run (turns taken alternately) is the figure.
Writes benchmarks/results/distill_cls.json (or --out).
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
TEACHER_CONFIG = ROOT / "recipes/configs/bert_cls/sst2_minilm.yaml"
STUDENT_CONFIG = ROOT / "recipes/configs/distill_cls/sst2_minilm_3layer.yaml"


def launch(recipe: str, args: list[str], threads: int | None) -> float:
    """Run a recipe with one process, as a user would; returns its wall time."""
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
        str(ROOT / "recipes" / recipe),
        *args,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    if threads:
        env["TUNELAB_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def data_args(samples: int, eval_samples: int | None) -> list[str]:
    out = [
        "--train_file",
        str(SST2 / "train.tsv"),
        "--validation_file",
        str(SST2 / "validation.tsv"),
        "--max_train_samples",
        str(samples),
    ]
    return out + (["--max_eval_samples", str(eval_samples)] if eval_samples else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, default=None, help="a finished bert_cls run to distill")
    parser.add_argument("--samples", type=int, default=4000, help="labeled training sentences")
    parser.add_argument("--unlabeled", type=int, default=16000, help="extra sentences the teacher labels")
    parser.add_argument("--eval-samples", type=int, default=None, help="validation sentences (default all)")
    parser.add_argument("--latency-samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="latency repeats (median counts)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for training and latency (default: all cores)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="where the runs go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/distill_cls.json")
    args = parser.parse_args()
    if args.threads:
        os.environ["TUNELAB_NUM_THREADS"] = str(args.threads)  # read by cpu_latency too

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="distill-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    walls = {}
    teacher = args.teacher
    if teacher is None:
        teacher = work / "teacher"
        print(f"Fine-tuning the teacher ({args.samples} sentences, 1 epoch) into {teacher} ...", flush=True)
        walls["teacher"] = launch(
            "bert_cls.py",
            ["--config", str(TEACHER_CONFIG), *data_args(args.samples, args.eval_samples)]
            + ["--eval_steps", "100000", "--output_dir", str(teacher)],
            args.threads,
        )
    student = work / "student"
    print(f"Distilling into 3 layers ({args.unlabeled} unlabeled sentences) into {student} ...", flush=True)
    walls["student"] = launch(
        "distill_cls.py",
        ["--config", str(STUDENT_CONFIG), "--teacher_name_or_path", str(teacher)]
        + data_args(args.samples, args.eval_samples)
        + ["--unlabeled_file", str(SST2 / "train.tsv"), "--max_unlabeled_samples", str(args.unlabeled)]
        + ["--latency_samples", "0", "--output_dir", str(student)],
        args.threads,
    )

    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.distill import comparison_table, cpu_latency, ratios
    from tunelab.measure import weights_size
    from tunelab.models import count_parameters

    teacher_report = json.loads((teacher / "eval_results.json").read_text())
    student_report = json.loads((student / "eval_results.json").read_text())
    models = {
        name: (AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path))
        for name, path in (("teacher", teacher), ("student", student))
    }
    sides = {
        name: {
            "eval/accuracy": report["eval/accuracy"],
            "layers": models[name][0].config.num_hidden_layers,
            "parameters": count_parameters(models[name][0]),
            "size_mb": weights_size(path) / 2**20,
            "train_s": report["train_seconds"],
        }
        for name, path, report in (
            ("teacher", teacher, teacher_report),
            ("student", student, student_report),
        )
    }
    sentences = load_dataset("csv", data_files=str(SST2 / "validation.tsv"), delimiter="\t", split="train")
    texts = list(sentences["sentence"])[: args.latency_samples]
    print(f"Timing CPU inference on {len(texts)} validation sentences ...", flush=True)
    for name, timing in cpu_latency(models, texts, max_length=64, repeats=args.repeats).items():
        sides[name].update(timing)
    kd = student_report["distillation"]
    result = {
        "settings": {
            "labeled_samples": kd["labeled_examples"],
            "unlabeled_samples": kd["unlabeled_examples"],
            "student_layers": kd["student_layers"],
            "temperature": kd["temperature"],
            "alpha": kd["alpha"],
            "teacher_examples_forwarded": kd["teacher_examples_forwarded"],
            "validation_sentences": sum(map(sum, student_report["confusion_matrix"])),
            "latency_sentences": len(texts),
            "latency_repeats": args.repeats,
        },
        "teacher": sides["teacher"],
        "student": sides["student"],
        "ratios": ratios(sides["teacher"], sides["student"]),
        "teacher_accuracy_in_distill_run": student_report["teacher"]["eval/accuracy"],
        "wall_s": walls,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)),
            "threads": sides["student"]["latency_threads"],
            "torch": __import__("torch").__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    bar = result["ratios"]
    result["bar"] = {
        "accuracy_within_2.5_points": bar["accuracy_drop"] <= 0.025,
        "faster_1.7x_batch_1": bar["latency_ms_batch_1"] >= 1.7,
        "faster_1.7x_batch_32": bar["latency_ms_batch_32"] >= 1.7,
    }
    print(comparison_table(sides["teacher"], sides["student"]))
    print(f"accuracy drop {100 * bar['accuracy_drop']:.2f} points; bar met: {result['bar']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
