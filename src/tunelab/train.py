"""The one training loop, shared by every recipe: Accelerate does devices, DDP/FSDP, precision,
accumulation and checkpoint state; this module adds what a run needs around it (logging to the run
folder, evaluation, best model, early stopping, atomic checkpoints, exact resume, stop requests, NaN guard).
"""

from __future__ import annotations

import logging
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from transformers import get_scheduler

from .args import DEFAULT_LEARNING_RATE, TrainingArguments
from .checkpoints import (
    TrainState,
    load_best_weights,
    load_checkpoint,
    resolve_checkpoint,
    save_best_model,
    save_checkpoint,
)
from .errors import ConfigError, TrainingError
from .hardware import detect_hardware, resolve_precision
from .runs import CHECKPOINTS_DIR, EventWriter, Run
from .sparse_embeddings import WithSparseRows, clip_grad_norm, sparse_parameters
from .stopping import StopControl

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = ("loss", "perplexity", "rmse", "mae")


# ---------------------------------------------------------------------------------------------------
# Accelerator and optimizer
# ---------------------------------------------------------------------------------------------------
def pick_mixed_precision(requested: str, cpu: bool) -> str:
    """'auto' takes the launcher's fp16/bf16 when given (the planner resolved it for this machine), else
    what the hardware runs natively (tunelab.hardware.resolve_precision)."""
    if requested != "auto":
        return requested
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher in ("fp16", "bf16"):
        return launcher
    return resolve_precision("auto", detect_hardware(), on_gpu=not cpu and torch.cuda.is_available())


def build_accelerator(args: TrainingArguments, project_dir: Path) -> Accelerator:
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    precision = pick_mixed_precision(args.mixed_precision, cpu)
    log_with = None if args.report_to == "none" else args.report_to
    try:
        accelerator = Accelerator(
            mixed_precision=precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=log_with,
            project_dir=str(project_dir),
            # A seeded sampler whose order depends only on (seed, epoch): what exact resume needs.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=not cpu),
        )
    except (ValueError, ImportError) as e:
        raise ConfigError(f"cannot set up training: {e}") from None
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        # accelerate launch pins OMP_NUM_THREADS=1 unless told otherwise, which halves CPU speed on a
        # 2-core machine with one process. Share the cores among the local processes instead.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        threads = int(os.environ.get("TUNELAB_NUM_THREADS", 0)) or max(
            1, len(os.sched_getaffinity(0)) // local
        )
        torch.set_num_threads(threads)
    set_seed(args.seed)
    return accelerator


def weight_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Trainable parameters with 2+ dimensions: what weight decay and the L1 penalty apply to (not
    biases or norm weights)."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


def build_optimizer(
    model: torch.nn.Module, args: TrainingArguments, device_type: str
) -> torch.optim.Optimizer:
    """The optimizer named by ``args.optimizer``; weight decay only on matrices (not biases, norms).

    adamw/adam/sgd use torch's fused kernels (one kernel for all tensors, on CUDA and, since torch
    2.4, on CPU too: 8x faster than the per-tensor loop for a 22M model here). Adafactor is
    transformers' (factored second moments: optimizer memory ~ rows + columns instead of rows x columns).
    """
    sparse = sparse_parameters(model)  # sparse_embeddings: SparseAdam updates their rows
    params = [p for p in model.parameters() if p.requires_grad and all(p is not s for s in sparse)]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device_type in ("cuda", "cpu")
    lr = args.learning_rate or DEFAULT_LEARNING_RATE  # parsed arguments are resolved (resolve_learning_rate)
    betas = (args.adam_beta1, args.adam_beta2)
    if args.optimizer in ("adamw", "adam"):
        kind = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
        dense = kind(groups, lr=lr, betas=betas, eps=args.adam_epsilon, fused=fused)
        return WithSparseRows(dense, sparse, lr, betas, args.adam_epsilon) if sparse else dense
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=args.sgd_momentum, nesterov=args.sgd_nesterov, fused=fused
        )
    from transformers.optimization import Adafactor

    return Adafactor(
        groups,
        lr=lr,
        beta1=None,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
    )


