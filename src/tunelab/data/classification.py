"""Classification data: column detection, preflight, label maps, class weights (batching: data/batching.py)."""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, DataError
from .files import TABLE_FORMATS, DataSource, iter_records, load_source, resolve_source

logger = logging.getLogger(__name__)

TEXT_CANDIDATES = (
    "text",
    "sentence",
    "sentence1",
    "content",
    "review",
    "document",
    "question",
    "premise",
    "query",
)
PAIR_CANDIDATES = ("text_pair", "sentence2", "hypothesis", "question2", "passage")
LABEL_CANDIDATES = ("label", "labels", "class", "category", "target", "sentiment", "intent")


@dataclass
class Columns:
    text: str
    label: str
    text_pair: str | None = None

    def required(self) -> list[str]:
        return [c for c in (self.text, self.text_pair, self.label) if c]


LABEL_MAX_CLASSES = 100  # a column with more distinct values than this is not taken for the labels
DETECT_SAMPLE = 500  # rows looked at to tell a text column from a label column


def looks_like_labels(values: list[Any], share: float = 0.2) -> bool:
    """Class names or ids: strings or integers, at least two, distinct values at most ``share`` of the rows."""
    if not values or any(isinstance(v, (float, bool)) or not isinstance(v, (str, int)) for v in values):
        return False
    distinct = len({label_name(v) for v in values})
    return 2 <= distinct <= max(2, min(LABEL_MAX_CLASSES, int(len(values) * share)))


def text_length(values: list[Any]) -> float:
    """Mean length of the values when they are mostly unique strings (else 0: not a text column)."""
    strings = [v for v in values if isinstance(v, str)]
    if not values or len(strings) < len(values) or len(set(strings)) < 0.5 * len(strings):
        return 0.0
    return sum(len(v) for v in strings) / len(strings)


def detect_columns(
    columns: list[str],
    where: str,
    text: str | None = None,
    pair: str | None = None,
    label: str | None = None,
    sample: list[dict[str, Any]] | None = None,
) -> Columns:
    """Pick the text/pair/label columns: the named ones, else the well-known names, else what the first
    rows (``sample``) show: the label is the only other column, or the one column with few distinct
    values; the text is the only other column, or the one with clearly the longest unique strings."""
    listing = ", ".join(columns)
    for name, value in (("text_column", text), ("text_pair_column", pair), ("label_column", label)):
        if value is not None and value not in columns:
            raise DataError(f"{where}: column {value!r} ({name}) does not exist; the columns are: {listing}.")
    lower = {c.lower(): c for c in columns}
    sample = sample or []

    def values(column: str) -> list[Any]:
        return [r.get(column) for r in sample if r.get(column) is not None]

    def find(candidates: tuple[str, ...], what: str, flag: str) -> str | None:
        found = [lower[c] for c in candidates if c in lower]
        if len(found) > 1 and what != "text pair":
            raise DataError(
                f"{where}: several columns could be the {what} ({', '.join(found)}); choose one with --{flag}."
            )
        return found[0] if found else None

    label = label or find(LABEL_CANDIDATES, "label", "label_column")
    text = text or find(TEXT_CANDIDATES, "text", "text_column")
    if label is None:
        others = [c for c in columns if c not in (text, pair)]
        guesses = [c for c in others if looks_like_labels(values(c))]
        only = others[0] if text is not None and len(others) == 1 else None
        if only and (
            looks_like_labels(values(only), share=0.5) or detect_problem_type(values(only)) == "regression"
        ):
            label = only  # the only other column, unless its values are mostly unique names
        elif len(guesses) == 1:
            label = guesses[0]
        elif guesses:
            raise DataError(
                f"{where}: several columns could be the label ({', '.join(guesses)}); choose one with "
                "--label_column."
            )
        else:
            raise DataError(
                f"{where}: no label column found (a column of class names or ids with few distinct values); "
                f"the columns are: {listing}. Name it with --label_column."
            )
    if text is None:
        others = [c for c in columns if c not in (label, pair)]
        scored = sorted(((text_length(values(c)), c) for c in others), reverse=True)
        scored = [(score, c) for score, c in scored if score > 0]
        if len(others) == 1:
            text = others[0]
        elif len(scored) == 1 or len(scored) > 1 and scored[0][0] >= 2 * scored[1][0]:
            text = scored[0][1]
        else:
            found = ", ".join(c for _, c in scored) or listing
            raise DataError(
                f"{where}: no single text column found (candidates: {found}). Name it with --text_column."
            )
    if pair is None and text.lower() in ("sentence1", "question", "premise", "text"):
        pair = find(PAIR_CANDIDATES, "text pair", "text_pair_column")
    return Columns(text=text, label=label, text_pair=pair)


