"""Prepare, start, watch, stop, resume and reap runs: the one lifecycle every caller uses.

A run is prepared once (config.yaml, launch.json, command.txt, status "queued") and then started on its
target: a process group on this machine, a Slurm job (``slurm``) or a Ray job (``ray_jobs``); launch.json
records which. Starting a run that has a checkpoint
of its own continues it (``--resume_from_checkpoint latest``), so "resume" is "queue it again"; the
command is planned again from config.yaml and launch.json every time, never read back from command.txt.

Stopping writes the run's stop file: every rank of the recipe polls it, saves a checkpoint and exits 0.
After ``STOP_GRACE_S`` a run still alive is killed (its last complete checkpoint stays usable).
"""

from __future__ import annotations

import abc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TuneLabError
from ..hardware import Hardware, detect_hardware
from ..runs import ACTIVE_STATES, PROCESS_LOG, Run, new_run_id
from ..tasks import Task, get_task
from .command import LaunchCommand, Resources, accelerate_command
from .process import RUN_ID_ENV, ProcessRef, boot_id, hostname, is_alive, kill_run, start_time

STOP_GRACE_S = 60.0  # from the stop request to SIGKILL (or scancel): one value for every caller
TARGETS = ("local", "slurm", "ray")
ATTEMPT_ENV = "TUNELAB_ATTEMPT_START"  # a stop file older than this belongs to an earlier attempt
# Quiet, unbuffered output for a run's log; the user's Hub token never reaches a training process.
RUN_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TUNELAB_TOKEN", "TUNELAB_AUTH")


class LaunchError(TuneLabError):
    """A run cannot be started, stopped or resumed as asked."""


# ---- preparing ------------------------------------------------------------------------------------


def resolve_config(task: Task, config: dict[str, Any]) -> dict[str, Any]:
    """The recipe's own parsing of ``config``: every default filled in, wrong keys and values refused."""
    from ..args import parse_config, to_config

    return to_config(*parse_config(task.argument_types(), config))


def plan(
    task: str | Task,
    config: dict[str, Any],
    resources: Resources | None = None,
    target: str = "local",
    target_options: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    runs_dir: Path | None = None,
    cwd: Path | None = None,
    hardware: Hardware | None = None,
) -> tuple[Run, dict[str, Any], dict[str, Any], str]:
    """(run, resolved config, launch record, command text) of a run, nothing written: the app's preview,
    ``tunelab train --dry-run`` and ``prepare_run`` all see the same plan. ``hardware``: plan for
    other hardware than this machine's (a local run started here is always planned for this one)."""
    task = task if isinstance(task, Task) else get_task(task)
    if target not in TARGETS:
        raise ConfigError(f"target {target!r} is not known; choose one of: {', '.join(TARGETS)}")
    if run_dir is None:
        from ..args import default_runs_dir

        run_dir = Path(runs_dir or default_runs_dir()) / new_run_id(task.id)
    run = Run(Path(run_dir))
    config = resolve_config(task, {**config, "output_dir": str(run.path)})
    record: dict[str, Any] = {
        "task": task.id,
        "target": target,
        "resources": (resources or Resources()).to_dict(),
        "cwd": str(Path(cwd or os.getcwd()).resolve()),
        "python": sys.executable,
    }
    if target == "slurm":
        from . import slurm

        record["slurm"] = slurm.clean_options(target_options)
    elif target == "ray":
        from . import ray_jobs

        record["ray"] = ray_jobs.clean_options(target_options)
    elif target_options:
        raise ConfigError(f"{', '.join(sorted(target_options))}: cluster options need a cluster target")
    return run, config, record, planned_command_text(run, record, config, hardware)


