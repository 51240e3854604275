"""Runs on a Slurm cluster: a batch script in the run folder, submitted with ``sbatch``, watched with
``scontrol`` (``sacct`` or the jobcomp file once the controller has forgotten the job).

The run folder must be on the cluster's shared filesystem and the nodes must have the same Python
environment (the script calls this interpreter's accelerate). ``job.sbatch`` asks for one task per node
and runs the planner's ``accelerate launch`` there through ``srun``, with the rendezvous taken from the
allocation (first host, a free port found on it, ``$SLURM_NODEID``). It always passes
``--resume_from_checkpoint latest``, which is a fresh start when the run has no checkpoint, so a
requeued job continues where the last checkpoint left it.

Stopping and preemption:

- Stop (TuneLab): the run's stop file, which every rank polls on the shared filesystem: the ranks save
  a checkpoint and exit, the job completes. After the grace period the job is cancelled. (A TERM signal
  is not used for this: accelerate's launcher gives its children 5 s between TERM and KILL.)
- Time limit: jobs are submitted ``--requeue --signal=B:USR1@<REQUEUE_WARNING_S>``; the batch script
  traps that warning (its own signal, so it is never confused with a cancel), writes a stop request
  marked ``requeue`` (the ranks checkpoint and exit), then requeues its own job, which resumes from
  that checkpoint.
- Preemption or ``scontrol requeue``: Slurm sends TERM to every process of the job and requeues it; the
  ranks checkpoint if they can within Slurm's KillWait, and the requeued job resumes from the newest
  complete checkpoint either way (checkpoints are written atomically), so the run ends as an
  uninterrupted one.
- ``scancel`` from a terminal: the same TERM, but no requeue; the run ends "stopped" with its checkpoint
  (or "failed" with Slurm's state when it was killed first).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hardware import Hardware
from ..runs import PROCESS_LOG, STOP_FILE, Run
from ..tasks import get_task
from .command import LaunchCommand, Rendezvous, Resources, accelerate_command
from .targets import RESOURCE_KEYS  # noqa: F401 - the Slurm options that are resources

JOB_SCRIPT = "job.sbatch"
REQUEUE_WARNING_S = 120  # Slurm's USR1 to the batch script this long before the time limit
OPTIONS = ("partition", "time", "account", "qos", "sbatch_args")
# Slurm job states in which the job may still run (pending ones wait in the queue).
PENDING_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "STOPPED"}
)
RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"})
TIME_RE = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")
COMMAND_TIMEOUT_S = 60  # every Slurm command: a controller that does not answer is an error, not a hang


class SlurmError(ConfigError):
    """Slurm cannot do what was asked; the message names what to fix and includes Slurm's own words."""


# ---- options -----------------------------------------------------------------------------------------


def clean_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The Slurm options of a run (partition, time, account, qos, extra sbatch arguments), checked."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown Slurm option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    out: dict[str, Any] = {k: str(v).strip() for k, v in options.items() if k != "sbatch_args" and v}
    if "time" in out and not TIME_RE.match(out["time"]):
        raise ConfigError(
            f"time {out['time']!r} is not a Slurm time limit: use HH:MM:SS, MM, or D-HH:MM:SS (e.g. 04:00:00)"
        )
    extra = options.get("sbatch_args") or []
    if isinstance(extra, str):
        extra = shlex.split(extra)
    for arg in extra:
        if not str(arg).startswith("-"):
            raise ConfigError(f"sbatch argument {arg!r} must be an option such as --qos=high")
    if extra:
        out["sbatch_args"] = [str(a) for a in extra]
    return out


def node_hardware(resources: Resources) -> Hardware:
    """What each node of the allocation brings, as asked for (the planner plans for that)."""
    return Hardware(gpus=resources.gpus_per_node or 0, cpus=resources.cpus_per_task or 1)


# ---- the batch script ----------------------------------------------------------------------------


