"""Where a run trains, from the Train tab's settings: this machine or a Slurm cluster, with its processes."""

from __future__ import annotations

import dataclasses
from typing import Any

from tunelab.errors import TuneLabError
from tunelab.launch import Resources, slurm
from tunelab.launch.command import processes_and_device

from .state import AppState, UserError, clean_message


@dataclasses.dataclass(frozen=True)
class Placement:
    """On what a run trains: the planner (tunelab.launch) turns this into its command."""

    resources: Resources
    target: str = "local"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # Slurm: partition, time, ...

    def hardware(self, state: AppState):
        return slurm.node_hardware(self.resources) if self.target == "slurm" else state.hardware

    def processes(self, state: AppState) -> int:
        """Processes in all (for the estimate)."""
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
        if target != "slurm":
            raise UserError("Run on must be this machine (local) or a Slurm cluster (slurm).")
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
