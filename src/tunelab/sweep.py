"""Hyperparameter sweeps: Optuna over a recipe's arguments, every trial an ordinary run folder.

A sweep has its own folder beside the runs (it has no status.json, so it is not a run)::

    runs/<sweep-id>/
      sweep.json        task, base config, space, metric, direction, seed, and one entry per trial:
                        {"number", "run", "params", "state": running|complete|pruned|failed|interrupted,
                         "value", "intermediate": {step: value}, "reason", "started", "ended"}; "best"
      study.db          the Optuna study (SQLite): `tunelab sweep ... --resume SWEEP` continues it
      results.csv       one row per trial (also results.md, a markdown table)
      best_config.yaml  the base config with the best trial's parameters, ready for
                        `accelerate launch recipes/<recipe>.py --config best_config.yaml`

Each trial is launched as a real recipe subprocess (the caller supplies the launcher: the CLI uses the
same command as `tunelab train`) into ``runs/<run-id>/``, so it shows in `tunelab runs list` and the app;
its status.json carries ``"sweep": <sweep-id>`` and ``"trial": <number>``. Intermediate values are the
trial's ``eval/<metric>`` events; a trial the pruner gives up on gets SIGTERM (the recipe saves a
checkpoint and ends "stopped") and is recorded "pruned". The final value is ``eval/<metric>`` of the
finished run's status.json (the evaluation of the model the run saved).

The search space (SPACE.yaml) maps recipe arguments to distributions::

    learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}
    weight_decay: {type: float, low: 0.0, high: 0.1, step: 0.01}
    num_warmup_steps: {type: int, low: 0, high: 100, step: 10}
    per_device_train_batch_size: {type: categorical, choices: [8, 16, 32]}
    lr_scheduler_type: [linear, cosine]            # a plain list is a categorical
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import json
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .launch import STOP_GRACE_S, is_active, wait
from .runs import PROCESS_LOG, Run, new_run_id, write_json_atomic
from .tasks import TASKS

logger = logging.getLogger("tunelab")

SWEEP_FILE = "sweep.json"
STUDY_FILE = "study.db"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
BEST_CONFIG = "best_config.yaml"
SPACE_TYPES = ("float", "int", "categorical")
# Arguments a sweep sets itself or that make no sense to search (every trial needs its own folder).
NOT_SEARCHABLE = ("output_dir", "resume_from_checkpoint", "run_name")
LOWER_IS_BETTER = ("loss", "perplexity")
DEFAULT_METRIC = {t.id: t.main_metric for t in TASKS.values()}
TRIAL_STATES = ("running", "complete", "pruned", "failed", "interrupted")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
FAILING_START = 3  # a sweep whose first trials all fail with one reason stops there
POLL_S = 0.5

# (params, run folder, status fields) -> the prepared run and its started process (tunelab.launch).
Launcher = Callable[[dict[str, Any], Path, dict[str, Any]], tuple[Run, subprocess.Popen | None]]


# ---- the search space ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched argument: a float or int range, or a list of choices."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def edge_values(self) -> list[Any]:
        """Values worth checking against the recipe's own validation before any trial runs."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def spec(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _number(value: Any, where: str, integer: bool) -> float | int:
    # YAML 1.1 reads `1e-5` (no dot) as a string; a search space is written that way all the time.
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if integer:
        if number != int(number):
            raise ConfigError(f"{where} must be a whole number for type int, got {value!r}")
        return int(number)
    return number


def parse_dimension(name: str, spec: Any, source: str) -> Dimension:
    """One entry of SPACE.yaml as a Dimension (a plain list is a categorical)."""
    where = f"{source}: {name}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where} must be a mapping like {{type: float, low: 1e-5, high: 1e-3, log: true}} "
            "or a list of choices"
        )
    kind = spec.get("type")
    if kind not in SPACE_TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(SPACE_TYPES)}, got {kind!r}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: unknown option {extra[0]!r} for type {kind} (options: {', '.join(sorted(allowed))})"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool)):
                raise ConfigError(f"{where}: choices must be strings, numbers or booleans, got {choice!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value")
        return Dimension(name, kind, choices=tuple(choices))
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}: type {kind} needs low and high")
    integer = kind == "int"
    low = _number(spec["low"], f"{where}.low", integer)
    high = _number(spec["high"], f"{where}.high", integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log must be true or false, got {log!r}")
    step = _number(spec["step"], f"{where}.step", integer) if spec.get("step") is not None else None
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low}")
    if step is not None and (step <= 0 or (log and kind == "float")):
        raise ConfigError(f"{where}.step must be > 0 and cannot be combined with log for a float")
    if log and step not in (None, 1):
        raise ConfigError(f"{where}: an int range with log: true takes no step")
    return Dimension(name, kind, low=low, high=high, log=log, step=step)


