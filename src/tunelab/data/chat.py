"""Chat and instruction data for causal-LM fine-tuning: conversations, a chat template, masked targets.

A ``chat`` file holds a ``messages`` list per row ([{"role": "user", "content": ...}, ...], the Hugging
Face convention); an ``instruction`` file holds ``prompt``/``response`` (or Alpaca's ``instruction``,
``input``, ``output``) columns, read as a one-turn conversation. Every row is checked as it is read, so
a bad one is named by file and row before a tokenizer or model is built.

Each conversation is rendered by the tokenizer's chat template (the base model's own, or TuneLab's,
added with its role tokens) and tokenized once; the targets are the assistant tokens (the end-of-turn
token included, so the model learns to stop), the rest -100. Conversations are not packed: a batch pads
its conversations to the longest (batches of similar lengths, so padding stays small), and right padding
under causal attention changes no real token's result.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError
from .files import DataSource, iter_records, load_source

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
MESSAGES_COLUMNS = ("messages", "conversations")
# (prompt column, response column) pairs an instruction file may use; Alpaca's also has "input"
INSTRUCTION_COLUMNS = (("prompt", "response"), ("instruction", "output"), ("prompt", "completion"))
END_OF_TURN = "<|end|>"
ROLE_TOKENS = tuple(f"<|{role}|>" for role in ROLES)
# TuneLab's template for a model that has none: a role token, the text, the end-of-turn token. The
# {% generation %} markers let transformers return the assistant tokens' mask.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- message['content'] + '<|end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)


def detect_data_format(columns: list[str], where: str, data_format: str = "auto") -> str:
    """text, chat or instruction: as given, else from the columns (a messages column: chat; a
    prompt/response pair: instruction; else text)."""
    lower = {c.lower() for c in columns}
    if data_format == "auto":
        if lower & set(MESSAGES_COLUMNS):
            return "chat"
        if any(p in lower and r in lower for p, r in INSTRUCTION_COLUMNS):
            return "instruction"
        return "text"
    if data_format == "chat" and not lower & set(MESSAGES_COLUMNS):
        raise DataError(
            f"{where}: data_format chat needs a 'messages' column (a list of {{role, content}}); the "
            f"columns are: {', '.join(columns)}."
        )
    if data_format == "instruction" and not any(p in lower and r in lower for p, r in INSTRUCTION_COLUMNS):
        pairs = "; ".join("/".join(pair) for pair in INSTRUCTION_COLUMNS)
        raise DataError(
            f"{where}: data_format instruction needs prompt and response columns ({pairs}); the columns "
            f"are: {', '.join(columns)}."
        )
    return data_format


def conversation(record: dict[str, Any], data_format: str, position: str) -> list[dict[str, str]]:
    """One row as a checked list of {role, content} messages; a DataError names ``position`` (file, row)."""
    lower = {k.lower(): k for k in record}
    if data_format == "instruction":
        prompt_key, response_key = next((p, r) for p, r in INSTRUCTION_COLUMNS if p in lower and r in lower)
        prompt, response = record.get(lower[prompt_key]), record.get(lower[response_key])
        extra = record.get(lower["input"]) if "input" in lower else None  # Alpaca: the instruction's input
        for name, value in ((prompt_key, prompt), (response_key, response), ("input", extra)):
            if value is not None and not isinstance(value, str):
                raise DataError(f"{position}, column {name!r}: expected text, got {type(value).__name__}.")
        if not (prompt or "").strip() or not (response or "").strip():
            empty = prompt_key if not (prompt or "").strip() else response_key
            raise DataError(f"{position}, column {empty!r}: the value is empty.")
        system = record.get(lower["system"]) if "system" in lower else None
        messages = (
            [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
        )
        user = prompt + (f"\n\n{extra}" if extra and extra.strip() else "")
        return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": response}]
    column = next(lower[c] for c in MESSAGES_COLUMNS if c in lower)
    messages = record.get(column)
    if isinstance(messages, str):  # a csv cell holding the JSON list
        try:
            messages = json.loads(messages)
        except ValueError:
            raise DataError(f"{position}, column {column!r}: not a JSON list of messages.") from None
    if not isinstance(messages, list) or not messages:
        raise DataError(
            f"{position}, column {column!r}: expected a non-empty list of {{role, content}} messages, got "
            f"{'an empty list' if messages == [] else type(messages).__name__}."
        )
    out = []
    for i, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise DataError(f"{position}, message {i}: expected {{role, content}} with text content.")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(
                f"{position}, message {i}: unknown role {role!r}; the roles are {', '.join(ROLES)}."
            )
        out.append({"role": role, "content": message["content"]})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise DataError(f"{position}: the conversation has no assistant turn (nothing to learn from).")
    return out


def read_conversations(
    source: DataSource, data_format: str, split: str = "train"
) -> list[list[dict[str, str]]]:
    """Every row of a split as a conversation (checked row by row)."""
    if source.is_hub:
        dataset = load_source(source, split=split)
        files = [
            (source.hub_id, list(dataset.column_names), ((i + 1, r) for i, r in enumerate(dataset)), "row")
        ]
    else:
        files = [(str(p), *iter_records(p)) for p in source.files]
    out = []
    for where, columns, records, unit in files:
        detect_data_format(columns, where, data_format)
        out += [conversation(record, data_format, f"{where}: {unit} {n}") for n, record in records]
    if not out:
        raise DataError(f"{source.describe()}: no conversations ({split} split).")
    return out


def conversation_texts(conversations: list[list[dict[str, str]]]) -> Iterator[str]:
    """The messages' texts, to train a tokenizer on."""
    for messages in conversations:
        for message in messages:
            yield message["content"]


