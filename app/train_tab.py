"""Train tab: task, dataset, base model and hyperparameters -> the exact config.yaml and `accelerate launch`
command, an estimate from a measured step, a full data check, and a queued run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from tunelab.data.chat import read_conversations, resolve_data_format
from tunelab.data.classification import preflight_classification
from tunelab.data.files import TABLE_FORMATS, iter_records, read_text, resolve_source
from tunelab.errors import TuneLabError
from tunelab.tasks import get_task

from . import plan
from .queue import QueueFullError
from .setting import Setting, at
from .settings import (
    BY_NAME,
    CLASSIFIER_TASKS,
    FIELDS,
    SECTIONS,
    SETTINGS,
    defaults,
    settings_to_config,
)
from .state import COLUMN_FIELDS, AppState, UserError, clean_message, number, user_message

FOLLOWED = (*COLUMN_FIELDS, "max_length")  # what the Train tab takes from a dataset the Data tab checked


def base_run_choices(state: AppState, task: str) -> list[str]:
    """Finished runs a new run of ``task`` can start from; a classifier also from masked-LM adaptations;
    a distillation from classifiers (its teacher)."""
    if task == "distillation":
        return state.run_choices(task="classification", with_model=True)
    choices = state.run_choices(task=task, with_model=True)
    if task == "classification":
        choices += state.run_choices(task="masked-lm", with_model=True)
    return choices


def preview(state: AppState, settings: dict[str, Any]) -> tuple[str, str]:
    """The config.yaml and the command exactly as a new run would get them (run folder shown as <run>)."""
    try:
        task, config, where = settings_to_config(state, settings)
        run_dir, config, command = state.queue.plan(
            task,
            config,
            where.resources,
            run_id="RUN-ID",
            hardware=state.hardware,
            target=where.target,
            target_options=where.options,
        )
    except gr.Error as e:
        return f"# {e.message}", ""
    except TuneLabError as e:
        return f"# {clean_message(str(e))}", ""
    shown_dir = f"{state.runs_dir.name}/<run-id>"
    text = yaml.safe_dump(config, sort_keys=False).replace(str(run_dir), shown_dir)
    return text.replace(str(state.data_dir) + "/", "<data>/"), command.replace(str(run_dir), shown_dir)


def check_data(state: AppState, settings: dict[str, Any]) -> str:
    """The whole preflight of the chosen task, without training."""
    task, config, _ = settings_to_config(state, settings)
    path = Path(config["train_file"])
    try:
        if task in CLASSIFIER_TASKS:
            _, columns, labels, reports = preflight_classification(
                str(path),
                text_column=config.get("text_column"),
                text_pair_column=config.get("text_pair_column"),
                label_column=config.get("label_column"),
                problem_type=config.get("problem_type") or "auto",
                label_separator=config.get("label_separator") or ";",
            )
            train = reports["train"]
            described = (
                f"regression target `{columns.label}` {train.describe_target()}"
                if train.problem_type == "regression"
                else f"label column `{columns.label}`, {train.describe_labels(labels)}"
            )
            return f"✓ **{path.name}**: {train.rows} rows, text column `{columns.text}`, {described}"
        if path.suffix.lower() == ".txt":
            text = read_text(path)
            if not text.strip():
                return f"✗ **{path.name}** is empty."
            return f"✓ **{path.name}**: {len(text):,} characters of text for pretraining."
        data_format = "text"
        if task == "causal-lm":
            data_format = resolve_data_format(str(path), config.get("data_format") or "auto")
        if data_format != "text":
            conversations = read_conversations(resolve_source(str(path), TABLE_FORMATS), data_format)
            return f"✓ **{path.name}**: {len(conversations):,} conversations ({data_format}) to fine-tune on."
        header, records, unit = iter_records(path)
        column = config.get("text_column") or ("text" if "text" in header else None)
        if column is None or column not in header:
            return f"✗ **{path.name}**: name the text column (columns: {', '.join(header)})."
        rows = 0
        for number, record in records:
            if not isinstance(record.get(column), str):
                return f"✗ **{path.name}**: {unit} {number}, column '{column}': expected text."
            rows += 1
        return f"✓ **{path.name}**: {rows} rows of text in column `{column}`."
    except TuneLabError as e:
        return f"✗ {user_message(str(e))}"


def plan_of(state: AppState, settings: dict[str, Any]) -> tuple[str, int | None]:
    """(the Data plan text, the suggested Max train samples) of a classification run ("" otherwise)."""
    try:
        task, config, where = settings_to_config(state, settings)
    except gr.Error:
        return "", None
    if task not in CLASSIFIER_TASKS:
        return "", None
    name = Path(config["train_file"]).name
    stats = state.dataset_stats(name)
    seconds = state.step_seconds.get(plan.timing_key(name, config, where.processes(state)))
    device = "cluster node" if where.target != "local" else ("GPU" if state.hardware.gpus else "CPU")
    budget = number(settings.get("time_budget_min") or BY_NAME["time_budget_min"].default, "Time budget")
    return plan.plan_note(stats["rows"], stats["token_lengths"], config, seconds, budget, device)


def data_plan(state: AppState, settings: dict[str, Any]) -> tuple[str, Any]:
    """The Data plan, and its "train on N rows" button when the run is over the time budget."""
    text, suggestion = plan_of(state, settings)
    if suggestion:
        return text, gr.update(visible=True, value=f"Train on {suggestion:,} rows (fits the budget)")
    return text, gr.update(visible=False)


def apply_suggestion(state: AppState, settings: dict[str, Any]) -> Any:
    """Max train samples that fit the budget (what the Data plan suggests)."""
    suggestion = plan_of(state, settings)[1]
    if not suggestion:
        raise UserError("This run fits its time budget: there is nothing to apply.")
    return gr.update(value=suggestion)


def following(state: AppState, name: str | None) -> dict[str, Any]:
    """Field values for a dataset the Data tab checked: its columns and a max_length for its texts."""
    values: dict[str, Any] = dict(state.columns_of(name))
    suggested = plan.suggested_max_length(
        state.dataset_stats(name)["token_lengths"], bool(state.hardware.gpus)
    )
    if suggested:
        values["max_length"] = suggested
    return values


def estimate(state: AppState, settings: dict[str, Any]) -> str:
    from tunelab import estimate as est

    task, config, where = settings_to_config(state, settings)
    processes = where.processes(state)
    path = Path(config["train_file"])
    accumulation = config.get("gradient_accumulation_steps", 1)
    try:
        if task in CLASSIFIER_TASKS:
            _, columns, labels, reports = preflight_classification(
                str(path),
                text_column=config.get("text_column"),
                text_pair_column=config.get("text_pair_column"),
                label_column=config.get("label_column"),
            )
            _, records, _ = iter_records(path)
            texts = [str(r[columns.text]) for _, r in zip(range(64), (r for _, r in records), strict=False)]
            rows = int(reports["train"].rows * 0.9)
            if config.get("max_train_samples"):
                rows = min(rows, config["max_train_samples"])
            result = est.estimate_classification(
                config.get("model_name_or_path") or config["teacher_name_or_path"],
                texts,
                labels,
                rows,
                config["per_device_train_batch_size"],
                config.get("max_length", 128),
                config["mixed_precision"],
                processes,
                accumulation,
            )
            key = plan.timing_key(Path(config["train_file"]).name, config, processes)
            state.step_seconds[key] = result.epoch_seconds / max(rows, 1)  # the Data plan's time
        elif task == "masked-lm":
            result = mlm_estimate(path, config, processes, accumulation)
        else:
            chars = len(read_text(path)) if path.suffix.lower() == ".txt" else path.stat().st_size
            result = est.estimate_causal_lm(
                config["model_size"],
                config["tokenizer_vocab_size"],
                config["block_size"],
                chars,
                config["per_device_train_batch_size"],
                config["mixed_precision"],
                processes,
                config.get("model_name_or_path"),
                accumulation,
            )
    except TuneLabError as e:
        raise UserError(user_message(str(e))) from None
    text = result.describe()
    if task == "distillation":
        text += (
            "\n\nMeasured on the teacher's size: the student (fewer layers) steps faster, after one pass of "
            "the teacher over the training (and unlabeled) texts."
        )
    if config.get("max_train_steps"):
        text += (
            f"\n\nThis run stops after {config['max_train_steps']} steps ≈ "
            f"{est.format_duration(result.step_seconds * config['max_train_steps'])}."
        )
    return text


def mlm_estimate(path: Path, config: dict[str, Any], processes: int, accumulation: int):
    from tunelab.mlm import estimate_masked_lm

    length = config.get("max_seq_length", 128)
    if path.suffix.lower() == ".txt":
        text = read_text(path)
        texts = [line for line in text.splitlines() if line.strip()][:64]
        examples = max(1, len(text) // 4 // length)  # ~4 characters a token, cut into full blocks
    else:
        header, records, _ = iter_records(path)
        column = config.get("text_column") or ("text" if "text" in header else header[0])
        rows = [str(r.get(column) or "") for _, r in records]
        texts, examples = [t for t in rows[:64] if t.strip()], len(rows)
    if config.get("max_train_samples"):
        examples = min(examples, config["max_train_samples"])
    return estimate_masked_lm(
        config["model_name_or_path"],
        texts or ["text"],
        examples,
        config["per_device_train_batch_size"],
        length,
        config["mixed_precision"],
        processes,
        accumulation,
    )


def adaptation_settings(state: AppState, settings: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The masked-LM run that adapts the base encoder to the classification file's texts (labels unused):
    the same file, text column, base, length, batch, epochs and precision, at the masked-LM learning rate.
    It sees every text of the file, including the rows the classification run holds out (texts only,
    never labels: task-adaptive pretraining as in Gururangan et al., 2020)."""
    try:
        _, columns, _, _ = preflight_classification(
            config["train_file"],
            text_column=config.get("text_column"),
            text_pair_column=config.get("text_pair_column"),
            label_column=config.get("label_column"),
        )
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    return {
        **settings,
        "task": "masked-lm",
        "text_column": columns.text,
        "learning_rate": BY_NAME["learning_rate"].default_for("masked-lm"),
        "max_train_samples": 0,
        "use_peft": False,
        "label_smoothing": 0.0,
        "domain_adaptation": False,
    }


