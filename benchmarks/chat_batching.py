"""Chat fine-tuning throughput: TuneLab's batches (conversations not packed, length-grouped, loss on the
replies from the hidden states of the replies only) against what a hand-written loop does (random
batches padded to their longest, transformers' own loss with labels -100 over the full logits), and
against packing (conversations concatenated into full blocks, attention crossing between them: the
ceiling, and what not packing costs).

    python benchmarks/chat_batching.py [--steps 30] [--batch 8] [--block 256] [--model_size tiny]

Data: the chat sample TuneLab ships (conversations about Python's reference, answered from its docs).
Reported: real (non-padding) tokens per second of forward + backward + AdamW step, the share of padding,
the learned (reply) tokens per second. One process, this machine's threads, bf16 autocast where the CPU
has it (as the recipe's `auto`), fp32 otherwise. Writes benchmarks/results/chat_batching.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from tunelab.data.batching import LengthGroupedSampler
from tunelab.data.chat import chat_collator, ensure_chat_template, tokenize_conversations
from tunelab.data.samples import python_chat_jsonl
from tunelab.hardware import detect_hardware
from tunelab.lm import CausalLMForTraining, build_gpt2, gpt2_config, train_bpe_tokenizer


def batches_grouped(examples, batch: int, seed: int):
    order = list(iter(LengthGroupedSampler(examples.lengths, batch, seed)))
    return [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]


def batches_random(examples, batch: int, seed: int):
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]


def packed_blocks(examples, block: int, batch: int):
    """Every conversation's tokens and targets back to back, cut into full blocks of ``block``."""
    ids, targets = [], []
    for i in range(len(examples)):
        item = examples[i]
        ids += item["input_ids"].tolist()
        targets += item["targets"].tolist()
    n = len(ids) // block
    ids_t = torch.tensor(ids[: n * block]).view(n, block)
    targets_t = torch.tensor(targets[: n * block]).view(n, block)
    return [
        {"input_ids": ids_t[i : i + batch], "targets": targets_t[i : i + batch]}
        for i in range(0, n - batch + 1, batch)
    ]


def run(name, model_fn, batches, loss_fn, steps: int, dtype) -> dict:
    torch.manual_seed(0)
    model = model_fn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    real = learned = padded = 0
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    for step in range(steps + 3):
        batch = batches[step % len(batches)]
        if step == 3:  # warm-up steps are not timed
            start, real, learned, padded = time.perf_counter(), 0, 0, 0
        with autocast:
            loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        real += int(mask.sum())
        padded += int(mask.numel())
        learned += int((batch["targets"] != -100).sum())
    seconds = time.perf_counter() - start
    return {
        "batching": name,
        "real_tokens_per_s": round(real / seconds),
        "learned_tokens_per_s": round(learned / seconds),
        "padding_share": round(1 - real / padded, 3),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--model_size", default="tiny")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chat_batching.json")
    args = parser.parse_args()

    conversations = [json.loads(line)["messages"] for line in python_chat_jsonl().splitlines()]
    texts = [m["content"] for c in conversations for m in c]
    tokenizer = train_bpe_tokenizer(texts, 4096)
    ensure_chat_template(tokenizer)
    examples, _ = tokenize_conversations(conversations, tokenizer, args.block)
    collate = chat_collator(tokenizer.pad_token_id)
    config = gpt2_config(args.model_size, None, len(tokenizer), args.block, tokenizer.eos_token_id)
    dtype = torch.bfloat16 if detect_hardware().cpu_bf16 else torch.float32

    def tunelab_model():
        return CausalLMForTraining(build_gpt2(config), masked_targets=True)

    def plain_model():
        return build_gpt2(config)

    def tunelab_loss(model, batch):
        return model(batch["input_ids"], batch["targets"])

    def transformers_loss(model, batch):
        # transformers shifts labels itself: position t's logits predict labels[t + 1] (the last
        # position's target has no next input here, as in any labels-based loop)
        labels = torch.cat([torch.full_like(batch["targets"][:, :1], -100), batch["targets"][:, :-1]], dim=1)
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss

    grouped = [collate([examples[i] for i in b]) for b in batches_grouped(examples, args.batch, 0)]
    shuffled = [collate([examples[i] for i in b]) for b in batches_random(examples, args.batch, 0)]
    packed = packed_blocks(examples, args.block, args.batch)
    # packing with about as many tokens per step as the grouped batches (a step's fixed costs alike)
    per_step = sum(int(b["attention_mask"].sum()) for b in grouped) / len(grouped)
    packed_alike = packed_blocks(examples, args.block, max(1, round(per_step / args.block)))
    configs = [
        ("TuneLab: length-grouped, loss on reply rows only", tunelab_model, grouped, tunelab_loss),
        ("hand-written: random batches, model(labels=...)", plain_model, shuffled, transformers_loss),
        ("TuneLab loss, random batches (grouping's share)", tunelab_model, shuffled, tunelab_loss),
        (f"packed, {args.batch} blocks a step (attention crosses)", tunelab_model, packed, tunelab_loss),
        (
            f"packed, {len(packed_alike[0]['input_ids'])} block(s) a step (about as many tokens as grouped)",
            tunelab_model,
            packed_alike,
            tunelab_loss,
        ),
    ]
    run("warm-up", *configs[0][1:], args.steps, dtype)  # the process's one-time costs, untimed
    results = [run(name, model, batches, loss, args.steps, dtype) for name, model, batches, loss in configs]
    print(
        f"{len(examples)} conversations, {examples.tokens:,} tokens ({examples.target_tokens:,} in replies); "
        f"GPT-2 {args.model_size}, batch {args.batch}, block {args.block}, {dtype}, {torch.get_num_threads()} threads"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    args.out.write_text(
        json.dumps(
            {"args": vars(args) | {"out": str(args.out)}, "machine": machine, "results": results}, indent=2
        )
    )
    print("| batching | real tokens/s | reply tokens/s | padding |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['batching']} | {r['real_tokens_per_s']:,} | {r['learned_tokens_per_s']:,} | {r['padding_share']:.1%} |"
        )


if __name__ == "__main__":
    main()
