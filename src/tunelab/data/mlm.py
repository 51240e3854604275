"""Masked-LM data: texts, tokenized as transformers' ``run_mlm`` does, and the masking collators.

Texts are the lines of .txt files (datasets' text builder) or the rows of a text column (jsonl, csv,
parquet, a Hub dataset); empty lines are dropped. With ``line_by_line`` every text is one example,
truncated to ``max_seq_length``; otherwise every text is tokenized with its [CLS]/[SEP], the token
streams are concatenated and cut into blocks of ``max_seq_length`` (the remainder of each map batch is
dropped, as in run_mlm): no padding, no truncation loss.

Training batches are masked on the fly by transformers' ``DataCollatorForLanguageModeling`` (from the
global torch RNG, so a resumed run masks as the uninterrupted one). The validation set is masked ONCE,
from a fixed seed, before training: every evaluation of a run (and of another run on the same data
and masking settings) scores the same positions, so the numbers are comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch

from ..errors import DataError
from .files import load_source
from .lm import lm_sources, load_documents, preflight_lm_source

logger = logging.getLogger(__name__)

EVAL_MASKING_SEED = 1234  # one masking of the validation set for every run (comparable evaluations)
IGNORE_INDEX = -100  # label of the positions that are not scored (transformers' convention)


@dataclass
class MLMTexts:
    train: Any  # datasets.Dataset with one column "text"
    validation: Any
    train_where: str
    validation_source: str


def load_texts(source, column: str | None, config_name: str | None):
    """One row per non-empty line (.txt) or per non-empty row of the text column."""
    if source.builder == "text":
        dataset = load_source(source, config_name)  # datasets' text builder: one row per line
    else:
        dataset = load_documents(source, column, config_name).select_columns(["text"])
    return dataset.filter(
        lambda batch: [bool(t and t.strip()) for t in batch["text"]],
        batched=True,
        desc="Dropping empty lines",
    )


def load_mlm_texts(
    train_file: str,
    validation_file: str | None,
    text_column: str | None,
    config_name: str | None,
    split_percentage: float,
) -> MLMTexts:
    """Preflight the files (before any tokenizer or model), load the texts, hold out validation.

    Without a validation file the LAST ``split_percentage`` % of the texts is held out (contiguous, as
    data/lm.py does: neighbouring lines of a document do not leak across the split)."""
    train_source, val_source = lm_sources(train_file, validation_file)
    column = preflight_lm_source(train_source, text_column)
    val_column = preflight_lm_source(val_source, text_column or column) if val_source else None
    train = load_texts(train_source, column, config_name)
    if len(train) == 0:
        raise DataError(f"{train_source.describe()}: no text to train on (every line is empty).")
    if val_source is not None:
        validation = load_texts(val_source, val_column, config_name)
        where = val_source.describe()
        if len(validation) == 0:
            raise DataError(f"{where}: the validation file has no text.")
    else:
        n_val = int(len(train) * split_percentage / 100)
        if n_val < 1 or n_val >= len(train):
            raise DataError(
                f"{train_source.describe()}: {len(train)} texts are too few to hold out "
                f"{split_percentage:g}% for validation. Give more text, raise validation_split_percentage, "
                "or give a validation_file."
            )
        validation = train.select(range(len(train) - n_val, len(train)))
        train = train.select(range(len(train) - n_val))
        where = f"last {split_percentage:g}% of the texts of {train_source.describe()} ({n_val} texts)"
    return MLMTexts(train, validation, train_source.describe(), where)


def group_into_blocks(batch: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenate the batch's token lists (every column alike) and cut them into full blocks."""
    out = {}
    for key, values in batch.items():
        flat = list(chain.from_iterable(values))
        usable = len(flat) // block_size * block_size
        out[key] = [flat[i : i + block_size] for i in range(0, usable, block_size)]
    return out


def tokenize_mlm(
    texts,
    tokenizer,
    max_seq_length: int,
    line_by_line: bool,
    whole_word_mask: bool,
    where: str,
    limit: int | None = None,
):
    """Examples with input_ids and special_tokens_mask (+ offset_mapping for whole-word masking)."""

    def encode(batch):
        return tokenizer(
            batch["text"],
            truncation=line_by_line,
            max_length=max_seq_length if line_by_line else None,
            return_special_tokens_mask=True,
            return_offsets_mapping=whole_word_mask,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )

    if line_by_line and limit is not None and len(texts) > limit:
        texts = texts.select(range(limit))  # one example per text: tokenize only those kept
    dataset = texts.map(encode, batched=True, remove_columns=texts.column_names, desc="Tokenizing")
    if not line_by_line:
        dataset = dataset.map(
            group_into_blocks,
            batched=True,
            fn_kwargs={"block_size": max_seq_length},
            desc=f"Grouping into blocks of {max_seq_length}",
        )
        if len(dataset) == 0:
            raise DataError(
                f"{where}: fewer tokens than one block of max_seq_length={max_seq_length}. Give more text, "
                "lower max_seq_length, or set line_by_line."
            )
    if limit is not None and len(dataset) > limit:
        dataset = dataset.select(range(limit))
    return dataset


