"""What the Train tab says about the data before a classification run starts: how many rows train, how
many texts ``max_length`` truncates, and whether the run fits the time budget the user set.

The numbers come from the Data tab's check (row count and the token lengths of up to 2,000 texts, kept
per dataset) and from the Estimate's measured training step (kept per setting); nothing here trains or
loads a model. Defaults never shrink a run silently: all rows train unless the user sets Max train
samples, and a run over the budget gets a suggestion the user can apply.
"""

from __future__ import annotations

import math
from typing import Any

from tunelab.estimate import format_duration

MIN_MAX_LENGTH = 32
MAX_LENGTH_CAP = {"cpu": 256, "gpu": 512}  # the suggestion's ceiling (512: BERT-family position limit)
START_UP_S = 15  # model load, tokenization, first evaluation: what a short run adds to its steps


def suggested_max_length(lengths: list[int], on_gpu: bool = False) -> int | None:
    """The 95th percentile of the token lengths, rounded up to a multiple of 8, within [32, cap]."""
    if not lengths:
        return None
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    cap = MAX_LENGTH_CAP["gpu" if on_gpu else "cpu"]
    return max(MIN_MAX_LENGTH, min(cap, 8 * math.ceil(p95 / 8)))


def truncated(lengths: list[int], max_length: int, rows: int) -> tuple[int, float]:
    """(texts of the dataset longer than max_length, their share), scaled from the sample."""
    if not lengths:
        return 0, 0.0
    share = sum(n > max_length for n in lengths) / len(lengths)
    return round(share * rows), share


def train_rows(rows: int, config: dict[str, Any]) -> int:
    """Rows the run trains on: the validation share held out (when there is no validation file), then
    Max train samples."""
    if not config.get("validation_file"):
        rows = int(rows * (1 - float(config.get("validation_split_percentage") or 10.0) / 100))
    cap = config.get("max_train_samples")
    return min(rows, int(cap)) if cap else rows


def timing_key(dataset: str, config: dict[str, Any], processes: int) -> tuple:
    """What a measured step depends on (not the number of rows or epochs)."""
    model = config.get("model_name_or_path") or config.get("teacher_name_or_path")
    return (
        dataset,
        model,
        int(config.get("per_device_train_batch_size") or 0),
        int(config.get("max_length") or 0),
        config.get("mixed_precision"),
        processes,
    )


def rows_within(budget_s: float, seconds_per_row: float, epochs: float) -> int:
    """The most rows (rounded down to a hundred) whose training fits the budget."""
    usable = max(budget_s - START_UP_S, 0)
    rows = int(usable / max(seconds_per_row * epochs, 1e-9))
    return max(100, rows // 100 * 100)


def plan_note(
    rows: int | None,
    lengths: list[int],
    config: dict[str, Any],
    seconds_per_row: float | None,
    budget_min: float,
    device: str,
) -> tuple[str, int | None]:
    """(the Data plan text, the suggested Max train samples when the run is over the budget)."""
    if not rows:
        return "**Data plan:** check the dataset in the Data tab to see how much of it trains.", None
    used = train_rows(rows, config)
    held_out = "" if config.get("validation_file") else " after the validation share"
    capped = config.get("max_train_samples")
    parts = [
        f"**Data plan:** {rows:,} rows · trains on **{used:,}**{held_out}"
        + (f" (Max train samples {int(capped):,})" if capped else " (all of them)")
    ]
    max_length = int(config.get("max_length") or 128)
    count, share = truncated(lengths, max_length, rows)
    if lengths:
        parts.append(
            f"max_length {max_length} truncates **{count:,} texts ({share:.1%})**"
            + (f"; {suggested_max_length(lengths, device != 'CPU')} keeps 95%" if share > 0.05 else "")
        )
    suggestion = None
    epochs = float(config.get("num_train_epochs") or 1)
    if seconds_per_row is None:
        parts.append(f"time: measuring a training step on this {device} (or press Estimate)")
    else:
        total = START_UP_S + seconds_per_row * used * epochs
        budget_s = budget_min * 60
        when = f"about **{format_duration(total)}** for {epochs:g} epoch(s) on this {device}"
        if total <= budget_s:
            parts.append(f"{when}, within the {budget_min:g} min budget")
        else:
            suggestion = rows_within(budget_s, seconds_per_row, epochs)
            if suggestion >= used:
                suggestion = None
            parts.append(
                f"{when}, over the {budget_min:g} min budget"
                + (
                    f". Suggestion: train on {suggestion:,} rows (Max train samples), or fewer epochs"
                    if suggestion
                    else ". Suggestion: fewer epochs, or a larger budget"
                )
            )
    return " · ".join(parts) + ".", suggestion