def label_name(value: Any) -> str:
    return str(value).strip()


def is_integer_label(name: str) -> bool:
    return re.fullmatch(r"-?\d+", name) is not None


def sort_labels(names: set[str]) -> list[str]:
    """Integer-like labels sort as numbers (so 0..K-1 keep their ids); others alphabetically."""
    if all(is_integer_label(n) for n in names):
        # The name breaks ties ("07" vs "7"), so the order never depends on set iteration order.
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


@dataclass
class SplitReport:
    """What preflight learned about one split."""

    source: str
    rows: int = 0
    label_counts: Counter = field(default_factory=Counter)  # rows per label (multi_label: rows having it)
    label_first_seen: dict[str, str] = field(default_factory=dict)  # label -> "file: line N"
    problem_type: str = "single_label"  # multi_label, or regression: a numeric target, summarized below
    label_sets: int = 0  # multi_label: labels given in all (labels per row = label_sets / rows)
    target_min: float = math.inf
    target_max: float = -math.inf
    target_sum: float = 0.0

    def describe_labels(self, labels: list[str]) -> str:
        """'3 labels: neg (40), neu (12), pos (48)'; a multi_label split's also says how many a text has."""
        counts = ", ".join(f"{k} ({self.label_counts[k]})" for k in labels)
        if self.problem_type == "multi_label":
            per_text = self.label_sets / self.rows if self.rows else 0.0
            return f"multi_label, {len(labels)} labels, {per_text:.2f} per text; texts with each: {counts}"
        return f"{len(labels)} labels: {counts}"

    def describe_target(self) -> str:
        """'from 0 to 5, mean 2.71' for a regression target."""
        mean = self.target_sum / self.rows if self.rows else math.nan
        return f"from {self.target_min:g} to {self.target_max:g}, mean {mean:.3g}"


def as_number(value: Any) -> float | None:
    """A numeric label's value (3, 2.5, "2.5"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def as_list(value: Any) -> list[Any] | None:
    """A label cell that holds a list: a JSON list (json/jsonl/parquet) or a csv cell written as one."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return list(value) if isinstance(value, (list, tuple)) else None


def label_set(value: Any, separator: str) -> list[str] | None:
    """A multi_label cell's labels, in order, once each: a list's items, or the parts of a text split at
    ``separator`` ("news; sports"); None where an item is not a class name or an integer id."""
    items = as_list(value)
    if items is None:
        items = value.split(separator) if isinstance(value, str) and separator else [value]
    if any(isinstance(v, (float, bool)) or not isinstance(v, (str, int)) for v in items):
        return None
    return list(dict.fromkeys(name for name in map(label_name, items) if name))


def detect_problem_type(labels: list[Any], separator: str = ";") -> str:
    """multi_label when a sample label is a list or holds ``separator``; regression when the labels are
    numbers (90% of them at least: a stray "n/a" is then an error naming its row, not a reason to train
    500 classes) and one is not a whole number (a score such as 3.5); else single_label (names, or
    integer class ids)."""
    if any(as_list(v) is not None or separator and isinstance(v, str) and separator in v for v in labels):
        return "multi_label"
    numbers = [n for n in map(as_number, labels) if n is not None]
    if labels and len(numbers) >= 0.9 * len(labels) and any(n != int(n) for n in numbers):
        return "regression"
    return "single_label"


def check_target_value(value: Any, position: str, column: str) -> float:
    number = as_number(value)
    if number is None:
        raise DataError(
            f"{position}, column {column!r}: expected a number for the regression target, got {value!r}. "
            "Fix the value, or set problem_type single_label if the column holds classes."
        )
    return number


