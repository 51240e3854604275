"""Language-model data: preflight, documents, a trained tokenizer, and packed token blocks cached on disk.

The pipeline: documents (one per .txt file, or one per row of a text column) -> tokenized once with a
batched ``datasets.map`` -> end-of-text after every document -> one flat array of token ids, saved as a
memory-mapped ``.npy`` (uint16 when the vocabulary fits) under the cache folder, keyed by the data's and
the tokenizer's fingerprints. A second run on the same data and tokenizer reads that file and skips
tokenization. Blocks are views into the array: no padding, no copies, every token is a target once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .files import (
    TABLE_FORMATS,
    TEXT_FORMATS,
    DataSource,
    iter_records,
    load_source,
    read_text,
    resolve_source,
)

logger = logging.getLogger(__name__)

LM_FORMATS = {**TEXT_FORMATS, **TABLE_FORMATS}
TEXT_CANDIDATES = ("text", "content", "document", "body", "story")
CACHE_VERSION = 1  # bump when the cached layout or the tokenization recipe changes
# A .txt file is one document, but a very large one is tokenized in pieces (cut at a line end) so one
# map batch never holds gigabytes; the pieces are joined without an end-of-text between them.
MAX_PIECE_CHARS = 4_000_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNELAB_CACHE") or Path.home() / ".cache" / "tunelab")


# ---------------------------------------------------------------------------------------------------
# Preflight and documents
# ---------------------------------------------------------------------------------------------------
def detect_text_column(columns: list[str], where: str, text_column: str | None) -> str:
    listing = ", ".join(columns) or "(none)"
    if text_column is not None:
        if text_column not in columns:
            raise DataError(
                f"{where}: column {text_column!r} (text_column) does not exist; the columns are: {listing}."
            )
        return text_column
    lower = {c.lower(): c for c in columns}
    found = [lower[c] for c in TEXT_CANDIDATES if c in lower]
    if found:
        return found[0]
    if len(columns) == 1:
        return columns[0]
    raise DataError(f"{where}: no text column found; the columns are: {listing}. Name it with --text_column.")


def preflight_lm_source(source: DataSource, text_column: str | None) -> str | None:
    """Check local files before any model or tokenizer work; returns the text column (None for .txt)."""
    if source.is_hub:
        return text_column
    if source.builder == "text":
        for path in source.files:
            if not read_text(path).strip():
                raise DataError(f"{path}: the file is empty (no text to train on).")
        return None
    column = None
    for path in source.files:
        columns, records, word = iter_records(path)
        column = detect_text_column(columns, str(path), text_column or column)
        rows = 0
        for number, record in records:
            value = record.get(column)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{path}: {word} {number}: column {column!r} holds {type(value).__name__}, not text."
                )
            rows += bool(value)
        if not rows:
            raise DataError(f"{path}: no text in column {column!r} (the file has no non-empty rows).")
    return column


def _split_piece(text: str) -> list[str]:
    if len(text) <= MAX_PIECE_CHARS:
        return [text]
    pieces, start = [], 0
    while start < len(text):
        end = (
            text.rfind("\n", start, start + MAX_PIECE_CHARS) + 1
            if start + MAX_PIECE_CHARS < len(text)
            else len(text)
        )
        end = end if end > start else start + MAX_PIECE_CHARS
        pieces.append(text[start:end])
        start = end
    return pieces


def load_documents(source: DataSource, text_column: str | None, config_name: str | None = None):
    """A ``datasets.Dataset`` with columns text and last (False on every piece of a document but its last)."""
    import datasets

    if source.builder == "text":  # one document per file (datasets' text builder would split lines)
        texts, last = [], []
        for path in source.files:
            pieces = _split_piece(read_text(path))
            texts += pieces
            last += [False] * (len(pieces) - 1) + [True]
        return datasets.Dataset.from_dict({"text": texts, "last": last})
    dataset = load_source(source, config_name)
    column = detect_text_column(list(dataset.column_names), source.describe(), text_column)
    dataset = (
        dataset.select_columns([column]).rename_column(column, "text")
        if column != "text"
        else dataset.select_columns(["text"])
    )
    dataset = dataset.filter(lambda b: [bool(t) for t in b["text"]], batched=True, desc="Dropping empty rows")
    return dataset.map(lambda b: {"last": [True] * len(b["text"])}, batched=True)


def data_fingerprint(source: DataSource, text_column: str | None, config_name: str | None) -> str:
    """Local files: path, size and modification time of each (no need to read gigabytes to know them
    unchanged); a Hub dataset: its id, config and ``datasets``' own fingerprint is not stable offline,
    so the id and config name are used."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{text_column}|{config_name}".encode())
    if source.is_hub:
        h.update(f"hub:{source.hub_id}".encode())
    for path in source.files:
        stat = path.stat()
        h.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def sample_text(documents, max_chars: int = 50_000_000):
    """Texts for tokenizer training, up to ``max_chars`` (BPE statistics settle long before that)."""
    seen = 0
    for batch in documents.iter(batch_size=1000):
        for text in batch["text"]:
            yield text
            seen += len(text)
            if seen >= max_chars:
                return


