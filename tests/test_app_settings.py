"""The Train tab's settings table (app/settings.py): every setting that a task's recipe takes reaches the
recipe argument it names, and nothing else; the app's own settings never reach a recipe."""

from __future__ import annotations

import dataclasses

import pytest

from app.queue import RunQueue
from app.setting import FROM_RECIPE
from app.settings import SETTINGS, TASKS, defaults, settings_to_config
from app.state import AppState
from tunelab.tasks import get_task

HUB_ID = "org/some-model"


@pytest.fixture
def state(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "other.csv"):
        (data / name).write_text("text,label\ngood,pos\nbad,neg\n")
    (data / "sample-python-docs.txt").write_text("The with statement wraps a block.\n")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    return AppState(runs_dir=tmp_path / "runs", data_dir=data, queue=RunQueue(tmp_path / "runs"))


def base_settings(state: AppState, task: str) -> dict:
    settings = {"task": task, "dataset": "train.csv"}
    if task == "distillation":  # a teacher is needed: a local folder
        settings.update(base_kind="local folder", base_path=str(state.data_dir.parent / "teacher"))
    return settings


def another_value(state: AppState, setting, current) -> tuple[dict, object]:
    """(settings that change ``setting``, the recipe argument's expected value)."""
    if setting.name in ("dataset", "unlabeled_dataset", "test_dataset"):
        return {setting.name: "other.csv"}, str(state.data_dir / "other.csv")
    if setting.name == "base_kind":
        return {"base_kind": "Hub id", "base_path": HUB_ID}, HUB_ID
    if setting.kind == "bool":
        value = not current
    elif setting.kind == "int":
        value = int(current or setting.unset_at or 0) + 2
    elif setting.kind == "float":
        value = current / 2 if current else 0.1
    elif setting.kind == "text":
        value = {"class_weights": "balanced"}.get(setting.name, "7")  # "7": a column, checkpoint steps
    else:
        choices = [c[1] if isinstance(c, tuple) else c for c in setting.choices]
        value = next(c for c in choices if c != current)
    return {setting.name: value}, setting.config_value(value)


@pytest.mark.parametrize("task", TASKS)
def test_every_setting_of_a_task_reaches_its_recipe_argument_and_nothing_else(state, task):
    fields = {f.name: f for kind in get_task(task).argument_types() for f in dataclasses.fields(kind)}
    start = base_settings(state, task)
    _, config, _ = settings_to_config(state, start)
    assert set(config) <= set(fields)
    values = defaults(state, task)
    reached = set()
    for setting in SETTINGS:
        targets = setting.targets(task)
        if not targets:
            continue
        assert set(targets) <= set(fields), f"{setting.name}: {task}'s recipe has no {targets}"
        if setting.default is FROM_RECIPE and setting.unset_at is None and task not in setting.task_defaults:
            recipe_default = fields[targets[0]].default
            assert values[setting.name] == recipe_default, f"{setting.name} should show the recipe's default"
        change, expected = another_value(state, setting, values[setting.name])
        _, changed, _ = settings_to_config(state, {**start, **change})
        for name in targets:
            assert changed.get(name) == expected, f"{setting.name} -> {name} in a {task} run"
        # LoRA switched on with the default rate left as is takes LoRA's own rate (the recipe resolves it)
        coupled = {"learning_rate"} if setting.name == "use_peft" else set()
        if coupled:
            assert "learning_rate" not in changed and config["learning_rate"] == values["learning_rate"]
        others = {k: v for k, v in changed.items() if k not in set(targets) | coupled}
        assert others == {k: v for k, v in config.items() if k not in set(targets) | coupled}, setting.name
        reached |= set(targets)
    assert len(reached) >= 10  # the table has settings for every task


def test_the_apps_own_settings_never_reach_a_recipe(state):
    app_only = [
        s for s in SETTINGS if not s.tasks and s.name not in ("task", "target", "base_run", "base_path")
    ]
    assert {s.name for s in app_only} >= {"time_budget_min", "domain_adaptation", "num_processes"}
    start = base_settings(state, "classification")
    _, config, _ = settings_to_config(state, start)
    values = defaults(state, "classification")
    for setting in app_only:
        change, _ = another_value(state, setting, values[setting.name])
        assert settings_to_config(state, {**start, **change})[1] == config, setting.name


def test_a_task_change_brings_that_tasks_defaults_to_the_api_too(state):
    """The automation API and the Train tab start a causal-LM run from the same values."""
    _, config, _ = settings_to_config(state, {"task": "causal-lm"})
    assert config["train_file"].endswith("sample-python-docs.txt")
    assert (config["learning_rate"], config["max_train_steps"], config["per_device_train_batch_size"]) == (
        1e-3,
        200,
        8,
    )
