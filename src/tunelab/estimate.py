"""Before a run: parameters, memory and time per epoch, from one measured training step on this machine.

The step is real (forward, backward, AdamW update on a batch of the configured shape, under the chosen
precision), so the time reflects this CPU/GPU; memory is the usual AdamW bookkeeping (weights, grads,
two moments) plus the activation memory the step actually took (CUDA peak, or the process RSS growth).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch


@dataclass
class Estimate:
    parameters: int
    trainable: int
    step_seconds: float
    steps_per_epoch: int
    memory_gb: float
    device: str
    precision: str

    @property
    def epoch_seconds(self) -> float:
        return self.step_seconds * self.steps_per_epoch

    def describe(self) -> str:
        return (
            f"**{self.parameters / 1e6:.1f} M parameters** ({self.trainable / 1e6:.1f} M trainable) · "
            f"about **{self.memory_gb:.2f} GB** of memory · one step ≈ {self.step_seconds * 1000:.0f} ms "
            f"on {self.device} ({self.precision}) · {self.steps_per_epoch} steps/epoch ≈ "
            f"**{format_duration(self.epoch_seconds)} per epoch** (plus ~10–20 s of start-up)"
        )


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def measure_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    precision: str,
    repeats: int = 3,
    steps_per_epoch: int = 1,
    num_processes: int = 1,
    enough_seconds: float = 2.0,
) -> Estimate:
    """Time up to ``repeats`` training steps after one warm-up step, fewer once the timed ones add up to
    ``enough_seconds`` (a slow step is measured well by itself, and the user waits for each one); the
    median is the step's time. The model is left trained a little (a copy).
    ``model(**batch)`` returns the loss, or an output with ``.loss``. "auto" precision is the training's
    own pick (tunelab.hardware.resolve_precision)."""
    from .hardware import detect_hardware, resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(precision, detect_hardware(), on_gpu=device.type == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model = model.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rss_before = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    for i in range(repeats + 1):
        if sum(times) >= enough_seconds:
            break
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(**batch)
            loss = out if isinstance(out, torch.Tensor) else out.loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
    static = params * 4 + trainable * (4 + 8)  # fp32 weights; grads and two AdamW moments for trainable ones
    if device.type == "cuda":
        total = max(torch.cuda.max_memory_allocated(), static)
    else:
        total = static + max(_rss_bytes() - rss_before - trainable * 12, 0)
    return Estimate(
        parameters=params,
        trainable=trainable,
        step_seconds=sorted(times)[len(times) // 2],
        steps_per_epoch=max(1, math.ceil(steps_per_epoch / max(num_processes, 1))),
        memory_gb=total / 1e9,
        device=device.type.upper() if device.type == "cuda" else "CPU",
        precision=precision,
    )


def estimate_classification(
    model_name_or_path: str,
    texts: list[str],
    labels: list[str],
    rows: int,
    batch_size: int,
    max_length: int,
    precision: str = "auto",
    num_processes: int = 1,
    accumulation: int = 1,
) -> Estimate:
    """Estimate for ``recipes/bert_cls.py`` from real texts of the dataset."""
    from .models import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(model_name_or_path)
    model = load_classifier(model_name_or_path, labels)
    sample = (texts * (batch_size // max(len(texts), 1) + 1))[:batch_size]
    batch = dict(tokenizer(sample, truncation=True, max_length=max_length, padding=True, return_tensors="pt"))
    batch["labels"] = torch.zeros(len(sample), dtype=torch.long)
    steps = math.ceil(rows / batch_size)
    est = measure_step(model, batch, precision, steps_per_epoch=steps, num_processes=num_processes)
    est.steps_per_epoch = max(1, math.ceil(est.steps_per_epoch / accumulation))
    est.step_seconds *= accumulation
    return est


def estimate_causal_lm(
    model_size: str,
    vocab_size: int,
    block_size: int,
    corpus_chars: int,
    batch_size: int,
    precision: str = "auto",
    num_processes: int = 1,
    model_name_or_path: str | None = None,
    accumulation: int = 1,
) -> Estimate:
    """Estimate for ``recipes/gpt2_clm.py``: the recipe's own model (its from-scratch GPT2Config for the
    preset, or the given model) trained the recipe's way (``CausalLMForTraining``: chunked loss, its CPU
    attention), on random ids.

    corpus_chars: tokens are taken as ~chars/4 (a BPE trained on the corpus).
    """
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    from .lm import CausalLMForTraining, gpt2_config

    if model_name_or_path:
        from .models import load_pretrained, resolve_model_path

        model = load_pretrained(AutoModelForCausalLM, resolve_model_path(model_name_or_path))
        vocab_size = model.config.vocab_size
    else:
        model = GPT2LMHeadModel(gpt2_config(model_size, None, vocab_size, block_size, eos_id=0))
    ids = torch.randint(0, vocab_size, (batch_size, block_size + 1))
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
    model = CausalLMForTraining(model)
    steps = math.ceil(corpus_chars / 4 / (block_size * batch_size))
    est = measure_step(model, batch, precision, steps_per_epoch=steps, num_processes=num_processes)
    est.steps_per_epoch = max(1, math.ceil(est.steps_per_epoch / accumulation))
    est.step_seconds *= accumulation
    return est
