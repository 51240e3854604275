"""Launching recipe subprocesses from the app, with a bounded queue kept in the run folders.

The app never imports a recipe. It writes ``config.yaml``, ``command.txt`` and ``status.json``
(state "queued") into a new run folder, and a scheduler thread starts queued runs as
``accelerate launch ...`` subprocesses, each in its own process group (``start_new_session=True``),
while fewer than ``max_concurrent`` are running. Everything lives on disk, so the queue survives an
app restart: queued runs found in the runs folder are picked up, and a run whose processes are gone
while its status still says "running" is marked failed ("process ended unexpectedly").
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunelab.runs import Run, group_alive, list_runs, new_run_id

logger = logging.getLogger(__name__)

RECIPES = {
    "classification": "bert_cls.py",
    "causal-lm": "gpt2_clm.py",
    "masked-lm": "bert_mlm.py",
    "distillation": "distill_cls.py",
}
# The task's name in status.json, also the run id's prefix (as the recipes name their runs).
STATUS_TASK = {"classification": "cls", "causal-lm": "clm", "masked-lm": "mlm", "distillation": "distill"}
PROCESS_LOG = "process.log"
STOP_GRACE_S = 30.0
MAX_QUEUED = 20  # the queue is bounded: more waiting runs than this are refused


class QueueFullError(RuntimeError):
    pass


def launch_argv(recipe: Path, config_path: Path, num_processes: int, mixed_precision: str) -> list[str]:
    """The user-facing `accelerate launch` command (see ENV_NOTES: --multi_gpu + ACCELERATE_USE_CPU on CPU)."""
    argv = ["accelerate", "launch"]
    if num_processes > 1:
        argv += [
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "--num_machines",
            "1",
            "--main_process_port",
            "0",
        ]
    else:
        argv += ["--num_processes", "1", "--num_machines", "1"]
    argv += [
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        "no",
        str(recipe),
        "--config",
        str(config_path),
    ]
    return argv


def command_text(argv: list[str], cpu: bool = True) -> str:
    return ("ACCELERATE_USE_CPU=1 " if cpu else "") + shlex.join(argv)


def parse_command(command: str) -> tuple[dict[str, str], list[str]]:
    """Split command.txt into leading VAR=value assignments and the argv."""
    tokens = shlex.split(command)
    env: dict[str, str] = {}
    while (
        tokens
        and "=" in tokens[0]
        and not tokens[0].startswith("-")
        and tokens[0].split("=")[0].isidentifier()
    ):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    return env, tokens


def executable_argv(argv: list[str]) -> list[str]:
    """`accelerate launch` through this interpreter, so the app's venv is used even off PATH."""
    if argv[:2] == ["accelerate", "launch"]:
        return [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
    if argv and argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


class RunQueue:
    """Queued runs on disk, at most ``max_concurrent`` running; a daemon thread does the scheduling."""

    def __init__(
        self,
        runs_dir: Path,
        recipes_dir: Path,
        max_concurrent: int = 1,
        cwd: Path | None = None,
        poll_s: float = 1.0,
    ):
        self.runs_dir = Path(runs_dir).resolve()
        self.recipes_dir = Path(recipes_dir).resolve()
        self.max_concurrent = max(1, int(max_concurrent))
        self.cwd = Path(cwd or self.recipes_dir.parent)
        self.poll_s = poll_s
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tunelab-queue", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop scheduling (running trainings go on; a restarted app finds them in the runs folder)."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must outlive one bad run folder
                logger.exception("queue tick failed")
            self._stop.wait(self.poll_s)

    # ---- building runs -------------------------------------------------------------------------
    def recipe_path(self, task: str) -> Path:
        return self.recipes_dir / RECIPES[task]

    def plan(
        self,
        task: str,
        config: dict[str, Any],
        num_processes: int = 1,
        mixed_precision: str = "no",
        run_id: str | None = None,
    ) -> tuple[Path, dict[str, Any], str]:
        """(run folder, config with output_dir, command text) of a run not yet written."""
        run_dir = self.runs_dir / (run_id or new_run_id(STATUS_TASK[task]))
        config = {**config, "output_dir": str(run_dir)}
        argv = launch_argv(self.display_recipe(task), run_dir / "config.yaml", num_processes, mixed_precision)
        return run_dir, config, command_text(argv)

    def display_recipe(self, task: str) -> Path:
        path = self.recipe_path(task)
        try:
            return path.relative_to(self.cwd)
        except ValueError:
            return path

    def submit(
        self,
        task: str,
        config: dict[str, Any],
        num_processes: int = 1,
        mixed_precision: str = "no",
        run_id: str | None = None,
        origin: str | None = None,
        after: str | None = None,
    ) -> Run:
        """Write the run folder with state "queued"; the scheduler launches it when a slot is free.
        ``after``: the id of a run that must finish first (e.g. the domain adaptation a classification
        run starts from); if that run fails or is stopped, this one fails without starting."""
        if task not in RECIPES:
            raise ValueError(f"unknown task {task!r}")
        if not self.recipe_path(task).exists():
            raise FileNotFoundError(f"the recipe {RECIPES[task]} is not installed")
        with self._lock:
            if len(self.queued()) >= MAX_QUEUED:
                raise QueueFullError(f"{MAX_QUEUED} runs are already waiting; stop or delete some first")
            run_dir, config, command = self.plan(task, config, num_processes, mixed_precision, run_id)
            run = Run(run_dir)
            run.write_config(config)
            run.write_command(command)
            fields: dict[str, Any] = {
                "state": "queued",
                "task": STATUS_TASK[task],
                "stage": "queued",
                "created": time.time(),
                "source": "app",
            }
            if origin:
                fields["origin"] = origin
            if after:
                fields["after"] = after
            run.update_status(**fields)
        self.start()
        return run

    # ---- scheduling ----------------------------------------------------------------------------
    def queued(self) -> list[Run]:
        return [r for r in list_runs(self.runs_dir) if r.state == "queued"]

    def running(self) -> list[Run]:
        return [r for r in list_runs(self.runs_dir) if r.state == "running"]

    def tick(self) -> None:
        """Reap finished processes, mark vanished runs, start queued runs while slots are free."""
        with self._lock:
            for run_id, proc in list(self._procs.items()):
                if proc.poll() is not None and not group_alive(proc.pid):
                    del self._procs[run_id]
            for run in self.running():
                self.reconcile(run)
            free = self.max_concurrent - len(self.running())
            ready = [r for r in self.queued() if self.dependency_ready(r)]
            for run in sorted(ready, key=lambda r: r.status().get("created") or 0)[: max(free, 0)]:
                self._launch(run)

    def dependency_ready(self, run: Run) -> bool:
        """True when the run waits for no other run; a run whose prerequisite ended without finishing
        is marked failed here (it would otherwise start from a model that does not exist)."""
        after = run.status().get("after")
        if not after:
            return True
        before = Run(self.runs_dir / after)
        state = before.state if (before.path / "status.json").exists() else "missing"
        if state == "finished":
            return True
        if state in ("queued", "running"):
            return False
        reason = before.status().get("reason") if state != "missing" else "its folder was deleted"
        run.update_status(
            state="failed",
            stage="failed",
            reason=f"not started: the run it starts from, {after}, is {state}"
            + (f" ({reason})" if reason else "")
            + f". Resume or re-run {after}, then run this one again.",
        )
        return False

    def reconcile(self, run: Run) -> None:
        """A run that says running but whose processes are all gone did not end by itself."""
        status = run.status()
        if status.get("state") != "running":
            return
        proc = self._procs.get(run.id)
        if proc is not None and proc.poll() is None:
            return
        if group_alive(status.get("pgid"), status.get("pid")):
            return
        status = run.status()  # the recipe may have written its final state meanwhile
        if status.get("state") != "running":
            return
        if status.get("stop_requested"):
            run.update_status(
                state="stopped", stage="stopped", reason="stopped by request (killed after the grace period)"
            )
        else:
            run.update_status(state="failed", stage="failed", reason="process ended unexpectedly")

    def _launch(self, run: Run) -> None:
        env_vars, argv = parse_command(run.command())
        if not argv:
            run.update_status(state="failed", stage="failed", reason="command.txt is missing or empty")
            return
        env = {
            **os.environ,
            **env_vars,
            "TRANSFORMERS_VERBOSITY": "error",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("HF_TOKEN", None)  # a training run never needs the user's token
        log = open(run.path / PROCESS_LOG, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n$ {run.command()}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                executable_argv(argv),
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            run.update_status(
                state="failed", stage="failed", reason=f"could not start the recipe: {e.strerror}"
            )
            return
        finally:
            log.close()
        self._procs[run.id] = proc
        run.update_status(
            state="running", stage="starting", pid=proc.pid, pgid=proc.pid, stop_requested=False
        )

    # ---- actions -------------------------------------------------------------------------------
    def stop(self, run: Run, grace_s: float = STOP_GRACE_S) -> str:
        """SIGTERM to the run's process group (it saves a checkpoint), SIGKILL to the group after grace_s."""
        with self._lock:
            status = run.status()
            if status.get("state") == "queued":
                run.update_status(state="stopped", stage="stopped", reason="removed from the queue")
                return "removed from the queue"
            if status.get("state") != "running":
                return f"not running ({status.get('state', 'unknown')})"
            pgid = status.get("pgid")
            run.update_status(stop_requested=True, stage="stopping")
        if not pgid:
            return "no process group recorded"
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            self.reconcile(run)
            return "the process had already ended"

        def kill_later() -> None:
            deadline = time.time() + grace_s
            while time.time() < deadline:
                if not group_alive(pgid):
                    return
                time.sleep(0.5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

        threading.Thread(target=kill_later, daemon=True).start()
        return "stopping: a checkpoint is being saved"

    def resume(self, run: Run) -> None:
        """Queue the run's own command again with --resume_from_checkpoint latest, into the same folder."""
        if run.state in ("queued", "running"):
            raise ValueError("the run is still active")
        if not run.checkpoints():
            raise ValueError("the run has no checkpoint to resume from")
        env_vars, argv = parse_command(run.command())
        if "--resume_from_checkpoint" in argv:
            i = argv.index("--resume_from_checkpoint")
            del argv[i : i + 2]
        argv += ["--resume_from_checkpoint", "latest"]
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env_vars.items())
        run.write_command((prefix + " " if prefix else "") + shlex.join(argv))
        run.update_status(
            state="queued",
            stage="queued",
            created=run.status().get("created") or time.time(),
            queued_at=time.time(),
            reason=None,
            stop_requested=False,
        )
        self.start()

    def delete(self, run: Run) -> None:
        if run.state == "running" and group_alive(run.status().get("pgid")):
            raise ValueError("stop the run before deleting it")
        if run.path.resolve().parent != self.runs_dir:
            raise ValueError("not a run of this app")
        shutil.rmtree(run.path)
