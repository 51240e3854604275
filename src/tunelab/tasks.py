"""The task registry: every recipe TuneLab runs, in one place.

Each task names its recipe file, the argument dataclasses the recipe parses, its ready configs and the
names the CLI (``tunelab train cls``), the app ("classification") and status.json ("task": "cls") use.
The CLI, the app, the launcher, sweeps, export and the recipes themselves read it; adding a recipe is one
entry here and one file in ``recipes/``.

This module stays light (no torch, no transformers): ``tunelab runs list`` and ``--help`` import it. The
argument dataclasses are named by "module:Class" and imported only when asked for.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class Task:
    """One recipe and the names the rest of TuneLab knows it by."""

    id: str  # CLI, status.json, run-id prefix: cls
    app_name: str  # the app's task choice: classification
    title: str  # for help texts: text classification
    recipe: str  # file in recipes/: bert_cls.py
    arguments: tuple[str, ...]  # "module:Class" of the dataclasses the recipe parses, in its order
    main_metric: str  # what "best" means by default (sweeps, best model): accuracy
    produces: str  # the kind of model the run leaves: classifier | causal-lm | encoder

    @property
    def configs_dir(self) -> Path:
        return recipes_dir() / "configs" / Path(self.recipe).stem

    def recipe_path(self) -> Path:
        return recipes_dir() / self.recipe

    def argument_types(self) -> tuple[type, ...]:
        """The argument dataclasses (imports transformers: only where arguments are parsed)."""
        out = []
        for spec in self.arguments:
            module, _, name = spec.partition(":")
            out.append(getattr(importlib.import_module(module), name))
        return tuple(out)

    def configs(self) -> list[Path]:
        """The ready YAML configs shipped for this recipe."""
        return sorted(self.configs_dir.glob("*.yaml"))


_TRAINING = "tunelab.args:TrainingArguments"
TASKS: dict[str, Task] = {
    t.id: t
    for t in (
        Task(
            "cls",
            "classification",
            "text classification",
            "bert_cls.py",
            (
                "tunelab.args:ClassificationArguments",
                _TRAINING,
                "tunelab.args:LoraArguments",
                "tunelab.data.clean:DataCleaningArguments",
                "tunelab.data.augment:AugmentationArguments",
            ),
            "accuracy",
            "classifier",
        ),
        Task(
            "clm",
            "causal-lm",
            "causal-LM pretraining (GPT-2)",
            "gpt2_clm.py",
            ("tunelab.args:CausalLMArguments", _TRAINING),
            "loss",
            "causal-lm",
        ),
        Task(
            "mlm",
            "masked-lm",
            "masked-LM domain adaptation",
            "bert_mlm.py",
            ("tunelab.mlm:MaskedLMArguments", _TRAINING),
            "loss",
            "encoder",
        ),
        Task(
            "distill",
            "distillation",
            "classifier distillation into a smaller student",
            "distill_cls.py",
            ("tunelab.args:ClassificationArguments", _TRAINING, "tunelab.distill:DistillationArguments"),
            "accuracy",
            "classifier",
        ),
    )
}
APP_NAMES = {t.app_name: t for t in TASKS.values()}


def get_task(name: str | None) -> Task:
    """A task by its id (cls) or its app name (classification)."""
    task = TASKS.get(name or "") or APP_NAMES.get(name or "")
    if task is None:
        raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return task


def task_of_recipe(recipe: str | Path) -> Task:
    """The task whose recipe file is ``recipe`` (a path or a file name)."""
    name = Path(recipe).name
    for task in TASKS.values():
        if task.recipe == name:
            return task
    raise ConfigError(f"{name} is not a TuneLab recipe ({', '.join(t.recipe for t in TASKS.values())})")


def recipes_dir() -> Path:
    """``recipes/`` of the source tree: it lives beside the package, not inside it.

    An editable/source install finds it from the package's own location; a plain ``pip install .``
    needs ``TUNELAB_ROOT`` (the Docker images use an editable install, so neither is needed there).
    """
    return project_root() / "recipes"


def project_root() -> Path:
    import tunelab

    for candidate in (os.environ.get("TUNELAB_ROOT"), Path(tunelab.__file__).resolve().parents[2]):
        if candidate and (Path(candidate) / "recipes").is_dir():
            return Path(candidate)
    raise ConfigError(
        "cannot find TuneLab's recipes/ (it lives in the source tree, not in the installed package): "
        "install from a checkout with `pip install -e .`, or set TUNELAB_ROOT to the checkout"
    )


def help_lines() -> str:
    """'cls: text classification (recipes/bert_cls.py)' lines for help texts."""
    return "\n".join(f"  {t.id:<8} {t.title} (recipes/{t.recipe})" for t in TASKS.values())
