"""GPT-2 pretraining on CPU: TuneLab's recipe vs the Hugging Face ``Trainer`` (run_clm style), side by side.

    python benchmarks/gpt2_clm_vs_trainer.py [--steps 200] [--repeats 3] [--train_file ../shared/data/tinyshakespeare/input.txt]

Same data (Tiny Shakespeare, one BPE of 8,192 tokens trained once and given to both, last 5% of the
tokens held out), same model (GPT-2, 4 layers, 256 wide, 4 heads, block 256, dropout 0, same config
object), same batch (16), optimizer settings and number of steps.

- Trainer: group_texts blocks with labels = input_ids and the default collator, at its fp32 default, at
  bf16 (``bf16=True, use_cpu=True``) and, unless ``--skip_compiled``, with its own ``torch_compile=True``
  at its best precision. The bf16 Trainer is skipped on a CPU without native bf16 (no AVX-512 BF16 /
  AMX): there bf16 matmuls are emulated and tens of times slower, and TuneLab's ``mixed_precision: auto``
  picks fp32 for the same reason.
- TuneLab: the recipe launched as a subprocess (``accelerate launch recipes/gpt2_clm.py``), eager and
  with ``--torch_compile``; tokens/s read from its events.jsonl. Each TuneLab run is also compared with
  the Trainer run of the same precision and compile mode.

tokens/s excludes the first 10 steps on both sides (start-up, first-call allocations, compilation);
the wall column includes everything. With ``--repeats N`` the runs take turns for N rounds and
medians are reported (every round's tokens/s is in the JSON). Round i uses seed 42 + i on every side
(model initialization and data order), and the validation loss reported is the mean over the rounds:
one seed's loss after 100 steps varies by ~0.01-0.02 with the order of the batches alone;
``--loss_seeds K`` adds K seeds of TuneLab and the Trainer for the loss only. The script also measures
this CPU's matmul rate (2048x2048, all cores, fp32 and, where native, bf16) and reports each run's
model FLOP/s (6N + attention per token, as nanoGPT counts) as a share of the rate of the precision it
trained in: how much room the hardware leaves, since on a CPU both loops are bound by the same matmuls. Validation loss: both final models
evaluated by the same function (transformers' loss, labels = input_ids) on the same held-out blocks.
JSON goes to benchmarks/results/gpt2_clm_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunelab.data.lm import split_tokens  # noqa: E402
from tunelab.hardware import cpu_has_fast_bf16  # noqa: E402
from tunelab.lm import flops_per_token, gpt2_config, train_bpe_tokenizer  # noqa: E402

BLOCK, BATCH, VOCAB, SKIP = 256, 16, 8192, 10
MODEL = "n_layer=4,n_embd=256,n_head=4"
OPTIM = {"learning_rate": 1e-3, "weight_decay": 0.1, "warmup": 20, "scheduler": "cosine"}
SEED = 42  # round i uses seed SEED + i on every side


def gemm_gflops(dtype=torch.float32, n: int = 2048, calls: int = 10) -> float:
    """This CPU's matmul rate in ``dtype`` (all cores), the ceiling of a matmul-bound training step."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(calls):
        a @ b
    return 2 * n**3 * calls / (time.perf_counter() - start) / 1e9


def blocks(ids: np.ndarray) -> torch.Tensor:
    n = len(ids) // BLOCK
    return torch.from_numpy(ids[: n * BLOCK].astype(np.int64)).view(n, BLOCK)


def eval_loss(model, val_blocks: torch.Tensor) -> float:
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(val_blocks), 32):
            x = val_blocks[i : i + 32]
            losses.append(model(input_ids=x, labels=x).loss.item() * len(x))
    return sum(losses) / len(val_blocks)


