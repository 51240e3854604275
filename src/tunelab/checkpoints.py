"""Checkpoints of a run: atomic saves (a temporary sibling renamed when complete), the progress that exact
resume needs (TrainState, saved as trainer_state.json beside accelerate's save_state), the best model,
and resolving what --resume_from_checkpoint names."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from .args import TrainingArguments
from .errors import ConfigError, writing
from .runs import CHECKPOINTS_DIR, list_checkpoints

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything besides tensors that exact resume needs; saved as trainer_state.json."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    samples_seen: int = 0
    tokens_seen: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    max_steps: int = 0
    seed: int = 0
    world_size: int = 1
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    last_eval: dict[str, float] = field(default_factory=dict)
    last_eval_step: int | None = None
    # A stop arrived during the evaluation at global_step: the resumed run evaluates first.
    pending_eval: bool = False


def resolve_checkpoint(spec: str | None, output_dir: Path) -> Path | None:
    """'latest' (newest complete checkpoint of output_dir, or None), a run folder, or a checkpoint folder."""
    if not spec:
        return None
    if spec == "latest":
        found = list_checkpoints(output_dir / CHECKPOINTS_DIR)
        return found[-1] if found else None
    path = Path(spec)
    if (path / "trainer_state.json").exists():
        return path
    found = list_checkpoints(path / CHECKPOINTS_DIR)
    if found:
        return found[-1]
    raise ConfigError(f"resume_from_checkpoint={spec!r}: no complete checkpoint there.")


def save_checkpoint(accelerator: Accelerator, state: TrainState, output_dir: Path, keep: int) -> Path:
    """save_state into a temporary sibling, renamed when complete: a kill mid-save leaves no checkpoint."""
    root = output_dir / CHECKPOINTS_DIR
    final = root / f"step-{state.global_step}"
    tmp = root / f".tmp-step-{state.global_step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    previous = list_checkpoints(root)
    # What it needs: as much as the last checkpoint, or weights plus two optimizer moments.
    need = _folder_bytes(previous[-1]) if previous else 3 * sum(model_bytes(m) for m in accelerator._models)
    try:
        with writing(f"checkpoint {final.name}", root, need):
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint taking space
        raise
    if accelerator.is_main_process:
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    accelerator: Accelerator, checkpoint: Path, args: TrainingArguments, world_size: int
) -> TrainState:
    accelerator.load_state(str(checkpoint))
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    state = TrainState(**{k: v for k, v in saved.items() if k in TrainState.__dataclass_fields__})
    now = {
        "seed": args.seed,
        "world_size": world_size,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
    for key, value in now.items():
        if getattr(state, key) != value:
            logger.warning(
                "Resuming with %s=%s but the checkpoint was made with %s: the run will not "
                "match an uninterrupted one exactly.",
                key,
                value,
                getattr(state, key),
            )
    return state


def save_best_model(accelerator: Accelerator, model: torch.nn.Module, best_dir: Path) -> None:
    """The best weights so far, replaced only once the new ones are complete (a full disk or a kill
    mid-save keeps the previous best)."""
    tmp = best_dir.with_name(f".tmp-{best_dir.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    # Every rank enters save_model (it lists the folder), so the folder is cleared before any
    # rank enters and renamed only once every rank is out.
    accelerator.wait_for_everyone()
    try:
        with writing("the best model", best_dir.parent, model_bytes(model)):
            accelerator.save_model(model, tmp, safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(best_dir, ignore_errors=True)
            os.replace(tmp, best_dir)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def load_best_weights(accelerator: Accelerator, model: torch.nn.Module, folder: Path) -> bool:
    """Load the best model's weights; False (with a warning) when they are gone: the last weights stay."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))  # accelerate's save_model logs a .bin name but writes these
    if not files:
        logger.warning("The best model's weights are missing from %s: keeping the last weights.", folder)
        return False
    state_dict: dict[str, torch.Tensor] = {}
    for f in files:
        state_dict.update(load_file(f))
    missing, unexpected = accelerator.unwrap_model(model).load_state_dict(state_dict, strict=False)
    if unexpected:
        raise RuntimeError(f"best-model weights do not fit the model: unexpected {unexpected[:5]}")
    return True
