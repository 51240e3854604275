"""Runs on a Ray cluster, through the Ray Jobs API (what ``ray job submit`` uses).

A run's job runs ``tunelab.launch.ray_driver`` on the cluster, in the run's recorded working directory
with the recorded interpreter; the driver starts the recipe's workers with Ray Train (one per node, or
one per GPU). As for Slurm, the run folder must be on a filesystem every node shares and the nodes must
have the same Python environment; the driver refuses a run folder its node cannot write, in one line.

The job's output goes to its Ray logs (``ray job logs``, the dashboard) and to the run's process.log.
It always passes ``--resume_from_checkpoint latest`` (a fresh start when the run has no checkpoint), so
a resumed run, and Ray Train's restart after a lost worker (``max_failures``), go on from the last
checkpoint.

Stop: the run's stop file, which every rank polls: the ranks save a checkpoint and exit, the job
succeeds. After the grace period the job is stopped through the Jobs API (``stop_job``).
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..runs import PROCESS_LOG, Run
from ..tasks import get_task
from .command import Resources, shown_path

OPTIONS = ("address", "max_failures")
PENDING, RUNNING = "PENDING", "RUNNING"
UNREACHABLE = "UNREACHABLE"  # the cluster does not answer: the job's state is not known now
CONNECT_TIMEOUT_S = 10.0


class RayTargetError(ConfigError):
    """The Ray cluster cannot do what was asked; the message says what to fix and includes Ray's words."""


def _one_line(error: BaseException | str, limit: int = 400) -> str:
    return " ".join(str(error).split())[:limit]


# ---- options -----------------------------------------------------------------------------------------


def clean_options(options: dict[str, Any] | None, require_address: bool = True) -> dict[str, Any]:
    """The Ray options of a run: the cluster's address (its dashboard's, as ``ray job submit --address``
    takes) and how many lost workers Ray Train may restart from the last checkpoint. The targets file's
    section may leave the address to the command line (``require_address=False``)."""
    options = {k: v for k, v in dict(options or {}).items() if v is not None and v != ""}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown Ray option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    address = str(options.get("address") or "").strip()
    if not address and require_address:
        raise ConfigError(
            "--target ray needs the cluster's address: --ray-address http://HEAD:8265 (its dashboard, as "
            "`ray job submit --address` takes), or `address:` under `ray:` in the targets file"
        )
    failures = options.get("max_failures", 0)
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        raise ConfigError(f"max-failures must be a whole number of at least 0, got {failures!r}")
    out: dict[str, Any] = {}
    if address:
        out["address"] = address if "://" in address else f"http://{address}"
    if require_address or "max_failures" in options:
        out["max_failures"] = failures
    return out


def workers(resources: Resources) -> int:
    """Training processes in all: one per node, or one per GPU."""
    return resources.nodes * (resources.gpus_per_node or 1)


# ---- the job -------------------------------------------------------------------------------------------