def check_label_value(
    value: Any, position: str, column: str, first: tuple[str, str] | None
) -> tuple[str, str]:
    """A label is a class name or an integer id, all of one kind; returns (kind, position) of the first."""
    if isinstance(value, float) or not isinstance(value, (str, int)):
        raise DataError(
            f"{position}, column {column!r}: expected a class name or an integer class id, got "
            f"{type(value).__name__} {value!r}. Write the labels as text or as integers 0..K-1 (or set "
            "problem_type regression for a numeric target, multi_label for several labels per text)."
        )
    kind = "text" if isinstance(value, str) else "an integer"
    if first is not None and kind != first[0]:
        raise DataError(
            f"{position}, column {column!r}: label {value!r} is {kind}, but the label at {first[1]} is "
            f"{first[0]}; write every label the same way (all text or all integers)."
        )
    return first or (kind, position)


def preflight_split(
    source: DataSource,
    columns_hint: dict[str, str | None],
    split: str = "train",
    problem_type: str = "auto",
    separator: str = ";",
):
    """Check one split row by row; returns (Columns, SplitReport). Raises DataError naming file, line, column.
    ``problem_type`` auto is decided from the first rows (detect_problem_type); a multi_label cell's
    labels are split at ``separator`` unless it is a list."""
    if source.is_hub:
        dataset = load_source(source, split=split)
        columns_found = list(dataset.column_names)
        rows = ((i + 1, rec) for i, rec in enumerate(dataset))
        files = [(source.hub_id, columns_found, rows, "row")]
    else:
        files = [(str(p), *iter_records(p)) for p in source.files]
    report = SplitReport(source.describe())
    columns: Columns | None = None
    first_file: tuple[str, list[str]] | None = None
    label_kind: tuple[str, str] | None = None
    for where, header, records, unit in files:
        records = iter(records)
        first = list(itertools.islice(records, DETECT_SAMPLE))
        records = itertools.chain(first, records)
        cols = detect_columns(
            header,
            where,
            columns_hint.get("text"),
            columns_hint.get("pair"),
            columns_hint.get("label"),
            sample=[record for _, record in first],
        )
        # csv files of a folder are read with the first file's column names, so the headers must match.
        csv_file = where.lower().endswith((".csv", ".tsv"))
        if first_file is not None and (cols != columns or (csv_file and header != first_file[1])):
            raise DataError(
                f"{where}: its columns ({', '.join(header)}) differ from those of {first_file[0]} "
                f"({', '.join(first_file[1])}); every file of {source.spec} needs the same columns."
            )
        columns, first_file = cols, first_file or (where, header)
        if problem_type == "auto":
            problem_type = detect_problem_type([r.get(cols.label) for _, r in first], separator)
        report.problem_type = problem_type
        for number, record in records:
            for column in cols.required():
                value = record.get(column)
                if value is None:
                    raise DataError(
                        f"{where}: {unit} {number}, column {column!r}: the value is missing (null)."
                    )
                if isinstance(value, str) and not value.strip():
                    raise DataError(f"{where}: {unit} {number}, column {column!r}: the value is empty.")
                if column == cols.label and problem_type == "multi_label" and as_list(value) == []:
                    raise DataError(
                        f"{where}: {unit} {number}, column {column!r}: the list of labels is empty; every "
                        "text needs at least one label (give texts that have none a label such as 'none')."
                    )
                if column != cols.label and not isinstance(value, str):
                    raise DataError(
                        f"{where}: {unit} {number}, column {column!r}: expected text, got {type(value).__name__}."
                    )
            position = f"{where}: {unit} {number}"
            if problem_type == "regression":
                target = check_target_value(record[cols.label], position, cols.label)
                report.rows += 1
                report.target_min, report.target_max = (
                    min(report.target_min, target),
                    max(report.target_max, target),
                )
                report.target_sum += target
                continue
            if problem_type == "multi_label":
                names = label_set(record[cols.label], separator)
                if not names:
                    raise DataError(
                        f"{position}, column {cols.label!r}: expected labels (a list, or names split by "
                        f"{separator!r}), got {record[cols.label]!r}."
                    )
                report.rows += 1
                report.label_sets += len(names)
                for name in names:
                    report.label_counts[name] += 1
                    report.label_first_seen.setdefault(name, position)
                continue
            label_kind = check_label_value(record[cols.label], position, cols.label, label_kind)
            name = label_name(record[cols.label])
            report.rows += 1
            report.label_counts[name] += 1
            report.label_first_seen.setdefault(name, position)
    if report.rows == 0:
        raise DataError(f"{source.describe()}: no rows ({split} split). Add data rows below the header.")
    assert columns is not None
    return columns, report


