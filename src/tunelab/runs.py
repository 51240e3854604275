"""Run folders: the contract between recipes, the CLI and the app.

Layout of ``runs/<run-id>/``::

    config.yaml     resolved arguments (never a secret)
    launch.json     how the run is launched, written by tunelab.launch (or by a recipe started by hand):
                    {"task", "target": "local", "resources": {...}, "cwd", "python"}
                    resume plans the run again from config.yaml + launch.json, never from command.txt
    command.txt     the exact command that reproduces the run (written once, by the planner)
    status.json     {"state": queued|running|finished|failed|stopped, "task": "cls"|"clm"|...,
                     "stage": loading data|tokenizing|training|evaluating|saving|done,
                     "process": {"pid", "pgid", "start", "boot", "host"}  (who runs it),
                     "reason", "created", "started", "attempt_started", "elapsed_s", "ended",
                     "step", "max_steps", "metrics"}
                    updated under a file lock (.status.lock), written atomically (unique temp + rename);
                    "elapsed_s" sums the time of every attempt (a stopped, then resumed run included)
                    a trial of `tunelab sweep` also has "sweep": <sweep-id>, "trial": <number>,
                    "source": "sweep", and "pruned": true once the sweep stopped it (tunelab.sweep)
    stop.json       a stop request {"time", "reason"}: its own file, so no status write can
                    lose it; every rank of the recipe polls it, checkpoints and exits 0
    events.jsonl    one JSON object per line, flushed per line, written by the main process only:
                    {"time", "kind": "train"|"eval"|"sample"|"info"|"data", "step", "epoch", <metric keys>}
                    ("data": the cleaning/augmentation counts of bert_cls, without a step)
                    metric keys: train/loss train/lr train/grad_norm train/l1 train/tokens_per_s
                    train/samples_per_s eval/loss eval/accuracy eval/f1 eval/precision eval/recall
                    eval/perplexity perf/mfu perf/peak_mem_gb; "samples" (list of str) on kind=sample
    train.log       human-readable log
    process.log     the launcher's own output (stdout/stderr of `accelerate launch`)
    checkpoints/step-<N>/   accelerate save_state + trainer_state.json (atomic: temp sibling, rename)
    checkpoints/best/       the best model so far (load_best_model_at_end); kept until the run finishes
    config.json, model.safetensors, tokenizer files, README.md
                    the final model at the folder's root, so from_pretrained(run_dir) works
    eval_results.json   the final model's metrics: eval/* on validation, test/* on the test file
    test_predictions.csv   with a test file: each test row's text, gold and predicted label and every
                    label's probability (classification), in the file's order

A sweep's own folder ``runs/<sweep-id>/`` (sweep.json, no status.json) is not a run: see tunelab.sweep.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

STATES = ("queued", "running", "finished", "failed", "stopped")
ACTIVE_STATES = ("queued", "running")
ENDED_STATES = ("finished", "failed", "stopped")
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
LAUNCH_FILE = "launch.json"
STOP_FILE = "stop.json"
LOG_FILE = "train.log"
TEST_PREDICTIONS = "test_predictions.csv"
PROCESS_LOG = "process.log"
CHECKPOINTS_DIR = "checkpoints"
_LOCK_FILE = ".status.lock"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp sibling and rename it, so readers never see half a file.

    The temp name is unique per process and thread (two writers never share one). On a full disk the
    temp file cannot be written; then the file is rewritten in place, which needs no new blocks when
    it does not grow past its allocation: a run that fails for lack of space can still say so.
    """
    text = json.dumps(data, indent=2, default=str)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{os.urandom(3).hex()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno != errno.ENOSPC or not path.exists():
            raise
        with path.open("r+") as f:
            f.write(text)
            f.truncate()


class StatusTransaction:
    """status.json as read under the run's lock, and the one way to change it there."""

    def __init__(self, path: Path, status: dict[str, Any]):
        self.path, self.status = path, status

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields``; a state change stamps created/started/ended and sums the attempt's time."""
        status = self.status
        state = fields.get("state")
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown run state {state!r}")
            now = time.time()
            was_running = status.get("state") == "running"
            if state == "queued":
                fields.setdefault("created", status.get("created") or now)
            elif state == "running":
                fields.setdefault("started", status.get("started") or now)
                if not was_running:
                    fields.setdefault("attempt_started", now)
                fields.setdefault("ended", None)
                fields.setdefault("reason", None)
            else:
                fields.setdefault("ended", now)
            if was_running and state != "running" and status.get("attempt_started"):
                attempt = fields.get("ended", now) - status["attempt_started"]
                fields["elapsed_s"] = (status.get("elapsed_s") or 0.0) + max(attempt, 0.0)
                fields["attempt_started"] = None
        status.update(fields)
        write_json_atomic(self.path, status)
        return status


@dataclass(frozen=True)
class Run:
    """A run folder on disk; every read goes to the files, so many processes can share it."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / STATUS_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @contextlib.contextmanager
    def status_lock(self) -> Iterator[StatusTransaction]:
        """Read-modify-write status.json under the run's lock (recipe, app, CLI and sweep all take it).

        Not re-entrant: inside, change the status through the transaction, not ``update_status``."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / _LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield StatusTransaction(self.path / STATUS_FILE, self.status())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def update_status(self, expect: tuple[str, ...] | None = None, **fields: Any) -> dict[str, Any] | None:
        """Merge ``fields`` into status.json; timestamps follow state changes.

        ``expect``: only update when the current state is one of these (else return None), so that a
        watcher never overwrites an ending the recipe has already written."""
        with self.status_lock() as txn:
            if expect is not None and txn.status.get("state") not in expect:
                return None
            return txn.update(**fields)

    @property
    def state(self) -> str:
        return self.status().get("state", "unknown")

    def elapsed(self, status: dict[str, Any] | None = None) -> float | None:
        """Seconds spent running, over every attempt (the current one up to now)."""
        status = status if status is not None else self.status()
        total = status.get("elapsed_s")
        if status.get("state") == "running" and status.get("attempt_started"):
            total = (total or 0.0) + time.time() - status["attempt_started"]
        if total is None and status.get("started") and status.get("ended"):
            total = status["ended"] - status["started"]  # a folder written before elapsed_s existed
        return total

    # ---- stop requests -------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Ask the run to checkpoint and exit (the recipe polls this file on every rank)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / STOP_FILE, {"time": time.time(), "reason": reason})

    def stop_request(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / STOP_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def clear_stop_request(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / STOP_FILE).unlink()

    # ---- how it is launched ---------------------------------------------------------------------
    def launch_record(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / LAUNCH_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_launch_record(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / LAUNCH_FILE, record)

    # ---- config and command -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        try:
            return yaml.safe_load((self.path / CONFIG_FILE).read_text()) or {}
        except FileNotFoundError:
            return {}

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self) -> str:
        try:
            return (self.path / COMMAND_FILE).read_text().strip()
        except FileNotFoundError:
            return ""

    def write_command(self, command: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / COMMAND_FILE).write_text(command + "\n")

    # ---- events -------------------------------------------------------------------------------
    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All events, skipping a last line that is still being written."""
        try:
            lines = (self.path / EVENTS_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or event.get("kind") == kind:
                out.append(event)
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.path / LOG_FILE).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- checkpoints and model ---------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary folders of an interrupted save are ignored)."""
        return list_checkpoints(self.path / CHECKPOINTS_DIR)

    def has_model(self) -> bool:
        return (self.path / "config.json").exists() and any(
            (self.path / name).exists() for name in ("model.safetensors", "model.safetensors.index.json")
        )


class EventWriter:
    """Appends events to events.jsonl, one flushed line each (main process only)."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / EVENTS_FILE, "a", buffering=1)  # noqa: SIM115 - lives with the run

    def write(self, kind: str, **fields: Any) -> None:
        from .errors import writing

        event = {"time": round(time.time(), 3), "kind": kind, **fields}
        with writing(EVENTS_FILE, Path(self._file.name).parent):
            self._file.write(json.dumps(event, default=float) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-", 1)[1])


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    if not checkpoints_dir.is_dir():
        return []
    found = [
        p
        for p in checkpoints_dir.iterdir()
        if p.is_dir()
        and p.name.startswith("step-")
        and p.name[5:].isdigit()
        and (p / "trainer_state.json").exists()
    ]
    return sorted(found, key=checkpoint_step)


def list_runs(runs_dir: Path) -> list[Run]:
    """Runs in a folder, newest first (by creation time in status.json, else folder mtime)."""
    if not runs_dir.is_dir():
        return []
    runs = [Run(p) for p in runs_dir.iterdir() if p.is_dir() and (p / STATUS_FILE).exists()]

    def created(run: Run) -> float:
        return run.status().get("created") or run.path.stat().st_mtime

    return sorted(runs, key=created, reverse=True)


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