def node_command(run: Run, record: dict[str, Any], config: dict[str, Any]) -> LaunchCommand:
    """The planner's `accelerate launch` for every node of the job (shell variables are the job's)."""
    from .lifecycle import recipe_args

    resources = Resources.from_dict(record.get("resources"))
    precision = config.get("mixed_precision") or "auto"
    return accelerate_command(
        get_task(record["task"]).recipe_path(),
        [*recipe_args(run, record, resume=False), "--resume_from_checkpoint", "latest"],
        resources,
        node_hardware(resources),
        # "auto" is resolved by the recipe on the node's own GPUs ("no" lets it choose).
        "no" if precision == "auto" else precision,
        cwd=Path(record["cwd"]),
        rendezvous=Rendezvous(resources.nodes, "$SLURM_NODEID", "$MASTER_ADDR", "$MASTER_PORT"),
    )


def _shell_words(argv: list[str]) -> str:
    """argv as shell words, the job's ``$VARIABLES`` left for the shell to expand."""
    return " ".join(f'"{a}"' if re.fullmatch(r"\$[A-Z_]+", a) else shlex.quote(a) for a in argv)


def job_script(run: Run, record: dict[str, Any], config: dict[str, Any], env: dict[str, str]) -> str:
    """The text of job.sbatch for this run."""
    resources = Resources.from_dict(record.get("resources"))
    options = record.get("slurm") or {}
    command = node_command(run, record, config)
    folder = run.path.resolve()
    python = record.get("python") or "python3"
    directives = [
        f"--job-name=tunelab-{run.id}",
        f"--nodes={resources.nodes}",
        "--ntasks-per-node=1",
        f"--output={folder / PROCESS_LOG}",
        "--open-mode=append",
        "--requeue",
        f"--signal=B:USR1@{REQUEUE_WARNING_S}",
    ]
    if resources.gpus_per_node:
        directives.append(f"--gpus-per-node={resources.gpus_per_node}")
    if resources.cpus_per_task:
        directives.append(f"--cpus-per-task={resources.cpus_per_task}")
    for key in ("partition", "time", "account", "qos"):
        if options.get(key):
            directives.append(f"--{key}={options[key]}")
    directives += options.get("sbatch_args") or []
    exports = {**env, **command.env}
    inner = "exec " + _shell_words(command.executable(python))
    stop_file = shlex.quote(str(folder / STOP_FILE))
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        f"# TuneLab run {run.id} ({get_task(record['task']).title}), written by tunelab.launch.slurm.",
        "# Submit it again with: sbatch " + shlex.quote(str(folder / JOB_SCRIPT)),
        "set -u",
        f"cd {shlex.quote(record['cwd'])} || exit 1",
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(exports.items())),
        'export TUNELAB_ATTEMPT_START="$(date +%s.%N)"  # stop requests of earlier attempts are stale',
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f"export MASTER_PORT=\"$({shlex.quote(python)} -c 'import socket; s = socket.socket(); "
        's.bind(("", 0)); print(s.getsockname()[1])\')"',
        'echo "$ [slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0}]"',
        "requeue=0",
        "on_time_limit() {  # Slurm's warning before the time limit: checkpoint, then requeue this job",
        "  requeue=1",
        f'  printf \'{{"time": %s, "reason": "%s", "requeue": true}}\\n\' "$(date +%s.%N)" '
        f"'Slurm is ending job '\"$SLURM_JOB_ID\"': checkpointing, then requeued' > {stop_file}.tmp",
        f"  mv -f {stop_file}.tmp {stop_file}",
        "}",
        "trap on_time_limit USR1",
        f'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(inner)} &',
        "step=$!",
        'while :; do wait "$step"; rc=$?; kill -0 "$step" 2>/dev/null || break; done',
        'if [ "$requeue" = 1 ]; then scontrol requeue "$SLURM_JOB_ID"; fi',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def submit_text(run: Run) -> str:
    return f"sbatch --parsable {shlex.quote(str(run.path.resolve() / JOB_SCRIPT))}"


