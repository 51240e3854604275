"""The Train tab's settings, each declared once: its widget, section, the tasks whose recipe takes it and
the recipe argument it sets. Defaults and help come from the recipes' argument dataclasses unless the app
says otherwise (fast first-run values on a 2-core CPU); the widgets, the automation API's JSON settings,
the config.yaml preview and the run's config all come from this one table (LLaMA-Factory's webui writes
each field three times; here adding a setting is one entry).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunelab.args import (
    DATA_FORMATS,
    DEFAULT_LEARNING_RATE,
    LORA_LEARNING_RATE,
    MIXED_PRECISION,
    MODEL_SIZES,
    OPTIMIZERS,
    PROBLEM_TYPES,
    SCHEDULERS,
)
from tunelab.data.augment import METHODS as AUGMENT_METHODS
from tunelab.data.clean import DUPLICATE_MODES
from tunelab.errors import TuneLabError
from tunelab.tasks import TASKS as REGISTRY
from tunelab.tasks import get_task

from .placement import Placement, placement
from .setting import Setting, at
from .state import COLUMN_FIELDS, AppState, UserError, clean_message

TASKS = tuple(t.app_name for t in REGISTRY.values())  # classification, causal-lm, masked-lm, distillation
CLASSIFIER_TASKS = ("classification", "distillation")  # labeled data, a classifier comes out
BASE_KINDS = ("default", "finished run", "local folder", "Hub id")
TARGET_CHOICES = (("This machine", "local"), ("Slurm cluster", "slurm"), ("Ray cluster", "ray"))

# Where the widgets sit, in order: the main settings, three accordions, and (beside them) where it runs.
SECTIONS = {
    "main": None,
    "advanced": "Advanced",
    "cleaning": "Data cleaning and augmentation (classification)",
    "distillation": "Distillation (task: distillation)",
    "target": None,
    "slurm": None,  # one row, shown when Run on is a Slurm cluster
    "ray": None,  # one row, shown when Run on is a Ray cluster
}


def _dataset(state: AppState, s: dict[str, Any]) -> str:
    return str(state.dataset_path(s["dataset"]))


def optional_dataset(name: str, label: str, section: str, tasks: tuple[str, ...], argument: str, info: str):
    """A choice among the data folder's datasets, blank for none; the recipe's ``argument`` gets its path."""

    def path(state: AppState, s: dict[str, Any]) -> str | None:
        chosen = str(s[name] or "").strip()
        return str(state.dataset_path(chosen)) if chosen else None

    return Setting(
        name,
        "choice",
        label,
        section,
        tasks=tasks,
        arguments=dict.fromkeys(tasks, (argument,)),
        resolve=path,
        choices=lambda state: ["", *state.datasets()],
        default="",
        info=info,
    )


ALL = TASKS
TEXTS = ("classification", "distillation")  # labeled texts, one label column
DROPOUT_TASKS = ("classification", "masked-lm", "causal-lm")
_slurm = lambda key, empty: lambda state: state.slurm_defaults.get(key) or empty  # noqa: E731
_ray = lambda key, empty: lambda state: state.ray_defaults.get(key) or empty  # noqa: E731

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "task",
        "radio",
        "Task",
        "main",
        choices=TASKS,
        default="classification",
        info="classification: fine-tune an encoder · causal-lm: pretrain a small GPT-2 on text, or chat/"
        "instruction fine-tune one (a finished run, or gpt2 from the Hub) on conversations · masked-lm: adapt "
        "an encoder to your text (domain adaptation), then pick it as the base (finished run) of a "
        "classification run · distillation: a smaller, faster student of a finished classifier (the "
        "teacher: Base model → finished run)",
    ),
    Setting(
        "dataset",
        "choice",
        "Dataset",
        "main",
        tasks=ALL,
        arguments={t: ("train_file",) for t in ALL},
        resolve=_dataset,
        choices=AppState.datasets,
        default="sample-sentiment.csv",
        task_defaults={"causal-lm": "sample-python-docs.txt", "masked-lm": "sample-python-docs.txt"},
        info="",
        elem_id="train-dataset",
    ),
    optional_dataset(
        "test_dataset",
        "Test set (optional)",
        "main",
        ("classification", "causal-lm"),
        "test_file",
        "scored by the final model after training (classification: every prediction too)",
    ),
    Setting(
        "base_kind",
        "radio",
        "Base model",
        "main",
        1,
        tasks=ALL,
        arguments={
            "classification": ("model_name_or_path",),
            "causal-lm": ("model_name_or_path",),
            "masked-lm": ("model_name_or_path",),
            "distillation": ("teacher_name_or_path",),
        },
        resolve=lambda state, s: state.base_model(s["task"], s["base_kind"], s["base_run"], s["base_path"]),
        choices=BASE_KINDS,
        default="default",
        info="default: the embedded MiniLM (classification, masked-lm) or a new GPT-2 (causal-lm)",
    ),
    Setting(
        "base_run",
        "choice",
        "Finished run",
        "main",
        1,
        choices=lambda state: state.run_choices(with_model=True),
        default=None,
    ),
    Setting(
        "base_path",
        "text",
        "Local folder or Hub id",
        "main",
        1,
        default="",
        placeholder="e.g. /models/bert or bert-base-uncased",
    ),
    Setting("num_train_epochs", "float", "Epochs", "main", 2, tasks=ALL, default=1.0, minimum=0.01, info=""),
    Setting(
        "learning_rate",
        "float",
        "Learning rate",
        "main",
        2,
        tasks=ALL,
        default=DEFAULT_LEARNING_RATE,
        # classification at batch 32, grouped, no dropout: 1e-4 (README, "Classification defaults")
        task_defaults={"classification": 1e-4, "causal-lm": 1e-3, "masked-lm": 1e-4, "distillation": 1e-4},
        minimum=0,
        info=f"left at the default with LoRA, the run uses LoRA's: {LORA_LEARNING_RATE:g}",
    ),
    Setting(
        "per_device_train_batch_size",
        "int",
        "Batch size per device",
        "main",
        2,
        tasks=ALL,
        default=32,
        task_defaults={"causal-lm": 8, "masked-lm": 16},
        minimum=1,
        info="",
    ),
    Setting(
        "max_train_steps",
        "int",
        "Max steps (0: by epochs)",
        "main",
        2,
        tasks=ALL,
        unset_at=0,
        task_defaults={"causal-lm": 200, "masked-lm": 100},
        minimum=0,
    ),
    Setting(
        "max_length",
        "int",
        "Max length (classification)",
        "main",
        3,
        tasks=(*TEXTS, "masked-lm"),
        arguments={"masked-lm": ("max_seq_length",)},
        default=64,
        minimum=8,
        info="",
    ),
    Setting(
        "max_train_samples",
        "int",
        "Max train samples (0: all)",
        "main",
        3,
        tasks=(*TEXTS, "masked-lm"),
        unset_at=0,  # every row; the Data plan suggests fewer when the run is over the budget
        minimum=0,
        info="",
    ),
    Setting(
        "time_budget_min",  # the Data plan compares the estimated time with it (not a recipe setting)
        "float",
        "Time budget (min)",
        "main",
        3,
        default=5.0,
        minimum=0.5,
        info="the Data plan says whether the run fits",
        elem_id="train-budget",
    ),
    Setting(
        "block_size", "int", "Block size (causal-lm)", "main", 3, tasks=("causal-lm",), default=128, minimum=8
    ),
    Setting(
        "data_format",
        "choice",
        "Data format (causal-lm)",
        "main",
        3,
        tasks=("causal-lm",),
        choices=DATA_FORMATS,
        info="text: pretraining · chat/instruction: fine-tuning on conversations (auto: from the columns)",
        elem_id="train-data-format",
    ),
    Setting(
        "train_on_prompt",
        "bool",
        "Learn the prompts too (chat)",
        "advanced",
        6,
        tasks=("causal-lm",),
        info="chat/instruction: the loss on every token, not only the assistant's replies",
    ),
    Setting(
        "model_size",
        "choice",
        "GPT-2 size (from scratch)",
        "main",
        3,
        tasks=("causal-lm",),
        choices=MODEL_SIZES,
    ),
    Setting(
        "tokenizer_vocab_size",
        "int",
        "BPE vocabulary (from scratch)",
        "main",
        3,
        tasks=("causal-lm",),
        default=4096,
        minimum=256,
    ),
    Setting(
        "text_column",
        "text",
        "Text column (blank: detect)",
        "main",
        4,
        tasks=ALL,
        elem_id="train-text-column",
    ),
    Setting(
        "text_pair_column",
        "text",
        "Text pair column (optional)",
        "main",
        4,
        tasks=TEXTS,
        elem_id="train-pair-column",
    ),
    Setting(
        "label_column",
        "text",
        "Label column (blank: detect)",
        "main",
        4,
        tasks=TEXTS,
        elem_id="train-label-column",
    ),
    Setting(
        "problem_type",
        "choice",
        "Problem type",
        "main",
        4,
        tasks=("classification",),
        choices=PROBLEM_TYPES,
        info="auto: multi_label when a cell holds several labels (a;b), regression for numbers like 3.5",
    ),
    Setting(
        "label_separator",
        "text",
        "Label separator",
        "main",
        4,
        tasks=("classification",),
        info="multi_label: between the labels of a cell",
    ),
    Setting(
        "domain_adaptation",
        "bool",
        "Adapt to my domain first",
        "main",
        4,
        default=False,
        info="classification: queue a masked-LM run on this file's texts, then fine-tune from it",
    ),
    Setting(
        "mixed_precision",
        "choice",
        "Precision",
        "advanced",
        tasks=ALL,
        choices=MIXED_PRECISION,
        info="auto: bf16 where the hardware is fast at it",
    ),
    Setting(
        "num_processes",
        "int",
        "Processes",
        "advanced",
        default=0,  # 0: one per GPU of the machine, else one CPU process
        minimum=0,
        maximum=64,
        info=lambda state: (
            f"0: {state.hardware.describe()} gives "
            + (f"{state.hardware.gpus} (one per GPU)" if state.hardware.gpus else "1")
        ),
    ),
    Setting("gradient_accumulation_steps", "int", "Gradient accumulation", "advanced", tasks=ALL, minimum=1),
    Setting("seed", "int", "Seed", "advanced", tasks=ALL),
    Setting(
        "lr_scheduler_type", "choice", "LR schedule", "advanced", 1, tasks=ALL, choices=SCHEDULERS, info=""
    ),
    Setting(
        "warmup_ratio", "float", "Warmup ratio", "advanced", 1, tasks=ALL, minimum=0, maximum=0.99, info=""
    ),
    Setting("logging_steps", "int", "Log every N steps", "advanced", 1, tasks=ALL, default=5, minimum=1),
    Setting(
        "eval_steps",
        "int",
        "Evaluate every N steps (0: at the end)",
        "advanced",
        1,
        tasks=ALL,
        unset_at=0,
        minimum=0,
        info="",
    ),
    Setting(
        "checkpointing_steps",
        "text",
        "Checkpoint every N steps or 'epoch'",
        "advanced",
        2,
        tasks=ALL,
        placeholder="blank: only on stop",
        info="",
    ),
    Setting("save_total_limit", "int", "Checkpoints kept", "advanced", 2, tasks=ALL, minimum=1),
    Setting(
        "group_by_length",
        "bool",
        "Batch texts of similar length",
        "advanced",
        6,
        tasks=TEXTS,
        default=True,
        info="far less padding, so faster steps, at the same accuracy",
    ),
    Setting(
        "sparse_embeddings",
        "bool",
        "Sparse word-embedding updates",
        "advanced",
        6,
        tasks=("classification",),
        default=True,
        info="only the rows of each batch's tokens are updated: faster steps, same accuracy (README)",
    ),
    Setting(
        "freeze_embeddings",
        "bool",
        "Freeze word embeddings",
        "advanced",
        6,
        tasks=("classification",),
        info="the optimizer skips them: faster steps, a little lower accuracy (README)",
    ),
    Setting("use_peft", "bool", "LoRA (peft)", "advanced", 6, tasks=("classification",)),
    Setting("lora_r", "int", "LoRA r", "advanced", 5, tasks=("classification",), minimum=1),
    Setting("lora_alpha", "int", "LoRA alpha", "advanced", 5, tasks=("classification",), minimum=1),
    Setting(
        "optimizer",
        "choice",
        "Optimizer",
        "advanced",
        3,
        tasks=ALL,
        choices=OPTIMIZERS,
        info="adamw: decoupled weight decay · sgd: momentum 0.9 · adafactor: low memory",
    ),
    Setting(
        "weight_decay",
        "float",
        "Weight decay (not on biases/norms)",
        "advanced",
        3,
        tasks=ALL,
        minimum=0,
        info="",
    ),
    Setting("l1_lambda", "float", "L1 penalty (λ · Σ|w|)", "advanced", 3, tasks=ALL, minimum=0),
    Setting("label_smoothing", "float", "Label smoothing", "advanced", 3, tasks=ALL, minimum=0, maximum=0.99),
    Setting(
        "class_weights",
        "text",
        "Class weights",
        "advanced",
        5,
        tasks=("classification",),
        placeholder="none, balanced or spam=5,ham=1",
        info="for rare labels: balanced weighs each label by rows / (labels × its rows)",
    ),
    Setting(
        "threshold",
        "float",
        "Decision threshold (multi_label)",
        "advanced",
        5,
        tasks=("classification",),
        minimum=0.01,
        maximum=0.99,
        info="a label is predicted when its probability reaches this",
    ),
    Setting(
        "tune_thresholds",
        "bool",
        "Tune thresholds on validation",
        "advanced",
        6,
        tasks=("classification",),
        info="multi_label: each label's best-F1 threshold, saved with the model",
    ),
    Setting(
        "hidden_dropout",
        "float",
        "Hidden dropout (blank: model's)",
        "advanced",
        4,
        tasks=DROPOUT_TASKS,
        task_defaults={"classification": 0.0},  # one epoch: no loss of accuracy, faster steps on CPU
        # GPT-2's residual and embedding dropout play the role of the encoder's hidden dropout
        arguments={"causal-lm": ("resid_pdrop", "embd_pdrop")},
        info="GPT-2: resid_pdrop and embd_pdrop",
        minimum=0,
        maximum=0.99,
    ),
    Setting(
        "attention_dropout",
        "float",
        "Attention dropout (blank: model's)",
        "advanced",
        4,
        tasks=DROPOUT_TASKS,
        task_defaults={"classification": 0.0},
        arguments={"causal-lm": ("attn_pdrop",)},
        info="GPT-2: attn_pdrop",
        minimum=0,
        maximum=0.99,
    ),
    Setting(
        "remove_duplicates",
        "choice",
        "Remove duplicates",
        "cleaning",
        tasks=("classification",),
        choices=DUPLICATE_MODES,
        info="exact: same text and label · near: also differing in case/punctuation",
    ),
    Setting(
        "drop_conflicting_labels",
        "bool",
        "Drop texts with conflicting labels",
        "cleaning",
        tasks=("classification",),
    ),
    Setting(
        "remove_leakage",
        "bool",
        "Remove train rows found in validation",
        "cleaning",
        tasks=("classification",),
    ),
    Setting(
        "normalize_text",
        "bool",
        "Normalize text (NFKC, whitespace)",
        "cleaning",
        tasks=("classification",),
    ),
    Setting(
        "min_text_length",
        "int",
        "Min text length (chars, 0: none)",
        "cleaning",
        1,
        tasks=("classification",),
        unset_at=0,
        minimum=0,
        info="",
    ),
    Setting(
        "max_text_length",
        "int",
        "Max text length (chars, 0: none)",
        "cleaning",
        1,
        tasks=("classification",),
        unset_at=0,
        minimum=0,
        info="",
    ),
    Setting(
        "augment_method",
        "choice",
        "Augment training data",
        "cleaning",
        2,
        tasks=("classification",),
        choices=AUGMENT_METHODS,
        info="embedding_neighbors: similar words from the model's embeddings · masked_lm: needs a base "
        "with a trained MLM head (a masked-lm run)",
    ),
    Setting(
        "augment_prob",
        "float",
        "Per-word probability",
        "cleaning",
        2,
        tasks=("classification",),
        minimum=0.01,
        maximum=1,
    ),
    Setting(
        "augment_copies", "int", "Copies per example", "cleaning", 2, tasks=("classification",), minimum=1
    ),
    Setting(
        "student_num_layers",
        "int",
        "Student layers (0: every other teacher layer)",
        "distillation",
        tasks=("distillation",),
        unset_at=0,
        minimum=0,
        info="kept evenly spaced from the teacher, initialized with its weights",
    ),
    Setting("temperature", "float", "Temperature T", "distillation", tasks=("distillation",), minimum=0.01),
    Setting(
        "alpha",
        "float",
        "alpha",
        "distillation",
        tasks=("distillation",),
        minimum=0,
        maximum=1,
        info="α·CE(labels) + (1−α)·T²·KL(teacher‖student)",
    ),
    optional_dataset(
        "unlabeled_dataset",
        "Unlabeled texts (optional)",
        "distillation",
        ("distillation",),
        "unlabeled_file",
        "a dataset whose texts the teacher labels (its labels are not used)",
    ),
    # where the run trains: this machine, a Slurm or a Ray cluster (blank fields: the targets file's default)
    Setting(
        "target",
        "radio",
        "Run on",
        "target",
        choices=TARGET_CHOICES,
        default="local",
        info="a cluster needs this app's runs folder on a filesystem its nodes share",
        elem_id="train-target",
    ),
    Setting(
        "slurm_partition",
        "text",
        "Partition",
        "slurm",
        default=_slurm("partition", ""),
        placeholder="the default one",
    ),
    Setting("slurm_nodes", "int", "Nodes", "slurm", default=_slurm("nodes", 1), minimum=1),
    Setting(
        "slurm_gpus_per_node", "int", "GPUs per node", "slurm", default=_slurm("gpus_per_node", 0), minimum=0
    ),
    Setting(
        "slurm_cpus_per_task",
        "int",
        "CPUs per node",
        "slurm",
        default=_slurm("cpus_per_task", 0),
        minimum=0,
        info="0: the partition's default",
    ),
    Setting("slurm_time", "text", "Time limit", "slurm", default=_slurm("time", ""), placeholder="HH:MM:SS"),
    Setting(
        "ray_address",
        "text",
        "Ray address",
        "ray",
        default=_ray("address", ""),
        placeholder="http://head:8265",
        info="the cluster's dashboard, as `ray job submit --address` takes",
    ),
    Setting("ray_nodes", "int", "Nodes", "ray", default=_ray("nodes", 1), minimum=1),
    Setting("ray_gpus_per_node", "int", "GPUs per node", "ray", default=_ray("gpus_per_node", 0), minimum=0),
    Setting("ray_cpus_per_task", "int", "CPUs per node", "ray", default=_ray("cpus_per_task", 1), minimum=1),
    Setting(
        "ray_max_failures",
        "int",
        "Restarts",
        "ray",
        default=_ray("max_failures", 0),
        minimum=0,
        info="lost workers Ray Train restarts from the last checkpoint",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}
FIELDS = list(BY_NAME)  # the automation API's JSON settings, and the Train tab's inputs in this order


def defaults(state: AppState, task: str | None = None) -> dict[str, Any]:
    """Every setting's value for a new ``task`` run before the user changes anything."""
    return {s.name: at(state, s.default_for(task)) for s in SETTINGS}


