"""What every recipe does around its own steps: the run folder, the log, and turning failures into a
status and a clear message (never a traceback for an error the user can fix)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from .args import TrainingArguments, default_runs_dir
from .errors import TuneLabError
from .runs import LOG_FILE, EventWriter, Run, new_run_id

logger = logging.getLogger("tunelab")


def resolve_output_dir(args: TrainingArguments, prefix: str) -> Path:
    if not args.output_dir:
        args.output_dir = str(default_runs_dir() / new_run_id(prefix))
    return Path(args.output_dir)


def reproduce_command(num_processes: int, mixed_precision: str, argv: list[str] | None = None) -> str:
    """The accelerate launch command that reproduces this process's run."""
    argv = sys.argv if argv is None else argv
    launch = ["accelerate", "launch"]
    env = ""
    if num_processes > 1:
        # Several CPU processes need this for real DDP (accelerate's launcher resets it in the workers).
        env = "" if torch.cuda.is_available() else "ACCELERATE_USE_CPU=1 "
        launch += ["--multi_gpu", "--num_processes", str(num_processes)]
    launch += ["--mixed_precision", mixed_precision]
    return env + shlex.join(
        launch + [os.path.relpath(argv[0]) if os.path.isabs(argv[0]) else argv[0], *argv[1:]]
    )


def open_run(
    output_dir: Path, task: str, config: dict, command: str, main: bool
) -> tuple[Run, EventWriter | None]:
    """Create or reopen the run folder; the main process writes config, command and status."""
    run = Run(output_dir)
    if not main:
        return run, None
    run.write_config(config)
    run.write_command(command)
    status = {
        "state": "running",
        "task": task,
        "stage": "loading data",
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
    }
    if not run.status().get("created"):
        import time

        status["created"] = time.time()
    run.update_status(**status)
    return run, EventWriter(output_dir)


def failure_reason(error: BaseException) -> str:
    if isinstance(error, TuneLabError):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return (
            "out of memory: lower per_device_train_batch_size (and raise gradient_accumulation_steps "
            "to keep the effective batch), max_length/block_size, or use bf16."
        )
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "the disk is full: free space (old runs, checkpoints) or lower save_total_limit, then resume."
    return f"crashed: {type(error).__name__}: {error}"


@contextlib.contextmanager
def guard(run: Run | None, main: bool) -> Iterator[None]:
    """Record how the run ended in status.json; user errors exit 1 with their message only."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - every ending is recorded
        reason = failure_reason(error)
        if main and run is not None:
            run.update_status(state="failed", reason=reason, stage="failed")
        known = isinstance(error, TuneLabError) or not reason.startswith("crashed")
        logger.error("%s", reason, exc_info=not known)
        if known:
            sys.exit(1)
        raise


def setup_logging(output_dir: Path, main: bool) -> None:
    """Library log to train.log (main process) and stderr; transformers' own chatter kept quiet."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.utils.logging.set_verbosity_error()
    if not main:
        datasets.utils.logging.disable_progress_bar()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(output_dir / LOG_FILE)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream.setLevel(logging.INFO if main else logging.WARNING)
    root.addHandler(stream)


def parse_or_exit(types: tuple[type, ...]) -> tuple:
    """Parse the recipe's arguments; a bad argument prints one line and exits 2."""
    from .args import parse_args

    try:
        return parse_args(types)
    except TuneLabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def start_trackers(accelerator, report_to: str, output_dir: Path, config: dict) -> None:
    """Experiment trackers (tensorboard, trackio, wandb, ...) when asked for, with the run's config."""
    if report_to != "none":
        accelerator.init_trackers(output_dir.name, config={k: v for k, v in config.items() if v is not None})


def ended_by_stop(accelerator, result, run: Run) -> bool:
    """True when SIGTERM ended training: the checkpoint is saved, the run is marked stopped."""
    if not result.stopped:
        return False
    logger.info(
        "Stopped at step %d; checkpoint saved. Resume with --resume_from_checkpoint latest.",
        result.state.global_step,
    )
    if accelerator.is_main_process:
        run.update_status(state="stopped", stage="stopped", reason="stopped by request (SIGTERM)")
    accelerator.end_training()
    return True
