"""`tunelab export --quantize int8` vs the fp32 PyTorch model it came from, on SST-2, on this CPU.

    python benchmarks/export_int8.py [--run RUN_FOLDER] [--samples 4000] [--prune layers=3]

Without --run it first fine-tunes the embedded MiniLM-L6 with recipes/configs/bert_cls/sst2_minilm.yaml on
--samples SST-2 training sentences (as a user would: `accelerate launch recipes/bert_cls.py`). Then it
exports the run three ways and measures each against the fp32 PyTorch model on the SST-2 validation set
(872 sentences): int8 (the product), fp32 ONNX (`--quantize none`: how much of the speed is the runtime and
how much is int8), and, with --prune, a pruned int8 export with a recovery fine-tune. Latency is per example,
tokenization included, at batch 1 (64 calls) and batch 32 (4 calls), alternating before/after, median of 3.
Bars from the issue: accuracy within 1 point, >= 2x smaller, faster at batch 1.
Writes benchmarks/results/export_int8.json. Timings on a shared VM are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sst2"


def train_run(samples: int, out: Path) -> Path:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [
        str(ROOT / "recipes" / "bert_cls.py"),
        "--config",
        str(ROOT / "recipes/configs/bert_cls/sst2_minilm.yaml"),
    ]
    cmd += ["--train_file", str(SST2 / "train.tsv"), "--validation_file", str(SST2 / "validation.tsv")]
    cmd += ["--max_train_samples", str(samples), "--output_dir", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def summary(report: dict) -> dict:
    before, after = report["before"], report["after"]
    return {
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "accuracy_change_points": 100 * (after["accuracy"] - before["accuracy"]),
        "prediction_agreement": report["prediction_agreement"],
        "size_mb_before": before["size_mb"],
        "size_mb_after": after["size_mb"],
        "size_ratio": before["size_mb"] / after["size_mb"],
        "latency_ms_before": before["latency_ms"],
        "latency_ms_after": after["latency_ms"],
        "speedup_batch_1": before["latency_ms"]["batch_1"] / after["latency_ms"]["batch_1"],
        "speedup_batch_32": before["latency_ms"]["batch_32"] / after["latency_ms"]["batch_32"],
        **({"prune": report["prune"]} if "prune" in report else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=None, help="a finished SST-2 classification run folder")
    parser.add_argument("--samples", type=int, default=4000, help="training sentences when training a run")
    parser.add_argument("--prune", default=None, help="also a pruned int8 export, e.g. layers=3")
    parser.add_argument("--recovery-steps", type=int, default=250)
    parser.add_argument("--max-eval-samples", type=int, default=None, help="fewer validation sentences")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/export_int8.json"))
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    from tunelab.export import ExportOptions, export_run, parse_prune

    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    run = Path(args.run) if args.run else train_run(args.samples, work / "run")
    common = {"validation_file": str(SST2 / "validation.tsv"), "max_eval_samples": args.max_eval_samples}
    variants = {
        "int8": ExportOptions(quantize="int8", **common),
        "onnx_fp32": ExportOptions(quantize="none", **common),
    }
    if args.prune:
        variants["pruned_int8"] = ExportOptions(
            quantize="int8", prune=parse_prune(args.prune), recovery_steps=args.recovery_steps, **common
        )
    results = {}
    for name, options in variants.items():
        print(f"== {name}", flush=True)
        report = export_run(run, work / name, options, quiet=True)
        print((work / name / "report.md").read_text())
        results[name] = summary(report)

    int8 = results["int8"]
    bars = {
        "accuracy_within_1_point": abs(int8["accuracy_change_points"]) <= 1.0,
        "at_least_2x_smaller": int8["size_ratio"] >= 2.0,
        "faster_at_batch_1": int8["speedup_batch_1"] > 1.0,
    }
    print(f"{'variant':12s} {'acc before':>10s} {'acc after':>9s} {'size x':>7s} {'b1 x':>6s} {'b32 x':>6s}")
    for name, r in results.items():
        print(
            f"{name:12s} {r['accuracy_before']:10.4f} {r['accuracy_after']:9.4f} {r['size_ratio']:7.2f} "
            f"{r['speedup_batch_1']:6.2f} {r['speedup_batch_32']:6.2f}"
        )
    print("bars:", json.dumps(bars))
    import onnxruntime
    import torch

    payload = {
        "run": str(run),
        "data": "SST-2 validation.tsv",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__},
        "onnxruntime": onnxruntime.__version__,
        "note": "latency per example, tokenization included; shared VM (other jobs running): compare ratios",
        "results": results,
        "bars": bars,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