def submit(state: AppState, settings: dict[str, Any]) -> tuple[str, str]:
    """Queue a run (after a domain-adaptation run when asked); returns (message, run id)."""
    task, config, where = settings_to_config(state, settings)
    adapt = task == "classification" and bool(settings.get("domain_adaptation"))
    for needed in ("masked-lm", task) if adapt else (task,):
        recipe = get_task(needed).recipe
        if not get_task(needed).recipe_path().exists():
            raise UserError(f"The {needed} recipe ({recipe}) is not installed in this checkout.")
    try:
        first = None
        if adapt:
            mlm_task, mlm_config, _ = settings_to_config(state, adaptation_settings(state, settings, config))
            first = state.queue.submit(
                mlm_task,
                mlm_config,
                where.resources,
                origin="domain adaptation",
                target=where.target,
                target_options=where.options,
            )
            # The classifier starts from the adaptation run's folder once that run has finished.
            config = {**config, "model_name_or_path": str(first.path)}
        run = state.queue.submit(
            task,
            config,
            where.resources,
            after=first.id if first else None,
            target=where.target,
            target_options=where.options,
        )
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    except QueueFullError as e:
        raise UserError(str(e)) from None
    waiting = len(state.queue.queued())
    note = "it starts in a moment" if waiting <= 1 else f"{waiting} runs are waiting"
    if where.target != "local":
        note = f"it is submitted to {'Slurm' if where.target == 'slurm' else 'the Ray cluster'} in a moment"
    if first is not None:
        return (
            f"Queued **{first.id}** (masked-LM adaptation to this file's texts), then **{run.id}** "
            f"(classification from it). Follow them in the Runs tab.",
            run.id,
        )
    return f"Queued **{run.id}** ({note}). Follow it in the Runs tab.", run.id


