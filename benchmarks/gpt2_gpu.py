"""GPT-2 124M on one GPU: a plain compiled ``GPT2LMHeadModel`` loop vs TuneLab's recipe, tokens/s and MFU.

    python benchmarks/gpt2_gpu.py [--steps 60] [--batch 16] [--train_file ../shared/data/tinyshakespeare/input.txt]

Both sides: GPT-2 small (12 layers, 768 wide, vocab 50,304 = 50,257 padded to a multiple of 64),
block 1024, bf16 autocast, torch.compile, fused AdamW, TF32. The baseline is the loop most people write
(nanoGPT style: model(input_ids, labels=...).loss, which materializes the full logits); TuneLab is the
recipe launched as a subprocess, tokens/s and MFU read from its events.jsonl. The first 10 steps
(compilation) are excluded from tokens/s on both sides. Writes benchmarks/results/gpt2_gpu.json.

Needs a CUDA GPU; not run in the CPU-only development session.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunelab.lm import flops_per_token, gpt2_config, train_bpe_tokenizer  # noqa: E402
from tunelab.train import _peak_flops  # noqa: E402

BLOCK, VOCAB, SKIP = 1024, 50257, 10


def plain_loop(steps: int, batch: int, eos: int) -> dict:
    from transformers import GPT2LMHeadModel

    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda")
    config = gpt2_config("small", None, VOCAB, BLOCK, eos)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True
    )
    compiled = torch.compile(model)
    data = torch.randint(0, VOCAB, (batch, BLOCK + 1), device=device)
    marks = {}
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(input_ids=data[:, :-1], labels=data[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in (SKIP, steps):
            torch.cuda.synchronize()
            marks[step] = time.perf_counter()
    tokens_per_s = (steps - SKIP) * batch * BLOCK / (marks[steps] - marks[SKIP])
    peak = _peak_flops(device)
    mfu = tokens_per_s * flops_per_token(model, BLOCK) / peak if peak else None
    return {
        "tokens_per_s": tokens_per_s,
        "mfu": mfu,
        "wall_s": marks[steps] - start,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def tunelab_recipe(steps: int, batch: int, train_file: str, workdir: Path) -> dict:
    out = workdir / "tunelab"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no", str(ROOT / "recipes" / "gpt2_clm.py"),
           "--config", str(ROOT / "recipes" / "configs" / "gpt2_clm" / "gpt2_small.yaml"),
           "--train_file", train_file, "--per_device_train_batch_size", str(batch),
           "--gradient_accumulation_steps", "1", "--max_train_steps", str(steps),
           "--logging_steps", str(SKIP), "--eval_steps", str(10 * steps), "--checkpointing_steps", str(10 * steps),
           "--max_eval_samples", "16", "--cache_dir", str(workdir / "cache"), "--output_dir", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the recipe failed:\n{proc.stderr[-4000:]}")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["kind"] == "train"]
    first, last = train[0], train[-1]
    tokens_per_s = (last["step"] - first["step"]) * batch * BLOCK / (last["time"] - first["time"])
    mfus = [e["perf/mfu"] for e in train[1:] if "perf/mfu" in e]
    return {
        "tokens_per_s": tokens_per_s,
        "mfu": sum(mfus) / len(mfus) if mfus else None,
        "peak_mem_gb": last.get("perf/peak_mem_gb"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--train_file", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpt2_gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    eos = train_bpe_tokenizer(["hello world"], 300).eos_token_id  # 0, as in every TuneLab BPE
    results = {"plain_compiled_loop": plain_loop(args.steps, args.batch, eos)}
    print("plain", results["plain_compiled_loop"], flush=True)
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as tmp:
        results["tunelab"] = tunelab_recipe(args.steps, args.batch, args.train_file, Path(tmp))
    print("tunelab", results["tunelab"], flush=True)
    ratio = results["tunelab"]["tokens_per_s"] / results["plain_compiled_loop"]["tokens_per_s"]
    print(f"\n{'run':<22}{'tokens/s':>12}{'MFU':>8}")
    for name, r in results.items():
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
        print(f"{name:<22}{r['tokens_per_s']:>12.0f}{mfu:>8}")
    print(f"TuneLab / plain compiled loop: {ratio:.2f}x")
    report = {
        "benchmark": "gpt2_gpu",
        "gpu": torch.cuda.get_device_name(),
        "steps": args.steps,
        "batch": args.batch,
        "block": BLOCK,
        "results": results,
        "ratio": ratio,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