def prepare_run(
    task: str | Task,
    config: dict[str, Any],
    resources: Resources | None = None,
    target: str = "local",
    target_options: dict[str, Any] | None = None,
    runs_dir: Path | None = None,
    run_dir: Path | None = None,
    cwd: Path | None = None,
    status: dict[str, Any] | None = None,
) -> Run:
    """Write a new run folder in state "queued": resolved config.yaml, launch.json and command.txt."""
    run, config, record, command = plan(
        task, config, resources, target, target_options, run_dir, runs_dir, cwd
    )
    if target == "slurm":  # what sbatch would refuse is said before the run folder exists
        from . import slurm

        slurm.validate(command, record["slurm"], run_environment(run))
        command = slurm.submit_text(run)
    elif target == "ray":  # a cluster that does not answer is said before the run folder exists
        from . import ray_jobs

        ray_jobs.check(record["ray"])
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    run.write_launch_record(record)
    run.write_command(command)
    run.update_status(state="queued", task=record["task"], stage="queued", target=target, **(status or {}))
    return run


def planned_command_text(
    run: Run, record: dict[str, Any], config: dict[str, Any] | None = None, hardware: Hardware | None = None
) -> str:
    """What command.txt says: the command a user pastes to run it again (from the recorded cwd); for a
    Slurm run, the batch script (command.txt then says how to submit it); for a Ray run, its job as
    ``ray job submit`` sends it."""
    if record.get("target") == "ray":
        from . import ray_jobs

        config = run.config() if config is None else config
        return ray_jobs.submit_text(run, record, config, job_environment(run))
    if record.get("target") == "slurm":
        from . import slurm

        return slurm.job_script(run, record, run.config() if config is None else config, job_environment(run))
    return local_command(run, record, hardware, config).text()


def recipe_args(run: Run, record: dict[str, Any], resume: bool) -> list[str]:
    """The recipe's arguments: the run's config.yaml, and continuing from its checkpoint when asked."""
    from .command import shown_path

    args = ["--config", shown_path(run.path / "config.yaml", Path(record["cwd"]))]
    return [*args, "--resume_from_checkpoint", "latest"] if resume else args


def local_command(
    run: Run, record: dict[str, Any], hardware: Hardware | None = None, config: dict[str, Any] | None = None
) -> LaunchCommand:
    """The `accelerate launch` command of a local run on this machine (or on ``hardware``)."""
    task = get_task(record["task"])
    config = run.config() if config is None else config
    return accelerate_command(
        task.recipe_path(),
        recipe_args(run, record, resume=bool(run.checkpoints())),
        Resources.from_dict(record.get("resources")),
        hardware or detect_hardware(),
        config.get("mixed_precision") or "auto",
        cwd=Path(record["cwd"]),
    )


# ---- starting -------------------------------------------------------------------------------------


def job_environment(run: Run) -> dict[str, str]:
    """What a run's processes get on top of the environment they inherit."""
    return {**RUN_ENV, RUN_ID_ENV: run.id}


