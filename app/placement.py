"""Where a run trains, from the Train tab's settings: this machine, a Slurm or a Ray cluster, with its
processes."""

from __future__ import annotations

import dataclasses
from typing import Any

from tunelab.errors import TuneLabError
from tunelab.launch import Resources, ray_jobs, slurm
from tunelab.launch.command import processes_and_device

from .state import AppState, UserError, clean_message


@dataclasses.dataclass(frozen=True)
class Placement:
    """On what a run trains: the planner (tunelab.launch) turns this into its command."""

    resources: Resources
    target: str = "local"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # Slurm: partition, time; Ray: address

    def hardware(self, state: AppState):
        return state.hardware if self.target == "local" else slurm.node_hardware(self.resources)

    def processes(self, state: AppState) -> int:
        """Processes in all (for the estimate)."""
        if self.target == "ray":
            return ray_jobs.workers(self.resources)
        return processes_and_device(self.resources, self.hardware(state))[0] * self.resources.nodes


def _given(value: Any) -> bool:
    return value is not None and str(value).strip() != ""


def placement(state: AppState, s: dict[str, Any]) -> Placement:
    """The run's Resources and target from the settings (Slurm fields left blank take the targets
    file's defaults); impossible asks raise gr.Error."""
    target = s["target"] or "local"
    processes = int(s["num_processes"] or 0) or None
    try:
        if target == "local":
            resources = Resources(num_processes=processes)
            processes_and_device(resources, state.hardware)  # e.g. 4 processes on a 2-GPU machine
            return Placement(resources)
        if target == "ray":
            return _ray_placement(state, s)
        if target != "slurm":
            raise UserError(
                "Run on must be this machine (local), a Slurm cluster (slurm) or a Ray cluster (ray)."
            )
        defaults = state.slurm_defaults

        def pick(key: str) -> Any:
            return s[f"slurm_{key}"] if _given(s[f"slurm_{key}"]) else defaults.get(key)

        resources = Resources(
            num_processes=processes,
            nodes=int(pick("nodes") or 1),
            gpus_per_node=int(pick("gpus_per_node") or 0) or None,
            cpus_per_task=int(pick("cpus_per_task") or 0) or None,
        )
        options = {k: v for k, v in defaults.items() if k not in slurm.RESOURCE_KEYS}
        options.update({k: str(pick(k)).strip() for k in ("partition", "time") if _given(pick(k))})
        options = slurm.clean_options(options)
        processes_and_device(resources, slurm.node_hardware(resources))
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    return Placement(resources, "slurm", options)


def _ray_placement(state: AppState, s: dict[str, Any]) -> Placement:
    """A Ray cluster's: one worker per node (or per GPU); blank fields take the targets file's defaults."""
    defaults = state.ray_defaults

    def pick(key: str) -> Any:
        return s[f"ray_{key}"] if _given(s[f"ray_{key}"]) else defaults.get(key)

    resources = Resources(
        nodes=int(pick("nodes") or 1),
        gpus_per_node=int(pick("gpus_per_node") or 0) or None,
        cpus_per_task=int(pick("cpus_per_task") or 0) or None,
    )
    options = ray_jobs.clean_options(
        {"address": pick("address"), "max_failures": int(pick("max_failures") or 0)}
    )
    return Placement(resources, "ray", options)