# ---------------------------------------------------------------------------------------------------
# Tokenization and the cache
# ---------------------------------------------------------------------------------------------------
def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size < 2**16 else np.uint32)


def tokenize_to_file(documents, tokenizer, path: Path) -> int:
    """Tokenize with a batched map, end-of-text after each document, write one flat .npy; returns its length."""
    eos = tokenizer.eos_token_id

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        ids = [x + [eos] if last else x for x, last in zip(ids, batch["last"], strict=True)]
        return {"ids": ids, "n": [len(x) for x in ids]}

    encoded = documents.map(
        encode, batched=True, batch_size=256, remove_columns=documents.column_names, desc="Tokenizing"
    )
    total = int(np.sum(encoded["n"]))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=token_dtype(len(tokenizer)), shape=(total,))
    pos = 0
    for batch in encoded.iter(batch_size=256):
        for ids in batch["ids"]:
            array[pos : pos + len(ids)] = ids
            pos += len(ids)
    array.flush()
    del array
    os.replace(tmp, path)  # a killed run never leaves a half-written cache entry
    return total


def cached_token_ids(
    documents, tokenizer, data_key: str, tokenizer_key: str, cache_dir: Path, describe: str
) -> tuple[np.ndarray, bool]:
    """The documents' token ids (memory-mapped), tokenized now or read from the cache; (ids, cache hit)."""
    folder = cache_dir / "tokens"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data_key}-{tokenizer_key}.npy"
    hit = path.exists()
    if not hit:
        total = tokenize_to_file(documents, tokenizer, path)
        (folder / f"{path.stem}.json").write_text(json.dumps({"data": describe, "tokens": total}))
    return np.load(path, mmap_mode="r"), hit


# ---------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------
class PackedBlocks(torch.utils.data.Dataset):
    """Block i is ids[i*B : i*B+B] with targets ids[i*B+1 : i*B+B+1]: consecutive blocks share one token,
    so every token but the first is predicted once and no position is padding."""

    def __init__(self, ids: np.ndarray, block_size: int, limit: int | None = None):
        self.ids, self.block_size = ids, block_size
        self.n = (len(ids) - 1) // block_size
        if limit is not None:
            self.n = min(self.n, limit)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = i * self.block_size
        chunk = torch.from_numpy(self.ids[start : start + self.block_size + 1].astype(np.int64))
        return {"input_ids": chunk[:-1], "targets": chunk[1:]}

    @property
    def tokens(self) -> int:
        return self.n * self.block_size


@dataclass
class LMData:
    train: PackedBlocks
    validation: PackedBlocks
    train_tokens: int  # token ids in the training split (before cutting into blocks)
    validation_tokens: int
    validation_source: str
    cache_hit: bool
    test: PackedBlocks | None = None  # every full block of the test file, scored after training
    test_tokens: int = 0


