"""What every tab shares: the app's folders, the run queue, and small helpers over run folders."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from tunelab.args import EMBEDDED_ENCODER
from tunelab.hardware import Hardware, detect_hardware
from tunelab.runs import Run, list_runs
from tunelab.tasks import TASKS

from .auth import Reach
from .queue import RunQueue


class UserError(gr.Error):
    """A mistake the user can fix: said in the page, never printed as a server traceback."""

    def __init__(self, message: str, **kwargs: Any):
        super().__init__(message, print_exception=False, **kwargs)


RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt")
COLUMNS_FILE = ".columns.json"  # in the data folder: each dataset's column mapping, kept across restarts
COLUMN_FIELDS = ("text_column", "text_pair_column", "label_column")
TASK_NAMES = {t.id: t.app_name for t in TASKS.values()}
# A distilled student is a classifier like any other: Classify, the Hub and new runs take it.
SAME_MODELS = {"classification": ("classification", "distillation")}
EXPORT_MARKER = "export.json"  # tunelab.export writes it into every export folder
_ABS_PATH_RE = re.compile(r"(?<![\w.])(?:/[^\s/:'\"(),]+)+/")


@dataclass
class AppState:
    runs_dir: Path
    data_dir: Path
    queue: RunQueue
    hardware: Hardware = field(default_factory=detect_hardware)  # what "auto" plans local runs for
    current_dataset: str | None = None  # the dataset the Data tab checked last: the Train tab starts there
    step_seconds: dict[tuple, float] = field(default_factory=dict)  # measured by Estimate, per setting
    slurm_defaults: dict[str, Any] = field(default_factory=dict)  # from the targets file
    ray_defaults: dict[str, Any] = field(default_factory=dict)  # from the targets file
    reach: Reach = field(default_factory=Reach)  # what a browser may name beyond runs and data

    def allowed_model(self, spec: str) -> str:
        """A model folder or Hub id typed in a page, if this server lets a browser load it: beyond
        loopback, folders under the runs folder or a --model-dir, Hub ids with --allow-hub-models."""
        spec = (spec or "").strip()
        if spec == EMBEDDED_ENCODER:
            return spec
        path = Path(spec).expanduser()
        if path.exists() or spec.startswith(("/", ".", "~")):
            if self.reach.model_roots is None:
                return spec
            resolved = path.resolve()  # a symlink or ../ cannot lead out of the allowed folders
            if any(resolved.is_relative_to(root) for root in (self.runs_dir, *self.reach.model_roots)):
                return str(resolved)
            raise UserError(
                "This server loads models only from its runs (and the folders its admin allowed with "
                "--model-dir): pick a run instead of that folder."
            )
        if not self.reach.hub_models:
            raise UserError(
                f"This server does not load models from the Hub ({spec!r}); its admin can allow it with "
                "--allow-hub-models, or pick a run."
            )
        return spec

    # ---- runs ----------------------------------------------------------------------------------
    def run(self, run_id: str | None) -> Run:
        """The run named ``run_id`` inside the runs folder (names only: no paths, no traversal)."""
        run_id = (run_id or "").strip()
        if not run_id:
            raise UserError("Choose a run first.")
        if not RUN_ID_RE.match(run_id) or ".." in run_id:
            raise UserError("That is not a run name.")
        path = self.runs_dir / run_id
        if not (path / "status.json").exists():
            raise UserError(f"Run {run_id} does not exist (was it deleted?).")
        return Run(path)

    def runs(self) -> list[Run]:
        return list_runs(self.runs_dir)

    def run_choices(self, task: str | None = None, with_model: bool = False) -> list[str]:
        """Run ids; ``task`` keeps the runs whose model does that task (a distilled student classifies)."""
        tasks = SAME_MODELS.get(task, (task,)) if task else None
        out = []
        for run in self.runs():
            status = run.status()
            if tasks and TASK_NAMES.get(status.get("task"), status.get("task")) not in tasks:
                continue
            if with_model and not run.has_model():
                continue
            out.append(run.id)
        return out

    def model_choices(self, task: str) -> list[str]:
        """Finished runs of ``task`` and their CPU exports ("<run>/export-int8"), for Classify and Chat."""
        out = []
        for run_id in self.run_choices(task=task, with_model=True):
            out.append(run_id)
            out += [f"{run_id}/{folder.name}" for folder in exports(self.runs_dir / run_id)]
        return out

    def model_dir(self, choice: str | None) -> Path:
        """The folder of a run's final model, or of one of its exports ("<run>/<export folder>")."""
        run_id, _, export = (choice or "").strip().partition("/")
        run = self.run(run_id)
        if not export:
            return run.path
        folder = run.path / export
        if not RUN_ID_RE.match(export) or ".." in export or not (folder / EXPORT_MARKER).is_file():
            raise UserError(f"{run.id} has no export named {export!r}.")
        return folder

    def base_model(self, task: str, kind: str | None, run_id: str | None, path: str | None) -> str | None:
        """The model a new ``task`` run starts from (a distillation's teacher): the Train tab's Base model
        choice of ``kind`` (default, finished run, local folder, Hub id) with its run or path."""
        kind = kind or "default"
        if kind == "default" and task == "distillation":
            raise UserError(
                "Distillation needs a teacher: set Base model to 'finished run' and pick a classification "
                "run (or give a fine-tuned classifier's folder or Hub id)."
            )
        if kind == "default":  # the embedded MiniLM for the encoder tasks, a new GPT-2 for causal-lm
            return EMBEDDED_ENCODER if task in ("classification", "masked-lm") else None
        if kind == "finished run":
            run = self.run(run_id)
            if not run.has_model():
                raise UserError(f"Run {run.id} has no final model (it is {run.state}); pick a finished run.")
            return str(run.path)
        value = str(path or "").strip()
        if not value:
            raise UserError(f"Enter the {kind} of the base model.")
        value = self.allowed_model(value)
        if kind == "local folder":
            folder = Path(value).expanduser()
            if not (folder / "config.json").is_file():
                raise UserError("That folder holds no model (config.json is missing).")
            return str(folder.resolve())
        return value

    # ---- data ----------------------------------------------------------------------------------
    def dataset_path(self, name: str | None) -> Path:
        name = (name or "").strip()
        if not name:
            raise UserError("Choose a dataset first (Data tab: upload one or pick a sample).")
        if not RUN_ID_RE.match(name) or ".." in name or Path(name).suffix.lower() not in DATA_SUFFIXES:
            raise UserError("That is not a dataset name.")
        path = self.data_dir / name
        if not path.is_file():
            raise UserError(f"Dataset {name} is not in the data folder any more.")
        return path

    def datasets(self) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.data_dir.iterdir()
            if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and not p.name.startswith(".")
        )

    # ---- the column mapping of each dataset (what the Data tab's check found or was told) -------
    def columns_of(self, name: str | None) -> dict[str, str]:
        """{"text_column", "text_pair_column", "label_column"} remembered for a dataset ("" when none)."""
        import json

        try:
            saved = json.loads((self.data_dir / COLUMNS_FILE).read_text()).get(name or "", {})
        except (OSError, ValueError, AttributeError):
            saved = {}
        return {key: str(saved.get(key) or "") for key in COLUMN_FIELDS}

    def dataset_stats(self, name: str | None) -> dict[str, Any]:
        """{"rows", "token_lengths"} of a checked dataset (a sample of its texts' token counts)."""
        import json

        try:
            saved = json.loads((self.data_dir / COLUMNS_FILE).read_text()).get(name or "", {})
        except (OSError, ValueError, AttributeError):
            saved = {}
        return {"rows": saved.get("rows"), "token_lengths": saved.get("token_lengths") or []}

    def remember_columns(
        self,
        name: str,
        text: str | None,
        pair: str | None,
        label: str | None,
        rows: int | None = None,
        token_lengths: list[int] | None = None,
    ) -> None:
        import json

        from tunelab.runs import write_json_atomic

        path = self.data_dir / COLUMNS_FILE
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        entry = dict(zip(COLUMN_FIELDS, (text or "", pair or "", label or ""), strict=True))
        saved[name] = {**entry, "rows": rows, "token_lengths": token_lengths or []}
        write_json_atomic(path, saved)
        self.current_dataset = name