def widget(state: AppState, setting: Setting) -> gr.components.Component:
    """The setting's gradio component at its default for the task the page opens on."""
    common = {
        "label": setting.label,
        "info": at(state, setting.help()),
        "elem_id": setting.elem_id,
    }
    value = at(state, setting.default_for(BY_NAME["task"].default))
    if setting.kind in ("int", "float") and at(state, setting.default_for()) is None:
        # "blank: the model's own value": gradio's Number shows and sends 0 for None, which would be a
        # setting (no dropout at all), so a number that may be blank is a text box
        return gr.Textbox("" if value is None else f"{value:g}", placeholder="blank", **common)
    if setting.kind in ("int", "float"):
        precision = 0 if setting.kind == "int" else None
        limits = {"minimum": setting.minimum, "maximum": setting.maximum}
        return gr.Number(value, precision=precision, **limits, **common)
    if setting.kind == "text":
        return gr.Textbox(value or "", placeholder=setting.placeholder, **common)
    if setting.kind == "bool":
        return gr.Checkbox(value, **common)
    choices = list(at(state, setting.choices))
    if setting.kind == "radio":
        return gr.Radio(choices, value=value, **common)
    # lists the app fills from its folders take names typed in too (a dataset uploaded since)
    return gr.Dropdown(choices, value=value, allow_custom_value=callable(setting.choices), **common)