def run_environment(run: Run, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    return {**env, **RUN_ENV, **(extra or {}), RUN_ID_ENV: run.id, ATTEMPT_ENV: f"{time.time():.3f}"}


def start(run: Run, startable: tuple[str, ...] = ("queued",)) -> subprocess.Popen | None:
    """Start (or continue, when it has a checkpoint) a prepared run as a process group of this machine.

    The Popen is returned so the caller can wait for and reap it; None when the run was not in one of
    ``startable`` (someone else started it). The state changes to "running" under the run's lock, so a
    fast failure of the recipe is never overwritten."""
    record = run.launch_record()
    if not record:
        raise LaunchError(f"run {run.id} has no launch.json; it was not prepared by TuneLab")
    if record.get("target", "local") not in TARGETS:
        raise LaunchError(f"run {run.id} is for the target {record['target']!r}, which this TuneLab lacks")
    if record.get("target") == "slurm":
        return start_slurm(run, record, startable)
    if record.get("target") == "ray":
        return start_ray(run, record, startable)
    return start_local(run, record, startable)


def start_slurm(run: Run, record: dict[str, Any], startable: tuple[str, ...]) -> SlurmJob | None:
    """Submit the run's batch script (written again from config.yaml and launch.json)."""
    from . import slurm

    run.clear_stop_request()
    with run.status_lock() as txn:
        if txn.status.get("state") not in startable:
            return None
        script = slurm.job_script(run, record, run.config(), job_environment(run))
        try:
            job_id = slurm.submit(run, script, run_environment(run))
        except slurm.SlurmError as e:
            txn.update(state="failed", stage="failed", reason=str(e))
            raise
        txn.update(
            stage="queued",
            slurm={"job_id": job_id, "state": "PENDING", "reason": None},
            attempts=(txn.status.get("attempts") or 0) + 1,
        )
    with open(run.path / PROCESS_LOG, "ab") as log:
        log.write(f"\n$ {slurm.submit_text(run)}  # Slurm job {job_id}\n".encode())
    return SlurmJob(run, job_id)


class ClusterJob(abc.ABC):
    """A submitted run's job on a cluster, with the part of Popen's interface callers use (poll, wait),
    and ``cancel``."""

    kind = "cluster"
    ended = "cancelled"  # what cancel does, in the cluster's words

    def __init__(self, run: Run, job_id: str):
        self.run, self.job_id, self.args = run, job_id, [self.kind, job_id]

    def __str__(self) -> str:
        return f"{self.kind} job {self.job_id}"

    @abc.abstractmethod
    def cancel(self) -> None:
        """End the job at once (its last complete checkpoint is kept)."""

    @abc.abstractmethod
    def poll(self) -> int | None:
        """None while the job is queued or running, else 0 when it succeeded and 1 when not."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int:
        """Until the job has ended (``subprocess.TimeoutExpired`` after ``timeout``); ``poll``'s code."""


def cluster_job(run: Run) -> ClusterJob | None:
    """The run's current job on its cluster; None for a local run or one not submitted yet."""
    status = run.status()
    kinds = {"slurm": SlurmJob, "ray": RayJob}
    target = status.get("target")
    job_id = (status.get(target) or {}).get("job_id") if target in kinds else None
    return kinds[target](run, str(job_id)) if job_id else None


class SlurmJob(ClusterJob):
    kind = "Slurm"

    def cancel(self) -> None:
        from . import slurm

        slurm.cancel(self.job_id)

    def poll(self) -> int | None:
        from . import slurm

        state, _ = slurm.job_state(self.job_id)
        return None if slurm.in_queue(state) else (0 if state == "COMPLETED" else 1)

    def wait(self, timeout: float | None = None) -> int:
        from . import slurm

        try:
            slurm.wait_for_job(self.run, timeout)
        except TimeoutError as e:
            raise subprocess.TimeoutExpired(self.args, timeout or 0, output=str(e)) from e
        return self.poll() or 0


def start_ray(run: Run, record: dict[str, Any], startable: tuple[str, ...]) -> RayJob | None:
    """Submit the run's job to the Ray cluster (planned again from config.yaml and launch.json)."""
    from . import ray_jobs

    run.clear_stop_request()
    with run.status_lock() as txn:
        if txn.status.get("state") not in startable:
            return None
        attempt = (txn.status.get("attempts") or 0) + 1
        env = {**job_environment(run), ATTEMPT_ENV: f"{time.time():.3f}"}
        try:
            job_id = ray_jobs.submit(run, record, run.config(), env, attempt)
        except ray_jobs.RayTargetError as e:
            txn.update(state="failed", stage="failed", reason=str(e))
            raise
        address = record["ray"]["address"]
        txn.update(
            stage="queued", ray={"job_id": job_id, "address": address, "state": "PENDING"}, attempts=attempt
        )
    with open(run.path / PROCESS_LOG, "ab") as log:
        log.write(f"\n$ ray job submit --address {address} ...  # Ray job {job_id}\n".encode())
    return RayJob(run, job_id)


class RayJob(ClusterJob):
    kind = "Ray"
    ended = "stopped"

    def cancel(self) -> None:
        from . import ray_jobs

        ray_jobs.stop_job((self.run.status().get("ray") or {}).get("address"), self.job_id)

    def poll(self) -> int | None:
        from . import ray_jobs

        state, _ = ray_jobs.job_state((self.run.status().get("ray") or {}).get("address"), self.job_id)
        return None if ray_jobs.in_queue(state) else (0 if state == "SUCCEEDED" else 1)

    def wait(self, timeout: float | None = None) -> int:
        from . import ray_jobs

        try:
            state = ray_jobs.wait_for_job(self.run, timeout)
        except TimeoutError as e:
            raise subprocess.TimeoutExpired(self.args, timeout or 0, output=str(e)) from e
        return 0 if state == "SUCCEEDED" else 1


def start_local(run: Run, record: dict[str, Any], startable: tuple[str, ...]) -> subprocess.Popen | None:
    command = local_command(run, record)
    env = run_environment(run, command.env)
    run.clear_stop_request()  # a request of an earlier attempt
    with run.status_lock() as txn:
        if txn.status.get("state") not in startable:
            return None
        with open(run.path / PROCESS_LOG, "ab") as log:
            log.write(f"\n$ {command.text()}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    command.executable(record.get("python")),
                    cwd=record["cwd"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own group: Stop signals the run, never its caller
                )
            except OSError as e:
                txn.update(state="failed", stage="failed", reason=f"could not start the recipe: {e.strerror}")
                return None
        ref = ProcessRef(proc.pid, proc.pid, start_time(proc.pid), boot_id(), hostname())
        txn.update(
            state="running",
            stage="starting",
            process=ref.to_dict(),
            attempts=(txn.status.get("attempts") or 0) + 1,
        )
    return proc


def wait(
    run: Run, proc: subprocess.Popen, poll_s: float = 0.3, timeout: float | None = None
) -> dict[str, Any]:
    """Wait for a local run's whole process group (the launcher can end before the recipe has written
    its ending), then settle its status. ``timeout``: seconds before ``subprocess.TimeoutExpired``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    proc.wait(timeout)
    if isinstance(proc, ClusterJob):
        return refresh(run)
    ref = ProcessRef.from_dict(run.status().get("process"))
    while is_alive(ref, run.id):
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(poll_s)
    return refresh(run)


# ---- watching -------------------------------------------------------------------------------------


def refresh(run: Run) -> dict[str, Any]:
    """status.json, settled against the run's real processes: a run that says it runs but whose
    processes are gone is marked failed ("stopped" when a stop had been asked for)."""
    status = run.status()
    if status.get("target") == "slurm":
        return _refresh_slurm(run, status)
    if status.get("target") == "ray":
        from . import ray_jobs

        job = status.get("ray") or {}
        # Until Ray says the job ended (the recipe may have written its own ending first).
        if not job.get("job_id") or not ray_jobs.in_queue(job.get("state") or ""):
            return status
        with run.status_lock() as txn:
            return ray_jobs.settle(run, txn)
    if status.get("state") != "running":
        return status
    with run.status_lock() as txn:
        status = txn.status
        if status.get("state") != "running":
            return status
        alive = is_alive(ProcessRef.from_dict(status.get("process")), run.id)
        if alive is None or alive:
            return status
        if run.stop_request():
            return txn.update(
                state="stopped", stage="stopped", reason="stopped by request (killed after the grace period)"
            )
        return txn.update(state="failed", stage="failed", reason=vanished_reason(run))


def _refresh_slurm(run: Run, status: dict[str, Any]) -> dict[str, Any]:
    """A Slurm run's status against its job: pending (with Slurm's reason), running, requeued after a
    preemption, or ended without the recipe's ending (failed, with Slurm's state)."""
    from . import slurm

    job = status.get("slurm") or {}
    if not job.get("job_id"):
        return status
    # A run that stopped on Slurm's signal (not the user's) runs again if Slurm requeued its job.
    maybe_requeued = (
        status.get("state") == "stopped"
        and not slurm.user_stop(run)
        and slurm.in_queue(job.get("state") or "")
    )
    if status.get("state") not in ("queued", "running") and not maybe_requeued:
        return status
    with run.status_lock() as txn:
        return slurm.settle(run, txn)


def describe_job(status: dict[str, Any]) -> str:
    """'Slurm job 12 pending (Resources)', 'Ray job tunelab-...-1 running': a cluster run's job for lists
    and the app; '' for a local run."""
    if status.get("target") == "ray":
        from . import ray_jobs

        return ray_jobs.describe(status)
    from . import slurm

    return slurm.describe(status)


def last_error_line(run: Run) -> str:
    """The last line of the run's process.log that names an error ('' when none)."""
    try:
        lines = (run.path / PROCESS_LOG).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return next((ln.strip()[:300] for ln in reversed(lines) if "error" in ln.lower() and ln.strip()), "")