# ---- talking to Slurm ----------------------------------------------------------------------------


def slurm_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SlurmError(
            f"--target slurm: `{name}` is not on the PATH. Run TuneLab where Slurm's commands work "
            "(a login node of the cluster), or train on this machine without --target slurm."
        )
    return found


def slurm(
    args: list[str],
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT_S,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a Slurm command; with ``check``, a refusal is a SlurmError carrying Slurm's own message."""
    argv = [slurm_binary(args[0]), *args[1:]]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, input=stdin or ""
        )
    except subprocess.TimeoutExpired as e:
        raise SlurmError(
            f"`{shlex.join(args)}` did not answer within {timeout:.0f} s: is slurmctld up?"
        ) from e
    if check and out.returncode != 0:
        said = " ".join((out.stderr or out.stdout).split()) or f"exit status {out.returncode}"
        raise SlurmError(f"Slurm refused `{shlex.join(args[:2])}`: {said}")
    return out


def check_partition(options: dict[str, Any]) -> None:
    """An unknown partition is named with the ones the cluster has."""
    partition = options.get("partition")
    if not partition:
        return
    out = slurm(["sinfo", "-h", "-o", "%R"], check=False)
    known = sorted(set(out.stdout.split()))
    if out.returncode == 0 and known and partition not in known:
        raise SlurmError(f"partition {partition!r} is not on this cluster; it has: {', '.join(known)}")


def validate(script: str, options: dict[str, Any], env: dict[str, str]) -> None:
    """What sbatch would refuse, found before anything is written (``sbatch --test-only``): an unknown
    partition (named with the ones the cluster has), account or QOS, more nodes or GPUs than it has."""
    check_partition(options)
    slurm(["sbatch", "--test-only"], env=env, stdin=script)


def submit(run: Run, script: str, env: dict[str, str]) -> str:
    """Write job.sbatch and submit it with ``env`` (the submitter's environment without secrets: sbatch
    passes it to the job); returns the job id. A refusal leaves no job and says why."""
    path = run.path / JOB_SCRIPT
    tmp = path.with_name(f".{JOB_SCRIPT}.tmp")
    tmp.write_text(script)
    tmp.replace(path)
    out = slurm(["sbatch", "--parsable", str(path.resolve())], env=env)
    job_id = out.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {out.stdout.strip()!r} instead of a job id")
    return job_id