# ---------------------------------------------------------------------------------------------------
# State, checkpoints, resume
# ---------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------
@dataclass
class Task:
    """What differs between recipes; the loop calls these."""

    # (model, eval_dataloader, final) -> {"eval/loss": ..., ...}; final=True asks for the full report
    evaluate: Callable[[Any, Any, bool], dict[str, Any]]
    main_metric: str  # e.g. "accuracy" or "loss" (without the eval/ prefix)
    count_tokens: Callable[[dict], torch.Tensor | int]  # tokens in a micro-batch (local)
    loss: Callable[[Any, dict], torch.Tensor] = lambda model, batch: model(**batch).loss
    on_evaluate: Callable[[Any, TrainState], dict[str, Any] | None] | None = None  # e.g. text samples
    flops_per_token: float | None = None  # training FLOPs per token, for MFU


def classification_loss(
    label_smoothing: float = 0.0, class_weights: list[float] | None = None, multi_label: bool = False
) -> Callable[[Any, dict], torch.Tensor]:
    """Task.loss of a sequence classifier: the model's own loss, or cross-entropy with label smoothing
    and/or a weight per class (the weighted mean over the batch, as torch computes it); multi_label:
    binary cross-entropy with ``class_weights`` as each label's ``pos_weight``."""
    if not label_smoothing and class_weights is None:
        return lambda model, batch: model(**batch).loss
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None

    def loss(model, batch: dict) -> torch.Tensor:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        weight = weights.to(logits.device) if weights is not None else None
        if multi_label:
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), batch["labels"].float(), pos_weight=weight
            )
        return torch.nn.functional.cross_entropy(
            logits.float(), batch["labels"], weight=weight, label_smoothing=label_smoothing
        )

    return loss


@dataclass
class TrainResult:
    state: TrainState
    model: Any  # unwrapped; best weights loaded when asked
    metrics: dict[str, float]  # evaluation of the returned model
    stopped: bool  # True when SIGTERM ended the run early (a checkpoint was saved)
    early_stopped: bool = False
    train_seconds: float = 0.0


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def _peak_mem_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


GPU_PEAK_BF16_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAK_BF16_FLOPS.items() if k in name), None)


def choose_attention(model: torch.nn.Module, choice: str, device_type: str) -> None:
    """Set the attention kernel for training. ``auto``: eager for an encoder on CPU (its batches carry
    padding, and torch's SDPA with a padding mask runs about 2x slower than eager there: MiniLM, batch 64,
    length 16, bf16, a whole step 0.34 s vs 0.15 s on a 2-core Xeon); a generating model (causal blocks,
    no padding) and every GPU keep the model's own (SDPA). Not saved: the model folder keeps its default."""
    base = getattr(model, "get_base_model", lambda: model)()  # through a LoRA wrapper
    if not hasattr(base, "set_attn_implementation"):
        return
    if choice == "auto":
        if device_type != "cpu" or base.can_generate():
            return
        choice = "eager"
    try:
        base.set_attn_implementation(choice)
    except (ValueError, ImportError) as e:  # a model without that kernel keeps its own
        logger.warning("Attention kept as %s: %s", base.config._attn_implementation, e)
        return
    logger.info("Attention while training: %s", choice)


def train(
    accelerator: Accelerator,
    args: TrainingArguments,
    model: torch.nn.Module,
    train_dataloader: torch.utils.data.DataLoader,
    eval_dataloader: torch.utils.data.DataLoader,
    task: Task,
    output_dir: Path,
    events: EventWriter | None,
) -> TrainResult:
    """Train ``model`` until max steps, early stopping or SIGTERM; evaluate along the way and at the end.

    In order: prepare (optimizer, compile, ``accelerator.prepare``, schedule), resume from a checkpoint,
    announce the run, then the loop (``_Loop.run``), the final evaluation and the best model."""
    stop = StopControl.install(output_dir)
    choose_attention(model, args.attn_implementation, accelerator.device.type)
    optimizer = build_optimizer(model, args, accelerator.device.type)
    if args.torch_compile:
        model = torch.compile(model)
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader
    )
    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or math.ceil(args.num_train_epochs * steps_per_epoch)
    # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step it
    # num_processes times), so it is registered for checkpointing instead of prepared.
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.num_warmup_steps or math.ceil(args.warmup_ratio * max_steps),
        num_training_steps=max_steps,
        scheduler_specific_kwargs=args.scheduler_kwargs(),
    )
    accelerator.register_for_checkpointing(scheduler)
    state = _starting_state(accelerator, args, output_dir, max_steps)
    _announce(accelerator, args, train_dataloader, state, math.ceil(max_steps / steps_per_epoch))
    if accelerator.is_main_process:
        Run(output_dir).update_status(
            stage="training",
            step=state.global_step,
            max_steps=max_steps,
            mixed_precision=accelerator.mixed_precision,  # inference runs at the same precision
        )
    loop = _Loop(
        accelerator,
        args,
        model,
        optimizer,
        scheduler,
        train_dataloader,
        eval_dataloader,
        task,
        state,
        output_dir,
        events,
        stop,
    )
    loop.run()
    return loop.finish()