def exports(run_dir: Path) -> list[Path]:
    """The export folders (tunelab export) inside a run folder, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if (p / EXPORT_MARKER).is_file()]
    return sorted(found, key=lambda p: (p / EXPORT_MARKER).stat().st_mtime)


# The recipes' messages name their flags; in the app the same choice is a field of the Data tab.
APP_FIELDS = {
    "--text_pair_column": "the Text pair column field",
    "--text_column": "the Text column field",
    "--label_column": "the Label column field",
    "(text_pair_column)": "(Text pair column)",
    "(text_column)": "(Text column)",
    "(label_column)": "(Label column)",
}


def number(value: Any, field: str, kind: type = float) -> Any:
    """A number typed in a page (or sent to the API) as ``kind``; a short error naming the field
    otherwise (text, a list, nan, inf)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{field}: expected a number, got {str(value)[:40]!r}.") from None
    if not math.isfinite(out):
        raise UserError(f"{field}: expected a finite number, got {value!r}.")
    if kind is int:
        return int(out)
    return out


def clean_message(message: str) -> str:
    """A user-facing message without folder paths (file names stay) and without tokens."""
    from tunelab.hub import redact

    text = _ABS_PATH_RE.sub("", str(message))
    return redact(text).strip()


def user_message(message: str) -> str:
    """A data or recipe error as the app says it: cleaned, and naming the app's fields, not CLI flags."""
    text = clean_message(message)
    for flag, field_name in APP_FIELDS.items():
        text = text.replace(flag, field_name)
    return text