def driver_argv(run: Run, record: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The job's command: the Ray Train driver with the recipe and the run's config."""
    from .lifecycle import recipe_args

    resources = Resources.from_dict(record.get("resources"))
    options = record.get("ray") or {}
    gpus = resources.gpus_per_node or 0
    cpus = max(1, (resources.cpus_per_task or 1) // max(gpus, 1))
    precision = config.get("mixed_precision") or "auto"
    folder = run.path.resolve()
    cwd = Path(record["cwd"])
    return [
        record.get("python") or "python3",
        *("-m", "tunelab.launch.ray_driver", "--workers", str(workers(resources))),
        *("--cpus-per-worker", str(cpus), *(["--use-gpu"] if gpus else [])),
        # On CPUs a node is one worker: spread them; GPU workers pack onto their nodes' GPUs.
        *("--placement", "PACK" if gpus or resources.nodes == 1 else "SPREAD"),
        # "auto" is resolved by the recipe on the workers' own devices ("no" lets it choose).
        *("--mixed-precision", "no" if precision == "auto" else precision),
        *("--max-failures", str(options.get("max_failures") or 0)),
        *("--run-dir", str(folder), "--cwd", str(cwd), "--storage-path", str(folder / "ray")),
        shown_path(get_task(record["task"]).recipe_path(), cwd),
        *recipe_args(run, record, resume=False),
        *("--resume_from_checkpoint", "latest"),
    ]


def entrypoint(run: Run, record: dict[str, Any], config: dict[str, Any]) -> str:
    """The job's entrypoint: the driver (which checks the run folder, then works from the recorded
    directory), its output also appended to the run's process.log (its exit status is the driver's)."""
    log = shlex.quote(str(run.path.resolve() / PROCESS_LOG))
    inner = f"set -o pipefail; {shlex.join(driver_argv(run, record, config))} 2>&1 | tee -a {log}"
    return f"bash -c {shlex.quote(inner)}"


def submit_text(run: Run, record: dict[str, Any], config: dict[str, Any], env: dict[str, str]) -> str:
    """What command.txt says: the same job as ``ray job submit`` would send it."""
    import json

    runtime_env = json.dumps({"env_vars": env}, sort_keys=True)
    return (
        f"ray job submit --address {shlex.quote(record['ray']['address'])} --no-wait "
        f"--runtime-env-json {shlex.quote(runtime_env)} -- {entrypoint(run, record, config)}"
    )


# ---- talking to the cluster ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def client(address: str):
    """A Jobs API client of the cluster; a cluster that does not answer is one line saying so."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise RayTargetError("--target ray needs Ray: pip install 'tunelab[ray]'") from None
    parts = urlsplit(address)
    hint = (
        f"no Ray cluster answers at {address}: give its dashboard's address (http://HEAD:8265, as `ray job "
        "submit --address` takes; `ray start --head` prints it)"
    )
    try:  # requests has no timeout of its own here: a silent address would hang
        socket.create_connection((parts.hostname, parts.port or 80), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as e:
        raise RayTargetError(f"{hint} ({_one_line(e, 120)})") from None
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayTargetError(f"{hint} ({_one_line(e, 200)})") from None


def check(options: dict[str, Any]) -> None:
    """The cluster answers (said before the run folder exists)."""
    client(options["address"])


def submit(
    run: Run, record: dict[str, Any], config: dict[str, Any], env: dict[str, str], attempt: int
) -> str:
    """Submit the run's job (one submission id per attempt); returns the job id."""
    job_id = f"tunelab-{run.id}-{attempt}"
    try:
        return client(record["ray"]["address"]).submit_job(
            entrypoint=entrypoint(run, record, config),
            submission_id=job_id,
            runtime_env={"env_vars": env},
            metadata={"tunelab_run": run.id, "run_dir": str(run.path.resolve())},
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayTargetError(f"Ray refused the job of run {run.id}: {_one_line(e)}") from None


def job_state(address: str, job_id: str) -> tuple[str, str]:
    """(Ray's job status, its message); (UNREACHABLE, why) when the cluster does not answer now, and
    ("UNKNOWN", ...) when it answers but has no record of the job (a restarted head node)."""
    try:
        info = client(address).get_job_info(job_id)
    except RayTargetError as e:
        client.cache_clear()
        return UNREACHABLE, str(e)
    except RuntimeError as e:  # the Jobs API's answer to an unknown job (HTTP 404)
        if "does not exist" in str(e):
            return "UNKNOWN", f"Ray has no record of job {job_id}"
        return UNREACHABLE, _one_line(e)
    except ConnectionError as e:
        client.cache_clear()
        return UNREACHABLE, _one_line(e)
    return str(getattr(info.status, "value", info.status)), info.message or ""


def in_queue(state: str) -> bool:
    return state in (PENDING, RUNNING, UNREACHABLE)


def stop_job(address: str, job_id: str) -> None:
    with contextlib.suppress(RayTargetError, ConnectionError, RuntimeError):  # gone already, or the cluster
        client(address).stop_job(job_id)


def job_logs(address: str, job_id: str) -> str:
    try:
        return client(address).get_job_logs(job_id)
    except (RayTargetError, ConnectionError, RuntimeError):
        return ""


# ---- settling a run's status -----------------------------------------------------------------------


def settle(run: Run, txn) -> dict[str, Any]:
    """status.json against Ray's view of the run's job (called under the run's status lock)."""
    status = txn.status
    info = status.get("ray") or {}
    job, address = info.get("job_id"), info.get("address")
    if not job:
        return status
    state, message = job_state(address, job)
    fields = {**info, "state": state}
    if state == UNREACHABLE:  # not a verdict: the run is left as it was until the cluster answers
        return txn.update(ray=fields)
    if state == PENDING:
        return txn.update(ray=fields)
    if state == RUNNING:
        if status.get("state") == "queued":
            return txn.update(state="running", stage="starting", ray=fields)
        return txn.update(ray=fields)
    if status.get("state") in ("queued", "running"):  # the job ended without the recipe's ending
        request = run.stop_request()
        if request or state == "STOPPED" and status.get("stage") == "stopping":
            return txn.update(state="stopped", stage="stopped", reason="stopped by request", ray=fields)
        last = failure_line(_read_log(run)) or failure_line(job_logs(address, job)) or _one_line(message, 300)
        why = f"Ray job {job} ended {state}"
        return txn.update(
            state="failed", stage="failed", reason=why + (f": {last}" if last else ""), ray=fields
        )
    return txn.update(ray=fields)


def failure_line(text: str) -> str:
    """Why a job failed, from its output: the driver's or the recipe's one-line error ('error: ...'), else
    the last line naming an error (Ray's forwarded worker logs can arrive after the driver's line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    said = next((ln for ln in reversed(lines) if ln.startswith("error: ")), "")
    return (said or next((ln for ln in reversed(lines) if "error" in ln.lower()), ""))[:300]


def _read_log(run: Run) -> str:
    try:
        return (run.path / PROCESS_LOG).read_text(errors="replace")
    except OSError:
        return ""


def wait_for_job(run: Run, timeout: float | None = None, poll_s: float = 1.0) -> str:
    """Until the run's job has ended; returns Ray's final status. TimeoutError with the job's logs."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = run.status().get("ray") or {}
        state, message = job_state(info.get("address"), info.get("job_id"))
        if not in_queue(state):
            return state
        if deadline is not None and time.monotonic() > deadline:
            logs = job_logs(info.get("address"), info.get("job_id"))[-3000:]
            raise TimeoutError(
                f"Ray job {info.get('job_id')} is still {state} after {timeout:.0f} s:\n{logs}"
            )
        time.sleep(poll_s)


def describe(status: dict[str, Any]) -> str:
    """'Ray job tunelab-...-1 running' for lists and the app; '' for a run that is not a Ray job."""
    info = status.get("ray") or {}
    if not info.get("job_id"):
        return ""
    if status.get("state") not in ("queued", "running"):
        return f"Ray job {info['job_id']}"
    return f"Ray job {info['job_id']} {str(info.get('state') or 'submitted').lower()}"
