"""The one place that builds an `accelerate launch` command, from a hardware description.

Pure functions: no process is started and torch is not imported, so the planner is unit-tested on
explicit hardware (0 GPUs, 1, 8; bf16 or not) and the app, the CLI, sweeps, export and the tests all
get the same command for the same settings.

On CPU the command takes the only form that gives N linked processes (see ../shared/ENV_NOTES.md):
``ACCELERATE_USE_CPU=1`` with ``--multi_gpu`` (``--cpu`` with N > 1 silently runs one process, and
``--multi_gpu`` without ``ACCELERATE_USE_CPU`` starts N unlinked copies). ``ACCELERATE_USE_CPU`` is never
set on a GPU machine unless the device "cpu" is asked for. ``--quiet`` keeps accelerate's own traceback
out of a failed run's output (the recipe's one-line message is the error).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hardware import PRECISIONS, Hardware, resolve_precision

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Resources:
    """What a run asks for. Locally GPUs come from the machine; on a cluster from ``gpus_per_node``."""

    device: str = "auto"  # auto: the GPUs where there are any, else the CPU
    num_processes: int | None = None  # per node; default: every GPU, or 1 process on a CPU
    gpu_ids: str | None = None  # locally: which GPUs ("0,1")
    nodes: int = 1
    gpus_per_node: int | None = None  # clusters: GPUs to request on each node (None: 0)
    cpus_per_task: int | None = None  # clusters: CPU cores to request on each node

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is not allowed; choose one of: {', '.join(DEVICES)}")
        for name in ("num_processes", "nodes", "gpus_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or value < (0 if name == "gpus_per_node" else 1)
            ):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        if self.gpu_ids is not None:
            ids = [i.strip() for i in str(self.gpu_ids).split(",")]
            if not all(i.isdigit() for i in ids):
                raise ConfigError(f"gpus must be GPU numbers separated by commas (0,1), got {self.gpu_ids!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Resources:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in known})


@dataclass(frozen=True)
class LaunchCommand:
    """An `accelerate launch` command: environment assignments, then the argv a user can paste."""

    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    processes: int = 1  # processes per node
    device: str = "cpu"  # cpu | cuda
    precision: str = "no"

    def text(self) -> str:
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env.items()), shlex.join(self.argv)])

    def executable(self, python: str | None = None) -> list[str]:
        """The argv to run, under this interpreter so the right venv is used even off PATH: the same
        launch, with one process run in the launcher's own process (``tunelab.launch.inline``)."""
        assert self.argv[:2] == ["accelerate", "launch"]
        return [python or sys.executable, "-m", "tunelab.launch.inline", *self.argv[2:]]


@dataclass(frozen=True)
class Rendezvous:
    """Several machines: the launcher flags every node shares (values may be shell variables)."""

    num_machines: int
    machine_rank: str  # e.g. "$SLURM_NODEID"
    main_process_ip: str  # e.g. "$MASTER_ADDR"
    main_process_port: str  # e.g. "$MASTER_PORT"


def processes_and_device(resources: Resources, hardware: Hardware) -> tuple[int, str]:
    """(processes per node, "cuda" or "cpu") for these resources on this hardware; impossible asks raise."""
    gpus = hardware.gpus
    if resources.device == "cuda" and not gpus:
        raise ConfigError("device cuda was asked for but this machine has no GPU (use device auto or cpu)")
    if resources.device == "cpu" or not gpus:
        if resources.gpu_ids:
            raise ConfigError("gpus were named but the run trains on the CPU")
        return resources.num_processes or 1, "cpu"
    wanted = len(resources.gpu_ids.split(",")) if resources.gpu_ids else None
    if wanted and resources.num_processes and wanted != resources.num_processes:
        raise ConfigError(f"{resources.num_processes} processes but {wanted} GPUs named: give one of the two")
    n = resources.num_processes or wanted or gpus
    if n > gpus:
        raise ConfigError(f"{n} GPU processes were asked for but this machine has {gpus} GPU(s)")
    if resources.gpu_ids and max(int(i) for i in resources.gpu_ids.split(",")) >= gpus:
        raise ConfigError(f"gpus {resources.gpu_ids}: this machine has GPUs 0 to {gpus - 1}")
    return n, "cuda"


def accelerate_command(
    recipe: Path,
    recipe_args: list[str],
    resources: Resources,
    hardware: Hardware,
    mixed_precision: str = "auto",
    cwd: Path | None = None,
    rendezvous: Rendezvous | None = None,
) -> LaunchCommand:
    """`accelerate launch` of ``recipe`` with ``recipe_args`` for ``resources`` on ``hardware``.

    ``mixed_precision`` is the run's own setting; "auto" is resolved for the hardware here, so the command
    shows the precision the run trains in. ``rendezvous`` is for runs over several machines.
    """
    if mixed_precision not in ("auto", *PRECISIONS):
        raise ConfigError(f"mixed_precision {mixed_precision!r}: choose one of auto, {', '.join(PRECISIONS)}")
    processes, device = processes_and_device(resources, hardware)
    precision = resolve_precision(mixed_precision, hardware, on_gpu=device == "cuda")
    machines = rendezvous.num_machines if rendezvous else 1
    env = {"ACCELERATE_USE_CPU": "1"} if device == "cpu" else {}
    argv = ["accelerate", "launch", "--quiet"]
    if processes * machines > 1:
        argv.append("--multi_gpu")
    argv += ["--num_processes", str(processes * machines), "--num_machines", str(machines)]
    if rendezvous:
        argv += [
            "--machine_rank",
            rendezvous.machine_rank,
            "--main_process_ip",
            rendezvous.main_process_ip,
            "--main_process_port",
            rendezvous.main_process_port,
        ]
    elif processes > 1:
        argv += ["--main_process_port", "0"]  # a free port: two runs may share a machine
    if device == "cuda" and resources.gpu_ids:
        argv += ["--gpu_ids", resources.gpu_ids]
    argv += ["--mixed_precision", precision, "--dynamo_backend", "no"]
    return LaunchCommand(
        env=env,
        argv=[*argv, shown_path(recipe, cwd), *recipe_args],
        processes=processes,
        device=device,
        precision=precision,
    )


def shown_path(path: Path, cwd: Path | None) -> str:
    """A path as a user would type it from ``cwd``: relative when inside it."""
    path = Path(path)
    cwd = Path(cwd or os.getcwd())
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)