def parse_record(line: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol show job -o`` or jobcomp line (values with spaces kept)."""
    fields: dict[str, str] = {}
    key = None
    for token in line.strip().split(" "):
        name, sep, value = token.partition("=")
        if sep and name[:1].isupper() and name.isalnum():
            key, fields[name] = name, value
        elif key is not None:
            fields[key] += " " + token
    return fields


def job_info(job_id: str) -> dict[str, str] | None:
    """Slurm's record of the job: ``scontrol show job`` while the controller knows it, then ``sacct``
    (where accounting is on) or the jobcomp file; None when no source has it."""
    out = slurm(["scontrol", "show", "job", "-o", job_id], check=False)
    if out.returncode == 0 and out.stdout.strip():
        return parse_record(out.stdout.splitlines()[0])
    acct = slurm(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,Reason,ExitCode"], check=False)
    rows = [r.split("|") for r in acct.stdout.splitlines() if r.startswith(job_id)]
    if acct.returncode == 0 and rows:
        _, state, reason, code = (rows[-1] + ["", "", ""])[:4]
        return {"JobId": job_id, "JobState": state.split()[0], "Reason": reason, "ExitCode": code}
    return _jobcomp_record(job_id)


def _jobcomp_record(job_id: str) -> dict[str, str] | None:
    config = slurm(["scontrol", "show", "config"], check=False).stdout
    settings = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config, re.M))
    if settings.get("JobCompType") != "jobcomp/filetxt" or not settings.get("JobCompLoc"):
        return None
    try:
        lines = Path(settings["JobCompLoc"]).read_text(errors="replace").splitlines()
    except OSError:
        return None
    records = [parse_record(ln) for ln in lines if f"JobId={job_id} " in ln]
    return records[-1] if records else None


def job_state(job_id: str) -> tuple[str, str]:
    """(Slurm state, reason) of the job; ("UNKNOWN", "") when Slurm no longer has any record of it."""
    info = job_info(job_id)
    if info is None:
        return "UNKNOWN", ""
    return info.get("JobState", "UNKNOWN"), info.get("Reason", "")


def in_queue(state: str) -> bool:
    return state in PENDING_STATES or state in RUNNING_STATES


def cancel(job_id: str) -> None:
    slurm(["scancel", job_id], check=False)


# ---- settling a run's status -----------------------------------------------------------------------


def user_stop(run: Run) -> bool:
    """A stop the user asked for (not the job's own checkpoint-and-requeue)."""
    request = run.stop_request()
    return bool(request) and not request.get("requeue")


def settle(run: Run, txn) -> dict[str, Any]:
    """status.json against Slurm's view of the run's job (called under the run's status lock)."""
    status = txn.status
    job = (status.get("slurm") or {}).get("job_id")
    if not job:
        return status
    state, reason = job_state(str(job))
    slurm_fields = {"job_id": job, "state": state, "reason": reason if reason not in ("None", "") else None}
    if state in PENDING_STATES:
        if status.get("state") in ("queued", "running") or (
            status.get("state") == "stopped" and not user_stop(run)  # preempted or requeued: it runs again
        ):
            return txn.update(state="queued", stage="queued", reason=None, slurm=slurm_fields)
        return txn.update(slurm=slurm_fields)
    if state in RUNNING_STATES:
        if status.get("state") == "queued":
            return txn.update(state="running", stage="starting", slurm=slurm_fields)
        return txn.update(slurm=slurm_fields)
    if status.get("state") in ("queued", "running"):  # the job ended without the recipe's ending
        if user_stop(run) or state == "CANCELLED" and status.get("stage") == "stopping":
            return txn.update(
                state="stopped", stage="stopped", reason="stopped by request", slurm=slurm_fields
            )
        from .lifecycle import last_error_line

        why = f"Slurm job {job} ended {state}" + (f" ({reason})" if slurm_fields["reason"] else "")
        last = last_error_line(run)
        return txn.update(
            state="failed", stage="failed", reason=why + (f": {last}" if last else ""), slurm=slurm_fields
        )
    return txn.update(slurm=slurm_fields)


def wait_for_job(run: Run, timeout: float | None = None, poll_s: float = 1.0) -> None:
    """Until the run's job has left the queue (requeues included); TimeoutError naming Slurm's view."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = (run.status().get("slurm") or {}).get("job_id")
        state, reason = job_state(str(job)) if job else ("UNKNOWN", "")
        if not in_queue(state):
            return
        if deadline is not None and time.monotonic() > deadline:
            detail = slurm(["scontrol", "show", "job", str(job)], check=False).stdout.strip()
            raise TimeoutError(
                f"Slurm job {job} is still {state} ({reason}) after {timeout:.0f} s:\n{detail}"
            )
        time.sleep(poll_s)


def describe(status: dict[str, Any]) -> str:
    """'Slurm job 12 pending (Resources)' for lists and the app; '' for a run that is not a Slurm job."""
    info = status.get("slurm") or {}
    if not info.get("job_id"):
        return ""
    if status.get("state") not in ("queued", "running"):
        return f"Slurm job {info['job_id']}"
    text = f"Slurm job {info['job_id']} {str(info.get('state') or 'submitted').lower()}"
    return text + (f" ({info['reason']})" if info.get("reason") else "")
