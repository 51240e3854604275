"""Classifying a file: TuneLab's predictor vs the app's path before it vs a plain transformers pipeline.

    python benchmarks/classify_speed.py [--run RUN_DIR] [--texts 600] [--rounds 5]

1. The model: `tunelab train cls --config recipes/configs/bert_cls/sst2_minilm.yaml` on 2,000 SST-2 training
   sentences, 1 epoch, as a user runs it (max_length 64, mixed precision picked by TuneLab: bf16 on a CPU
   with native bf16). `--run` reuses a finished classification run instead.
2. Two sets of `--texts` texts: SST-2 validation sentences (short: median 25 tokens) and Tiny Shakespeare
   speeches of 100 to 512 tokens (long, like reviews; no labels), each classified by, in one process:
   - **before**: the app's Classify path before the predictor (kept here verbatim): batches of 32 in file
     order, padded to the longest of each batch, cut at min(model_max_length, 512), fp32, `torch.no_grad`;
   - **pipeline**: `transformers.pipeline("text-classification", model=RUN, top_k=None)` with its defaults,
     the one line a user would otherwise write;
   - **tunelab**: `tunelab.infer.Classifier.load(RUN).predict(texts)`, what `tunelab classify`, the app's
     Classify and its validation report run: the run's own max_length, length-sorted batches of 64 with
     dynamic padding, autocast at the run's precision, `torch.inference_mode`;
   - **tunelab_512**: the same predictor cut at 512 tokens like the other two, to tell apart what reading
     only the run's max_length brings and what the batching and precision bring.
   Each round runs the four in turn (the order rotates every round); the figure is the median wall time
   over the rounds, after one warm-up call of each. Predictions are compared with the pipeline's (the
   reference) and, for SST-2, scored against the gold labels. On long texts TuneLab cuts at the run's own
   max_length (what the model was trained on), so its predictions there may differ from the pipeline's.
Writes benchmarks/results/classify_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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
DATA = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
CONFIG = ROOT / "recipes/configs/bert_cls/sst2_minilm.yaml"


def train(work: Path, samples: int) -> Path:
    """A classification run trained the way a user trains one (`tunelab train cls`)."""
    runs = work / "runs"
    cmd = [str(Path(sys.executable).with_name("tunelab")), "train", "cls", "--config", str(CONFIG)]
    cmd += ["--max_train_samples", str(samples), "--eval_steps", "100000", "--runs-dir", str(runs), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-4000:]}")
    (run,) = [p for p in runs.iterdir() if (p / "config.json").is_file()]
    print(f"trained {run} in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def before_predict(model, tokenizer, texts: list[str]) -> list[dict[str, float]]:
    """The app's Classify path before the predictor (tunelab.infer.Classifier.predict at e51bb6d)."""
    import torch

    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    max_length = min(tokenizer.model_max_length, 512)
    out: list[dict[str, float]] = []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            chunk = [str(t) for t in texts[start : start + 32]]
            enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            probs = torch.softmax(model(**enc.to(model.device)).logits.float(), dim=-1).cpu()
            out += [dict(zip(labels, row.tolist(), strict=True)) for row in probs]
    return out


def sst2_texts(count: int) -> tuple[list[str], list[int]]:
    with (DATA / "sst2" / "validation.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:count]
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def long_texts(count: int, tokenizer) -> list[str]:
    """Tiny Shakespeare speeches of 100 to 512 tokens (the pipeline, at its defaults, cuts none)."""
    speeches = [s.strip() for s in (DATA / "tinyshakespeare" / "input.txt").read_text().split("\n\n")]
    return [s for s in speeches if 100 <= len(tokenizer(s)["input_ids"]) <= 512][:count]


def compare(contenders: dict, rounds: int) -> tuple[dict[str, list], dict[str, list[float]]]:
    """(each contender's answers, its wall times): one warm-up call each, then ``rounds`` rounds in which
    every contender runs once, the order rotating from round to round."""
    answers = {name: predict() for name, predict in contenders.items()}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            seconds[name].append(time.perf_counter() - start)
        print(
            f"  round {round_ + 1}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()),
            flush=True,
        )
    return answers, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=None, help="a finished classification run to use")
    parser.add_argument("--samples", type=int, default=2000, help="training sentences when training one")
    parser.add_argument("--texts", type=int, default=600, help="texts to classify in each set")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/classify_speed.json")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from tunelab.hardware import detect_hardware
    from tunelab.infer import Classifier

    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train(Path(tmp), args.samples)
        model = AutoModelForSequenceClassification.from_pretrained(run).eval()
        tokenizer = AutoTokenizer.from_pretrained(run)
        pipe = pipeline("text-classification", model=str(run), top_k=None)
        classifier = Classifier.load(run)
        full_length = dataclasses.replace(classifier, max_length=512)  # what the pipeline reads of a text
        texts, golds = sst2_texts(args.texts)
        sets = {"sst2_validation": (texts, golds), "long_speeches": (long_texts(args.texts, tokenizer), None)}
        label_ids = {label: i for i, label in model.config.id2label.items()}
        for set_name, (texts, golds) in sets.items():
            lengths = sorted(len(ids) for ids in tokenizer(texts)["input_ids"])
            print(f"{set_name}: {len(texts)} texts, median {lengths[len(lengths) // 2]} tokens", flush=True)
            answers, seconds = compare(
                {
                    "before": lambda texts=texts: before_predict(model, tokenizer, texts),
                    "pipeline": lambda texts=texts: [
                        {d["label"]: d["score"] for d in a} for a in pipe(texts)
                    ],
                    "tunelab": lambda texts=texts: classifier.predict(texts),
                    "tunelab_512": lambda texts=texts: full_length.predict(texts),
                },
                args.rounds,
            )
            predicted = {n: [label_ids[max(p, key=p.get)] for p in a] for n, a in answers.items()}
            median = {n: statistics.median(s) for n, s in seconds.items()}
            result[set_name] = {
                "texts": len(texts),
                "median_tokens": lengths[len(lengths) // 2],
                "median_seconds": {n: round(v, 3) for n, v in median.items()},
                "texts_per_second": {n: round(len(texts) / v, 1) for n, v in median.items()},
                "speedup_vs_before": round(median["before"] / median["tunelab"], 2),
                "speedup_vs_pipeline": round(median["pipeline"] / median["tunelab"], 2),
                "same_prediction_as_pipeline": {
                    n: round(
                        sum(a == b for a, b in zip(ps, predicted["pipeline"], strict=True)) / len(texts), 4
                    )
                    for n, ps in predicted.items()
                },
                "accuracy": {
                    n: round(sum(p == g for p, g in zip(ps, golds, strict=True)) / len(golds), 4)
                    for n, ps in predicted.items()
                }
                if golds
                else None,  # the speeches have no labels
                "seconds": seconds,
            }
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {detect_hardware().describe()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "run": str(run),
        "rounds": args.rounds,
        "tunelab_settings": {"max_length": classifier.max_length, "precision": classifier.precision},
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    shown = {
        k: {n: f for n, f in v.items() if n != "seconds"} if isinstance(v, dict) else v
        for k, v in result.items()
    }
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