def _starting_state(accelerator: Accelerator, args: TrainingArguments, output_dir: Path, max_steps: int):
    """A new TrainState, or the one of the checkpoint to resume from (its model, optimizer, scheduler
    and RNG states are loaded into the prepared objects)."""
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info("No checkpoint in %s yet: starting from the beginning.", output_dir)
    if checkpoint is None:
        return TrainState(
            max_steps=max_steps,
            seed=args.seed,
            world_size=accelerator.num_processes,
            per_device_train_batch_size=args.per_device_train_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
        )
    state = load_checkpoint(accelerator, checkpoint, args, accelerator.num_processes)
    state.max_steps = max_steps
    logger.info(
        "Resumed from %s (step %d, epoch %d, batch %d)",
        checkpoint,
        state.global_step,
        state.epoch,
        state.batches_in_epoch,
    )
    return state


def _announce(
    accelerator: Accelerator, args: TrainingArguments, train_dataloader, state, epochs: int
) -> None:
    """The "Running training" block of the transformers examples, with the effective batch size."""
    total_batch = (
        args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    )
    logger.info(
        "***** Running training *****\n  examples = %d\n  epochs = %d\n  batch size per device = %d\n"
        "  total batch size (with parallel, accumulation) = %d\n  accumulation steps = %d\n"
        "  optimizer steps = %d, optimizer = %s, scheduler = %s\n"
        "  processes = %d, device = %s, mixed precision = %s",
        len(train_dataloader.dataset),
        epochs,
        args.per_device_train_batch_size,
        total_batch,
        args.gradient_accumulation_steps,
        state.max_steps,
        args.optimizer,
        args.lr_scheduler_type,
        accelerator.num_processes,
        accelerator.device,
        accelerator.mixed_precision,
    )