def check_label_spellings(report: SplitReport, column: str) -> None:
    """Reject "7" next to "007": they would silently be two classes, and usually a spreadsheet mangled one."""
    by_number: dict[int, list[str]] = {}
    for name in report.label_counts:  # in order of first appearance
        if is_integer_label(name):
            by_number.setdefault(int(name), []).append(name)
    for names in by_number.values():
        if len(names) > 1:
            first, second = names[:2]
            raise DataError(
                f"{report.label_first_seen[second]}, column {column!r}: label {second!r} is the same number as "
                f"label {first!r} ({report.label_first_seen[first]}) written another way; write it one way "
                "so they are one class."
            )


def check_labels_seen(
    source: DataSource, columns: Columns, train_labels: set[str], split: str, separator: str | None = None
) -> None:
    """Find the first row of a validation/test split whose label train never had (with ``separator``:
    of a multi_label split, whose labels include one)."""
    if source.is_hub:
        dataset = load_source(source, split=split)
        iterables = [(source.hub_id, ((i + 1, r) for i, r in enumerate(dataset)), "row")]
    else:
        iterables = [(str(p), records, unit) for p in source.files for _, records, unit in [iter_records(p)]]
    known = ", ".join(sort_labels(train_labels))
    for where, records, unit in iterables:
        for number, record in records:
            value = record[columns.label]
            names = label_set(value, separator) or [] if separator is not None else [label_name(value)]
            for name in (n for n in names if n not in train_labels):
                raise DataError(
                    f"{where}: {unit} {number}, column {columns.label!r}: label {name!r} never appears in the "
                    f"training data (its labels: {known}). Fix the label or add training examples of it."
                )


@dataclass
class ClassificationData:
    """Validated, loaded splits ready to tokenize."""

    columns: Columns
    labels: list[str]
    train: Any  # datasets.Dataset with columns text[, text_pair], label (ClassLabel)
    validation: Any
    test: Any | None
    validation_source: str
    train_report: SplitReport
    problem_type: str = "single_label"  # or regression: ``labels`` is then the target column's name alone
    label_separator: str = ";"  # multi_label: between the labels of a cell (and of test_predictions.csv)

    @property
    def multi_label(self) -> bool:
        return self.problem_type == "multi_label"

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))


def preflight_classification(
    train_file: str,
    validation_file: str | None = None,
    test_file: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    problem_type: str = "auto",
    label_separator: str = ";",
):
    """Validate every split without loading a model; returns (sources, Columns, labels, reports). A
    regression's one label is the target column's name (the model's single output); the problem type
    is ``reports["train"].problem_type``."""
    hint = {"text": text_column, "pair": text_pair_column, "label": label_column}
    train_src = resolve_source(train_file, TABLE_FORMATS)
    columns, train_report = preflight_split(train_src, hint, "train", problem_type, label_separator)
    multi_label = train_report.problem_type == "multi_label"
    regression = train_report.problem_type == "regression"
    if regression:
        labels = [columns.label]
    else:
        check_label_spellings(train_report, columns.label)
        labels = sort_labels(set(train_report.label_counts))
        if len(labels) < 2:
            raise DataError(
                f"{train_src.describe()}: column {columns.label!r} has only one class ({labels[0]!r}); "
                "classification needs at least 2."
            )
        if multi_label and train_report.label_sets == train_report.rows:
            logger.warning(
                "%s: multi_label, but every text has exactly one label; single_label may suit it better.",
                train_src.describe(),
            )
    sources = {"train": train_src}
    reports = {"train": train_report}
    for split, spec in (("validation", validation_file), ("test", test_file)):
        if not spec:
            continue
        src = resolve_source(spec, TABLE_FORMATS)
        hint_split = {"text": columns.text, "pair": columns.text_pair, "label": columns.label}
        _, reports[split] = preflight_split(
            src, hint_split, split, train_report.problem_type, label_separator
        )
        if not regression:
            check_labels_seen(src, columns, set(labels), split, label_separator if multi_label else None)
        sources[split] = src
    return sources, columns, labels, reports


