"""Tokenized classification splits into batches: dynamic padding, length-grouped sampling (shared by the
classification, distillation and chat recipes) and the shortest-first evaluation loader."""

from __future__ import annotations


def tokenize_classification(dataset, tokenizer, max_length: int, desc: str = "Tokenizing"):
    """Tokenize once (batched, cached by datasets); returns (dataset, number of truncated examples)."""
    has_pair = "text_pair" in dataset.column_names

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch["text_pair"] if has_pair else None
        # Encode untruncated first so truncation can be counted; re-encode only the long ones.
        full = tokenizer(batch["text"], pairs, truncation=False)
        long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_length]
        if long:
            cut = tokenizer(
                [batch["text"][i] for i in long],
                [pairs[i] for i in long] if pairs else None,
                truncation=True,
                max_length=max_length,
            )
            for key in full:
                for j, i in enumerate(long):
                    full[key][i] = cut[key][j]
        cut_rows = set(long)
        full["truncated"] = [i in cut_rows for i in range(len(batch["text"]))]
        return full

    remove = [c for c in ("text", "text_pair") if c in dataset.column_names]
    encoded = dataset.map(encode, batched=True, remove_columns=remove, desc=desc)
    truncated = sum(encoded["truncated"])
    encoded = encoded.remove_columns("truncated")
    feature = dataset.features.get("label")
    names = getattr(getattr(feature, "feature", None), "names", None)  # multi_label: List(ClassLabel)

    def lengths(batch: dict[str, list]) -> dict[str, list]:
        out = {"length": [len(x) for x in batch["input_ids"]]}
        if names:  # a row's label ids -> one 0/1 target per label (BCE's), in the model's label order
            out["targets"] = [
                [float(i in ids) for i in range(len(names))] for ids in map(set, batch["label"])
            ]
        return out

    encoded = encoded.map(lengths, batched=True, remove_columns=["label"] if names else None, desc="Lengths")
    # a new column, renamed: a map's "label" output would keep the ids' List(ClassLabel) type
    return (encoded.rename_column("targets", "label") if names else encoded), truncated


class LengthGroupedSampler:
    """Shuffled mega-batches sorted by length (transformers' recipe), reshuffled per epoch from the seed,
    so padding shrinks and resume stays exact."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def classification_dataloaders(
    train,
    validation,
    tokenizer,
    train_batch_size: int,
    eval_batch_size: int,
    group_by_length: bool,
    seed: int,
    on_gpu: bool,
    num_workers: int = 0,
):
    """Dynamically padded batches (to a multiple of 8 on GPU, for tensor cores)."""
    from torch.utils.data import DataLoader

    collate = _collator(tokenizer, on_gpu)
    lengths = list(train["length"]) if group_by_length else None  # a list: a Column indexes row by row
    train = train.with_format(columns=_model_columns(train))
    if group_by_length:
        sampler = LengthGroupedSampler(lengths, train_batch_size, seed)
        train_dl = DataLoader(
            train,
            batch_size=train_batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=on_gpu,
        )
    else:
        train_dl = DataLoader(
            train,
            batch_size=train_batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=on_gpu,
        )
    eval_dl, _ = eval_dataloader(validation, tokenizer, eval_batch_size, on_gpu, num_workers)
    return train_dl, eval_dl


def eval_dataloader(dataset, tokenizer, batch_size: int, on_gpu: bool, num_workers: int = 0):
    """Batches of a tokenized split, shortest first (similar lengths pad little); returns (loader,
    order): the loader's i-th example is the split's row ``order[i]``, so answers map back to rows."""
    import numpy as np
    from torch.utils.data import DataLoader

    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    return (
        DataLoader(
            dataset.select(order).with_format(columns=_model_columns(dataset)),
            batch_size=batch_size,
            collate_fn=_collator(tokenizer, on_gpu),
            num_workers=num_workers,
            pin_memory=on_gpu,
        ),
        order,
    )


def _model_columns(dataset) -> list[str]:
    return [
        c for c in ("input_ids", "attention_mask", "token_type_ids", "label") if c in dataset.column_names
    ]


def _collator(tokenizer, on_gpu: bool):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if on_gpu else None)