def run_trainer(
    tokenizer, train_ids, val_blocks, steps: int, seed: int, bf16: bool, workdir: Path, compile_: bool = False
) -> dict:
    import datasets
    from transformers import (
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    train_blocks = blocks(train_ids)  # run_clm's group_texts: consecutive blocks, labels = input_ids
    dataset = datasets.Dataset.from_dict({"input_ids": train_blocks.tolist()})
    dataset = dataset.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config("tiny", MODEL, len(tokenizer), BLOCK, tokenizer.eos_token_id))

    class Clock(TrainerCallback):
        ends: list[
            float
        ] = []  # ends[i]: end of optimizer step i + 1 (global_step's timing differs by version)

        def on_step_end(self, args, state, control, **kwargs):
            Clock.ends.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(workdir / f"trainer-{'bf16' if bf16 else 'fp32'}-{compile_}"), per_device_train_batch_size=BATCH,
        max_steps=steps, learning_rate=OPTIM["learning_rate"], weight_decay=OPTIM["weight_decay"],
        warmup_steps=OPTIM["warmup"], lr_scheduler_type=OPTIM["scheduler"], logging_steps=10,
        save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True, bf16=bf16, seed=seed,
        dataloader_drop_last=True, disable_tqdm=True, torch_compile=compile_,
    )  # fmt: skip
    Clock.ends = []
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=default_data_collator,
        callbacks=[Clock()],
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    tokens_per_s = (steps - SKIP) * BATCH * BLOCK / (Clock.ends[-1] - Clock.ends[SKIP - 1])
    return {
        "tokens_per_s": tokens_per_s,
        "wall_s": wall,
        "eval_loss": eval_loss(getattr(trainer.model, "_orig_mod", trainer.model).float(), val_blocks),
        "mixed_precision": "bf16" if bf16 else "no",
        "compiled": compile_,
    }