def build_section(
    state: AppState, section: str, widgets: dict[str, Any], visible: bool = True
) -> list[gr.Row]:
    """The section's widgets, a gr.Row for each of its rows, into ``widgets`` by name."""
    rows: dict[int, list[Setting]] = {}
    for setting in SETTINGS:
        if setting.section == section:
            rows.setdefault(setting.row, []).append(setting)
    made = []
    for row in rows.values():
        with gr.Row(visible=visible) as made_row:
            for setting in row:
                widgets[setting.name] = widget(state, setting)
        made.append(made_row)
    return made


def build_target(state: AppState, w: dict[str, Any]) -> None:
    """Run on: this machine, or a cluster whose row of settings shows when it is chosen."""
    build_section(state, "target", w)
    rows = {name: build_section(state, name, w, visible=False)[0] for name in ("slurm", "ray")}
    w["target"].change(
        lambda t: tuple(gr.update(visible=t == name) for name in rows),
        [w["target"]],
        list(rows.values()),
        api_name=False,
    )


def build(state: AppState) -> None:
    with gr.Tab("Train", id="train") as tab:
        w: dict[str, Any] = {}  # every setting's widget, by name (app/settings.py declares them)
        with gr.Row():
            with gr.Column(scale=3):
                build_section(state, "main", w)
                for section in ("advanced", "cleaning", "distillation"):
                    with gr.Accordion(SECTIONS[section], open=False):
                        build_section(state, section, w)
            with gr.Column(scale=2):
                build_target(state, w)
                with gr.Row():
                    check_btn = gr.Button("Check data", elem_id="train-check")
                    estimate_btn = gr.Button("Estimate", elem_id="train-estimate")
                    train_btn = gr.Button("Train", variant="primary", elem_id="train-start")
                status = gr.Markdown(elem_id="train-status")
                plan_md = gr.Markdown(elem_id="train-plan")
                use_suggestion = gr.Button("Use the suggestion", visible=False, elem_id="train-suggestion")
                run_id = gr.Textbox(label="Queued run", interactive=False, visible=False)
                estimate_md = gr.Markdown(elem_id="train-estimate-text")
                command = gr.Code(
                    label="accelerate launch command", language="shell", elem_id="train-command"
                )
                config_yaml = gr.Code(label="config.yaml", language="yaml", elem_id="train-yaml")
        inputs = [w[name] for name in FIELDS]
        task, dataset, base_run, base_kind = w["task"], w["dataset"], w["base_run"], w["base_kind"]

        def settings(values: tuple) -> dict[str, Any]:
            return dict(zip(FIELDS, values, strict=True))

        by_task = [s.name for s in SETTINGS if s.task_defaults]  # learning rate, batch size, dataset, ...

        def on_task(new_task):
            values = defaults(state, new_task)
            return (
                *(gr.update(value=values[name]) for name in by_task),
                gr.update(choices=base_run_choices(state, new_task)),
                # a teacher is a finished run (or a folder / Hub id), never the default encoder
                gr.update(value="finished run") if new_task == "distillation" else gr.update(),
            )

        task.input(on_task, [task], [*(w[n] for n in by_task), base_run, base_kind], api_name=False)

        def preview_and_plan(*values):
            return (*preview(state, settings(values)), *data_plan(state, settings(values)))

        preview_event = dict(
            fn=preview_and_plan,
            inputs=inputs,
            outputs=[config_yaml, command, plan_md, use_suggestion],
            api_name=False,
            show_progress="hidden",
        )
        for comp in inputs:
            comp.change(**preview_event)

        follow_boxes = [w[name] for name in FOLLOWED]

        def follow(name: str | None) -> tuple:
            values = following(state, name)
            return tuple(gr.update(value=values[key]) if key in values else gr.update() for key in FOLLOWED)

        def on_select(current: str | None):
            """The dataset the Data tab checked last, with its columns and a max_length for its texts
            (when it is not the one shown already); fresh choices."""
            name = state.current_dataset if state.current_dataset in state.datasets() else None
            new = name is not None and name != current
            return (
                gr.update(choices=state.datasets(), **({"value": name} if new else {})),
                gr.update(choices=state.run_choices(with_model=True)),
                gr.update(choices=["", *state.datasets()]),
                gr.update(choices=["", *state.datasets()]),
                *(follow(name) if new else (gr.update(),) * len(follow_boxes)),
            )

        def auto_estimate(*values):
            """The time of a classification run, measured once per setting, for the Data plan."""
            s = settings(values)
            try:
                task, config, where = settings_to_config(state, s)
            except gr.Error:
                return gr.skip()
            key = plan.timing_key(Path(config["train_file"]).name, config, where.processes(state))
            if task not in CLASSIFIER_TASKS or key in state.step_seconds or where.target != "local":
                return gr.skip()
            try:
                return estimate(state, s)
            except gr.Error:
                return gr.skip()  # Check data says what is wrong

        tab.select(
            on_select,
            [dataset],
            [dataset, base_run, w["unlabeled_dataset"], w["test_dataset"], *follow_boxes],
            api_name=False,
        ).then(**preview_event).then(
            auto_estimate, inputs, [estimate_md], api_name=False, concurrency_limit=1, show_progress="minimal"
        ).then(**preview_event)
        dataset.input(follow, [dataset], follow_boxes, api_name=False)
        use_suggestion.click(
            lambda *v: apply_suggestion(state, settings(v)), inputs, [w["max_train_samples"]], api_name=False
        )
        check_btn.click(lambda *v: check_data(state, settings(v)), inputs, [status], api_name="check_data")
        estimate_btn.click(
            lambda *v: estimate(state, settings(v)),
            inputs,
            [estimate_md],
            api_name="estimate",
            concurrency_limit=1,
        )
        train_btn.click(
            lambda *v: submit(state, settings(v)), inputs, [status, run_id], api_name="start_training"
        )

        automation_api(state)


def json_settings(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise UserError(f"settings are not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise UserError("settings must be a JSON object of setting names to values")
    return value


def automation_api(state: AppState) -> None:
    """The Train tab for gradio_client: the same settings as one JSON object of the names in FIELDS."""

    def submit_run(settings_json: str) -> tuple[str, str]:
        """Queue a run from a JSON object of settings; returns (message, run id)."""
        return submit(state, json_settings(settings_json))

    def preview_run(settings_json: str) -> tuple[str, str]:
        """(config.yaml, command) a run with these settings would get."""
        return preview(state, json_settings(settings_json))

    def check_data_json(settings_json: str) -> str:
        """The data check for these settings."""
        return check_data(state, json_settings(settings_json))

    def estimate_json(settings_json: str) -> str:
        """The estimate for these settings."""
        return estimate(state, json_settings(settings_json))

    gr.api(submit_run, api_name="submit_run")
    gr.api(preview_run, api_name="preview_run")
    gr.api(check_data_json, api_name="check_data_json")
    gr.api(estimate_json, api_name="estimate_json", concurrency_limit=1)
