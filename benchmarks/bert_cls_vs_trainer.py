"""TuneLab's shipped SST-2 config vs the HF Trainer at its best, side by side, whole processes.

    python benchmarks/bert_cls_vs_trainer.py [--samples 4000 | --samples 0 (all 67,349)] [--rounds N]
                                             [--with-defaults] [--model PATH]

Every side fine-tunes the embedded all-MiniLM-L6-v2 (or `--model`: a folder or Hub id, e.g. the
BERT-base-sized model from scratch that benchmarks/gpu_check.sh makes) on the same SST-2 training
sentences (the subset the recipe draws with its seed, or all of them), 1 epoch, max length 64, and is scored
on the 872 SST-2 validation sentences. On a CUDA machine both sides train on the GPU (bf16 where it runs
it), and the JSON is bert_cls_gpu[_full].json. Times are whole processes, from launch to the saved model, as a user waits:

- **TuneLab**: `recipes/configs/bert_cls/sst2_minilm.yaml` exactly as shipped (only the data paths and
  the sample count given), its evaluations included, started as the app's Start button and `tunelab train`
  start it (`tunelab.launch.lifecycle`: a one-process run is accelerate's launch in the recipe's own
  process); and `--accelerate-launch`: also as the README's `accelerate launch recipes/bert_cls.py
  --config ...` (accelerate's launcher starts a second interpreter: 2-3 s more).
- **Trainer at its best**: `Trainer` with `train_sampling_strategy="group_by_length"`, bf16 where the GPU
  or CPU runs it natively, batch 32, lr 5e-5, 10% warmup, weight decay 0.01, one evaluation at the end, then
  `save_model`; the same again with its own `torch_compile=True`.
- `--with-defaults`: also the Trainer as a user's first script runs it (random batches, fp32, batch 32).

Each side runs in its own process (imports, data loading and tokenization counted for all). With
`--rounds N` the sides run alternately N times and the median is reported (every time is in the JSON): on
a shared VM one run's time moves by 10% or more. Writes benchmarks/results/bert_cls_cpu[_full].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SST2 = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sst2"
CONFIG = ROOT / "recipes/configs/bert_cls/sst2_minilm.yaml"
EMBEDDED = "embedded:all-MiniLM-L6-v2"
TRAINER_BEST = {  # the Trainer's best honest settings on this task (what a careful user would pick)
    "max_length": 64,
    "batch_size": 32,
    "learning_rate": 5e-5,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "epochs": 1,
    "seed": 42,
}


def timed(cmd: list[str], out: Path, env: dict | None = None) -> float:
    """Wall seconds of a whole process (its log kept in ``out``/bench.log)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (out / "bench.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{cmd[:4]} failed; see {out / 'bench.log'}:\n{(out / 'bench.log').read_text()[-3000:]}")
    return wall


def run_tunelab(samples: int, model: str, out: Path) -> dict:
    """The shipped config as the app and `tunelab train` run it: a run folder planned by the lifecycle, then
    its process timed from start to exit (the saved model)."""
    import yaml

    from tunelab.launch import lifecycle

    config = {
        **yaml.safe_load(CONFIG.read_text()),
        "train_file": str(SST2 / "train.tsv"),
        "validation_file": str(SST2 / "validation.tsv"),
        **({"max_train_samples": samples} if samples else {}),
        "model_name_or_path": model,
    }
    run = lifecycle.prepare_run("cls", config, run_dir=out / "run", cwd=ROOT)
    start = time.perf_counter()
    status = lifecycle.wait(run, lifecycle.start(run), timeout=3600)
    wall = time.perf_counter() - start
    if status["state"] != "finished":
        sys.exit(f"the TuneLab run {status['state']}: see {out / 'run' / 'process.log'}")
    return tunelab_result(out, wall)


def run_tunelab_accelerate_launch(samples: int, model: str, out: Path) -> dict:
    """The README's command: `accelerate launch recipes/bert_cls.py --config sst2_minilm.yaml`."""
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1"),
        *(str(ROOT / "recipes" / "bert_cls.py"), "--config", str(CONFIG)),
        *("--train_file", str(SST2 / "train.tsv"), "--validation_file", str(SST2 / "validation.tsv")),
        *(("--max_train_samples", str(samples)) if samples else ()),
        *("--model_name_or_path", model, "--output_dir", str(out / "run")),
    ]
    return tunelab_result(out, timed(cmd, out, {} if on_gpu() else {"ACCELERATE_USE_CPU": "1"}))


def tunelab_result(out: Path, wall: float) -> dict:
    result = json.loads((out / "run" / "eval_results.json").read_text())
    log = (out / "run" / "train.log").read_text().splitlines()
    precision = next(line for line in log if "mixed precision" in line).split("=")[-1].strip()
    examples = int(next(line for line in log if line.strip().startswith("examples =")).split("=")[-1])
    return {
        "wall_s": wall,
        "train_s": result["train_seconds"],
        "accuracy": result["eval/accuracy"],
        "precision": precision,
        "samples_per_s": examples / result["train_seconds"],  # 1 epoch, as the Trainer's figure
    }


def on_gpu() -> bool:
    from tunelab.hardware import detect_hardware

    return detect_hardware().gpus > 0


def run_trainer(samples: int, model: str, out: Path, best: bool, compile_: bool = False) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--trainer-worker",
        str(out),
        "--samples",
        str(samples),
        "--model",
        model,
    ]
    cmd += ["--best"] if best else []
    cmd += ["--compile"] if compile_ else []
    wall = timed(cmd, out)
    return {"wall_s": wall, **json.loads((out / "result.json").read_text())}


