"""Arguments of the recipes: dataclasses parsed with ``HfArgumentParser``.

Every default lives here. A YAML file (``--config``) gives values, command-line flags override them,
unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .errors import ConfigError

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
DATA_FORMATS = ("auto", "text", "chat", "instruction")  # causal-LM data; see tunelab.data.chat
PROBLEM_TYPES = (
    "auto",
    "single_label",
    "multi_label",
    "regression",
)  # auto: see data.classification.detect_problem_type
ATTENTION = ("auto", "eager", "sdpa")
REPORT_TO = ("none", "tensorboard", "trackio", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive")


DEFAULT_LEARNING_RATE = 5e-5
# LoRA's default (2,000 SST-2 sentences, 2 epochs, MiniLM: 5e-5 gives 0.509, the majority class)
LORA_LEARNING_RATE = 1e-3


def resolve_learning_rate(objects: tuple) -> tuple:
    """A run's learning rate when none was given: LoRA's with use_peft, else the default."""
    peft = any(getattr(o, "use_peft", False) for o in objects)
    for o in objects:
        if isinstance(o, TrainingArguments) and o.learning_rate is None:
            o.learning_rate = LORA_LEARNING_RATE if peft else DEFAULT_LEARNING_RATE
    return objects


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def check_positive(name: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclass
class TrainingArguments:
    """The shared training loop's arguments (names of the transformers examples)."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Run folder; default: $TUNELAB_RUNS_DIR (or ./runs) / <run-id>."}
    )
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": f"Peak learning rate; default {DEFAULT_LEARNING_RATE:g}, or {LORA_LEARNING_RATE:g} with "
            "use_peft (LoRA adapters learn nothing in 2 epochs at the full fine-tuning rate)."
        },
    )
    optimizer: str = field(
        default="adamw",
        metadata={
            "help": "adamw (decoupled weight decay, fused kernel), adam (classic: weight_decay is an L2 "
            "term of the gradient, which Adam rescales; usually worse than adamw, use weight_decay 0), sgd "
            "(sgd_momentum, sgd_nesterov; weight_decay as L2) or adafactor (factored second moments, "
            "little optimizer memory; runs at learning_rate, no relative step)."
        },
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "Never applied to biases and norm weights (1-D parameters)."}
    )
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    sgd_momentum: float = 0.9
    sgd_nesterov: bool = False
    l1_lambda: float = field(
        default=0.0,
        metadata={
            "help": "L1 penalty l1_lambda * sum|w| over weight matrices, added to the loss and logged "
            "separately (train/l1) from the task loss (train/loss)."
        },
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label smoothing of the training cross-entropy (not of eval loss)."}
    )
    num_train_epochs: float = 3.0
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps; overrides num_train_epochs."}
    )
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = field(default="linear", metadata={"help": f"One of {', '.join(SCHEDULERS)}."})
    lr_scheduler_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "Scheduler options as key=value pairs: num_cycles=2 (cosine_with_restarts), "
            "power=2.0,lr_end=1e-7 (polynomial)."
        },
    )
    num_warmup_steps: int = 0
    warmup_ratio: float = field(default=0.0, metadata={"help": "Used when num_warmup_steps is 0."})
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 where the hardware runs it fast, else fp32; the launcher's "
            "--mixed_precision fp16/bf16 wins), no, fp16 or bf16."
        },
    )
    torch_compile: bool = False
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "Attention kernel while training: auto (eager for encoders on CPU, where torch's SDPA "
            "with a padding mask is about 2x slower; the model's own choice elsewhere), eager or sdpa. "
            "The saved model keeps its default."
        },
    )
    logging_steps: int = 10
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate every N steps (and at the end)."}
    )
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save a checkpoint every N steps, or 'epoch'."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (oldest removed first)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, a run folder, or 'latest' (in output_dir)."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without improvement."}
    )
    metric_for_best_model: str | None = field(
        default=None, metadata={"help": "e.g. accuracy, f1, loss; default: the task's main metric."}
    )
    load_best_model_at_end: bool = True
    report_to: str = field(default="none", metadata={"help": f"One of {', '.join(REPORT_TO)}."})
    dataloader_num_workers: int = 0
    run_name: str | None = None

    def __post_init__(self) -> None:
        _choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("attn_implementation", self.attn_implementation, ATTENTION)
        _choice("report_to", self.report_to, REPORT_TO)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        self.scheduler_kwargs()  # validates
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "learning_rate",
            "num_train_epochs",
        ):
            check_positive(name, getattr(self, name))
        for name in ("max_train_steps", "eval_steps", "early_stopping_patience"):
            check_positive(name, getattr(self, name))
        for name in (
            "weight_decay",
            "max_grad_norm",
            "num_warmup_steps",
            "dataloader_num_workers",
            "l1_lambda",
            "sgd_momentum",
        ):
            check_positive(name, getattr(self, name), allow_zero=True)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.sgd_nesterov and (self.optimizer != "sgd" or not self.sgd_momentum):
            raise ConfigError("sgd_nesterov needs optimizer sgd with sgd_momentum > 0.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.checkpointing_steps is not None:
            value = str(self.checkpointing_steps)
            if value != "epoch" and not (value.isdigit() and int(value) > 0):
                raise ConfigError(f"checkpointing_steps must be a positive integer or 'epoch', got {value!r}")
            self.checkpointing_steps = value
        if self.early_stopping_patience and not self.eval_steps:
            raise ConfigError("early_stopping_patience needs eval_steps (evaluations to count).")
        if self.metric_for_best_model:
            self.metric_for_best_model = self.metric_for_best_model.removeprefix("eval_").removeprefix(
                "eval/"
            )

    def scheduler_kwargs(self) -> dict[str, Any]:
        """``lr_scheduler_kwargs`` ('num_cycles=2') as the keyword arguments of transformers' scheduler."""
        allowed = {
            "cosine": {"num_cycles": float},
            "cosine_with_restarts": {"num_cycles": int},
            "polynomial": {"power": float, "lr_end": float},
        }
        out: dict[str, Any] = {}
        for part in filter(None, (self.lr_scheduler_kwargs or "").split(",")):
            key, sep, value = (x.strip() for x in part.partition("="))
            kinds = allowed.get(self.lr_scheduler_type, {})
            if not sep or key not in kinds:
                options = ", ".join(kinds) or "none"
                raise ConfigError(
                    f"lr_scheduler_kwargs: {part!r} does not apply to lr_scheduler_type="
                    f"{self.lr_scheduler_type} (its options: {options}; write key=value)."
                )
            try:
                out[key] = kinds[key](value)
            except ValueError:
                raise ConfigError(f"lr_scheduler_kwargs: {key}={value!r} is not a number.") from None
        return out


@dataclass
class LoraArguments:
    """LoRA through peft; the saved model is merged so it loads with plain transformers."""

    use_peft: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names; default: peft's choice for the architecture."}
    )

    def __post_init__(self) -> None:
        check_positive("lora_r", self.lora_r)
        check_positive("lora_alpha", self.lora_alpha)
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class ClassificationArguments:
    """Model and data of ``recipes/bert_cls.py`` (names of transformers' run_glue)."""

    model_name_or_path: str = field(
        default=EMBEDDED_ENCODER,
        metadata={"help": "Embedded MiniLM (default), a local folder, a finished TuneLab run or a Hub id."},
    )
    train_file: str | None = field(
        default=None, metadata={"help": "csv/tsv/json/jsonl/parquet file or folder, or a Hub dataset id."}
    )
    validation_file: str | None = None
    test_file: str | None = field(
        default=None,
        metadata={"help": "Scored by the final model after training: test/* metrics, test_predictions.csv."},
    )
    dataset_config_name: str | None = None
    text_column: str | None = field(default=None, metadata={"help": "Detected when unambiguous."})
    text_pair_column: str | None = None
    label_column: str | None = field(default=None, metadata={"help": "Detected when unambiguous."})
    validation_split_percentage: float = field(
        default=10.0,
        metadata={"help": "Held-out share of train (stratified, seeded) without validation_file."},
    )
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    group_by_length: bool = field(default=False, metadata={"help": "Batch texts of similar length together."})
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the pretrained word embeddings as they are: the optimizer skips them (half of "
            "a MiniLM's weights), so each step is faster, most on a CPU."
        },
    )
    sparse_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Update only the word-embedding rows of each batch's tokens (sparse gradients, torch's "
            "SparseAdam; the other weights keep the optimizer): faster steps with the embeddings still "
            "learning. One process, adamw/adam."
        },
    )
    hidden_dropout: float | None = field(
        default=None, metadata={"help": "Dropout of the encoder's hidden states (model default if unset)."}
    )
    attention_dropout: float | None = field(
        default=None, metadata={"help": "Dropout of the attention probabilities (model default if unset)."}
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before the classification head (model default if unset)."}
    )
    problem_type: str = field(
        default="auto",
        metadata={
            "help": "single_label (one class per text), multi_label (any number of labels per text: a "
            "sigmoid per label, BCE loss, micro/macro F1) or regression (a number per text: one output, MSE "
            "loss, RMSE/MAE/Pearson/Spearman); auto: multi_label when a label cell is a list or holds "
            "label_separator, regression when the labels are numbers that are not all whole (3.5), else "
            "single_label."
        },
    )
    label_separator: str = field(
        default=";",
        metadata={
            "help": "Splits a multi_label cell into its labels (news;sports). A JSON list in a json/jsonl/"
            "parquet file (or a csv cell) needs none."
        },
    )
    threshold: float = field(
        default=0.5,
        metadata={"help": "multi_label: a label is predicted when its probability is at least this."},
    )
    tune_thresholds: bool = field(
        default=False,
        metadata={
            "help": "multi_label: pick each label's threshold on the validation split (the best F1 of "
            "that label); saved with the model and used by TuneLab's inference."
        },
    )
    class_weights: str = field(
        default="none",
        metadata={
            "help": "Weight of each label in the training loss: none, balanced (rows / (labels * the "
            "label's rows), from the training split) or label=weight pairs such as spam=5,ham=1 (others 1). "
            "For rare labels; the reported losses stay unweighted."
        },
    )

    def __post_init__(self) -> None:
        if not self.train_file:
            raise ConfigError(
                "train_file is required: a csv/tsv/json/jsonl/parquet file, a folder or a Hub dataset id."
            )
        check_positive("max_length", self.max_length)
        check_positive("max_train_samples", self.max_train_samples)
        check_positive("max_eval_samples", self.max_eval_samples)
        if not 0 < self.validation_split_percentage < 100:
            raise ConfigError(
                f"validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}"
            )
        check_dropouts(self, ("hidden_dropout", "attention_dropout", "classifier_dropout"))
        parse_class_weights(self.class_weights)
        _choice("problem_type", self.problem_type, PROBLEM_TYPES)
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")

    def dropout_overrides(self) -> dict[str, float]:
        return {
            k: getattr(self, k)
            for k in ("hidden_dropout", "attention_dropout", "classifier_dropout")
            if getattr(self, k) is not None
        }


