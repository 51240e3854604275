"""Plan, start, watch, stop and resume runs.

Every caller (``tunelab train`` and ``tunelab runs``, the app's queue, sweep trials, export's recovery
fine-tune, the tests) goes through here, so a run gets the same command wherever it is started:

- ``command``: the `accelerate launch` command for a hardware description (pure; unit-tested);
- ``lifecycle``: prepare a run folder, start it, wait for it, refresh its state, stop and resume it;
- ``slurm``: the Slurm target (job.sbatch, sbatch, scontrol/sacct state, requeue on preemption);
- ``ray_jobs``: the Ray target (a job through the Ray Jobs API running ``ray_driver``: Ray Train);
- ``targets``: the targets file (each cluster's defaults);
- ``process``: local processes known by pid, start time, boot id and a marker in their environment.
"""

from .command import LaunchCommand, Rendezvous, Resources, accelerate_command
from .lifecycle import (
    STOP_GRACE_S,
    TARGETS,
    ClusterJob,
    LaunchError,
    RayJob,
    SlurmJob,
    is_active,
    is_local_and_running_here,
    plan,
    prepare_run,
    refresh,
    resume,
    start,
    stop,
    wait,
)

__all__ = [
    "STOP_GRACE_S",
    "TARGETS",
    "ClusterJob",
    "LaunchCommand",
    "LaunchError",
    "Rendezvous",
    "Resources",
    "RayJob",
    "SlurmJob",
    "accelerate_command",
    "is_active",
    "is_local_and_running_here",
    "plan",
    "prepare_run",
    "refresh",
    "resume",
    "start",
    "stop",
    "wait",
]