def run_progress(run: Run, status: dict[str, Any] | None = None) -> tuple[float, str]:
    """(fraction done, "ETA ..." text) from status step/max_steps and the pace of recent train events."""
    status = status or run.status()
    step, max_steps = status.get("step") or 0, status.get("max_steps") or 0
    state = status.get("state")
    if state == "finished":
        return 1.0, "done"
    if not max_steps:
        return 0.0, ""
    fraction = min(step / max_steps, 1.0)
    if state != "running":
        return fraction, ""
    events = [e for e in run.events("train") if "step" in e and "time" in e][-20:]
    if len(events) >= 2 and events[-1]["step"] > events[0]["step"]:
        pace = (events[-1]["time"] - events[0]["time"]) / (events[-1]["step"] - events[0]["step"])
        left = max(max_steps - step, 0) * pace
        return fraction, f"ETA {format_seconds(left)}"
    return fraction, "ETA: measuring"


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {(seconds % 3600) // 60:02d}m"


def failure_advice(reason: str | None) -> str:
    """What to try for the usual ways a run fails."""
    text = (reason or "").lower()
    if "out of memory" in text:
        return (
            "Lower the batch size (raise gradient accumulation to keep the effective batch), lower "
            "max length / block size, or use bf16."
        )
    if "nan" in text or "non-finite" in text or "inf" in text.split():
        return "Lower the learning rate, add warmup, or train in fp32 (precision: no)."
    if any(word in text for word in ("column", "line ", "label", "file", "row", "utf-8", "json")):
        return "Fix the data (the Data tab shows the same report), then start a new run."
    if "unexpectedly" in text:
        return (
            "The training process disappeared (killed, out of memory for the whole machine, or the app "
            "host restarted). Resume from the last checkpoint if one exists."
        )
    if "disk" in text:
        return "Free disk space (delete old runs) and resume."
    if "stopped" in text or "queue" in text:
        return "Resume continues from the last checkpoint."
    return "Read the log below; fix the setting it names and start again."


def age(stamp: float | None) -> str:
    if not stamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