class MaskingCollator:
    """transformers' ``DataCollatorForLanguageModeling`` (``mlm_probability``, ``whole_word_mask``), plus
    the padding of ``offset_mapping`` that whole-word masking needs: ``tokenizer.pad`` (transformers 5.x)
    leaves that column ragged and the batch cannot become a tensor."""

    def __init__(self, tokenizer, mlm_probability: float, whole_word_mask: bool, seed: int | None = None):
        from transformers import DataCollatorForLanguageModeling

        # Whole-word masking in transformers 5 always uses [MASK] (no random/kept tokens); saying so
        # here keeps its warning out of every run's log.
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_mask else {}
        self.collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            mlm_probability=mlm_probability,
            whole_word_mask=whole_word_mask,
            seed=seed,
            **replace,
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "offset_mapping" in examples[0]:
            longest = max(len(e["input_ids"]) for e in examples)
            examples = [
                {
                    **e,
                    "offset_mapping": list(e["offset_mapping"]) + [[0, 0]] * (longest - len(e["input_ids"])),
                }
                for e in examples
            ]
        return dict(self.collator(examples))


def mask_once(
    dataset, tokenizer, mlm_probability: float, whole_word_mask: bool
) -> list[dict[str, torch.Tensor]]:
    """The validation examples masked from ``EVAL_MASKING_SEED``, one by one (so the masks do not depend
    on batch size or the number of processes)."""
    collator = MaskingCollator(tokenizer, mlm_probability, whole_word_mask, seed=EVAL_MASKING_SEED)
    out = []
    for example in dataset:
        batch = collator([example])
        out.append({"input_ids": batch["input_ids"][0], "labels": batch["labels"][0]})
    if not any((e["labels"] != IGNORE_INDEX).any() for e in out):
        raise DataError(
            "the validation texts are too short to mask any token; give longer or more validation text."
        )
    return out


def pad_masked(examples: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate pre-masked examples: input_ids padded with the pad token, labels with IGNORE_INDEX."""
    longest = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n], labels[i, :n], attention_mask[i, :n] = e["input_ids"], e["labels"], 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def mlm_dataloaders(
    train_set,
    eval_examples: list[dict[str, torch.Tensor]],
    tokenizer,
    mlm_probability: float,
    whole_word_mask: bool,
    train_batch_size: int,
    eval_batch_size: int,
    on_gpu: bool,
    num_workers: int = 0,
):
    """Shuffled training examples masked on the fly; the pre-masked validation examples sorted by length
    (less padding; the order does not change a sum over tokens)."""
    from torch.utils.data import DataLoader

    train_dl = DataLoader(
        train_set,
        batch_size=train_batch_size,
        shuffle=True,
        collate_fn=MaskingCollator(tokenizer, mlm_probability, whole_word_mask),
        num_workers=num_workers,
        pin_memory=on_gpu,
    )
    ordered = sorted(eval_examples, key=lambda e: len(e["input_ids"]), reverse=True)
    eval_dl = DataLoader(
        ordered,
        batch_size=eval_batch_size,
        collate_fn=lambda batch: pad_masked(batch, tokenizer.pad_token_id),
        num_workers=0,
        pin_memory=on_gpu,
    )
    return train_dl, eval_dl


def describe_mlm_data(
    texts: MLMTexts, train_set, eval_examples: list, max_seq_length: int, line_by_line: bool
) -> str:
    unit = (
        f"texts (truncated to {max_seq_length} tokens)"
        if line_by_line
        else f"blocks of {max_seq_length} tokens"
    )
    masked = sum(int((e["labels"] != IGNORE_INDEX).sum()) for e in eval_examples)
    return (
        f"train {len(texts.train):,} texts -> {len(train_set):,} {unit}; validation {len(texts.validation):,} "
        f"texts -> {len(eval_examples):,} examples, {masked:,} masked tokens scored ({texts.validation_source})"
    )
