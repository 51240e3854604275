"""Run folders: the contract between recipes, the CLI and the app.

Layout of ``runs/<run-id>/``::

    config.yaml     resolved arguments (never a secret)
    command.txt     the exact command that reproduces the run
    status.json     {"state": queued|running|finished|failed|stopped, "task": "cls"|"clm"|...,
                     "stage": loading data|tokenizing|training|evaluating|saving|done,
                     "pid", "pgid", "reason", "created", "started", "ended",
                     "step", "max_steps"}   (written atomically: temp file + rename)
                    a trial of `tunelab sweep` also has "sweep": <sweep-id>, "trial": <number>,
                    "source": "sweep", and "pruned": true once the sweep stopped it (tunelab.sweep)
    events.jsonl    one JSON object per line, flushed per line, written by the main process only:
                    {"time", "kind": "train"|"eval"|"sample"|"info"|"data", "step", "epoch", <metric keys>}
                    ("data": the cleaning/augmentation counts of bert_cls, without a step)
                    metric keys: train/loss train/lr train/grad_norm train/l1 train/tokens_per_s
                    train/samples_per_s eval/loss eval/accuracy eval/f1 eval/precision eval/recall
                    eval/perplexity perf/mfu perf/peak_mem_gb; "samples" (list of str) on kind=sample
    train.log       human-readable log
    checkpoints/step-<N>/   accelerate save_state + trainer_state.json (atomic: temp sibling, rename)
    config.json, model.safetensors, tokenizer files, README.md
                    the final model at the folder's root, so from_pretrained(run_dir) works

A sweep's own folder ``runs/<sweep-id>/`` (sweep.json, no status.json) is not a run: see tunelab.sweep.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

STATES = ("queued", "running", "finished", "failed", "stopped")
ACTIVE_STATES = ("queued", "running")
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp sibling and rename it, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


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

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into status.json; timestamps are added on state changes."""
        status = self.status()
        state = fields.get("state")
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown run state {state!r}")
            stamp = {"queued": "created", "running": "started"}.get(state, "ended")
            fields.setdefault(stamp, time.time())
            if state == "running":
                fields.setdefault("ended", None)
                fields.setdefault("reason", None)
        status.update(fields)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / STATUS_FILE, status)
        return status

    @property
    def state(self) -> str:
        return self.status().get("state", "unknown")

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
        event = {"time": round(time.time(), 3), "kind": kind, **fields}
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


def group_alive(pgid: int | None, pid: int | None = None) -> bool:
    """True while a live process of the group ``pgid``, or the process ``pid``, exists (zombies, whose
    exit nobody has collected yet, count as gone where /proc tells them apart)."""
    if pgid is None and pid is None:
        return False
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():  # no /proc: signal 0 tells whether it exists
        try:
            os.killpg(pgid, 0) if pgid is not None else os.kill(pid, 0)  # type: ignore[arg-type]
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z" and (int(fields[2]) == pgid or int(entry.name) == pid):
            return True
    return False