def trainer_worker(out: Path, samples: int, model_path: str, best: bool, compile_: bool) -> None:
    """One Trainer run in this process (started by run_trainer, so its imports are timed too)."""
    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunelab.data.classification import load_classification_data
    from tunelab.hardware import detect_hardware, resolve_precision
    from tunelab.models import resolve_model_path

    s = TRAINER_BEST
    data = load_classification_data(
        str(SST2 / "train.tsv"),
        str(SST2 / "validation.tsv"),
        max_train_samples=samples or None,
        seed=s["seed"],
    )
    path = resolve_model_path(model_path)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=s["max_length"])

    train = data.train.map(tokenize, batched=True, remove_columns=["text"])
    validation = data.validation.map(tokenize, batched=True, remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(data.labels))
    gpu = on_gpu()
    bf16 = best and resolve_precision("auto", detect_hardware(), gpu) == "bf16"  # as TuneLab's "auto"
    args = TrainingArguments(
        output_dir=str(out / "model"),
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=128,
        learning_rate=s["learning_rate"],
        warmup_steps=s["warmup_ratio"],  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=s["weight_decay"],
        num_train_epochs=s["epochs"],
        seed=s["seed"],
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        bf16=bf16,
        use_cpu=not gpu,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if best else "random",
        torch_compile=compile_,
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
    trained = trainer.train().metrics
    acc = trainer.evaluate()["eval_accuracy"]
    trainer.save_model()
    result = {
        "train_s": trained["train_runtime"],
        "samples_per_s": trained["train_samples_per_second"],
        "accuracy": acc,
        "precision": "bf16" if bf16 else "fp32",
        "group_by_length": best,
        "torch_compile": compile_,
    }
    (out / "result.json").write_text(json.dumps(result))


def median_run(runs: list[dict]) -> dict:
    """The median wall and training times of the rounds (and every time), with each round's accuracy."""
    walls = [r["wall_s"] for r in runs]
    return {
        **runs[0],
        "wall_s": statistics.median(walls),
        "train_s": statistics.median(r["train_s"] for r in runs),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
        "wall_s_all": walls,
        "train_s_all": [r["train_s"] for r in runs],
        "accuracy_all": [r["accuracy"] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="training sentences (0: all 67,349)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the median is reported")
    parser.add_argument("--with-defaults", action="store_true", help="also the Trainer at its defaults")
    parser.add_argument("--no-compile", action="store_true", help="skip the Trainer's torch_compile run")
    parser.add_argument(
        "--accelerate-launch", action="store_true", help="also TuneLab through `accelerate launch`"
    )
    parser.add_argument("--model", default=EMBEDDED, help="both sides' model (default: the embedded MiniLM)")
    parser.add_argument("--output", default=None)
    parser.add_argument("--trainer-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--best", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not SST2.exists():
        sys.exit(f"needs SST-2 at {SST2} (set TUNELAB_SHARED_DATA)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.trainer_worker:
        trainer_worker(args.trainer_worker, args.samples, args.model, args.best, args.compile)
        return
    import torch

    from tunelab.hardware import detect_hardware

    hardware = detect_hardware()
    sides = {
        "tunelab": lambda out: run_tunelab(args.samples, args.model, out),
        "trainer_best": lambda out: run_trainer(args.samples, args.model, out, best=True),
    }
    if args.accelerate_launch:
        sides["tunelab_accelerate_launch"] = lambda out: run_tunelab_accelerate_launch(
            args.samples, args.model, out
        )
    if not args.no_compile:
        sides["trainer_best_compiled"] = lambda out: run_trainer(
            args.samples, args.model, out, best=True, compile_=True
        )
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for name, run in sides.items():
                runs[name].append(run(Path(tmp) / f"{name}{i}"))
                print(f"round {i + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
        results = {name: median_run(r) for name, r in runs.items()}
        if args.with_defaults:
            results["trainer_defaults"] = median_run(
                [run_trainer(args.samples, args.model, Path(tmp) / "defaults", False)]
            )
    samples = args.samples or "all"
    print(
        f"\n{samples} training sentences, medians of {args.rounds} alternating round(s), launch to saved model"
    )
    print(f"model: {args.model}; device: {hardware.describe()}")
    print(
        f"{'run':<27}{'precision':>10}{'wall s':>9}{'train s':>9}{'samples/s':>11}{'accuracy':>10}"
        f"{'TuneLab is':>12}"
    )
    for name, r in results.items():
        ratio = r["wall_s"] / results["tunelab"]["wall_s"]
        print(
            f"{name:<27}{r['precision']:>10}{r['wall_s']:>9.1f}{r['train_s']:>9.1f}{r['samples_per_s']:>11.1f}"
            f"{r['accuracy']:>10.4f}{'' if name == 'tunelab' else f'{ratio:>10.2f}x':>12}"
        )
    report = {
        "settings": {
            "samples": args.samples,
            "rounds": args.rounds,
            "model": args.model,
            "trainer": TRAINER_BEST,
        },
        "tunelab_config": CONFIG.read_text(),
        "results": results,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "native_bf16": hardware.cpu_bf16,
            "gpu": hardware.gpu_name or None,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    name = f"bert_cls_{'gpu' if hardware.gpus else 'cpu'}{'' if args.samples else '_full'}.json"
    output = Path(args.output or ROOT / "benchmarks/results" / name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