def parse_class_weights(spec: str) -> str | dict[str, float]:
    """``class_weights``: "none", "balanced" or {label: weight} from "spam=5,ham=1"."""
    spec = (spec or "none").strip()
    if spec in ("none", "balanced"):
        return spec
    weights: dict[str, float] = {}
    for part in spec.split(","):
        label, sep, value = (x.strip() for x in part.rpartition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not label or not weight > 0:
            raise ConfigError(
                f"class_weights={spec!r}: {part.strip()!r} is not label=weight with a weight > 0; "
                "write none, balanced or pairs such as spam=5,ham=1."
            )
        weights[label] = weight
    return weights


def check_dropouts(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")


MODEL_SIZES = ("tiny", "mini", "small", "medium")


@dataclass
class CausalLMArguments:
    """Model and data of ``recipes/gpt2_clm.py`` (names of transformers' run_clm)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue from a local folder, a finished run or a Hub id; default: from scratch."},
    )
    model_size: str = field(
        default="tiny", metadata={"help": f"From-scratch preset: {', '.join(MODEL_SIZES)}."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "GPT2Config overrides, e.g. n_layer=4,n_embd=256,n_head=4."}
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer to use; default: the model's, else a new BPE trained on train."},
    )
    tokenizer_vocab_size: int = 8192
    train_file: str | None = field(
        default=None, metadata={"help": "txt file/folder, jsonl/csv/parquet with a text column, or a Hub id."}
    )
    validation_file: str | None = None
    test_file: str | None = field(
        default=None,
        metadata={"help": "Scored by the final model after training: test/loss and test/perplexity."},
    )
    dataset_config_name: str | None = None
    validation_split_percentage: float = 5.0
    text_column: str | None = None
    block_size: int = 256
    max_train_tokens: int | None = field(default=None, metadata={"help": "Stop after this many tokens."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Blocks used per evaluation."})
    sample_prompts: list[str] | None = field(
        default=None, metadata={"help": "Prompts whose continuations are logged at each evaluation."}
    )
    sample_every: int | None = field(
        default=None, metadata={"help": "Log samples every N steps (default: at each evaluation)."}
    )
    sample_max_new_tokens: int = 64
    resid_pdrop: float | None = field(
        default=None, metadata={"help": "Residual dropout (from scratch: 0; continued: the model's)."}
    )
    embd_pdrop: float | None = field(default=None, metadata={"help": "Embedding dropout."})
    attn_pdrop: float | None = field(default=None, metadata={"help": "Attention dropout."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Token cache folder; default: $TUNELAB_CACHE or ~/.cache/tunelab."}
    )
    data_format: str = field(
        default="auto",
        metadata={
            "help": "text (pretraining on raw text), chat (a 'messages' list of {role, content} per row) or "
            "instruction (prompt/response or instruction/input/output columns); auto: from the columns. "
            "chat and instruction learn the assistant's tokens only, formatted by the chat template."
        },
    )
    train_on_prompt: bool = field(
        default=False,
        metadata={"help": "chat/instruction: learn every token (the prompts too), not only the replies."},
    )

    def __post_init__(self) -> None:
        if not self.train_file:
            raise ConfigError(
                "train_file is required: a text file or folder, a jsonl/csv/parquet file or a Hub id."
            )
        _choice("model_size", self.model_size, MODEL_SIZES)
        _choice("data_format", self.data_format, DATA_FORMATS)
        check_positive("block_size", self.block_size)
        check_positive("tokenizer_vocab_size", self.tokenizer_vocab_size)
        check_positive("max_train_tokens", self.max_train_tokens)
        if not 0 < self.validation_split_percentage < 100:
            raise ConfigError(
                f"validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}"
            )
        check_dropouts(self, ("resid_pdrop", "embd_pdrop", "attn_pdrop"))

    def dropout_overrides(self) -> dict[str, float]:
        return {
            k: getattr(self, k)
            for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")
            if getattr(self, k) is not None
        }


def _yaml_to_argv(values: dict[str, Any], known: dict[str, dataclasses.Field], source: str) -> list[str]:
    """Turn YAML values into flags placed before the command line's, so the command line wins."""
    argv: list[str] = []
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}.{hint}")
        if value is None:
            continue
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def parse_args(types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse ``[--config FILE.yaml] [--key value ...]`` into the dataclasses ``types``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(types)
    parser.add_argument("--config", default=None, help="YAML file of arguments; flags given after it win.")
    known = {f.name: f for t in types for f in dataclasses.fields(t)}
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file path.")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    prefix: list[str] = []
    if config_path:
        try:
            values = yaml.safe_load(Path(config_path).read_text()) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file {config_path} does not exist.") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {config_path} is not valid YAML: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"config file {config_path} must be a mapping of argument names to values.")
        prefix = _yaml_to_argv(values, known, config_path)
    for token in argv:
        if token.startswith("--") and "=" not in token and token[2:] not in known and token != "--help":
            close = difflib.get_close_matches(token[2:], known, n=3)
            hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown argument {token}.{hint}")
    return resolve_learning_rate(tuple(parser.parse_args_into_dataclasses(args=prefix + argv))[: len(types)])


def parse_config(types: tuple[type, ...], values: dict[str, Any], source: str = "config") -> tuple:
    """Parse a mapping of argument names to values (a config.yaml's content) into the dataclasses."""
    known = {f.name: f for t in types for f in dataclasses.fields(t)}
    parser = HfArgumentParser(types)
    argv = _yaml_to_argv(values, known, source)
    # argparse reports a wrong type by printing usage and exiting: turn that into the usual error.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return resolve_learning_rate(tuple(parser.parse_args_into_dataclasses(args=argv))[: len(types)])
    except SystemExit:
        message = captured.getvalue().strip().splitlines()[-1:] or ["invalid value"]
        raise ConfigError(f"{source}: {message[0].split('error: ', 1)[-1]}") from None


def to_config(*args_objects: Any) -> dict[str, Any]:
    """One flat dict of all arguments, for config.yaml (no secrets are ever arguments)."""
    out: dict[str, Any] = {}
    for obj in args_objects:
        out.update(dataclasses.asdict(obj))
    return out


def default_runs_dir() -> Path:
    return Path(os.environ.get("TUNELAB_RUNS_DIR", "runs"))