def vanished_reason(run: Run) -> str:
    """Why a run whose processes are gone never wrote its ending: the launcher's last error line, if any."""
    last = last_error_line(run)
    return "its process ended unexpectedly" + (f": {last}" if last else " (killed, or the machine restarted)")


def is_active(run: Run) -> bool:
    return refresh(run).get("state") in ACTIVE_STATES


def is_local_and_running_here(run: Run) -> bool:
    """A run that holds one of this machine's training slots."""
    status = refresh(run)
    if (status.get("target") or "local") != "local":
        return False
    ref = ProcessRef.from_dict(status.get("process"))
    return status.get("state") == "running" and (ref is None or ref.on_this_machine())


# ---- stopping and resuming ------------------------------------------------------------------------


def stop(
    run: Run, grace: float = STOP_GRACE_S, block: bool = True, reason: str = "stopped by request"
) -> str:
    """Ask the run to checkpoint and exit; after ``grace`` seconds it is killed. Returns what happened
    (``block=False``: what is happening; the kill, if needed, comes from a background thread)."""
    status = refresh(run)
    state = status.get("state")
    job = cluster_job(run)
    if state == "queued" and job:  # pending in the cluster's queue
        job.cancel()
    if state == "queued":
        run.update_status(
            expect=("queued",), state="stopped", stage="stopped", reason="removed from the queue"
        )
        return "removed from the queue"
    if state not in ACTIVE_STATES:
        raise LaunchError(f"run {run.id} is not running (it is {state or 'unknown'})")
    run.request_stop(reason)
    run.update_status(expect=ACTIVE_STATES, stage="stopping")
    if not block:
        threading.Thread(target=_kill_after, args=(run, grace), daemon=True).start()
        return "stopping: the run saves a checkpoint and exits"
    return _kill_after(run, grace)


