"""Train tab: task, dataset, base model and hyperparameters -> the exact config.yaml and `accelerate launch`
command, an estimate from a measured step, a full data check, and a queued run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from tunelab.args import (
    EMBEDDED_ENCODER,
    MODEL_SIZES,
    OPTIMIZERS,
    SCHEDULERS,
    CausalLMArguments,
    ClassificationArguments,
    LoraArguments,
    TrainingArguments,
)
from tunelab.data.augment import METHODS as AUGMENT_METHODS
from tunelab.data.augment import AugmentationArguments
from tunelab.data.classification import preflight_classification
from tunelab.data.clean import DUPLICATE_MODES, DataCleaningArguments
from tunelab.data.files import iter_records, read_text
from tunelab.distill import DistillationArguments
from tunelab.errors import TuneLabError
from tunelab.launch import Resources, slurm
from tunelab.launch.command import processes_and_device
from tunelab.mlm import MaskedLMArguments
from tunelab.tasks import get_task

from . import plan
from .queue import QueueFullError
from .state import COLUMN_FIELDS, AppState, UserError, clean_message, user_message

TASKS = ("classification", "causal-lm", "masked-lm", "distillation")
CLASSIFIER_TASKS = ("classification", "distillation")  # labeled data, a classifier comes out
BASE_KINDS = ("default", "finished run", "local folder", "Hub id")

# Fast first-run defaults on a 2-core CPU (about a minute end to end); the recipe's own defaults apply
# to everything not set here.
DEFAULTS: dict[str, Any] = {
    "task": "classification",
    "dataset": "sample-sentiment.csv",
    "base_kind": "default",
    "base_run": "",
    "base_path": "",
    "num_train_epochs": 1.0,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 16,
    "max_length": 64,
    "block_size": 128,
    "max_train_samples": 0,  # all rows; the Data plan suggests fewer when the run is over the budget
    "max_train_steps": 0,
    "model_size": "tiny",
    "tokenizer_vocab_size": 4096,
    "text_column": "",
    "text_pair_column": "",
    "label_column": "",
    "mixed_precision": "auto",
    "num_processes": 0,  # 0: one per GPU of the machine, else one CPU process
    "gradient_accumulation_steps": 1,
    "use_peft": False,
    "lora_r": 8,
    "lora_alpha": 16,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
    "checkpointing_steps": "",
    "save_total_limit": 2,
    "eval_steps": 0,
    "logging_steps": 5,
    "seed": 42,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "l1_lambda": 0.0,
    "label_smoothing": 0.0,
    "hidden_dropout": None,
    "attention_dropout": None,
    "domain_adaptation": False,
    # classification only: cleaning and augmentation of the training split (0: no length limit)
    "normalize_text": False,
    "min_text_length": 0,
    "max_text_length": 0,
    "remove_duplicates": "none",
    "drop_conflicting_labels": False,
    "remove_leakage": False,
    "augment_method": "none",
    "augment_prob": 0.1,
    "augment_copies": 1,
    # distillation only: the teacher is the base model (a finished classification run, folder or Hub id)
    "student_num_layers": 0,  # 0: every other teacher layer
    "temperature": 2.0,
    "alpha": 0.5,
    "unlabeled_dataset": "",
    "time_budget_min": 5.0,  # the Data plan compares the estimated time with it (not a recipe setting)
    # where the run trains: this machine, or a Slurm cluster (None: the targets file's default)
    "target": "local",
    "slurm_partition": None,
    "slurm_time": None,
    "slurm_nodes": None,
    "slurm_gpus_per_node": None,
    "slurm_cpus_per_task": None,
}
TARGET_CHOICES = [("This machine", "local"), ("Slurm cluster", "slurm")]
FOLLOWED = (*COLUMN_FIELDS, "max_length")  # what the Train tab takes from a dataset the Data tab checked
TASK_DEFAULTS = {
    "classification": {
        "learning_rate": 5e-5,
        "per_device_train_batch_size": 16,
        "dataset": "sample-sentiment.csv",
        "max_train_steps": 0,
    },
    "causal-lm": {
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 8,
        "dataset": "sample-python-docs.txt",
        "max_train_steps": 200,
    },
    "masked-lm": {
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 16,
        "dataset": "sample-python-docs.txt",
        "max_train_steps": 100,
    },
    "distillation": {
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 32,
        "dataset": "sample-sentiment.csv",
        "max_train_steps": 0,
    },
}
FIELDS = list(DEFAULTS)


def _none_if_blank(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def _positive_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "") and float(value) > 0 else None


def base_model(state: AppState, s: dict[str, Any]) -> str | None:
    kind = s.get("base_kind") or "default"
    if kind == "default" and s["task"] == "distillation":
        raise UserError(
            "Distillation needs a teacher: set Base model to 'finished run' and pick a classification run "
            "(or give a fine-tuned classifier's folder or Hub id)."
        )
    if kind == "default":
        return EMBEDDED_ENCODER if s["task"] in ("classification", "masked-lm") else None
    if kind == "finished run":
        run = state.run(s.get("base_run"))
        if not run.has_model():
            raise UserError(f"Run {run.id} has no final model (it is {run.state}); pick a finished run.")
        return str(run.path)
    value = _none_if_blank(s.get("base_path"))
    if not value:
        raise UserError(f"Enter the {kind} of the base model.")
    if kind == "local folder":
        path = Path(value).expanduser()
        if not (path / "config.json").is_file():
            raise UserError("That folder holds no model (config.json is missing).")
        return str(path.resolve())
    return value


def base_run_choices(state: AppState, task: str) -> list[str]:
    """Finished runs a new run of ``task`` can start from; a classifier also from masked-LM adaptations;
    a distillation from classifiers (its teacher)."""
    if task == "distillation":
        return state.run_choices(task="classification", with_model=True)
    choices = state.run_choices(task=task, with_model=True)
    if task == "classification":
        choices += state.run_choices(task="masked-lm", with_model=True)
    return choices


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


def settings_to_config(state: AppState, settings: dict[str, Any]) -> tuple[str, dict[str, Any], Placement]:
    """(task, config for config.yaml, where it trains); wrong values raise gr.Error."""
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    remembered = state.columns_of(s["dataset"])  # what the Data tab's check found or was told
    for key in COLUMN_FIELDS:
        if not str(s[key] or "").strip():
            s[key] = remembered[key]
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise UserError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
    task = s["task"]
    if task not in TASKS:
        raise UserError(f"Task must be one of {', '.join(TASKS)}.")
    train_file = str(state.dataset_path(s["dataset"]))
    checkpointing = _none_if_blank(str(s["checkpointing_steps"] or ""))
    training = {
        "per_device_train_batch_size": int(s["per_device_train_batch_size"]),
        "learning_rate": float(s["learning_rate"]),
        "num_train_epochs": float(s["num_train_epochs"]),
        "max_train_steps": _positive_or_none(s["max_train_steps"]),
        "gradient_accumulation_steps": int(s["gradient_accumulation_steps"]),
        "lr_scheduler_type": s["lr_scheduler_type"],
        "warmup_ratio": float(s["warmup_ratio"]),
        "mixed_precision": s["mixed_precision"],
        "checkpointing_steps": checkpointing,
        "save_total_limit": int(s["save_total_limit"]),
        "eval_steps": _positive_or_none(s["eval_steps"]),
        "logging_steps": int(s["logging_steps"]),
        "seed": int(s["seed"]),
        "optimizer": s["optimizer"],
        "weight_decay": float(s["weight_decay"]),
        "l1_lambda": float(s["l1_lambda"]),
        "label_smoothing": float(s["label_smoothing"]),
    }
    hidden, attention = _none_if_blank(s["hidden_dropout"]), _none_if_blank(s["attention_dropout"])
    lora = {"use_peft": bool(s["use_peft"]), "lora_r": int(s["lora_r"]), "lora_alpha": int(s["lora_alpha"])}
    if task == "classification":
        data = {
            "model_name_or_path": base_model(state, s),
            "train_file": train_file,
            "text_column": _none_if_blank(s["text_column"]),
            "text_pair_column": _none_if_blank(s["text_pair_column"]),
            "label_column": _none_if_blank(s["label_column"]),
            "max_length": int(s["max_length"]),
            "max_train_samples": _positive_or_none(s["max_train_samples"]),
            "hidden_dropout": hidden,
            "attention_dropout": attention,
            "normalize_text": bool(s["normalize_text"]),
            "min_text_length": _positive_or_none(s["min_text_length"]),
            "max_text_length": _positive_or_none(s["max_text_length"]),
            "remove_duplicates": s["remove_duplicates"],
            "drop_conflicting_labels": bool(s["drop_conflicting_labels"]),
            "remove_leakage": bool(s["remove_leakage"]),
            "augment_method": s["augment_method"],
            "augment_prob": float(s["augment_prob"]),
            "augment_copies": int(s["augment_copies"]),
        }
        types = (
            ClassificationArguments,
            TrainingArguments,
            LoraArguments,
            DataCleaningArguments,
            AugmentationArguments,
        )
    elif task == "masked-lm":
        data = {
            "model_name_or_path": base_model(state, s),
            "train_file": train_file,
            "text_column": _none_if_blank(s["text_column"]),
            # rows of a table are separate texts; a .txt file is running text, cut into full blocks
            "line_by_line": Path(train_file).suffix.lower() != ".txt",
            "max_seq_length": int(s["max_length"]),
            "max_train_samples": _positive_or_none(s["max_train_samples"]),
            "hidden_dropout": hidden,
            "attention_dropout": attention,
        }
        types = (MaskedLMArguments, TrainingArguments)
    elif task == "distillation":
        unlabeled = _none_if_blank(s["unlabeled_dataset"])
        data = {
            "teacher_name_or_path": base_model(state, s),
            "student_num_layers": _positive_or_none(s["student_num_layers"]),
            "temperature": float(s["temperature"]),
            "alpha": float(s["alpha"]),
            "unlabeled_file": str(state.dataset_path(unlabeled)) if unlabeled else None,
            "train_file": train_file,
            "text_column": _none_if_blank(s["text_column"]),
            "text_pair_column": _none_if_blank(s["text_pair_column"]),
            "label_column": _none_if_blank(s["label_column"]),
            "max_length": int(s["max_length"]),
            "max_train_samples": _positive_or_none(s["max_train_samples"]),
        }
        types = (ClassificationArguments, TrainingArguments, DistillationArguments)
    else:
        data = {
            "model_name_or_path": base_model(state, s),
            "model_size": s["model_size"],
            "tokenizer_vocab_size": int(s["tokenizer_vocab_size"]),
            "train_file": train_file,
            "text_column": _none_if_blank(s["text_column"]),
            "block_size": int(s["block_size"]),
            "sample_prompts": ["The "],
            # GPT-2's residual and embedding dropout play the role of the encoder's hidden dropout
            "resid_pdrop": hidden,
            "embd_pdrop": hidden,
            "attn_pdrop": attention,
        }
        types = (CausalLMArguments, TrainingArguments)
    if task != "classification":
        if lora["use_peft"]:
            raise UserError("LoRA is available for classification runs; this recipe trains all weights.")
        lora = {}  # the GPT-2, masked-LM and distillation recipes take no LoRA arguments
    elif not lora["use_peft"]:
        lora = {"use_peft": False}
    config = {k: v for part in (data, training, lora) for k, v in part.items() if v is not None}
    try:  # the recipe's own validation, before anything is written
        known = {t: {f.name for f in dataclasses.fields(t)} for t in types}
        for t in types:
            t(**{k: v for k, v in config.items() if k in known[t]})
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    except (TypeError, ValueError) as e:
        raise UserError(f"Invalid setting: {clean_message(str(e))}") from None
    return task, config, placement(state, s)


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
            )
            counts = reports["train"].label_counts
            return (
                f"✓ **{path.name}**: {reports['train'].rows} rows, text column `{columns.text}`, "
                f"label column `{columns.label}`, labels " + ", ".join(f"{k} ({counts[k]})" for k in labels)
            )
        if path.suffix.lower() == ".txt":
            text = read_text(path)
            if not text.strip():
                return f"✗ **{path.name}** is empty."
            return f"✓ **{path.name}**: {len(text):,} characters of text for pretraining."
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
    budget = float(settings.get("time_budget_min") or DEFAULTS["time_budget_min"])
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
        "learning_rate": TASK_DEFAULTS["masked-lm"]["learning_rate"],
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
    if where.target == "slurm":
        note = "it is submitted to Slurm in a moment"
    if first is not None:
        return (
            f"Queued **{first.id}** (masked-LM adaptation to this file's texts), then **{run.id}** "
            f"(classification from it). Follow them in the Runs tab.",
            run.id,
        )
    return f"Queued **{run.id}** ({note}). Follow it in the Runs tab.", run.id


def build(state: AppState) -> dict[str, Any]:
    with gr.Tab("Train", id="train") as tab:
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    task = gr.Radio(
                        list(TASKS),
                        value=DEFAULTS["task"],
                        label="Task",
                        info="classification: fine-tune an encoder · causal-lm: pretrain a small GPT-2 · "
                        "masked-lm: adapt an encoder to your text (domain adaptation), then pick it as the "
                        "base (finished run) of a classification run · distillation: a smaller, faster "
                        "student of a finished classifier (the teacher: Base model → finished run)",
                    )
                    dataset = gr.Dropdown(
                        state.datasets(),
                        value=DEFAULTS["dataset"],
                        label="Dataset",
                        allow_custom_value=True,
                        elem_id="train-dataset",
                    )
                with gr.Row():
                    base_kind = gr.Radio(
                        list(BASE_KINDS),
                        value="default",
                        label="Base model",
                        info="default: the embedded MiniLM (classification, masked-lm) or a new GPT-2 "
                        "(causal-lm)",
                    )
                    base_run = gr.Dropdown(
                        state.run_choices(with_model=True),
                        label="Finished run",
                        value=None,
                        allow_custom_value=True,
                    )
                    base_path = gr.Textbox(
                        label="Local folder or Hub id", placeholder="e.g. /models/bert or bert-base-uncased"
                    )
                with gr.Row():
                    epochs = gr.Number(DEFAULTS["num_train_epochs"], label="Epochs", minimum=0.01)
                    lr = gr.Number(DEFAULTS["learning_rate"], label="Learning rate", minimum=0)
                    batch = gr.Number(
                        DEFAULTS["per_device_train_batch_size"],
                        label="Batch size per device",
                        precision=0,
                        minimum=1,
                    )
                    max_steps = gr.Number(
                        DEFAULTS["max_train_steps"], label="Max steps (0: by epochs)", precision=0, minimum=0
                    )
                with gr.Row():
                    max_length = gr.Number(
                        DEFAULTS["max_length"], label="Max length (classification)", precision=0, minimum=8
                    )
                    max_samples = gr.Number(
                        DEFAULTS["max_train_samples"],
                        label="Max train samples (0: all)",
                        precision=0,
                        minimum=0,
                    )
                    budget = gr.Number(
                        DEFAULTS["time_budget_min"],
                        label="Time budget (min)",
                        minimum=0.5,
                        info="the Data plan says whether the run fits",
                        elem_id="train-budget",
                    )
                    block_size = gr.Number(
                        DEFAULTS["block_size"], label="Block size (causal-lm)", precision=0, minimum=8
                    )
                    model_size = gr.Dropdown(
                        list(MODEL_SIZES), value="tiny", label="GPT-2 size (from scratch)"
                    )
                    vocab = gr.Number(
                        DEFAULTS["tokenizer_vocab_size"],
                        label="BPE vocabulary (from scratch)",
                        precision=0,
                        minimum=256,
                    )
                with gr.Row():
                    text_column = gr.Textbox(label="Text column (blank: detect)", elem_id="train-text-column")
                    pair_column = gr.Textbox(label="Text pair column (optional)", elem_id="train-pair-column")
                    label_column = gr.Textbox(
                        label="Label column (blank: detect)", elem_id="train-label-column"
                    )
                    domain_adaptation = gr.Checkbox(
                        False,
                        label="Adapt to my domain first",
                        info="classification: queue a masked-LM run on this file's texts, then "
                        "fine-tune from it",
                    )
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        precision = gr.Dropdown(
                            ["auto", "no", "bf16", "fp16"],
                            value="auto",
                            label="Precision",
                            info="auto: bf16 where the hardware is fast at it",
                        )
                        processes = gr.Number(
                            0,
                            label="Processes",
                            precision=0,
                            minimum=0,
                            maximum=64,
                            info=f"0: {state.hardware.describe()} gives "
                            + (f"{state.hardware.gpus} (one per GPU)" if state.hardware.gpus else "1"),
                        )
                        accumulation = gr.Number(1, label="Gradient accumulation", precision=0, minimum=1)
                        seed = gr.Number(42, label="Seed", precision=0)
                    with gr.Row():
                        scheduler = gr.Dropdown(list(SCHEDULERS), value="linear", label="LR schedule")
                        warmup = gr.Number(0.0, label="Warmup ratio", minimum=0, maximum=0.99)
                        logging_steps = gr.Number(
                            DEFAULTS["logging_steps"], label="Log every N steps", precision=0, minimum=1
                        )
                        eval_steps = gr.Number(
                            0, label="Evaluate every N steps (0: at the end)", precision=0, minimum=0
                        )
                    with gr.Row():
                        checkpointing = gr.Textbox(
                            "", label="Checkpoint every N steps or 'epoch'", placeholder="blank: only on stop"
                        )
                        save_limit = gr.Number(2, label="Checkpoints kept", precision=0, minimum=1)
                        use_peft = gr.Checkbox(False, label="LoRA (peft)")
                        lora_r = gr.Number(8, label="LoRA r", precision=0, minimum=1)
                        lora_alpha = gr.Number(16, label="LoRA alpha", precision=0, minimum=1)
                    with gr.Row():
                        optimizer = gr.Dropdown(
                            list(OPTIMIZERS),
                            value="adamw",
                            label="Optimizer",
                            info="adamw: decoupled weight decay · sgd: momentum 0.9 · adafactor: low memory",
                        )
                        weight_decay = gr.Number(
                            DEFAULTS["weight_decay"], label="Weight decay (not on biases/norms)", minimum=0
                        )
                        l1_lambda = gr.Number(0.0, label="L1 penalty (λ · Σ|w|)", minimum=0)
                        label_smoothing = gr.Number(0.0, label="Label smoothing", minimum=0, maximum=0.99)
                    with gr.Row():
                        hidden_dropout = gr.Number(
                            None,
                            label="Hidden dropout (blank: model's)",
                            info="GPT-2: resid_pdrop and embd_pdrop",
                            minimum=0,
                            maximum=0.99,
                        )
                        attention_dropout = gr.Number(
                            None,
                            label="Attention dropout (blank: model's)",
                            info="GPT-2: attn_pdrop",
                            minimum=0,
                            maximum=0.99,
                        )
                with gr.Accordion("Data cleaning and augmentation (classification)", open=False):
                    with gr.Row():
                        remove_duplicates = gr.Dropdown(
                            list(DUPLICATE_MODES),
                            value="none",
                            label="Remove duplicates",
                            info="exact: same text and label · near: also differing in case/punctuation",
                        )
                        drop_conflicts = gr.Checkbox(False, label="Drop texts with conflicting labels")
                        remove_leakage = gr.Checkbox(False, label="Remove train rows found in validation")
                        normalize = gr.Checkbox(False, label="Normalize text (NFKC, whitespace)")
                    with gr.Row():
                        min_chars = gr.Number(
                            0, label="Min text length (chars, 0: none)", precision=0, minimum=0
                        )
                        max_chars = gr.Number(
                            0, label="Max text length (chars, 0: none)", precision=0, minimum=0
                        )
                    with gr.Row():
                        augment_method = gr.Dropdown(
                            list(AUGMENT_METHODS),
                            value="none",
                            label="Augment training data",
                            info="embedding_neighbors: similar words from the model's embeddings · "
                            "masked_lm: needs a base with a trained MLM head (a masked-lm run)",
                        )
                        augment_prob = gr.Number(0.1, label="Per-word probability", minimum=0.01, maximum=1)
                        augment_copies = gr.Number(1, label="Copies per example", precision=0, minimum=1)
                with gr.Accordion("Distillation (task: distillation)", open=False), gr.Row():
                    student_layers = gr.Number(
                        0,
                        label="Student layers (0: every other teacher layer)",
                        precision=0,
                        minimum=0,
                        info="kept evenly spaced from the teacher, initialized with its weights",
                    )
                    temperature = gr.Number(2.0, label="Temperature T", minimum=0.01)
                    alpha = gr.Number(
                        0.5,
                        label="alpha",
                        minimum=0,
                        maximum=1,
                        info="α·CE(labels) + (1−α)·T²·KL(teacher‖student)",
                    )
                    unlabeled = gr.Dropdown(
                        ["", *state.datasets()],
                        value="",
                        label="Unlabeled texts (optional)",
                        info="a dataset whose texts the teacher labels (its labels are not used)",
                        allow_custom_value=True,
                    )
            with gr.Column(scale=2):
                defaults = state.slurm_defaults
                target = gr.Radio(
                    TARGET_CHOICES,
                    value="local",
                    label="Run on",
                    info="a Slurm cluster needs this app's runs folder on its shared filesystem",
                    elem_id="train-target",
                )
                with gr.Row(visible=False) as slurm_row:
                    slurm_partition = gr.Textbox(
                        defaults.get("partition") or "", label="Partition", placeholder="the default one"
                    )
                    slurm_nodes = gr.Number(defaults.get("nodes") or 1, label="Nodes", precision=0, minimum=1)
                    slurm_gpus = gr.Number(
                        defaults.get("gpus_per_node") or 0, label="GPUs per node", precision=0, minimum=0
                    )
                    slurm_cpus = gr.Number(
                        defaults.get("cpus_per_task") or 0,
                        label="CPUs per node",
                        precision=0,
                        minimum=0,
                        info="0: the partition's default",
                    )
                    slurm_time = gr.Textbox(
                        defaults.get("time") or "", label="Time limit", placeholder="HH:MM:SS"
                    )
                target.change(
                    lambda t: gr.update(visible=t == "slurm"), [target], [slurm_row], api_name=False
                )
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
                    label="accelerate launch command",
                    language="shell",
                    interactive=False,
                    elem_id="train-command",
                )
                config_yaml = gr.Code(
                    label="config.yaml", language="yaml", interactive=False, elem_id="train-yaml"
                )
        components = {
            "task": task,
            "dataset": dataset,
            "base_kind": base_kind,
            "base_run": base_run,
            "base_path": base_path,
            "num_train_epochs": epochs,
            "learning_rate": lr,
            "per_device_train_batch_size": batch,
            "max_length": max_length,
            "block_size": block_size,
            "max_train_samples": max_samples,
            "max_train_steps": max_steps,
            "model_size": model_size,
            "tokenizer_vocab_size": vocab,
            "text_column": text_column,
            "text_pair_column": pair_column,
            "label_column": label_column,
            "mixed_precision": precision,
            "num_processes": processes,
            "gradient_accumulation_steps": accumulation,
            "use_peft": use_peft,
            "lora_r": lora_r,
            "lora_alpha": lora_alpha,
            "lr_scheduler_type": scheduler,
            "warmup_ratio": warmup,
            "checkpointing_steps": checkpointing,
            "save_total_limit": save_limit,
            "eval_steps": eval_steps,
            "logging_steps": logging_steps,
            "seed": seed,
            "optimizer": optimizer,
            "weight_decay": weight_decay,
            "l1_lambda": l1_lambda,
            "label_smoothing": label_smoothing,
            "hidden_dropout": hidden_dropout,
            "attention_dropout": attention_dropout,
            "domain_adaptation": domain_adaptation,
            "normalize_text": normalize,
            "min_text_length": min_chars,
            "max_text_length": max_chars,
            "remove_duplicates": remove_duplicates,
            "drop_conflicting_labels": drop_conflicts,
            "remove_leakage": remove_leakage,
            "augment_method": augment_method,
            "augment_prob": augment_prob,
            "augment_copies": augment_copies,
            "student_num_layers": student_layers,
            "temperature": temperature,
            "alpha": alpha,
            "unlabeled_dataset": unlabeled,
            "time_budget_min": budget,
            "target": target,
            "slurm_partition": slurm_partition,
            "slurm_time": slurm_time,
            "slurm_nodes": slurm_nodes,
            "slurm_gpus_per_node": slurm_gpus,
            "slurm_cpus_per_task": slurm_cpus,
        }
        assert list(components) == FIELDS
        inputs = list(components.values())

        def settings(values: tuple) -> dict[str, Any]:
            return dict(zip(FIELDS, values, strict=True))

        def json_settings(text: str) -> dict[str, Any]:
            try:
                value = json.loads(text or "{}")
            except json.JSONDecodeError as e:
                raise UserError(f"settings are not valid JSON: {e.msg}") from None
            if not isinstance(value, dict):
                raise UserError("settings must be a JSON object of setting names to values")
            return value

        def on_task(new_task):
            d = TASK_DEFAULTS[new_task]
            return (
                gr.update(value=d["learning_rate"]),
                gr.update(value=d["per_device_train_batch_size"]),
                gr.update(value=d["dataset"]),
                gr.update(value=d["max_train_steps"]),
                gr.update(choices=base_run_choices(state, new_task)),
                # a teacher is a finished run (or a folder / Hub id), never the default encoder
                gr.update(value="finished run") if new_task == "distillation" else gr.update(),
            )

        task.input(on_task, [task], [lr, batch, dataset, max_steps, base_run, base_kind], api_name=False)

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

        follow_boxes = [text_column, pair_column, label_column, max_length]

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

        tab.select(on_select, [dataset], [dataset, base_run, unlabeled, *follow_boxes], api_name=False).then(
            **preview_event
        ).then(
            auto_estimate, inputs, [estimate_md], api_name=False, concurrency_limit=1, show_progress="minimal"
        ).then(**preview_event)
        dataset.input(follow, [dataset], follow_boxes, api_name=False)
        use_suggestion.click(
            lambda *v: apply_suggestion(state, settings(v)), inputs, [max_samples], api_name=False
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

        # Automation API (gradio_client): the same settings as one JSON object of the names in FIELDS.
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
    return {"dataset": dataset, "base_run": base_run, "preview": preview_event}