class _Window:
    """Running sums since the last log line; tensors stay on the device so no step waits for a .item()."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss = torch.zeros((), device=device)
        self.l1 = torch.zeros((), device=device)
        self.tokens = torch.zeros((), device=device, dtype=torch.float64)
        self.micro_batches = self.samples = 0
        self.started = time.perf_counter()

    def totals(self) -> torch.Tensor:
        """[loss, l1, micro-batches, samples, tokens] of this process, to be summed over processes."""
        counts = torch.tensor([self.micro_batches, self.samples], device=self.device, dtype=torch.float64)
        return torch.cat([torch.stack([self.loss.double(), self.l1.double()]), counts, self.tokens[None]])


@dataclass
class _Loop:
    """The training loop and what it keeps between steps: the TrainState (what a checkpoint holds), the
    log window, the latest metrics and how the loop ended (stopped, early-stopped)."""

    accelerator: Accelerator
    args: TrainingArguments
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_dataloader: torch.utils.data.DataLoader
    eval_dataloader: torch.utils.data.DataLoader
    task: Task
    state: TrainState
    output_dir: Path
    events: EventWriter | None
    stop: StopControl

    def __post_init__(self) -> None:
        self.run_folder, self.main = Run(self.output_dir), self.accelerator.is_main_process
        self.best_dir = self.output_dir / CHECKPOINTS_DIR / "best"
        self.peak_flops = _peak_flops(self.accelerator.device)
        self.l1_params = weight_matrices(self.model) if self.args.l1_lambda else []
        self.metrics: dict[str, float] = {}
        self.early_stopped = self.stopped = False
        self.grad_norm = None
        self.window = _Window(self.accelerator.device)
        self.train_start = time.perf_counter()
        self.train_seconds = 0.0

    def save_checkpoint(self) -> None:
        save_checkpoint(self.accelerator, self.state, self.output_dir, self.args.save_total_limit)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Optimizer steps until max steps, early stopping or a stop request. From here a stop request
        (stop file or SIGTERM) is honoured at the next optimizer step (after an evaluation in progress):
        a checkpoint is saved, then the recipe records the ending and exits 0."""
        args, state, accelerator, model = self.args, self.state, self.accelerator, self.model
        self.stop.in_loop = True
        model.train()
        if state.pending_eval and state.global_step < state.max_steps and not self.evaluate():
            self.save_checkpoint()  # interrupted again
            self.stopped = True
        while state.global_step < state.max_steps and not (self.early_stopped or self.stopped):
            self.train_dataloader.set_epoch(state.epoch)
            if state.batches_in_epoch >= len(self.train_dataloader):
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
                continue
            batches = self.train_dataloader
            rng_at_checkpoint = None
            if state.batches_in_epoch:
                batches = accelerator.skip_first_batches(self.train_dataloader, state.batches_in_epoch)
                # Starting an iterator draws from the global RNG (DataLoader base seed); the uninterrupted
                # run drew that at the epoch's start, so put back the checkpoint's state after the first fetch.
                rng_at_checkpoint = _rng_state()
            for batch in batches:
                if rng_at_checkpoint is not None:
                    _set_rng_state(rng_at_checkpoint)
                    rng_at_checkpoint = None
                self.train_step(batch)
                state.batches_in_epoch += 1
                if not accelerator.sync_gradients:
                    continue
                if not accelerator.optimizer_step_was_skipped:
                    self.scheduler.step()
                state.global_step += 1
                if self.after_optimizer_step():
                    break
            else:
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
                if args.checkpointing_steps == "epoch" and state.global_step < state.max_steps:
                    self.save_checkpoint()
        self.train_seconds = time.perf_counter() - self.train_start

    def train_step(self, batch: dict) -> None:
        """Forward and backward of one micro-batch; the optimizer steps when accumulation is complete."""
        accelerator, args, window = self.accelerator, self.args, self.window
        with accelerator.accumulate(self.model):
            loss = self.task.loss(self.model, batch)
            if self.l1_params:
                l1 = args.l1_lambda * torch.stack(torch._foreach_norm(self.l1_params, 1)).sum()
                accelerator.backward(loss + l1)
                window.l1 += l1.detach()
            else:
                accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                self.grad_norm = clip_grad_norm(accelerator, self.model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        window.loss += loss.detach()
        window.tokens += self.task.count_tokens(batch)
        window.micro_batches += 1
        window.samples += len(batch["input_ids"])

    def after_optimizer_step(self) -> bool:
        """Log, evaluate, checkpoint and honour a stop request as this step asks; True: leave the loop."""
        args, state = self.args, self.state
        at_end = state.global_step >= state.max_steps
        save_now = (
            args.checkpointing_steps not in (None, "epoch")
            and state.global_step % int(args.checkpointing_steps) == 0
        )
        if state.global_step % args.logging_steps == 0 or at_end or save_now:
            self.log()  # also the NaN guard: it runs before every checkpoint
        if args.eval_steps and state.global_step % args.eval_steps == 0 and not at_end:
            self.stopped = not self.evaluate()
        if save_now and not at_end and not self.stopped:
            self.save_checkpoint()
        if not at_end and (self.stopped or self.stop.check(self.accelerator)):
            if self.window.micro_batches:
                self.log()
            if not save_now or self.stopped:
                self.save_checkpoint()
            self.stopped = True
        return at_end or self.early_stopped or self.stopped

    # ---- evaluation ----------------------------------------------------------------------------
    def stoppable(self, dataloader):
        """The evaluation batches, with a stop request checked before each one (on every rank at once)."""
        for batch in dataloader:
            if self.stop.check(self.accelerator):
                raise _EvaluationStopped()
            yield batch

    def evaluate(self, final: bool = False) -> bool:
        """Evaluate and record it; False when a stop request interrupted it (nothing recorded then: the
        RNG is put back and the resumed run evaluates again at the same step)."""
        args, state, task, model = self.args, self.state, self.task, self.model
        if self.main:
            self.run_folder.update_status(stage="evaluating")
        rng = _rng_state()  # starting the eval loader draws from the global RNG
        model.eval()
        try:
            metrics = task.evaluate(model, self.stoppable(self.eval_dataloader), final)
        except _EvaluationStopped:
            _set_rng_state(rng)
            state.pending_eval = True
            return False
        finally:
            model.train()
        state.pending_eval = False
        self.metrics = metrics
        model.eval()
        extra = task.on_evaluate(model, state) if task.on_evaluate else None
        model.train()
        value = metrics.get(f"eval/{task.main_metric}")
        if value is not None and _is_better(value, state.best_metric, task.main_metric):
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
            if args.load_best_model_at_end:
                save_best_model(self.accelerator, model, self.best_dir)
        else:
            state.evals_without_improvement += 1
        state.last_eval, state.last_eval_step = metrics, state.global_step
        if self.main:
            self.record_evaluation(metrics, extra)
        if args.early_stopping_patience and state.evals_without_improvement >= args.early_stopping_patience:
            self.early_stopped = True
            logger.info(
                "Early stopping: %d evaluations without improvement of eval/%s.",
                state.evals_without_improvement,
                task.main_metric,
            )
        self.window.started = time.perf_counter()
        return True

    def record_evaluation(self, metrics: dict[str, Any], extra: dict | None) -> None:
        state, events = self.state, self.events
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float | int)}
        events and events.write("eval", step=state.global_step, epoch=state.epoch, **scalars)
        if extra and events:
            events.write("sample", step=state.global_step, epoch=state.epoch, **extra)
        self.accelerator.log(scalars, step=state.global_step)
        logger.info("step %d: %s", state.global_step, ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
        self.run_folder.update_status(stage="training")

    # ---- logging -------------------------------------------------------------------------------
    def log(self) -> None:
        """One train record of the window (summed over processes), then a new window."""
        accelerator, args, state, task = self.accelerator, self.args, self.state, self.task
        loss, l1, micro_batches, n_samples, n_tokens = accelerator.reduce(
            self.window.totals(), "sum"
        ).tolist()
        mean_loss = loss / micro_batches
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the training loss became {mean_loss} near step {state.global_step}; the run stops and no "
                "checkpoint is written from here. Try a lower learning_rate, max_grad_norm 1.0, or bf16 instead of fp16."
            )
        elapsed = time.perf_counter() - self.window.started
        state.samples_seen += int(n_samples)
        state.tokens_seen += int(n_tokens)
        record = {
            "train/loss": mean_loss,
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/samples_per_s": n_samples / elapsed,
            "train/tokens_per_s": n_tokens / elapsed,
            "perf/peak_mem_gb": _peak_mem_gb(accelerator.device),
        }
        if self.grad_norm is not None:
            record["train/grad_norm"] = float(self.grad_norm)
        if args.l1_lambda:
            record["train/l1"] = l1 / micro_batches  # the penalty term added to train/loss
        if self.peak_flops and task.flops_per_token:
            record["perf/mfu"] = (
                n_tokens / elapsed * task.flops_per_token / (self.peak_flops * accelerator.num_processes)
            )
        if self.main:
            self.record_training(record, mean_loss)
        self.window = _Window(accelerator.device)

    def record_training(self, record: dict[str, float], mean_loss: float) -> None:
        state, events = self.state, self.events
        epoch = state.epoch + state.batches_in_epoch / len(self.train_dataloader)
        events and events.write("train", step=state.global_step, epoch=epoch, **record)
        self.accelerator.log(record, step=state.global_step)
        self.run_folder.update_status(
            step=state.global_step, max_steps=state.max_steps, tokens_seen=state.tokens_seen
        )
        logger.info(
            "step %d/%d: loss %.4f, lr %.3g, %.1f samples/s, %.0f tokens/s",
            state.global_step,
            state.max_steps,
            mean_loss,
            record["train/lr"],
            record["train/samples_per_s"],
            record["train/tokens_per_s"],
        )

    # ---- the end -------------------------------------------------------------------------------
    def finish(self) -> TrainResult:
        """The final evaluation (unless stopped), the best model put back where it was asked for."""
        args, state, accelerator, model = self.args, self.state, self.accelerator, self.model
        if not self.stopped and not self.evaluate(final=True):  # stopped during the final evaluation
            self.stopped = True
            self.save_checkpoint()
        elif not self.stopped and (
            args.load_best_model_at_end
            and state.best_step is not None
            and state.best_step != state.global_step
        ):
            logger.info(
                "Loading the best model (step %d, eval/%s=%.4f)",
                state.best_step,
                self.task.main_metric,
                state.best_metric,
            )
            if load_best_weights(accelerator, model, self.best_dir):
                model.eval()
                self.metrics = self.task.evaluate(model, self.eval_dataloader, True)
                model.train()
        accelerator.wait_for_everyone()
        if self.main and not self.stopped:  # a stopped run keeps its best model for the resumed attempt
            shutil.rmtree(self.best_dir, ignore_errors=True)
        return TrainResult(
            state=state,
            model=accelerator.unwrap_model(model),
            metrics=self.metrics,
            stopped=self.stopped,
            early_stopped=self.early_stopped,
            train_seconds=self.train_seconds,
        )


class _EvaluationStopped(Exception):
    """A stop request arrived between evaluation batches."""


def _rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])