def load_space(source: Path | str | dict[str, Any], arg_types: Iterable[type]) -> dict[str, Dimension]:
    """Read and check a search space: every key must be an argument of ``arg_types`` (the recipe's
    dataclasses), every distribution well formed. Raises ConfigError naming the key."""
    if isinstance(source, dict):
        values, where = source, "space"
    else:
        where = str(source)
        try:
            values = yaml.safe_load(Path(source).read_text())
        except FileNotFoundError:
            raise ConfigError(f"search space {source} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"search space {source} is not valid YAML: {e}") from None
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"{where} must map recipe arguments to distributions (see tunelab sweep --help)")
    known = [f.name for t in arg_types for f in dataclasses.fields(t)]
    space = {}
    for name, spec in values.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(f"{where}: unknown key {name!r}: not an argument of this recipe.{hint}")
        if name in NOT_SEARCHABLE:
            raise ConfigError(f"{where}: {name} cannot be searched (the sweep sets it for each trial)")
        space[name] = parse_dimension(name, spec, where)
    return space


def check_space_values(space: dict[str, Dimension], check: Callable[[dict[str, Any]], Any]) -> None:
    """Run each range end and each choice through ``check`` (the recipe's argument parsing), so a value the
    recipe refuses (warmup_ratio 1.5, an unknown scheduler) fails now rather than in trial 7."""
    for dim in space.values():
        for value in dim.edge_values():
            try:
                check({dim.name: value})
            except ConfigError as e:
                raise ConfigError(
                    f"search space: {dim.name}={value!r} is refused by the recipe: {e}"
                ) from None


def param_args(params: dict[str, Any]) -> list[str]:
    """Trial parameters as recipe flags (``--learning_rate 0.0003``)."""
    out: list[str] = []
    for key, value in params.items():
        out += [f"--{key}", repr(value) if isinstance(value, float) else str(value)]
    return out