def _standardize(
    dataset, columns: Columns, labels: list[str], problem_type: str = "single_label", separator: str = ";"
):
    """Rename to text/text_pair/label and encode the labels as a ClassLabel (a regression's as float32,
    a multi_label row's as a list of ClassLabel ids)."""
    from datasets import ClassLabel, List, Value

    keep = columns.required()
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    label2id = {name: i for i, name in enumerate(labels)}

    def encode(value: Any) -> Any:
        if problem_type == "regression":
            return as_number(value)
        if problem_type == "multi_label":
            return [label2id[name] for name in label_set(value, separator) or []]
        return label2id[label_name(value)]

    feature = {"regression": Value("float32"), "multi_label": List(ClassLabel(names=labels))}.get(
        problem_type, ClassLabel(names=labels)
    )
    dataset = dataset.map(
        lambda batch: {"label_id": [encode(v) for v in batch[columns.label]]},
        batched=True,
        remove_columns=[columns.label],
        desc="Encoding labels",
    )
    renames = {columns.text: "text", "label_id": "label"}
    if columns.text_pair:
        renames[columns.text_pair] = "text_pair"
    dataset = dataset.rename_columns({k: v for k, v in renames.items() if k != v})
    return dataset.cast_column("label", feature)


def classification_data(settings: Mapping[str, Any], **overrides: Any) -> ClassificationData:
    """``load_classification_data`` from its arguments by name: a recipe's ClassificationArguments
    (``vars(args)`` and the seed) or a run's config.yaml, with ``overrides`` (a report's own validation
    file, no test split, ...)."""
    s = {**settings, **overrides}
    return load_classification_data(
        s["train_file"],
        validation_file=s.get("validation_file"),
        test_file=s.get("test_file"),
        text_column=s.get("text_column"),
        text_pair_column=s.get("text_pair_column"),
        label_column=s.get("label_column"),
        validation_split_percentage=float(s.get("validation_split_percentage", 10.0)),
        max_train_samples=s.get("max_train_samples"),
        max_eval_samples=s.get("max_eval_samples"),
        seed=int(s.get("seed", 42)),
        dataset_config_name=s.get("dataset_config_name"),
        problem_type=s.get("problem_type") or "auto",
        label_separator=s.get("label_separator") or ";",
    )


def load_classification_data(
    train_file: str,
    validation_file: str | None = None,
    test_file: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    validation_split_percentage: float = 10.0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    dataset_config_name: str | None = None,
    problem_type: str = "auto",
    label_separator: str = ";",
) -> ClassificationData:
    """Preflight, then load with ``datasets``; validation is the given file or a stratified held-out share."""
    sources, columns, labels, reports = preflight_classification(
        train_file,
        validation_file,
        test_file,
        text_column,
        text_pair_column,
        label_column,
        problem_type,
        label_separator,
    )
    problem_type = reports["train"].problem_type
    splits = {
        name: _standardize(
            load_source(src, dataset_config_name, name), columns, labels, problem_type, label_separator
        )
        for name, src in sources.items()
    }
    train = splits["train"]
    if "validation" in splits:
        validation, validation_source = splits["validation"], str(validation_file)
    else:
        by_class = Counter() if problem_type == "multi_label" else reports["train"].label_counts
        train, validation, validation_source = hold_out_validation(
            train, by_class, validation_split_percentage, seed, train_file
        )
    if max_train_samples is not None and max_train_samples < len(train):
        train = train.shuffle(seed=seed).select(range(max_train_samples))
    if max_eval_samples is not None and max_eval_samples < len(validation):
        validation = validation.select(range(max_eval_samples))
    if len(train) == 0 or len(validation) == 0:
        raise DataError(f"{train_file}: no rows left for {'training' if len(train) == 0 else 'validation'}.")
    return ClassificationData(
        columns=columns,
        labels=labels,
        train=train,
        validation=validation,
        test=splits.get("test"),
        validation_source=validation_source,
        train_report=reports["train"],
        problem_type=problem_type,
        label_separator=label_separator,
    )


