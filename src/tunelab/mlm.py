"""Masked-LM domain adaptation of a BERT-family encoder: arguments, the model, a loss that runs the
vocabulary projection on the masked positions only, evaluation, and saving a folder that
``recipes/bert_cls.py --model_name_or_path <run>`` fine-tunes.

About the embedded MiniLM (sentence-transformers/all-MiniLM-L6-v2): it ships the encoder only
(``BertModel``: no ``cls.predictions.*`` weights). ``AutoModelForMaskedLM`` then initialises the MLM
head's transform (dense + LayerNorm) and output bias afresh; the decoder matrix is tied to the word
embeddings, so it starts from trained weights. The first steps of an adaptation run therefore also
train the head: the loss starts high (about ln(vocabulary) before training) and falls quickly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .args import EMBEDDED_ENCODER, check_dropouts, check_positive
from .data.mlm import IGNORE_INDEX
from .errors import ConfigError
from .models import dropout_config, load_pretrained, resolve_model_path

logger = logging.getLogger(__name__)

# The per-token MLM head of the architectures where the fast path (head on masked positions only) is
# exact; any other masked-LM model computes full logits through its own forward.
HEAD_ATTRIBUTES = ("cls", "lm_head")


@dataclass
class MaskedLMArguments:
    """Model and data of ``recipes/bert_mlm.py`` (names of transformers' run_mlm)."""

    model_name_or_path: str = field(
        default=EMBEDDED_ENCODER,
        metadata={"help": "Embedded MiniLM (default), a local folder, a finished TuneLab run or a Hub id."},
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "txt file/folder (one text per line), jsonl/csv/parquet with a text column, or a Hub id."
        },
    )
    validation_file: str | None = None
    dataset_config_name: str | None = None
    text_column: str | None = field(default=None, metadata={"help": "Detected when unambiguous."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Held-out share of the texts (the last ones) without validation_file."}
    )
    max_seq_length: int = 128
    line_by_line: bool = field(
        default=False,
        metadata={"help": "One example per text (truncated); default: texts concatenated into full blocks."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked and scored."})
    whole_word_mask: bool = field(
        default=False, metadata={"help": "Mask every sub-word token of a chosen word together."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Examples (texts or blocks)."})
    max_eval_samples: int | None = None
    evaluate_before_training: bool = field(
        default=True,
        metadata={"help": "Score the base model on the validation masks first (logged at step 0)."},
    )
    hidden_dropout: float | None = field(default=None, metadata={"help": "Model default if unset."})
    attention_dropout: float | None = field(default=None, metadata={"help": "Model default if unset."})

    def __post_init__(self) -> None:
        if not self.train_file:
            raise ConfigError(
                "train_file is required: a text file or folder, a jsonl/csv/parquet file or a Hub id."
            )
        check_positive("max_seq_length", self.max_seq_length)
        check_positive("max_train_samples", self.max_train_samples)
        check_positive("max_eval_samples", self.max_eval_samples)
        if self.max_seq_length < 8:
            raise ConfigError(f"max_seq_length must be at least 8, got {self.max_seq_length}")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not 0 < self.validation_split_percentage < 100:
            raise ConfigError(
                f"validation_split_percentage must be in (0, 100), got {self.validation_split_percentage}"
            )
        check_dropouts(self, ("hidden_dropout", "attention_dropout"))

    def dropout_overrides(self) -> dict[str, float]:
        return {
            k: getattr(self, k)
            for k in ("hidden_dropout", "attention_dropout")
            if getattr(self, k) is not None
        }


def check_tokenizer(tokenizer, name: str, whole_word_mask: bool) -> None:
    if tokenizer.mask_token is None:
        raise ConfigError(f"{name}: the tokenizer has no mask token; masked-LM training needs one ([MASK]).")
    if whole_word_mask and not tokenizer.is_fast:
        raise ConfigError(f"{name}: whole_word_mask needs a fast tokenizer (word offsets); this one is not.")


def load_masked_lm(name_or_path: str, max_seq_length: int, dropout: dict[str, float] | None = None):
    """``AutoModelForMaskedLM`` from a folder, run or Hub id; says when the MLM head is new."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    path = resolve_model_path(name_or_path)
    config = load_pretrained(AutoConfig, path)
    limit = getattr(config, "max_position_embeddings", None)
    if limit and max_seq_length > limit:
        raise ConfigError(f"max_seq_length={max_seq_length} is longer than the model's {limit} positions.")
    model, info = load_pretrained(
        AutoModelForMaskedLM, path, output_loading_info=True, **dropout_config(config, dropout or {})
    )
    new = [k for k in info.get("missing_keys", []) if not k.endswith("decoder.weight")]
    if new:
        logger.info(
            "The checkpoint has no trained MLM head (%s): it starts from a fresh initialisation and trains "
            "with the encoder (the decoder is tied to the word embeddings).",
            ", ".join(sorted(new)[:4]) + (", ..." if len(new) > 4 else ""),
        )
    return model


class MaskedLMForTraining(nn.Module):
    """Cross-entropy on the masked positions only. For BERT/RoBERTa-style heads (per token) the head runs
    on the ~15% masked hidden states instead of every position: the vocabulary projection is a large
    share of a small encoder's step (384 x 30,522 per token for MiniLM) and the loss is the same."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.head_name = next(
            (a for a in HEAD_ATTRIBUTES if isinstance(getattr(model, a, None), nn.Module)), None
        )

    def masked_logits(self, input_ids, attention_mask, labels, token_type_ids=None):
        selected = labels != IGNORE_INDEX
        if self.head_name is None:
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
            return logits[selected], labels[selected], selected
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
        return getattr(self.model, self.head_name)(hidden[selected]), labels[selected], selected

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None, reduction: str = "mean"):
        logits, targets, selected = self.masked_logits(input_ids, attention_mask, labels, token_type_ids)
        if reduction == "mean":
            # A batch with no masked token (short lines) gives 0, not the NaN of a mean over nothing.
            total = F.cross_entropy(
                logits.float(), targets, reduction="sum", label_smoothing=self.label_smoothing
            )
            return total / max(targets.numel(), 1)
        # Per example: (loss sum, masked tokens, correct predictions), for an exact mean over all tokens.
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        rows = selected.nonzero()[:, 0]
        zeros = torch.zeros(len(input_ids), device=input_ids.device)
        return (
            zeros.index_add(0, rows, losses),
            selected.sum(1).float(),
            zeros.index_add(0, rows, (logits.argmax(-1) == targets).float()),
        )


def evaluate_masked_lm(accelerator, model, dataloader) -> dict[str, float]:
    """Mean cross-entropy over every scored token of the validation set (all processes), its perplexity,
    and the share of masked tokens predicted exactly (eval/masked_accuracy: not a classifier's accuracy)."""
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for batch in dataloader:
            parts = model(**batch, reduction="none")
            # gather_for_metrics drops the examples DDP repeats to even out the last batch.
            gathered = accelerator.gather_for_metrics(torch.stack(parts, dim=1))
            totals += gathered.double().sum(0)
    loss_sum, tokens, correct = totals.tolist()
    loss = loss_sum / max(tokens, 1)
    return {
        "eval/loss": loss,
        "eval/perplexity": math.exp(min(loss, 50.0)),
        "eval/masked_accuracy": correct / max(tokens, 1),
    }


def evaluate_before_training(accelerator, model, eval_dataloader) -> dict[str, float]:
    """The base model on the same validation masks, before any step (the training loop prepares its own
    copy of the dataloader later)."""
    model.to(accelerator.device)
    model.eval()
    with accelerator.autocast():
        metrics = evaluate_masked_lm(accelerator, model, accelerator.prepare_data_loader(eval_dataloader))
    model.train()
    return metrics


def flops_per_token(model: nn.Module, mlm_probability: float) -> float:
    """6 x the encoder's non-embedding parameters, plus the head on the masked share of the tokens."""
    embeddings = model.get_input_embeddings().weight
    params = sum(p.numel() for p in model.parameters())
    head = embeddings.numel()
    return 6.0 * (params - embeddings.numel()) + 6.0 * head * mlm_probability


def pooler_weights(name_or_path: str, prefix: str) -> dict[str, torch.Tensor]:
    """The base checkpoint's pooler (``pooler.dense.*``), which ``*ForMaskedLM`` models do not hold.

    Saved next to the adapted encoder so a classifier built from the MLM run gets the same pooler as one
    built from the base model (``BertForSequenceClassification`` uses it); ``*ForMaskedLM`` ignores it."""
    from safetensors import safe_open

    try:
        folder = Path(resolve_model_path(name_or_path))
    except ConfigError:
        return {}
    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        with safe_open(str(file), "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                name = key.removeprefix(f"{prefix}.")
                if name.startswith("pooler."):
                    out[f"{prefix}.{name}"] = weights.get_tensor(key)
    return out


def save_masked_lm(model, tokenizer, output_dir: Path, extra_weights: dict[str, torch.Tensor]) -> None:
    """The adapted model (+ the base's pooler) and tokenizer at the run folder's root."""
    state = model.state_dict()
    state.update({k: v for k, v in extra_weights.items() if k not in state})
    model.save_pretrained(output_dir, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)


def estimate_masked_lm(
    model_name_or_path: str,
    texts: list[str],
    examples: int,
    batch_size: int,
    max_seq_length: int,
    precision: str = "auto",
    num_processes: int = 1,
    accumulation: int = 1,
):
    """Estimate for ``recipes/bert_mlm.py`` from real texts: a few measured steps of the masked-LM model.

    examples: training examples per epoch (texts with line_by_line, else blocks). The measured step runs
    the head on every position (the model's own loss), so it errs on the slow side."""
    from .data.mlm import MaskingCollator
    from .estimate import measure_step
    from .models import load_tokenizer

    tokenizer = load_tokenizer(model_name_or_path)
    model = load_masked_lm(model_name_or_path, max_seq_length)
    sample = (texts * (batch_size // max(len(texts), 1) + 1))[:batch_size]
    encoded = tokenizer(sample, truncation=True, max_length=max_seq_length, return_special_tokens_mask=True)
    rows = [{k: encoded[k][i] for k in ("input_ids", "special_tokens_mask")} for i in range(len(sample))]
    batch = MaskingCollator(tokenizer, 0.15, whole_word_mask=False, seed=0)(rows)
    steps = math.ceil(examples / batch_size)
    est = measure_step(model, batch, precision, steps_per_epoch=steps, num_processes=num_processes)
    est.steps_per_epoch = max(1, math.ceil(est.steps_per_epoch / accumulation))
    est.step_seconds *= accumulation
    return est
