"""Cleaning of classification training data, with a report of what each rule found and removed.

Rules, in the order they run on the training split (validation and test are never changed: they are
what the model is judged on, and removing rows from them would make scores incomparable):

1. ``normalize_text``: Unicode NFKC, zero-width characters and control characters removed, runs of
   whitespace collapsed to one space, ends stripped.
2. empty texts (only possible after normalization: preflight already rejects empty cells).
3. ``min_text_length`` / ``max_text_length``: in characters of the (normalized) text by default, or in
   whitespace-separated words with ``text_length_unit=words``. Characters are the default because they
   mean the same in every script (Chinese or Japanese text has no spaces between words).
4. conflicting labels: one normalized text with several labels. Always reported;
   ``drop_conflicting_labels`` removes every row of such a text (no label can be trusted).
5. duplicates: an *exact* duplicate repeats an earlier row's text and label character for character; a
   *near* duplicate differs only in case, accents, punctuation, symbols or whitespace. Rows with the same
   text but another label are conflicts (rule 4), not duplicates. ``remove_duplicates`` keeps the first.
6. leakage: training rows whose normalized text is also in the validation (or test) split. Always
   reported, since it inflates validation scores; ``remove_leakage`` removes them from train.

"Normalized text" (the key of rules 4-6) is NFKC, accents stripped, case-folded, with every punctuation,
symbol and whitespace character removed, so ``"It 's GREAT!"`` and ``"it's great"`` share a key. The
key is hashed through a dict; no library offers this key or the per-rule report, so both are written here.
Rows are dropped with ``datasets``' ``select`` and texts rewritten with ``map``.
"""

from __future__ import annotations

import json
import logging
import re
import string
import unicodedata
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

DATA_REPORT_FILE = "data_report.json"
LENGTH_UNITS = ("chars", "words")
DUPLICATE_MODES = ("none", "exact", "near")
EXAMPLES_PER_RULE = 5
# Zero-width space/joiners and the byte-order mark: invisible, yet they make equal texts differ.
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
WHITESPACE = re.compile(r"\s+")
# ASCII punctuation, symbols, whitespace and control characters: what match_key drops from ASCII text.
ASCII_DROP = str.maketrans("", "", string.punctuation + "".join(map(chr, [*range(33), 127])))


