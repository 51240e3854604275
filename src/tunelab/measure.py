"""What a model costs on a CPU, measured one way for every report: the bytes of its weights and the
milliseconds per example of its predictor (the distillation recipe's teacher vs student, `tunelab export`'s
before vs after, and the benchmarks that call them)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Weights of a saved model: safetensors (or older .bin) files, or an export's ONNX graph and its data.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.onnx", "*.onnx.data", "*.onnx_data")

Predict = Callable[[list, int], Any]  # (examples, batch size) -> anything; only its time counts


def weights_size(folder: str | Path) -> int:
    """Bytes of the model's weight files at the folder's root."""
    return sum(f.stat().st_size for pattern in WEIGHT_FILES for f in Path(folder).glob(pattern))


def latency_ms(predict: Predict, examples: list, batch: int, calls: int) -> float:
    """Milliseconds per example of ``calls`` calls of ``batch`` examples each (tokenization included),
    after one warm-up call (first-call allocations, kernel choices)."""
    chunks = [examples[(i * batch) % len(examples) :][:batch] or examples[:batch] for i in range(calls)]
    predict(chunks[0], batch)
    start = time.perf_counter()
    for chunk in chunks:
        predict(chunk, batch)
    return (time.perf_counter() - start) * 1000 / sum(len(c) for c in chunks)


def compare_latency(
    predictors: dict[str, Predict], examples: list, settings: dict[str, tuple[int, int]], repeats: int
) -> tuple[dict[str, dict[str, float]], int]:
    """({predictor: {setting: ms per example}}, threads). ``settings``: {name: (batch, calls)}. The
    predictors take turns within every repeat, so load from other programs hits them alike, and the median
    repeat counts. Threads: $TUNELAB_NUM_THREADS, else every core this process may use (a launcher may have
    pinned fewer for training)."""
    import torch

    threads = int(os.environ.get("TUNELAB_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples = {name: {s: [] for s in settings} for name in predictors}
        for _ in range(repeats):
            for name, predict in predictors.items():
                for setting, (batch, calls) in settings.items():
                    samples[name][setting].append(latency_ms(predict, examples, batch, calls))
    finally:
        torch.set_num_threads(previous)
    medians = {name: {s: statistics.median(v) for s, v in by.items()} for name, by in samples.items()}
    return medians, threads