def _kill_after(run: Run, grace: float) -> str:
    job = cluster_job(run)
    if job:
        return _cancel_after(run, job, grace)
    deadline = time.monotonic() + grace
    ref = ProcessRef.from_dict(run.status().get("process"))
    while is_alive(ref, run.id) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = kill_run(ref, run.id)
    if killed:
        while is_alive(ref, run.id):
            time.sleep(0.1)
    status = refresh(run)
    if killed:
        return f"killed after {grace:.0f} s without stopping (its last checkpoint is kept)"
    return f"{status.get('state')}: {status.get('reason') or 'done'}"


def _cancel_after(run: Run, job: ClusterJob, grace: float) -> str:
    """A stopping cluster run: its ranks saw the stop file; its job is cancelled (Slurm's scancel, Ray's
    stop_job) if still there after grace."""
    try:
        job.wait(grace)
        cancelled = False
    except subprocess.TimeoutExpired:
        job.cancel()
        job.wait(STOP_GRACE_S)
        cancelled = True
    status = refresh(run)
    if cancelled:
        return f"{job} {job.ended} after {grace:.0f} s without stopping (its last checkpoint is kept)"
    return f"{status.get('state')}: {status.get('reason') or 'done'}"


def resume(run: Run) -> Run:
    """Queue a stopped or failed run again in its folder; started, it continues from its checkpoint."""
    status = refresh(run)
    if status.get("state") in ACTIVE_STATES:
        raise LaunchError(f"run {run.id} is still {status.get('state')}; nothing to resume")
    if status.get("state") == "finished":
        raise LaunchError(f"run {run.id} is finished; nothing to resume (continue or fork it instead)")
    if not run.launch_record():
        adopt(run)
    run.clear_stop_request()
    run.update_status(
        state="queued",
        stage="queued",
        reason=None,
        queued_at=time.time(),
        slurm=None,  # a Slurm or Ray run gets a new job when it starts
        ray=None,
    )
    return run


def adopt(run: Run) -> None:
    """Give a run folder from an older TuneLab (no launch.json) a launch record from what it has."""
    task = status_task = run.status().get("task")
    if not task:
        raise LaunchError(f"run {run.id} does not say which recipe made it; it cannot be resumed")
    run.write_launch_record(
        {
            "task": get_task(status_task).id,
            "target": "local",
            "resources": {},
            "cwd": str(Path.cwd().resolve()),
            "python": sys.executable,
        }
    )
