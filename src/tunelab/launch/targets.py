"""The targets file: defaults for the clusters a user sends runs to, e.g.::

    slurm:
      partition: gpu
      time: "04:00:00"
      gpus_per_node: 4
      sbatch_args: ["--constraint=a100"]
    ray:
      address: http://head.example.org:8265
      nodes: 2
      gpus_per_node: 8
      max_failures: 1

The command line and the app's fields win over it. Default place: ``$XDG_CONFIG_HOME/tunelab/targets.yaml``
(~/.config/...); none there means no defaults. A named file that is missing or wrong is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

RESOURCE_KEYS = ("nodes", "gpus_per_node", "cpus_per_task")  # what a run asks of each cluster
CLUSTERS = ("slurm", "ray")


def targets_file(path: str | Path | None = None) -> Path:
    """The targets file: ``path``, else ``$XDG_CONFIG_HOME/tunelab/targets.yaml`` (~/.config/...)."""
    if path:
        return Path(path).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "tunelab" / "targets.yaml"


def load_targets(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Each cluster's defaults, checked: {"slurm": {partition, time, ..., nodes, ...}, "ray": {...}}."""
    import yaml

    file = targets_file(path)
    if not file.exists():
        if path:
            raise ConfigError(f"targets file {file} does not exist")
        return {name: {} for name in CLUSTERS}
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"targets file {file} is not valid YAML{where}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(name) or {}, dict) for name in CLUSTERS):
        raise ConfigError(f"targets file {file}: expected a mapping with `slurm:` and/or `ray:` sections")
    unknown = sorted(set(data) - set(CLUSTERS))
    if unknown:
        raise ConfigError(
            f"targets file {file}: unknown target(s) {', '.join(unknown)}; known: {', '.join(CLUSTERS)}"
        )
    return {name: _section(file, name, dict(data.get(name) or {})) for name in CLUSTERS}


def _section(file: Path, name: str, section: dict[str, Any]) -> dict[str, Any]:
    from . import ray_jobs, slurm

    resources = {k: section.pop(k) for k in RESOURCE_KEYS if k in section}
    for key, value in resources.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"targets file {file}: {name}.{key} must be a whole number, got {value!r}")
    try:
        if name == "slurm":
            options = slurm.clean_options(section)
        else:
            options = ray_jobs.clean_options(section, require_address=False)
    except ConfigError as e:
        raise ConfigError(f"targets file {file}: {e}") from None
    return {**options, **resources}