def split_tokens(ids: np.ndarray, percentage: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``percentage`` % of the token stream is validation (contiguous: no leakage between
    neighbouring lines as a random line split would have)."""
    n_val = int(len(ids) * percentage / 100)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def check_enough_tokens(ids: np.ndarray, block_size: int, what: str, where: str, hint: str) -> None:
    if len(ids) < block_size + 1:
        raise DataError(
            f"{where}: the {what} split has {len(ids)} tokens, fewer than one block needs "
            f"(block_size + 1 = {block_size + 1}). {hint}"
        )


def describe_lm_data(data: LMData, block_size: int) -> str:
    return (
        f"train {data.train_tokens:,} tokens ({len(data.train):,} blocks of {block_size}), validation "
        f"{data.validation_tokens:,} tokens ({len(data.validation):,} blocks; {data.validation_source})"
        + (f", test {data.test_tokens:,} tokens ({len(data.test):,} blocks)" if data.test is not None else "")
        + f"{'; token cache hit' if data.cache_hit else ''}"
    )


def lm_sources(train_file: str, validation_file: str | None) -> tuple[DataSource, DataSource | None]:
    return (
        resolve_source(train_file, LM_FORMATS),
        resolve_source(validation_file, LM_FORMATS) if validation_file else None,
    )


def lm_dataloaders(
    data: LMData, train_batch_size: int, eval_batch_size: int, on_gpu: bool, num_workers: int = 0
):
    """Shuffled training blocks (accelerate's seedable sampler makes the order resumable) and
    validation blocks in order; pinned memory on GPU so batches copy with non_blocking."""
    from torch.utils.data import DataLoader

    train_dl = DataLoader(
        data.train,
        batch_size=train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=on_gpu,
    )
    eval_dl = DataLoader(
        data.validation, batch_size=eval_batch_size, num_workers=num_workers, pin_memory=on_gpu
    )
    return train_dl, eval_dl


@dataclass
class LMDocuments:
    train: object  # datasets.Dataset with "text" and "last"
    validation: object | None
    train_key: str
    validation_key: str | None
    train_where: str
    validation_where: str | None
    test: object | None = None
    test_key: str | None = None
    test_where: str | None = None


def load_lm_documents(
    train_file: str,
    validation_file: str | None,
    text_column: str | None,
    config_name: str | None,
    test_file: str | None = None,
) -> LMDocuments:
    """Resolve and preflight the files (every check before a tokenizer or model is built), then load."""
    train_source, val_source = lm_sources(train_file, validation_file)
    test_source = resolve_source(test_file, LM_FORMATS) if test_file else None
    column = preflight_lm_source(train_source, text_column)
    val_column = preflight_lm_source(val_source, text_column or column) if val_source else None
    test_column = preflight_lm_source(test_source, text_column or column) if test_source else None
    return LMDocuments(
        train=load_documents(train_source, column, config_name),
        validation=load_documents(val_source, val_column, config_name) if val_source else None,
        train_key=data_fingerprint(train_source, column, config_name),
        validation_key=data_fingerprint(val_source, val_column, config_name) if val_source else None,
        train_where=train_source.describe(),
        validation_where=val_source.describe() if val_source else None,
        test=load_documents(test_source, test_column, config_name) if test_source else None,
        test_key=data_fingerprint(test_source, test_column, config_name) if test_source else None,
        test_where=test_source.describe() if test_source else None,
    )


def build_lm_data(
    docs: LMDocuments,
    tokenizer,
    tokenizer_key: str,
    block_size: int,
    split_percentage: float,
    cache_dir: Path,
    max_eval_blocks: int | None = None,
) -> LMData:
    """Token ids from the cache (or tokenized now), split, checked to hold at least one block each."""
    ids, hit = cached_token_ids(
        docs.train, tokenizer, docs.train_key, tokenizer_key, cache_dir, docs.train_where
    )
    if docs.validation is not None:
        val_ids, val_hit = cached_token_ids(
            docs.validation, tokenizer, docs.validation_key, tokenizer_key, cache_dir, docs.validation_where
        )
        hit = hit and val_hit
        train_ids, where = ids, docs.validation_where
        hint = "Give a longer validation_file or a smaller block_size."
    else:
        train_ids, val_ids = split_tokens(ids, split_percentage)
        where = f"last {split_percentage:g}% of the tokens of {docs.train_where}"
        hint = "Raise validation_split_percentage, give a validation_file, or lower block_size."
    check_enough_tokens(
        train_ids, block_size, "training", docs.train_where, "Give more text or lower block_size."
    )
    check_enough_tokens(val_ids, block_size, "validation", docs.validation_where or docs.train_where, hint)
    test_ids = None
    if docs.test is not None:
        test_ids, test_hit = cached_token_ids(
            docs.test, tokenizer, docs.test_key, tokenizer_key, cache_dir, docs.test_where
        )
        hit = hit and test_hit
        check_enough_tokens(
            test_ids, block_size, "test", docs.test_where, "Give a longer test_file or a smaller block_size."
        )
    return LMData(
        train=PackedBlocks(train_ids, block_size),
        validation=PackedBlocks(val_ids, block_size, max_eval_blocks),
        train_tokens=len(train_ids),
        validation_tokens=len(val_ids),
        validation_source=where,
        cache_hit=hit,
        test=PackedBlocks(test_ids, block_size) if test_ids is not None else None,
        test_tokens=len(test_ids) if test_ids is not None else 0,
    )