def hold_out_validation(train, label_counts: Counter, percentage: float, seed: int, train_file: str):
    """A seeded validation share of train, stratified by label when every class can be in both parts."""
    rows = len(train)
    held = math.ceil(rows * percentage / 100)  # as datasets rounds; passed as a count so both agree
    if rows - held < 1:
        raise DataError(
            f"{train_file}: {rows} rows leave none for training after holding out {percentage:g}% for "
            "validation; add rows, lower --validation_split_percentage or pass --validation_file."
        )
    classes = len(label_counts)  # none for a regression target or multi_label sets: a random share
    stratified = (
        bool(label_counts) and min(label_counts.values()) >= 2 and held >= classes and rows - held >= classes
    )
    if label_counts and not stratified:
        logger.warning(
            "Too few rows per class to stratify the %g%% validation share; it is drawn at random.", percentage
        )
    split = train.train_test_split(
        test_size=held, seed=seed, stratify_by_column="label" if stratified else None
    )
    kind = (
        "stratified" if stratified else "not stratified: too few rows per class" if label_counts else "random"
    )
    return split["train"], split["test"], f"{percentage:g}% of {train_file} ({kind}, seed {seed})"


def class_weights(spec: str, data: ClassificationData) -> list[float] | None:
    """The training loss's weight of each label, in ``data.labels`` order (None: unweighted).
    balanced: rows / (labels * the label's rows) of the training split as it trains (after cleaning
    and augmentation), as scikit-learn's compute_class_weight; for multi_label, BCE's ``pos_weight``:
    the rows without the label / the rows with it (each label's positives weigh as much as its
    negatives)."""
    from ..args import parse_class_weights

    parsed = parse_class_weights(spec)
    if parsed == "none":
        return None
    if data.problem_type == "regression":
        raise ConfigError("class_weights applies to classes; this run's target is a number (regression).")
    if parsed == "balanced" and data.multi_label:
        counts = Counter(i for ids in data.train["label"] for i in set(ids))
        rows = len(data.train)
        return [(rows - counts[i]) / counts[i] if counts[i] else 1.0 for i in range(len(data.labels))]
    if parsed == "balanced":
        counts = Counter(data.train["label"])
        total = sum(counts.values())
        return [total / (len(data.labels) * counts[i]) if counts[i] else 1.0 for i in range(len(data.labels))]
    unknown = sorted(set(parsed) - set(data.labels))
    if unknown:
        raise ConfigError(
            f"class_weights: {', '.join(map(repr, unknown))} is not a label of the training data "
            f"(its labels: {', '.join(data.labels)})."
        )
    return [parsed.get(label, 1.0) for label in data.labels]


RARE_LABEL_SHARE = 0.05


def imbalance_note(label_counts: dict[str, int], rows: int | None = None) -> str | None:
    """A warning when the rarest label is under 5% of the rows (``rows``: of a multi_label split, whose
    label counts add up to more), with what to try."""
    total = rows or sum(label_counts.values())
    if not total or len(label_counts) < 2:
        return None
    rarest = min(label_counts, key=label_counts.get)
    share = label_counts[rarest] / total
    if share >= RARE_LABEL_SHARE:
        return None
    return (
        f"the rarest label, {rarest!r}, is {share:.1%} of the rows ({label_counts[rarest]} of {total}): "
        "accuracy can look good while it is never predicted. Try class_weights balanced, add examples of "
        "it, and watch its recall and the macro F1."
    )


def describe_data(data: ClassificationData) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(data.train_report.label_counts.items()))
    if data.problem_type == "regression":
        counts = f"a regression target {data.train_report.describe_target()}"
    elif data.multi_label:
        counts = data.train_report.describe_labels(data.labels)
    return (
        f"train {len(data.train)} rows, validation {len(data.validation)} rows ({data.validation_source}); "
        f"columns text={data.columns.text!r}"
        + (f", text_pair={data.columns.text_pair!r}" if data.columns.text_pair else "")
        + f", label={data.columns.label!r}; labels in train file: {counts}"
    )