def direction_of(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER or metric.endswith("loss") else "maximize"


# ---- the sweep folder -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """A sweep folder on disk; sweep.json is rewritten atomically after every change."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def record(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / SWEEP_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def save(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / SWEEP_FILE, record)

    def trials(self) -> list[dict[str, Any]]:
        return self.record().get("trials", [])

    def space(self) -> dict[str, Dimension]:
        return {k: parse_dimension(k, v, SWEEP_FILE) for k, v in self.record().get("space", {}).items()}

    def storage(self) -> str:
        return f"sqlite:///{(self.path / STUDY_FILE).resolve()}"


def new_sweep_id(task: str) -> str:
    return new_run_id(f"sweep-{task}")


def create_sweep(
    runs_dir: Path,
    name: str | None,
    *,
    task: str,
    config: str | None,
    recipe_args: list[str],
    space: dict[str, Dimension],
    metric: str,
    direction: str,
    n_trials: int,
    seed: int = 0,
    prune: bool = True,
    launch: dict[str, Any] | None = None,
) -> Sweep:
    """A new sweep folder with its sweep.json (an existing sweep is never overwritten)."""
    name = name or new_sweep_id(task)
    if not NAME_RE.match(name):
        raise ConfigError(f"sweep name {name!r}: use letters, digits, '.', '_' and '-' only")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be maximize or minimize, got {direction!r}")
    if n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    sweep = Sweep(runs_dir / name)
    if sweep.path.exists():
        raise ConfigError(
            f"{sweep.path} already exists: choose another --name, or continue it with --resume {name}"
        )
    sweep.save(
        {
            "id": name,
            "task": task,
            "config": config,
            "recipe_args": list(recipe_args),
            "space": {k: d.spec() for k, d in space.items()},
            "metric": metric,
            "direction": direction,
            "n_trials": n_trials,
            "seed": seed,
            "prune": prune,
            "launch": launch or {},
            "created": time.time(),
            "trials": [],
            "best": None,
        }
    )
    return sweep


def open_sweep(spec: str, runs_dir: Path) -> Sweep:
    """A sweep by folder path or by id in the runs folder."""
    for path in (Path(spec).expanduser(), runs_dir / spec):
        if (path / SWEEP_FILE).is_file():
            return Sweep(path)
    raise ConfigError(
        f"no sweep {spec!r} (looked for {Path(spec) / SWEEP_FILE} and {runs_dir / spec / SWEEP_FILE})"
    )


def list_sweeps(runs_dir: Path) -> list[Sweep]:
    """Sweeps in a runs folder, newest first."""
    if not runs_dir.is_dir():
        return []
    sweeps = [Sweep(p) for p in runs_dir.iterdir() if (p / SWEEP_FILE).is_file()]
    return sorted(sweeps, key=lambda s: s.record().get("created") or 0, reverse=True)


# ---- running trials -------------------------------------------------------------------------------


def stop_trial(run: Run, grace: float = STOP_GRACE_S) -> None:
    """Stop the trial's run like `tunelab runs stop` (it saves a checkpoint); killed after ``grace``."""
    from .launch import LaunchError, stop

    with contextlib.suppress(LaunchError):  # it ended meanwhile
        stop(run, grace=grace)


class SweepRunner:
    """Asks Optuna for parameters, runs each trial as a recipe subprocess, reports its evaluations,
    prunes it when Optuna says so, and records everything in sweep.json."""

    def __init__(self, sweep: Sweep, launch: Launcher, say: Callable[[str], None] = logger.info):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own one line per trial
        self.sweep, self.launch, self.say = sweep, launch, say
        self.stop_requested = False  # set from a signal handler; checked between polls (see request_stop)
        record = sweep.record()
        self.runs_dir = sweep.path.parent
        self.space = sweep.space()
        self.metric, self.direction = record["metric"], record["direction"]
        self.study = optuna.create_study(
            study_name=sweep.id,
            storage=sweep.storage(),
            load_if_exists=True,
            direction=record["direction"],
            pruner=(
                optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                if record.get("prune", True)
                else optuna.pruners.NopPruner()
            ),
        )
        # Seeded, and shifted by the trials already there: a resumed sweep does not replay its first draws.
        startup = min(10, max(2, record["n_trials"] // 2))
        self.study.sampler = optuna.samplers.TPESampler(
            seed=record.get("seed", 0) + len(self.study.trials), n_startup_trials=startup
        )

    def request_stop(self) -> None:
        """Stop the running trial (with its checkpoint) and end the sweep as interrupted. Safe in a signal
        handler: it only sets a flag, where raising there could land inside a library's cleanup."""
        self.stop_requested = True

    # ---- sweep.json -------------------------------------------------------------------------------
    def _update_trial(self, number: int, **fields: Any) -> None:
        record = self.sweep.record()
        trials = record.setdefault("trials", [])
        entry = next((t for t in trials if t["number"] == number), None)
        if entry is None:
            entry = {"number": number}
            trials.append(entry)
        entry.update(fields)
        record["best"] = best_trial(record)
        self.sweep.save(record)

    def finished_count(self) -> int:
        return sum(t.get("state") in ("complete", "pruned", "failed") for t in self.sweep.trials())

    def recover_interrupted(self) -> None:
        """Trials left "running" by a sweep that was killed: stop their runs if still alive, mark them."""
        from optuna.trial import TrialState

        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(frozen.number, state=TrialState.FAIL)
        for entry in self.sweep.trials():
            if entry.get("state") != "running":
                continue
            run = Run(self.runs_dir / entry["run"]) if entry.get("run") else None
            if run and is_active(run):
                self.say(f"trial {entry['number']}: its run {run.id} is still going; stopping it")
                stop_trial(run)
            if run and run.status().get("state") in ("running", "queued", None):
                run.update_status(state="stopped", stage="stopped", reason="its sweep was interrupted")
            self._update_trial(
                entry["number"], state="interrupted", reason="the sweep was interrupted", ended=time.time()
            )

    # ---- one trial --------------------------------------------------------------------------------
    def run(self, n_trials: int) -> dict[str, Any] | None:
        """Run trials until ``n_trials`` have ended (complete, pruned or failed); return the best."""
        self.recover_interrupted()
        while self.finished_count() < n_trials:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.run_trial()
            self.check_not_all_failing()
        return best_trial(self.sweep.record())

    def check_not_all_failing(self) -> None:
        """Stop when the first trials all fail the same way (a missing train_file fails every trial)."""
        ended = [t for t in self.sweep.trials() if t.get("state") in ("complete", "pruned", "failed")]
        reasons = {t.get("reason") if t["state"] == "failed" else None for t in ended}
        if len(ended) == FAILING_START and len(reasons) == 1 and None not in reasons:
            raise ConfigError(
                f"the first {FAILING_START} trials all failed the same way: {reasons.pop()} "
                f"(fix it, then continue with --resume {self.sweep.id})"
            )

    def run_trial(self) -> dict[str, Any]:
        from optuna.trial import TrialState

        trial = self.study.ask()
        params = {name: dim.suggest(trial) for name, dim in self.space.items()}
        run = Run(self.runs_dir / new_run_id(self.sweep.record()["task"]))
        number = trial.number
        self._update_trial(number, run=run.id, params=params, state="running", started=time.time())
        self.say(f"trial {number}: {run.id} " + " ".join(f"{k}={_short(v)}" for k, v in params.items()))
        # The app groups the trials of a sweep by these fields (and never starts a sweep's run itself).
        status = {"sweep": self.sweep.id, "trial": number, "source": "sweep"}
        try:
            run, proc = self.launch(params, run.path, status)
        except ConfigError as e:
            run.update_status(state="failed", stage="failed", reason=str(e), **status)
            self.study.tell(trial, state=TrialState.FAIL)
            self._update_trial(number, state="failed", reason=str(e), ended=time.time())
            self.say(f"trial {number}: failed: {e}")
            return self.entry(number)
        if proc is None:
            raise ConfigError(
                f"trial {number}: its run {run.id} could not start ({run.status().get('reason')})"
            )
        try:
            pruned_at = self._watch(trial, run, proc)
        except KeyboardInterrupt:
            self.say(f"trial {number}: interrupted; stopping {run.id} (it saves a checkpoint)")
            stop_trial(run)
            if run.status().get("state") == "running":  # stopped before the recipe could say so itself
                run.update_status(state="stopped", stage="stopped", reason="its sweep was interrupted")
            self.study.tell(trial, state=TrialState.FAIL)
            self._update_trial(
                number, state="interrupted", reason="the sweep was interrupted", ended=time.time()
            )
            raise
        return self._conclude(trial, run, pruned_at)

    def _watch(self, trial, run: Run, proc: subprocess.Popen) -> int | None:
        """Report eval/<metric> events as they appear; stop the run when the pruner says so."""
        reported: dict[int, float] = {}
        while True:
            if self.stop_requested:
                raise KeyboardInterrupt
            done = proc.poll() is not None
            for event in run.events("eval"):
                step, value = event.get("step"), event.get(f"eval/{self.metric}")
                if not isinstance(step, int) or not isinstance(value, (int, float)) or step in reported:
                    continue
                reported[step] = float(value)
                trial.report(float(value), step)
                self._update_trial(trial.number, intermediate={str(k): v for k, v in reported.items()})
                if trial.should_prune():
                    self.say(
                        f"trial {trial.number}: pruned at step {step} (eval/{self.metric} {value:.4g} is "
                        "worse than the median of earlier trials); stopping it"
                    )
                    stop_trial(run)
                    return step
            if done:
                wait(run, proc)
                return None
            time.sleep(POLL_S)

    def _conclude(self, trial, run: Run, pruned_at: int | None) -> dict[str, Any]:
        from optuna.trial import TrialState

        status = run.status()
        state = status.get("state")
        value = (status.get("metrics") or {}).get(f"eval/{self.metric}")
        if state == "finished" and isinstance(value, (int, float)):
            # Also when the pruner spoke at the final evaluation: the run ended before the signal mattered.
            self.study.tell(trial, float(value))
            self._update_trial(trial.number, state="complete", value=float(value), ended=time.time())
            self.say(f"trial {trial.number}: complete, eval/{self.metric} {value:.4g}")
        elif state == "finished":
            found = ", ".join(sorted(status.get("metrics") or {})) or "none"
            self.study.tell(trial, state=TrialState.FAIL)
            reason = f"the run has no eval/{self.metric} in its final metrics (it has: {found})"
            self._update_trial(trial.number, state="failed", reason=reason, ended=time.time())
            raise ConfigError(f"--metric {self.metric}: {reason}; choose one of those")
        elif pruned_at is not None:
            frozen = self.study.tell(trial, state=TrialState.PRUNED)
            reason = f"pruned by sweep {self.sweep.id} at step {pruned_at}"
            if state in ("running", "stopped", None):
                run.update_status(state="stopped", stage="stopped", reason=reason, pruned=True)
            self._update_trial(
                trial.number, state="pruned", value=frozen.value, reason=reason, ended=time.time()
            )
        else:
            reason = status.get("reason") or f"the run ended as {state or 'unknown'}"
            if state in ("running", None):
                run.update_status(state="failed", stage="failed", reason="its process ended without a status")
                reason = f"its process ended without a status (see {run.path / PROCESS_LOG})"
            self.study.tell(trial, state=TrialState.FAIL)
            self._update_trial(trial.number, state="failed", reason=reason, ended=time.time())
            self.say(f"trial {trial.number}: failed: {reason}")
        return self.entry(trial.number)

    def entry(self, number: int) -> dict[str, Any]:
        return next(t for t in self.sweep.trials() if t["number"] == number)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_trial(record: dict[str, Any]) -> dict[str, Any] | None:
    """The complete trial with the best value (the first of equals), as stored in sweep.json."""
    complete = [
        t for t in record.get("trials", []) if t.get("state") == "complete" and t.get("value") is not None
    ]
    if not complete:
        return None
    if record.get("direction") == "maximize":
        best = max(complete, key=lambda t: (t["value"], -t["number"]))
    else:
        best = min(complete, key=lambda t: (t["value"], t["number"]))
    return {k: best.get(k) for k in ("number", "run", "value", "params")}


# ---- results --------------------------------------------------------------------------------------


def results_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial: trial, run, state, <metric>, each parameter, minutes, reason."""
    record = sweep.record()
    metric = record.get("metric", "value")
    names = list(record.get("space", {}))
    best = (record.get("best") or {}).get("number")
    rows = []
    for t in sorted(record.get("trials", []), key=lambda t: t["number"]):
        took = (t.get("ended") or 0) - (t.get("started") or 0) if t.get("ended") else None
        rows.append(
            {
                "trial": t["number"],
                "best": "*" if t["number"] == best else "",
                "run": t.get("run", ""),
                "state": t.get("state", ""),
                metric: t.get("value"),
                **{n: (t.get("params") or {}).get(n) for n in names},
                "seconds": round(took, 1) if took is not None else None,
                "reason": t.get("reason") or "",
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_results(sweep: Sweep) -> list[dict[str, Any]]:
    """results.csv, results.md and best_config.yaml in the sweep folder; returns the rows."""
    rows = results_rows(sweep)
    if not rows:
        return rows
    columns = list(rows[0])
    with (sweep.path / RESULTS_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]).replace("|", "\\|") for c in columns) + " |" for r in rows]
    (sweep.path / RESULTS_MD).write_text("\n".join(lines) + "\n")
    write_best_config(sweep)
    return rows


def write_best_config(sweep: Sweep) -> Path | None:
    """The base config (its YAML file and the sweep's extra flags) with the best trial's parameters."""
    record = sweep.record()
    best = record.get("best")
    if not best:
        return None
    config: dict[str, Any] = {}
    if record.get("config"):
        config.update(yaml.safe_load(Path(record["config"]).read_text()) or {})
    # Extra flags of the sweep command, with the types the recipe gave them (from the trial's config.yaml).
    run_config = Run(sweep.path.parent / best["run"]).config()
    for token in record.get("recipe_args", []):
        key = token[2:].split("=", 1)[0] if token.startswith("--") else None
        if key and key in run_config:
            config[key] = run_config[key]
    config.update(best["params"])
    for key in NOT_SEARCHABLE:
        config.pop(key, None)
    recipe = (record.get("launch") or {}).get("recipe") or "recipes/<recipe>.py"
    header = (
        f"# Best trial {best['number']} of sweep {sweep.id} (run {best['run']}): "
        f"eval/{record['metric']} = {best['value']:.6g}\n"
        f"#   accelerate launch {recipe} --config {sweep.path / BEST_CONFIG}\n"
    )
    path = sweep.path / BEST_CONFIG
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path
