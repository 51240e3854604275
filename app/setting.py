"""One Train tab setting (``Setting``): its widget, place, tasks and recipe arguments, its default and
help (from the recipe's argument dataclass unless the app gives one) and its value as the recipe's type.
The table of them all is ``app.settings.SETTINGS``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from tunelab.tasks import get_task

from .state import AppState, number

FROM_RECIPE = object()  # a default taken from the recipe's argument dataclass


@dataclasses.dataclass(frozen=True)
class Setting:
    """One Train tab setting. ``tasks``: the tasks whose config it sets (none: the app's own setting);
    ``arguments``: the recipe argument(s) per task when not ``name``; ``resolve``: the config value
    computed from all settings (a dataset name becomes its path); ``unset_at``: the widget value meaning
    "not set" (0: every row, by epochs, ...), None in the config. A value a callable is given the state."""

    name: str
    kind: str  # float | int | text | bool | choice | radio
    label: str
    section: str
    row: int = 0
    tasks: tuple[str, ...] = ()
    arguments: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    resolve: Callable[[AppState, dict[str, Any]], Any] | None = None
    default: Any = FROM_RECIPE
    task_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    unset_at: Any = None
    choices: Any = None  # a sequence of values or (label, value) pairs, or a callable of the state
    info: Any = None  # None: the recipe argument's help
    placeholder: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    elem_id: str | None = None

    def targets(self, task: str) -> tuple[str, ...]:
        """The recipe arguments this setting sets in a ``task`` run."""
        if task not in self.tasks:
            return ()
        return self.arguments.get(task, (self.name,))

    def recipe_field(self) -> dataclasses.Field | None:
        """The argument dataclass field behind the setting (its default and help)."""
        for task in self.tasks:
            for name in self.targets(task):
                for kind in get_task(task).argument_types():
                    found = {f.name: f for f in dataclasses.fields(kind)}.get(name)
                    if found is not None:
                        return found
        return None

    def default_for(self, task: str | None = None) -> Any:
        if task in self.task_defaults:
            return self.task_defaults[task]
        if self.default is not FROM_RECIPE:
            return self.default
        found = self.recipe_field()
        if found is None:
            raise TypeError(f"setting {self.name}: no recipe argument to take a default from")
        value = found.default if found.default is not dataclasses.MISSING else None
        return self.unset_at if value is None and self.unset_at is not None else value

    def help(self) -> str | None:
        if self.info is not None:
            return self.info or None
        found = self.recipe_field()
        return found.metadata.get("help") if found is not None else None

    def config_value(self, value: Any) -> Any:
        """The widget's (or the API's) value as the recipe argument's type; None when not set."""
        if self.kind == "bool":
            return bool(value)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if self.kind in ("int", "float"):
            value = number(value, self.label, int if self.kind == "int" else float)
        else:
            value = str(value).strip()
        if self.unset_at is not None and value <= self.unset_at:
            return None
        return value


def at(state: AppState, value: Any) -> Any:
    """A setting's attribute, a callable of the state or a plain value."""
    return value(state) if callable(value) else value