def run_tunelab(
    tokenizer_dir: Path, train_file: str, val_blocks, steps: int, seed: int, compile_: bool, workdir: Path
) -> dict:
    from transformers import AutoModelForCausalLM

    out = Path(tempfile.mkdtemp(prefix=f"tunelab-{'compiled' if compile_ else 'eager'}-", dir=workdir))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--dynamo_backend", "no", str(ROOT / "recipes" / "gpt2_clm.py"), "--train_file", train_file,
           "--tokenizer_name", str(tokenizer_dir), "--config_overrides", MODEL, "--block_size", str(BLOCK),
           "--per_device_train_batch_size", str(BATCH), "--max_train_steps", str(steps),
           "--learning_rate", str(OPTIM["learning_rate"]), "--weight_decay", str(OPTIM["weight_decay"]),
           "--num_warmup_steps", str(OPTIM["warmup"]), "--lr_scheduler_type", OPTIM["scheduler"],
           "--seed", str(seed), "--logging_steps", str(SKIP), "--validation_split_percentage", "5",
           "--max_eval_samples", "8", "--cache_dir", str(workdir / "cache"), "--output_dir", str(out),
           "--torch_compile", str(compile_)]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"the recipe failed:\n{proc.stderr[-4000:]}")
    train = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    train = [e for e in train if e["kind"] == "train"]
    first, last = train[0], train[-1]  # first = end of the first log interval, excluded
    tokens_per_s = (last["step"] - first["step"]) * BATCH * BLOCK / (last["time"] - first["time"])
    model = AutoModelForCausalLM.from_pretrained(out)
    precision = next(line for line in proc.stderr.splitlines() if "mixed precision =" in line).split("= ")[-1]
    return {
        "tokens_per_s": tokens_per_s,
        "wall_s": wall,
        "eval_loss": eval_loss(model, val_blocks),
        "mixed_precision": precision,
        "compiled": compile_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--train_file", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
    )
    parser.add_argument(
        "--trainer_bf16",
        choices=("auto", "yes", "no"),
        default="auto",
        help="auto: only where the CPU has native bf16",
    )
    parser.add_argument("--skip_compiled", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of alternating runs; medians reported")
    parser.add_argument(
        "--loss_seeds",
        type=int,
        default=0,
        help="after the timed rounds, K more seeds of TuneLab (eager) and the Trainer (eager, its best "
        "precision) for the validation loss only",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpt2_clm_cpu.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(len(os.sched_getaffinity(0)))

    text = Path(args.train_file).read_text()
    tokenizer = train_bpe_tokenizer([text], VOCAB)
    ids = np.array(
        tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id], dtype=np.int64
    )
    train_ids, val_ids = split_tokens(ids, 5.0)  # the split the recipe makes
    val_blocks = blocks(val_ids)
    bf16 = args.trainer_bf16 == "yes" or (args.trainer_bf16 == "auto" and cpu_has_fast_bf16())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tokenizer.save_pretrained(workdir / "tokenizer")
        data = (tokenizer, train_ids, val_blocks, args.steps)
        runs = {"trainer_fp32": lambda seed: run_trainer(*data, seed, False, workdir)}
        if bf16:
            runs["trainer_bf16"] = lambda seed: run_trainer(*data, seed, True, workdir)
        if not args.skip_compiled:  # the Trainer's best: its own torch_compile, at its best precision
            runs[f"trainer_{'bf16' if bf16 else 'fp32'}_compiled"] = lambda seed: run_trainer(
                *data, seed, bf16, workdir, True
            )
        tunelab = (workdir / "tokenizer", args.train_file, val_blocks, args.steps)
        runs["tunelab"] = lambda seed: run_tunelab(*tunelab, seed, False, workdir)
        if not args.skip_compiled:
            runs["tunelab_compiled"] = lambda seed: run_tunelab(*tunelab, seed, True, workdir)
        # Runs take turns, round after round: on a shared VM the speed of the machine drifts by tens of
        # percent within minutes, and alternating spreads the drift over all of them.
        rounds: dict[str, list[dict]] = {name: [] for name in runs}
        for i in range(args.repeats):
            for name, run in runs.items():
                rounds[name].append(run(SEED + i))
                print(f"round {i + 1}: {name}", rounds[name][-1], flush=True)
        # Loss only: more seeds, so that "equal loss" rests on more than the rounds' few seeds.
        loss_seeds: dict[str, dict[int, float]] = {"tunelab": {}, "trainer": {}}
        for seed in range(SEED + args.repeats, SEED + args.repeats + args.loss_seeds):
            loss_seeds["tunelab"][seed] = run_tunelab(*tunelab, seed, False, workdir)["eval_loss"]
            loss_seeds["trainer"][seed] = run_trainer(*data, seed, bf16, workdir)["eval_loss"]
            print(f"loss, seed {seed}:", {k: v[seed] for k, v in loss_seeds.items()}, flush=True)
    results: dict[str, dict] = {}
    for name, outcomes in rounds.items():
        results[name] = {
            **outcomes[0],
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in outcomes),
            "wall_s": statistics.median(r["wall_s"] for r in outcomes),
            "tokens_per_s_all": [r["tokens_per_s"] for r in outcomes],
            # each round has its own seed (init and data order): the loss is the mean over seeds
            "eval_loss": statistics.mean(r["eval_loss"] for r in outcomes),
            "eval_loss_all": [r["eval_loss"] for r in outcomes],
        }

    from transformers import GPT2LMHeadModel

    probe = GPT2LMHeadModel(gpt2_config("tiny", MODEL, len(tokenizer), BLOCK, tokenizer.eos_token_id))
    flops_token = flops_per_token(probe, BLOCK)
    gemm = {"no": gemm_gflops(torch.float32)}
    if cpu_has_fast_bf16():
        gemm["bf16"] = gemm_gflops(torch.bfloat16)
    for r in results.values():
        r["model_gflops"] = r["tokens_per_s"] * flops_token / 1e9
        # against the matmul rate of the precision the run trained in (fp32 where bf16 is emulated)
        r["share_of_gemm"] = r["model_gflops"] / gemm.get(r["mixed_precision"], gemm["no"])
    rates = ", ".join(f"{'fp32' if k == 'no' else k} {v:.0f}" for k, v in gemm.items())
    print(f"matmul GFLOP/s on this CPU (2048^2): {rates}; model FLOPs per token {flops_token / 1e6:.1f} M")

    def same_trainer(r: dict) -> dict | None:  # the Trainer run in the same precision and compile mode
        for name, t in results.items():
            if name.startswith("trainer") and (t["mixed_precision"], t["compiled"]) == (
                r["mixed_precision"],
                r["compiled"],
            ):
                return t
        return None

    base = results["trainer_fp32"]["tokens_per_s"]
    print(
        f"\n{'run':<24}{'tokens/s':>10}{'wall s':>9}{'val loss':>10}{'vs Trainer fp32':>17}"
        f"{'vs Trainer, same mode':>23}{'GFLOP/s':>9}{'of gemm':>9}"
    )
    for name, r in results.items():
        r["ratio_vs_trainer_fp32"] = r["tokens_per_s"] / base
        twin = same_trainer(r) if name.startswith("tunelab") else None
        r["ratio_vs_trainer_same_mode"] = r["tokens_per_s"] / twin["tokens_per_s"] if twin else None
        vs_twin = f"{r['ratio_vs_trainer_same_mode']:.2f}x" if twin else "-"
        print(
            f"{name:<24}{r['tokens_per_s']:>10.0f}{r['wall_s']:>9.0f}{r['eval_loss']:>10.3f}"
            f"{r['ratio_vs_trainer_fp32']:>16.2f}x{vs_twin:>23}{r['model_gflops']:>9.1f}"
            f"{r['share_of_gemm']:>9.0%}"
        )
    report = {
        "benchmark": "gpt2_clm_vs_trainer", "steps": args.steps, "repeats": args.repeats, "batch": BATCH, "block": BLOCK, "vocab": VOCAB,
        "model": MODEL, "tokens_per_run": args.steps * BATCH * BLOCK, "optimizer": OPTIM,
        "seeds": [SEED + i for i in range(args.repeats)],
        "tokens_per_s_excludes_first_steps": SKIP,
        "tunelab_measured_via": "recipe subprocess (accelerate launch), tokens/s from events.jsonl",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                    "native_bf16": cpu_has_fast_bf16(), "torch": torch.__version__,
                    "gemm_gflops": gemm, "model_flops_per_token": flops_token,
                    "load_average_at_end": os.getloadavg()},
        "trainer_bf16_skipped": None if bf16 else "the CPU has no native bf16 (AVX-512 BF16/AMX)",
        "results": results, "val_loss_note": "same eval function, same held-out blocks, after the same tokens",
        "perplexity": {k: math.exp(r["eval_loss"]) for k, r in results.items()},
    }  # fmt: skip
    if args.loss_seeds:
        trainer_name = "trainer_bf16" if bf16 else "trainer_fp32"
        diffs = [
            rounds["tunelab"][i]["eval_loss"] - rounds[trainer_name][i]["eval_loss"]
            for i in range(args.repeats)
        ]
        diffs += [loss_seeds["tunelab"][k] - loss_seeds["trainer"][k] for k in loss_seeds["tunelab"]]
        report["loss_vs_trainer"] = {
            "trainer": trainer_name, "seeds": len(diffs), "extra_seeds": loss_seeds,
            "tunelab_minus_trainer": diffs, "mean": statistics.mean(diffs),
            "stdev": statistics.stdev(diffs) if len(diffs) > 1 else None,
        }  # fmt: skip
        print(
            f"validation loss, TuneLab - {trainer_name}, {len(diffs)} seeds: mean {statistics.mean(diffs):+.4f}"
            f" (per seed {', '.join(f'{d:+.3f}' for d in diffs)})"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