def _derived(task: str, config: dict[str, Any]) -> dict[str, Any]:
    """Recipe arguments the app sets from the others rather than asking for."""
    if task == "masked-lm":  # rows of a table are separate texts; a .txt file is running text, cut in blocks
        return {"line_by_line": Path(config["train_file"]).suffix.lower() != ".txt"}
    if task == "causal-lm":
        return {"sample_prompts": ["The "]}
    return {}


def settings_to_config(state: AppState, settings: dict[str, Any]) -> tuple[str, dict[str, Any], Placement]:
    """(task, config for config.yaml, where it trains); wrong values raise gr.Error."""
    unknown = set(settings) - set(FIELDS)
    if unknown:
        raise UserError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
    task = settings.get("task") or "classification"
    if task not in TASKS:
        raise UserError(f"Task must be one of {', '.join(TASKS)}.")
    s = {**defaults(state, task), **{k: v for k, v in settings.items() if v is not None}}
    remembered = state.columns_of(s["dataset"])  # what the Data tab's check found or was told
    for key in COLUMN_FIELDS:
        if not str(s[key] or "").strip():
            s[key] = remembered[key]
    if s["use_peft"] and task not in BY_NAME["use_peft"].tasks:
        raise UserError("LoRA is available for classification runs; this recipe trains all weights.")
    default_lr = defaults(state, task)["learning_rate"]
    if s["use_peft"] and BY_NAME["learning_rate"].config_value(s["learning_rate"]) == default_lr:
        s["learning_rate"] = None  # not chosen: the recipe takes LoRA's own (tunelab.args.LORA_LEARNING_RATE)
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        names = setting.targets(task)
        if names:
            value = setting.resolve(state, s) if setting.resolve else setting.config_value(s[setting.name])
            config.update(dict.fromkeys(names, value))
    config = {k: v for k, v in {**config, **_derived(task, config)}.items() if v is not None}
    try:  # the recipe's own validation, before anything is written
        for kind in get_task(task).argument_types():
            known = {f.name for f in dataclasses.fields(kind)}
            kind(**{k: v for k, v in config.items() if k in known})
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    except (TypeError, ValueError) as e:
        raise UserError(f"Invalid setting: {clean_message(str(e))}") from None
    return task, config, placement(state, s)