@dataclass
class DataCleaningArguments:
    """Cleaning of the training split (the report of duplicates, conflicts and leakage is always made)."""

    normalize_text: bool = field(
        default=False,
        metadata={"help": "Unicode NFKC, invisible/control characters removed, whitespace collapsed."},
    )
    min_text_length: int | None = field(
        default=None, metadata={"help": "Drop training texts shorter than this (see text_length_unit)."}
    )
    max_text_length: int | None = field(
        default=None, metadata={"help": "Drop training texts longer than this (see text_length_unit)."}
    )
    text_length_unit: str = field(
        default="chars", metadata={"help": "Unit of min/max_text_length: chars or words (whitespace)."}
    )
    remove_duplicates: str = field(
        default="none",
        metadata={
            "help": "none, exact (same text and label) or near (same after lowercasing and removing "
            "accents, punctuation and whitespace; includes exact). The first row is kept."
        },
    )
    drop_conflicting_labels: bool = field(
        default=False, metadata={"help": "Drop every training row of a text that has several labels."}
    )
    remove_leakage: bool = field(
        default=False,
        metadata={"help": "Drop training rows whose text is also in validation/test (always reported)."},
    )

    def __post_init__(self) -> None:
        if self.text_length_unit not in LENGTH_UNITS:
            raise ConfigError(
                f"text_length_unit={self.text_length_unit!r} is not allowed; choose one of: chars, words"
            )
        if self.remove_duplicates not in DUPLICATE_MODES:
            raise ConfigError(
                f"remove_duplicates={self.remove_duplicates!r} is not allowed; choose one of: "
                + ", ".join(DUPLICATE_MODES)
            )
        for name in ("min_text_length", "max_text_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.min_text_length and self.max_text_length and self.min_text_length > self.max_text_length:
            raise ConfigError(
                f"min_text_length ({self.min_text_length}) is larger than max_text_length "
                f"({self.max_text_length}): no text could stay."
            )


def normalize_text(text: str) -> str:
    """NFKC, invisible and control characters removed, whitespace collapsed, ends stripped."""
    text = unicodedata.normalize("NFKC", text)
    text = CONTROL.sub(" ", INVISIBLE.sub("", text))
    return WHITESPACE.sub(" ", text).strip()


def match_key(text: str) -> str:
    """The key near duplicates share: no accents, case, punctuation, symbols or whitespace."""
    if text.isascii():  # the same result, 10x faster: the slow path looks up every character's category
        return text.lower().translate(ASCII_DROP)
    text = unicodedata.normalize("NFKD", normalize_text(text).casefold())
    return "".join(c for c in text if unicodedata.category(c)[0] not in "MPSZC")


def text_length(text: str, unit: str) -> int:
    return len(text.split()) if unit == "words" else len(text)


@dataclass
class RuleReport:
    """What one rule found in the training split and how many rows it removed."""

    found: int = 0
    removed: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def example(self, **row: Any) -> None:
        if len(self.examples) < EXAMPLES_PER_RULE:
            self.examples.append(row)


@dataclass
class CleaningReport:
    """Counts per rule (``found`` and ``removed``), with a few examples each; JSON-ready via ``to_dict``."""

    train_rows_before: int
    train_rows_after: int = 0
    normalized: RuleReport = field(default_factory=RuleReport)
    empty: RuleReport = field(default_factory=RuleReport)
    too_short: RuleReport = field(default_factory=RuleReport)
    too_long: RuleReport = field(default_factory=RuleReport)
    conflicting_labels: RuleReport = field(default_factory=RuleReport)
    exact_duplicates: RuleReport = field(default_factory=RuleReport)
    near_duplicates: RuleReport = field(default_factory=RuleReport)
    leakage: RuleReport = field(default_factory=RuleReport)
    # Distinct validation/test rows whose text is also in train (the leakage seen from the other side).
    leaked_eval_rows: dict[str, int] = field(default_factory=dict)
    conflicting_texts: int = 0  # distinct normalized texts with more than one label

    RULES = (
        "normalized",
        "empty",
        "too_short",
        "too_long",
        "conflicting_labels",
        "exact_duplicates",
        "near_duplicates",
        "leakage",
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self, only_found: bool = False) -> list[str]:
        """One line per rule (``only_found``: per rule that found something), for train.log and the card."""
        lines = [f"train rows: {self.train_rows_before} before cleaning, {self.train_rows_after} after"]
        for rule in self.RULES:
            report: RuleReport = getattr(self, rule)
            if only_found and not report.found:
                continue
            line = f"{rule.replace('_', ' ')}: {report.found} rows found, {report.removed} removed"
            if rule == "normalized":
                line = f"normalized: {report.found} rows changed"
            if rule == "conflicting_labels" and self.conflicting_texts:
                line += f" ({self.conflicting_texts} texts with several labels)"
            lines.append(line)
        for split, rows in self.leaked_eval_rows.items():
            lines.append(f"{split} rows whose text is also in train: {rows}")
        return lines


def _text_rows(dataset) -> list[tuple[str, ...]]:
    """(text,) or (text, text_pair) per row."""
    # [:] reads a column at once; iterating a datasets Column looks rows up one by one (100x slower)
    columns = [dataset[c][:] for c in ("text", "text_pair") if c in dataset.column_names]
    return list(zip(*columns, strict=True))


def _keys(dataset) -> list[tuple[str, ...]]:
    return [tuple(map(match_key, row)) for row in _text_rows(dataset)]


class _Rows:
    """The training rows still kept (indices into the split as loaded) and each row's keys."""

    def __init__(self, dataset):
        self.exact = _text_rows(dataset)
        self.near = [tuple(map(match_key, row)) for row in self.exact]
        feature = dataset.features.get("label")
        self.multi_label = hasattr(getattr(feature, "feature", None), "names")  # List(ClassLabel): label sets
        feature = feature.feature if self.multi_label else feature
        self.names = list(feature.names) if hasattr(feature, "names") else None
        # a multi_label row's label is its set of ids (a sorted tuple: the same labels in any order)
        self.labels = (
            [tuple(sorted(set(v))) for v in dataset["label"]] if self.multi_label else dataset["label"][:]
        )
        self.keep = list(range(len(self.exact)))

    def name(self, label: Any) -> Any:
        """A label (class id, number or multi_label set) as written: its class name(s)."""
        if self.multi_label:
            return [self.names[i] for i in label]
        return self.names[label] if self.names else label

    def label(self, i: int) -> Any:
        return self.name(self.labels[i])

    def shown(self, i: int) -> str:
        return " ||| ".join(self.exact[i])

    def drop(self, rule: RuleReport, remove: bool, hit) -> None:
        """Count (and when ``remove``, drop) the kept rows for which ``hit(i)`` is true."""
        kept = []
        for i in self.keep:
            if hit(i):
                rule.found += 1
                if remove:
                    rule.removed += 1
                    continue
            kept.append(i)
        self.keep = kept


def clean_classification_data(data, args: DataCleaningArguments) -> CleaningReport:
    """Apply ``args`` to ``data.train`` (a ``ClassificationData``, changed in place); returns the report.

    Validation and test are only read, to find leakage."""
    train = data.train
    report = CleaningReport(train_rows_before=len(train))
    if args.normalize_text:
        train = _normalize(train, report.normalized)
    rows = _Rows(train)
    _lengths(rows, report, args)
    _conflicts(rows, report, args.drop_conflicting_labels)
    _duplicates(rows, report, args.remove_duplicates)
    _leakage(rows, report, data, args.remove_leakage)
    if len(rows.keep) < len(train):
        train = train.select(rows.keep)
    report.train_rows_after = len(train)
    data.train = train
    return report


def _normalize(train, rule: RuleReport):
    columns = [c for c in ("text", "text_pair") if c in train.column_names]
    for i, row in enumerate(_text_rows(train)):
        cleaned = [normalize_text(t) for t in row]
        if cleaned != list(row):
            rule.found += 1
            rule.example(row=i, before=" ||| ".join(row), after=" ||| ".join(cleaned))
    if not rule.found:
        return train
    return train.map(
        lambda batch: {c: [normalize_text(t) for t in batch[c]] for c in columns},
        batched=True,
        desc="Normalizing text",
    )


def _lengths(rows: _Rows, report: CleaningReport, args: DataCleaningArguments) -> None:
    """Empty texts always go (only normalization can make one); too short/long ones when asked.

    A pair's length is that of its two texts together."""
    unit, low, high = args.text_length_unit, args.min_text_length, args.max_text_length

    def rule_hit(rule: RuleReport, bad):
        def hit(i: int) -> bool:
            length = sum(text_length(t, unit) for t in rows.exact[i])
            if bad(length):
                rule.example(row=i, text=rows.shown(i), length=length)
                return True
            return False

        return hit

    def empty(i: int) -> bool:
        if all(t.strip() for t in rows.exact[i]):
            return False
        report.empty.example(row=i, text=rows.shown(i))
        return True

    rows.drop(report.empty, True, empty)
    if low:
        rows.drop(report.too_short, True, rule_hit(report.too_short, lambda n: n < low))
    if high:
        rows.drop(report.too_long, True, rule_hit(report.too_long, lambda n: n > high))


def _conflicts(rows: _Rows, report: CleaningReport, remove: bool) -> None:
    labels_of: dict[tuple[str, ...], set] = defaultdict(set)
    for i in rows.keep:
        labels_of[rows.near[i]].add(rows.labels[i])
    conflicting = {key for key, labels in labels_of.items() if len(labels) > 1}
    report.conflicting_texts = len(conflicting)
    shown: set[tuple[str, ...]] = set()

    def hit(i: int) -> bool:
        key = rows.near[i]
        if key in conflicting and key not in shown and len(shown) < EXAMPLES_PER_RULE:
            shown.add(key)
            names = [rows.name(n) for n in sorted(labels_of[key])]
            report.conflicting_labels.example(row=i, text=rows.shown(i), labels=names)
        return key in conflicting

    rows.drop(report.conflicting_labels, remove, hit)


def _duplicates(rows: _Rows, report: CleaningReport, mode: str) -> None:
    """Exact first, then near among the rest; a duplicate repeats an earlier row's key and label."""
    first_exact: dict[tuple, int] = {}
    first_near: dict[tuple, int] = {}

    def exact_repeat(i: int) -> bool:
        first = first_exact.setdefault((rows.exact[i], rows.labels[i]), i)
        if first != i:
            report.exact_duplicates.example(row=i, text=rows.shown(i), label=rows.label(i), first_row=first)
        return first != i

    rows.drop(report.exact_duplicates, mode in ("exact", "near"), exact_repeat)
    exact_firsts = set(first_exact.values())

    def near_repeat(i: int) -> bool:
        if i not in exact_firsts:  # an exact duplicate, counted above
            return False
        first = first_near.setdefault((rows.near[i], rows.labels[i]), i)
        if first != i:
            report.near_duplicates.example(
                row=i, text=rows.shown(i), first=rows.shown(first), label=rows.label(i), first_row=first
            )
        return first != i

    rows.drop(report.near_duplicates, mode == "near", near_repeat)


def _leakage(rows: _Rows, report: CleaningReport, data, remove: bool) -> None:
    """Train rows whose key is in validation/test; also counts those splits' rows found in train."""
    train_keys = {rows.near[i] for i in rows.keep}
    eval_rows: dict[tuple[str, ...], tuple[str, int]] = {}
    for split in ("validation", "test"):
        dataset = getattr(data, split, None)
        if dataset is None:
            continue
        keys = _keys(dataset)
        report.leaked_eval_rows[split] = sum(key in train_keys for key in keys)
        for row, key in enumerate(keys):
            eval_rows.setdefault(key, (split, row))

    def leaked(i: int) -> bool:
        where = eval_rows.get(rows.near[i])
        if where:
            report.leakage.example(
                row=i, text=rows.shown(i), label=rows.label(i), also_in=f"{where[0]} row {where[1]}"
            )
        return where is not None

    rows.drop(report.leakage, remove, leaked)


def record_data_report(output_dir: Path, events, cleaning: CleaningReport, augmentation: dict | None) -> None:
    """``data_report.json`` in the run folder (with examples) and a ``data`` event of the counts."""
    report = {"cleaning": cleaning.to_dict(), "augmentation": augmentation}
    (Path(output_dir) / DATA_REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if events is not None:
        events.write(
            "data",
            train_rows_before=cleaning.train_rows_before,
            train_rows_after=cleaning.train_rows_after,
            cleaning={
                r: {"found": getattr(cleaning, r).found, "removed": getattr(cleaning, r).removed}
                for r in cleaning.RULES
            },
            leaked_eval_rows=cleaning.leaked_eval_rows,
            augmented_rows=augmentation["added_rows"] if augmentation else 0,
        )


RULE_TITLES = {
    "normalized": "changed by Unicode/whitespace normalization",
    "empty": "empty (after normalization)",
    "too_short": "shorter than min_text_length",
    "too_long": "longer than max_text_length",
    "conflicting_labels": "one text, several labels",
    "exact_duplicates": "exact duplicates (same text and label)",
    "near_duplicates": "near duplicates (differ in case, accents, punctuation or spaces)",
    "leakage": "also in validation/test (leakage)",
}


def report_markdown(report: CleaningReport, validation: str) -> str:
    """The report as a Markdown table (the app's Data tab); ``validation`` says where it came from."""
    lines = [
        f"### Cleaning report: {report.train_rows_before:,} training rows, validation: {validation}",
        "| rule | rows found | removed |",
        "|---|---:|---:|",
    ]
    for rule in report.RULES:
        found = getattr(report, rule)
        title = RULE_TITLES[rule]
        if rule == "conflicting_labels" and report.conflicting_texts:
            title += f" ({report.conflicting_texts:,} texts)"
        removed = "-" if rule == "normalized" else f"{found.removed:,}"
        lines.append(f"| {title} | {found.found:,} | {removed} |")
    for split, rows in report.leaked_eval_rows.items():
        lines.append(f"\n{split} rows whose text is also in train: **{rows:,}**")
    return "\n".join(lines)


def report_examples(report: CleaningReport) -> list[dict[str, Any]]:
    """A few rows per rule: (rule, training row, text, detail), for a table."""
    out = []
    for rule in report.RULES:
        for example in getattr(report, rule).examples:
            text = example.get("text", example.get("before", ""))
            detail = {k: v for k, v in example.items() if k not in ("row", "text", "before")}
            shown = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in detail.items())
            out.append({"rule": rule, "row": example.get("row", ""), "text": text, "detail": shown})
    return out