def ensure_chat_template(tokenizer) -> bool:
    """Keep the tokenizer's chat template; else add TuneLab's and its role and end-of-turn tokens (saved
    with the tokenizer, so apply_chat_template and pipelines work without TuneLab). True when added."""
    if tokenizer.chat_template:
        return False
    tokenizer.add_special_tokens({"additional_special_tokens": [*ROLE_TOKENS, END_OF_TURN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return True


def stop_token_ids(tokenizer) -> list[int]:
    """Where a reply ends: end-of-text, and the end-of-turn token of a chat template."""
    ids = [tokenizer.eos_token_id]
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN) if END_OF_TURN in tokenizer.get_vocab() else None
    return ids + ([end] if end is not None and end not in ids else [])


def assistant_mask(tokenizer, messages: list[dict[str, str]], ids: list[int], mask: list[int]) -> list[int]:
    """The assistant tokens' mask: the template's own ({% generation %} markers), else found by rendering
    the conversation up to each assistant turn (the tokens between the prompt for a turn and the turn's
    end are its reply)."""
    if any(mask):
        return mask
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(
            tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, return_dict=False)
        )
        end = len(tokenizer.apply_chat_template(messages[: i + 1], return_dict=False))
        mask[start:end] = [1] * (min(end, len(ids)) - start)
    return mask


@dataclass
class ChatExamples(torch.utils.data.Dataset):
    """Tokenized conversations: input_ids and next-token targets (-100 where nothing is learned)."""

    ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, labels = self.ids[i], self.labels[i]
        return {"input_ids": torch.tensor(ids[:-1]), "targets": torch.tensor(labels[1:])}

    @property
    def lengths(self) -> list[int]:
        return [len(x) - 1 for x in self.ids]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def target_tokens(self) -> int:
        return sum(sum(t != -100 for t in labels[1:]) for labels in self.labels)


def tokenize_conversations(
    conversations: list[list[dict[str, str]]], tokenizer, block_size: int, train_on_prompt: bool = False
) -> tuple[ChatExamples, int]:
    """(examples, number cut at block_size + 1 tokens). Targets are the assistant tokens, or every token
    with ``train_on_prompt``; a conversation with no assistant token left after the cut is dropped."""
    ids_all, labels_all, cut = [], [], 0
    for messages in conversations:
        out = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
        ids = list(out["input_ids"])
        mask = (
            [1] * len(ids)
            if train_on_prompt
            else assistant_mask(tokenizer, messages, ids, out["assistant_masks"])
        )
        if len(ids) > block_size + 1:
            cut += 1
            ids, mask = ids[: block_size + 1], mask[: block_size + 1]
        if not any(mask[1:]):
            continue
        ids_all.append(ids)
        labels_all.append([t if m else -100 for t, m in zip(ids, mask, strict=True)])
    return ChatExamples(ids_all, labels_all), cut


def split_conversations(conversations: list, percentage: float, seed: int) -> tuple[list, list]:
    """A seeded random ``percentage`` % of the conversations for validation (at least one)."""
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(order) * percentage / 100))
    if held >= len(order):
        raise DataError(
            f"{len(order)} conversation(s) leave none for training after holding out {percentage:g}%; add "
            "conversations or give a validation_file."
        )
    validation = set(order[:held])
    return (
        [c for i, c in enumerate(conversations) if i not in validation],
        [c for i, c in enumerate(conversations) if i in validation],
    )


