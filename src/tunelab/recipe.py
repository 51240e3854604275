"""What every recipe does around its own steps: the run folder, the log, and turning failures into a
status and a clear message (never a traceback for an error the user can fix)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .args import TrainingArguments, default_runs_dir
from .checkpoints import model_bytes
from .errors import TuneLabError, is_disk_full, writing
from .hub import write_model_card
from .launch.process import RUN_ID_ENV, ProcessRef, hostname
from .models import base_model_hub_id
from .runs import LOG_FILE, EventWriter, Run, new_run_id
from .stopping import StopControl, StopRequested

logger = logging.getLogger("tunelab")


def resolve_output_dir(args: TrainingArguments, prefix: str) -> Path:
    if not args.output_dir:
        args.output_dir = str(default_runs_dir() / new_run_id(prefix))
    return Path(args.output_dir)


def launched_by_tunelab(run: Run) -> bool:
    """True when tunelab.launch started this process for this run (it wrote launch.json and command.txt)."""
    return os.environ.get(RUN_ID_ENV) == run.id and bool(run.launch_record())


def open_run(output_dir: Path, task: str, config: dict, accelerator) -> tuple[Run, EventWriter | None]:
    """Create or reopen the run folder and listen for stop requests (every rank).

    A run started by tunelab.launch already has its config, launch record and command; a recipe started by
    hand (``accelerate launch recipes/...``) records them here, from what it observes, so the run can be
    resumed and repeated like any other. The main process sets the status to running."""
    run = Run(output_dir)
    StopControl.install(output_dir)
    if not accelerator.is_main_process:
        return run, None
    status = {"state": "running", "task": task, "stage": "loading data", "host": hostname()}
    if not launched_by_tunelab(run):
        from .launch.command import Resources
        from .launch.lifecycle import planned_command_text

        run.write_config(config)
        record = {
            "task": task,
            "target": "local",
            "resources": Resources(
                device="cuda" if accelerator.device.type == "cuda" else "cpu",
                num_processes=accelerator.num_processes,
            ).to_dict(),
            "cwd": str(Path.cwd().resolve()),
            "python": sys.executable,
        }
        run.write_launch_record(record)
        run.write_command(planned_command_text(run, record))
        status["process"] = ProcessRef.of(os.getpid()).to_dict()
        status["target"] = "local"
    with run.status_lock() as txn:
        if not launched_by_tunelab(run):  # else lifecycle.start counted the attempt
            status["attempts"] = (txn.status.get("attempts") or 0) + 1
        txn.update(**status)
    return run, EventWriter(output_dir)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def failure_reason(error: BaseException) -> str:
    if isinstance(error, TuneLabError):
        return str(error)
    chain = list(_causes(error))
    if is_disk_full(error):
        return "disk full: free space (old runs, checkpoints) or lower save_total_limit, and resume"
    if any(isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower() for e in chain):
        return (
            "out of memory: lower per_device_train_batch_size (and raise gradient_accumulation_steps "
            "to keep the effective batch), max_length/block_size, or use bf16."
        )
    return f"crashed: {type(error).__name__}: {error}"


@contextlib.contextmanager
def saving(run: Run, model: torch.nn.Module) -> Iterator[None]:
    """Stage "saving" while the final model and its report are written; a full disk there is one line."""
    run.update_status(stage="saving")
    with writing("the final model", run.path, model_bytes(model)):
        yield


def record_stop(run: Run) -> None:
    """The ending of a run that stopped on request: "stopped", with the request's reason."""
    run.update_status(state="stopped", stage="stopped", reason=StopControl.install(run.path).reason)


@contextlib.contextmanager
def guard(run: Run | None, main: bool) -> Iterator[None]:
    """Record how the run ended in status.json; user errors exit 1 with their message only. A stop that
    arrives before training began ends the run "stopped" (exit 0): there is nothing to save yet."""
    try:
        yield
    except StopRequested:
        logger.info("Stopped before training began; nothing to save.")
        if main and run is not None:
            record_stop(run)
        sys.exit(0)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - every ending is recorded
        reason = failure_reason(error)
        if main and run is not None:
            with contextlib.suppress(OSError):  # a disk too full even for status.json: the log still says it
                run.update_status(state="failed", reason=reason, stage="failed")
        known = isinstance(error, TuneLabError) or not reason.startswith("crashed")
        logger.error("%s", reason, exc_info=not known)
        if known:
            sys.exit(1)
        raise


def ours_or_warnings(record: logging.LogRecord) -> bool:
    """What a run's log shows: TuneLab's and Accelerate's information, and every library's warnings (not
    the information other libraries log where a host such as a Ray worker turns it on)."""
    return record.levelno >= logging.WARNING or record.name.split(".")[0] in (
        "tunelab",
        "accelerate",
        "__main__",
    )


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
        handler.addFilter(ours_or_warnings)
        root.addHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream.addFilter(ours_or_warnings)
    stream.setLevel(logging.INFO if main else logging.WARNING)
    root.addHandler(stream)


