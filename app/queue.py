"""The app's run queue: runs written to disk as "queued", started by a scheduler thread.

Every run goes through ``tunelab.launch``, like the CLI's: ``submit`` prepares the run folder
(config.yaml, launch.json, command.txt, status "queued"), and the scheduler starts runs while fewer
than ``max_concurrent`` of this machine's runs are running; Slurm runs are submitted at once (the cluster
schedules them). Everything lives on disk, so the queue survives an app restart: a
run still running after the app was killed is found by its recorded process (pid, start time, boot id
and its marker), queued runs are started when a slot frees up, and a run whose processes are gone
while its status says "running" is marked failed with the reason its log gives.

The scheduler only starts the queued runs that are the app's to start (``"queue": "app"`` in their
status); ``tunelab train`` and sweeps start their own runs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tunelab import launch
from tunelab.errors import TuneLabError
from tunelab.hardware import Hardware
from tunelab.launch import Resources
from tunelab.runs import ACTIVE_STATES, Run, list_runs

logger = logging.getLogger(__name__)

MAX_QUEUED = 20  # the queue is bounded: more waiting runs than this are refused
QUEUE = "app"  # status["queue"] of the runs this scheduler starts


class QueueFullError(RuntimeError):
    pass


class RunQueue:
    """Queued runs on disk, at most ``max_concurrent`` running here and ``max_queued`` waiting; a daemon
    thread does the scheduling."""

    def __init__(
        self,
        runs_dir: Path,
        max_concurrent: int = 1,
        cwd: Path | None = None,
        poll_s: float = 1.0,
        max_queued: int = MAX_QUEUED,
    ):
        self.runs_dir = Path(runs_dir).resolve()
        self.max_concurrent = max(1, int(max_concurrent))
        self.max_queued = max(1, int(max_queued))
        self.cwd = Path(cwd or Path.cwd())
        self.poll_s = poll_s
        self._procs: dict[str, subprocess.Popen] = {}  # children of this app, reaped in tick()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    # ---- the scheduler thread ------------------------------------------------------------------
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
    def plan(
        self,
        task: str,
        config: dict[str, Any],
        resources: Resources | None = None,
        run_id: str | None = None,
        hardware: Hardware | None = None,
        target: str = "local",
        target_options: dict[str, Any] | None = None,
    ) -> tuple[Path, dict[str, Any], str]:
        """(run folder, resolved config, command) of a run not yet written: what ``submit`` would write
        (on ``hardware``, by default this machine's)."""
        run, config, _, command = launch.plan(
            task,
            config,
            resources,
            target,
            target_options,
            run_dir=self.runs_dir / run_id if run_id else None,
            runs_dir=self.runs_dir,
            cwd=self.cwd,
            hardware=hardware,
        )
        return run.path, config, command

    def submit(
        self,
        task: str,
        config: dict[str, Any],
        resources: Resources | None = None,
        origin: str | None = None,
        after: str | None = None,
        target: str = "local",
        target_options: dict[str, Any] | None = None,
    ) -> Run:
        """Write the run folder with state "queued"; it starts when a slot is free. ``after``: the id of a run that must finish first (e.g. the domain adaptation a
        classification run starts from); if that run fails or is stopped, this one fails without starting."""
        with self._lock:
            if len(self.queued()) >= self.max_queued:
                waiting = f"{self.max_queued} runs are" if self.max_queued > 1 else "1 run is"
                raise QueueFullError(
                    f"The queue is full: {waiting} already waiting. Stop or delete a waiting run, or let one "
                    "start, then submit this one again."
                )
            status: dict[str, Any] = {"source": "app", "queue": QUEUE, "created": time.time()}
            status.update({k: v for k, v in (("origin", origin), ("after", after)) if v})
            run = launch.prepare_run(
                task,
                config,
                resources,
                target,
                target_options,
                runs_dir=self.runs_dir,
                cwd=self.cwd,
                status=status,
            )
        self.start()
        return run

    # ---- scheduling ----------------------------------------------------------------------------
    def queued(self) -> list[Run]:
        return [r for r in list_runs(self.runs_dir) if r.state == "queued"]

    def running(self) -> list[Run]:
        return [r for r in list_runs(self.runs_dir) if r.state == "running"]

    def tick(self) -> None:
        """Reap ended children, settle every active run against its processes or cluster job, and start
        the app's queued runs while this machine has free slots."""
        with self._lock:
            for run_id, proc in list(self._procs.items()):
                if proc.poll() is not None:  # reaped: no zombie is left behind
                    del self._procs[run_id]
            active = [r for r in list_runs(self.runs_dir) if r.state in ACTIVE_STATES]
            busy = sum(launch.is_local_and_running_here(r) for r in active)
            waiting = []
            for run in active:
                status = run.status()
                if status.get("state") != "queued" or status.get("queue") != QUEUE:
                    continue
                target = status.get("target") or "local"
                if target != "local":  # the cluster schedules it: submitted at once
                    if not (status.get(target) or {}).get("job_id") and self.dependency_ready(run):
                        self._start(run)
                    continue
                if self.dependency_ready(run):
                    waiting.append(run)
            waiting.sort(key=lambda r: r.status().get("queued_at") or r.status().get("created") or 0)
            for run in waiting[: max(self.max_concurrent - busy, 0)]:
                self._start(run)

    def _start(self, run: Run) -> None:
        try:
            proc = launch.start(run)
        except TuneLabError as e:  # e.g. sbatch refused it: the run says why
            run.update_status(expect=ACTIVE_STATES, state="failed", stage="failed", reason=str(e))
            return
        if isinstance(proc, subprocess.Popen):  # a cluster's job is not this app's child
            self._procs[run.id] = proc

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
        if state in ACTIVE_STATES:
            return False
        reason = before.status().get("reason") if state != "missing" else "its folder was deleted"
        run.update_status(
            expect=("queued",),
            state="failed",
            stage="failed",
            reason=f"not started: the run it starts from, {after}, is {state}"
            + (f" ({reason})" if reason else "")
            + f". Resume or re-run {after}, then run this one again.",
        )
        return False

    # ---- actions -------------------------------------------------------------------------------
    def stop(self, run: Run) -> str:
        """Ask the run to save a checkpoint and exit (it is killed after the grace period); never blocks."""
        try:
            return launch.stop(run, block=False)
        except launch.LaunchError as e:
            return str(e)

    def resume(self, run: Run) -> None:
        """Queue a stopped or failed run again in its folder; it continues from its last checkpoint."""
        with self._lock:
            launch.resume(run)
            run.update_status(queue=QUEUE)
        self.start()

    def delete(self, run: Run) -> None:
        status = launch.refresh(run)
        if status.get("state") == "running":
            raise ValueError("stop the run before deleting it")
        if run.path.resolve().parent != self.runs_dir:
            raise ValueError("not a run of this app")
        shutil.rmtree(run.path)