def chat_collator(pad_id: int):
    """Right-pad a batch to its longest conversation: pad tokens in input_ids, -100 in targets, and an
    attention_mask (the real tokens, for counting them)."""

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        batch = {
            "input_ids": torch.full((len(items), longest), pad_id, dtype=torch.long),
            "targets": torch.full((len(items), longest), -100, dtype=torch.long),
            "attention_mask": torch.zeros((len(items), longest), dtype=torch.long),
        }
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][row, :n] = item["input_ids"]
            batch["targets"][row, :n] = item["targets"]
            batch["attention_mask"][row, :n] = 1
        return batch

    return collate


def chat_dataloaders(
    train: ChatExamples,
    validation: ChatExamples,
    pad_id: int,
    train_batch_size: int,
    eval_batch_size: int,
    seed: int,
    on_gpu: bool,
    num_workers: int = 0,
):
    """Training batches of similar lengths (shuffled mega-batches sorted by length, reseeded per epoch),
    validation in order."""
    from torch.utils.data import DataLoader

    from .batching import LengthGroupedSampler

    collate = chat_collator(pad_id)
    train_dl = DataLoader(
        train,
        batch_size=train_batch_size,
        sampler=LengthGroupedSampler(train.lengths, train_batch_size, seed),
        collate_fn=collate,
        drop_last=len(train) >= train_batch_size,
        num_workers=num_workers,
        pin_memory=on_gpu,
    )
    eval_dl = DataLoader(
        validation, batch_size=eval_batch_size, collate_fn=collate, num_workers=num_workers, pin_memory=on_gpu
    )
    return train_dl, eval_dl


def resolve_data_format(train_file: str, data_format: str = "auto") -> str:
    """text, chat or instruction for a causal-LM training file: as given (checked against its columns)
    or detected; .txt files are text."""
    from .files import resolve_source
    from .lm import LM_FORMATS

    source = resolve_source(train_file, LM_FORMATS)
    if source.builder == "text":
        if data_format in ("chat", "instruction"):
            raise DataError(
                f"{train_file}: data_format {data_format} needs a jsonl/json/parquet/csv file of "
                "conversations, not plain text."
            )
        return "text"
    if data_format == "text":
        return "text"
    columns = list(load_source(source).column_names) if source.is_hub else iter_records(source.files[0])[0]
    return detect_data_format(columns, source.describe(), data_format)


@dataclass
class ChatData:
    """Tokenized conversations of each split."""

    train: ChatExamples
    validation: ChatExamples
    test: ChatExamples | None
    conversations: int  # training conversations read
    validation_source: str
    truncated: int  # training conversations cut at block_size + 1 tokens

    def describe(self) -> str:
        return (
            f"train {len(self.train):,} conversations ({self.train.tokens:,} tokens, "
            f"{self.train.target_tokens:,} learned), validation {len(self.validation):,} "
            f"({self.validation_source})"
            + (f", test {len(self.test):,}" if self.test is not None else "")
            + (f"; {self.truncated} cut at block_size" if self.truncated else "")
        )


def read_chat_splits(
    train_file: str,
    validation_file: str | None,
    test_file: str | None,
    data_format: str,
    split_percentage: float,
    seed: int,
) -> tuple[dict[str, list], str]:
    """({split: conversations}, where validation comes from): every row checked, before any tokenizer."""
    from .files import resolve_source
    from .lm import LM_FORMATS

    splits = {"train": read_conversations(resolve_source(train_file, LM_FORMATS), data_format)}
    for name, spec in (("validation", validation_file), ("test", test_file)):
        if spec:
            splits[name] = read_conversations(resolve_source(spec, LM_FORMATS), data_format, name)
    where = str(validation_file)
    if not validation_file:
        splits["train"], splits["validation"] = split_conversations(splits["train"], split_percentage, seed)
        where = f"{split_percentage:g}% of the conversations of {train_file} (random, seed {seed})"
    return splits, where


def build_chat_data(
    splits: dict[str, list], where: str, tokenizer, block_size: int, train_on_prompt: bool
) -> ChatData:
    """Tokenize every split (validation and test always score the replies only)."""
    train, truncated = tokenize_conversations(splits["train"], tokenizer, block_size, train_on_prompt)
    validation, _ = tokenize_conversations(splits["validation"], tokenizer, block_size)
    test = tokenize_conversations(splits["test"], tokenizer, block_size)[0] if "test" in splits else None
    for name, examples in (("training", train), ("validation", validation), ("test", test)):
        if examples is not None and not len(examples):
            raise DataError(
                f"no {name} conversation keeps a reply within block_size={block_size} tokens; raise "
                "block_size or shorten the prompts."
            )
    if truncated:
        logger.warning("%d training conversations were longer than block_size and were cut.", truncated)
    return ChatData(train, validation, test, len(splits["train"]), where, truncated)