def parse_or_exit(types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse the recipe's arguments (``argv``, default: the command line); a bad argument prints one line
    and exits 2."""
    from .args import parse_args

    try:
        return parse_args(types, argv)
    except TuneLabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def start_trackers(accelerator, report_to: str, output_dir: Path, config: dict) -> None:
    """Experiment trackers (tensorboard, trackio, wandb, ...) when asked for, with the run's config."""
    if report_to != "none":
        accelerator.init_trackers(output_dir.name, config={k: v for k, v in config.items() if v is not None})


def ended_by_stop(accelerator, result, run: Run) -> bool:
    """True when a stop request ended training: the checkpoint is saved and the ending recorded."""
    if not result.stopped:
        return False
    logger.info(
        "Stopped at step %d; checkpoint saved. Resume with --resume_from_checkpoint latest.",
        result.state.global_step,
    )
    if accelerator.is_main_process:
        record_stop(run)
    accelerator.end_training()
    return True


@dataclass
class RunReport:
    """What a finished run says beside its model: eval_results.json and the model card (README.md)."""

    pipeline_tag: str  # text-classification | text-generation | fill-mask
    base_model: str | None  # where the weights came from (None: from scratch)
    validation_source: str  # "10% of train.csv", "valid.csv", ...
    data_summary: dict[str, str]  # the card's data section
    results: dict[str, Any] = field(default_factory=dict)  # the recipe's own entries of eval_results.json
    seen: str | None = None  # what training went through ("12,288 tokens"); default: the samples
    curve_note: str = ""  # the end of the card's training summary ("; final validation perplexity 3.2")
    extra_sections: dict[str, str] | None = None


DATA_KEYS = ("train_file", "validation_file", "test_file", "unlabeled_file")  # data, not hyperparameters


def write_report(output_dir: Path, result, config: dict[str, Any], command: str, report: RunReport) -> None:
    """eval_results.json (the final metrics at the top level, as the Trainer writes them) and the card."""
    state = result.state
    results = {
        "validation": report.validation_source,
        **result.metrics,
        "train_seconds": result.train_seconds,
        "global_step": state.global_step,
        **report.results,
    }
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    best = (
        f"; best eval score {state.best_metric:.4f} at step {state.best_step}"
        if state.best_metric is not None
        else ""
    )
    seen = report.seen or f"{state.samples_seen:,} samples"
    train_file = config["train_file"]
    write_model_card(
        output_dir,
        task=report.pipeline_tag,
        base_model=base_model_hub_id(report.base_model) if report.base_model else None,
        datasets=[train_file] if not Path(train_file).exists() else None,
        metrics={k: v for k, v in result.metrics.items() if k.startswith(("eval/", "test/")) and _number(v)},
        hyperparameters={k: v for k, v in config.items() if k not in DATA_KEYS and v is not None},
        data_summary=report.data_summary,
        command=command,
        curve_summary=(
            f"{state.global_step} optimizer steps, {seen}, {result.train_seconds:.0f} s of training"
            f"{best}{report.curve_note}."
        ),
        extra_sections=report.extra_sections,
    )


def finish_run(
    accelerator,
    run: Run,
    result,
    config: dict[str, Any],
    save_model: Callable[[Path], object],
    report: Callable[[], RunReport],
    test: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """The ending every recipe shares. A run that a stop request ended records it (its checkpoint is
    saved). Otherwise every process scores the test set when there is one (``test``: test/* metrics, and
    its predictions file), then the main process saves the final model at the folder's root (``save_model``, so
    from_pretrained(run folder) works), writes eval_results.json and the model card from ``report()``
    (a full disk there is one line naming what it wrote and the space the model needs), logs the final
    evaluation and marks the run finished. Every process ends the trackers."""
    if ended_by_stop(accelerator, result, run):
        return
    if test is not None:  # every process: the test batches are shared out like the validation ones
        if accelerator.is_main_process:
            run.update_status(stage="testing")
        result.metrics.update(test())
        scores = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("test/") and _number(v)}
        logger.info("Test set: %s", json.dumps(scores))
    if accelerator.is_main_process:
        with saving(run, result.model):
            save_model(run.path)
            write_report(run.path, result, config, run.command(), report())
        final = {k: v for k, v in result.metrics.items() if k.startswith(("eval/", "test/")) and _number(v)}
        logger.info("Final: %s", json.dumps({k: round(v, 4) for k, v in final.items()}))
        run.update_status(state="finished", stage="done", metrics=final)
    accelerator.end_training()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
