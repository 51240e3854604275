"""Cleaning and augmentation of classification training data: each cleaning rule on a handmade set, the
real counts on SST-2 (computed independently here with pandas), augmentation's copies and seeds, and a
real `accelerate launch` of bert_cls with and without augmentation."""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from conftest import launch

from tunelab.data.augment import (
    AugmentationArguments,
    EmbeddingNeighbours,
    augment_training_set,
    random_deletion,
    random_swap,
)
from tunelab.data.clean import DataCleaningArguments, clean_classification_data, match_key
from tunelab.errors import ConfigError


def splits(train_rows, validation_rows, labels=("neg", "pos")):
    from datasets import ClassLabel, Dataset

    def build(rows):
        texts, names = zip(*rows, strict=True)
        data = Dataset.from_dict({"text": list(texts), "label": [labels.index(n) for n in names]})
        return data.cast_column("label", ClassLabel(names=list(labels)))

    return SimpleNamespace(train=build(train_rows), validation=build(validation_rows), test=None)


LONG = "an endless review " * 10
HANDMADE = [
    ("Good movie", "pos"),  # 0 kept
    ("Good movie", "pos"),  # 1 exact duplicate of 0
    ("good  MOVIE!", "pos"),  # 2 near duplicate of 0
    ("\u200b\u200b", "neg"),  # 3 empty once invisible characters are removed
    ("ok", "neg"),  # 4 too short (< 3 characters)
    (LONG, "neg"),  # 5 too long (> 100 characters)
    ("terrible plot", "neg"),  # 6 conflict with 7
    ("Terrible plot.", "pos"),  # 7
    ("seen in validation", "pos"),  # 8 leaks into validation
    ("a fine film", "pos"),  # 9 kept
    ("ａ ｆｉｎｅ\u00a0ｆｉｌｍ", "pos"),  # 10 full-width: an exact duplicate of 9 after NFKC
]
VALIDATION = [("Seen in validation!", "pos"), ("something else", "neg")]


def test_each_cleaning_rule_removes_its_rows_and_validation_is_untouched():
    data = splits(HANDMADE, VALIDATION)
    args = DataCleaningArguments(
        normalize_text=True,
        min_text_length=3,
        max_text_length=100,
        remove_duplicates="near",
        drop_conflicting_labels=True,
        remove_leakage=True,
    )
    report = clean_classification_data(data, args)
    assert data.train["text"][:] == ["Good movie", "a fine film"]
    removed = {rule: getattr(report, rule).removed for rule in report.RULES if rule != "normalized"}
    assert removed == {
        "empty": 1,
        "too_short": 1,
        "too_long": 1,
        "conflicting_labels": 2,
        "exact_duplicates": 2,  # row 1, and row 10 once normalized
        "near_duplicates": 1,
        "leakage": 1,
    }
    assert report.conflicting_texts == 1
    assert report.conflicting_labels.examples[0]["labels"] == ["neg", "pos"]
    assert report.leaked_eval_rows == {"validation": 1}
    assert report.near_duplicates.examples[0]["first"] == "Good movie"
    assert (report.train_rows_before, report.train_rows_after) == (11, 2)
    assert data.validation["text"][:] == [t for t, _ in VALIDATION]


def test_cleaning_reports_without_removing_by_default_and_counts_words_on_request():
    data = splits(HANDMADE, VALIDATION)
    report = clean_classification_data(data, DataCleaningArguments())
    assert len(data.train) == len(HANDMADE)  # nothing removed ...
    # ... but duplicates, conflicts and leakage are reported (no normalization: row 10 stays distinct)
    assert report.exact_duplicates.found == 1 and report.exact_duplicates.removed == 0
    assert report.near_duplicates.found == 2  # row 2 ("good  MOVIE!") and row 10 (same key as row 9)
    assert report.conflicting_labels.found == 2 and report.leakage.found == 1
    words = DataCleaningArguments(min_text_length=2, max_text_length=3, text_length_unit="words")
    data = splits(HANDMADE, VALIDATION)
    report = clean_classification_data(data, words)
    assert report.too_short.removed == 2  # "ok" and the invisible one-"word" row 3
    assert report.too_long.removed == 1 and LONG not in data.train["text"][:]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"remove_duplicates": "fuzzy"}, "remove_duplicates='fuzzy'"),
        ({"text_length_unit": "tokens"}, "text_length_unit"),
        ({"min_text_length": 10, "max_text_length": 5}, "no text could stay"),
    ],
)
def test_bad_cleaning_arguments_are_refused_with_the_key(kwargs, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        DataCleaningArguments(**kwargs)


def independent_key(text: str) -> str:
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return re.sub(r"[\W_]+", "", "".join(c for c in text if not unicodedata.combining(c)))


@pytest.mark.shared_data
def test_sst2_duplicates_conflicts_and_leakage_are_counted(sst2_dir):
    import pandas as pd

    from tunelab.data.classification import load_classification_data

    read = dict(sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str)
    train = pd.read_csv(sst2_dir / "train.tsv", **read)
    validation = pd.read_csv(sst2_dir / "validation.tsv", **read)
    train["key"] = train["sentence"].map(independent_key)
    validation["key"] = validation["sentence"].map(independent_key)
    exact = int(train.duplicated(["sentence", "label"]).sum())
    firsts = train[~train.duplicated(["sentence", "label"])]
    near = int(firsts.duplicated(["key", "label"]).sum())
    labels_per_key = train.groupby("key")["label"].nunique()
    conflicting_keys = set(labels_per_key[labels_per_key > 1].index)
    leaked_train = int(train["key"].isin(set(validation["key"])).sum())
    leaked_validation = int(validation["key"].isin(set(train["key"])).sum())

    data = load_classification_data(str(sst2_dir / "train.tsv"), str(sst2_dir / "validation.tsv"))
    report = clean_classification_data(data, DataCleaningArguments())
    assert report.exact_duplicates.found == exact > 0
    assert report.near_duplicates.found == near > exact
    assert report.conflicting_texts == len(conflicting_keys) > 0
    assert report.conflicting_labels.found == int(train["key"].isin(conflicting_keys).sum())
    assert report.leakage.found == leaked_train > 0
    assert report.leaked_eval_rows["validation"] == leaked_validation > 0


def test_match_key_ignores_case_accents_punctuation_and_width():
    assert (
        match_key("It 's  CAFÉ-time!") == match_key("its cafe time") == match_key("Ｉｔｓ ｃａｆｅ ｔｉｍｅ")
    )
    assert match_key("good") != match_key("goods")


def sentiment_split(n: int = 20):
    from conftest import sentiment_rows

    return splits(sentiment_rows(n), [("x", "pos")], labels=("neg", "pos")).train


@pytest.mark.parametrize("method", ["random_deletion", "random_swap"])
def test_augmentation_adds_seeded_copies_and_keeps_originals_and_labels(method):
    train = sentiment_split()
    args = AugmentationArguments(augment_method=method, augment_prob=0.3, augment_copies=2)
    out, report = augment_training_set(train, args, "unused", seed=1)
    again, _ = augment_training_set(train, args, "unused", seed=1)
    other, _ = augment_training_set(train, args, "unused", seed=2)
    assert len(out) == 3 * len(train) and report["added_rows"] == 2 * len(train)
    assert out["text"][: len(train)] == train["text"][:]  # originals first, unchanged
    assert out["label"][:] == train["label"][:] * 3
    assert out["text"][:] == again["text"][:]  # same seed, same copies
    assert out["text"][:] != other["text"][:]
    copies = out["text"][len(train) :]
    changed = sum(new != old for new, old in zip(copies, train["text"][:] * 2, strict=True))
    assert changed > len(train)  # most copies differ from their original
    for new, old in zip(copies, train["text"][:] * 2, strict=True):
        if method == "random_swap":
            assert sorted(new.split()) == sorted(old.split())
        else:
            assert set(new.split()) <= set(old.split()) and new


def test_cleaning_and_augmentation_keep_a_regression_target(tmp_path):
    """Numeric targets go through the rules as values: one text with two scores is a conflict, an exact
    duplicate repeats text and score, augmented copies keep their original's score."""
    from tunelab.data.classification import load_classification_data

    rows = [("a fine film", 4.5), ("a fine film", 4.5), ("a dull film", 1.5), ("a dull film", 2.5)]
    rows += [(f"review number {i}", i / 4) for i in range(20)]
    for name, content in (("train.csv", rows), ("valid.csv", [("something else", 3.0), ("more", 0.5)])):
        with (tmp_path / name).open("w", newline="") as f:
            csv.writer(f).writerows([("text", "score"), *content])
    data = load_classification_data(str(tmp_path / "train.csv"), validation_file=str(tmp_path / "valid.csv"))
    assert data.problem_type == "regression"
    args = DataCleaningArguments(remove_duplicates="exact", drop_conflicting_labels=True)
    report = clean_classification_data(data, args)
    assert (report.conflicting_labels.removed, report.exact_duplicates.removed) == (2, 1)
    assert sorted(zip(data.train["text"], data.train["label"], strict=True))[:2] == [
        ("a fine film", 4.5),
        ("review number 0", 0.0),
    ]
    out, _ = augment_training_set(
        data.train, AugmentationArguments("random_deletion", augment_copies=1), "", 1
    )
    assert out["label"][:] == data.train["label"][:] * 2


def test_cleaning_and_augmentation_keep_multi_label_sets(tmp_path):
    """A multi_label row's labels are a set: the same labels in another order repeat a row, another set
    for one text is a conflict (named by its labels), augmented copies keep their original's set."""
    from tunelab.data.classification import load_classification_data

    rows = [("a goal", "sports;happy"), ("a goal", "happy;sports"), ("a vote", "politics"), ("a vote", "sad")]
    rows += [(f"story number {i}", ["tech", "sports;sad"][i % 2]) for i in range(20)]
    for name, content in (("train.csv", rows), ("valid.csv", [("else", "tech"), ("more", "sad;politics")])):
        with (tmp_path / name).open("w", newline="") as f:
            csv.writer(f).writerows([("text", "labels"), *content])
    data = load_classification_data(str(tmp_path / "train.csv"), validation_file=str(tmp_path / "valid.csv"))
    assert data.problem_type == "multi_label"
    args = DataCleaningArguments(remove_duplicates="exact", drop_conflicting_labels=True)
    report = clean_classification_data(data, args)
    assert (report.conflicting_labels.removed, report.exact_duplicates.removed) == (2, 1)
    assert report.conflicting_labels.examples[0]["labels"] == [["politics"], ["sad"]]
    names = [sorted(data.labels[i] for i in ids) for ids in data.train["label"]]
    assert names[0] == ["happy", "sports"] and len(names) == 21
    out, _ = augment_training_set(
        data.train, AugmentationArguments("random_deletion", augment_copies=1), "", 1
    )
    assert out["label"][:] == data.train["label"][:] * 2


def test_word_operations_keep_a_word_and_touch_every_word_at_probability_one():
    import random

    words = ["a", "b", "c", "d"]
    assert len(random_deletion(words, 1.0, random.Random(0))) == 1
    assert random_swap(["only"], 1.0, random.Random(0)) == ["only"]
    assert random_swap(words, 0.0, random.Random(0)) == words


def test_embedding_neighbours_of_the_embedded_minilm_are_related_words():
    neighbours = EmbeddingNeighbours("embedded:all-MiniLM-L6-v2")
    neighbours.prepare({"movie", "funny", "not", "the"})
    assert {"film", "movies"} & set(neighbours.cache["movie"])
    assert {"hilarious", "humorous", "amusing"} & set(neighbours.cache["funny"])
    assert neighbours.cache["not"] == [] and neighbours.cache["the"] == []  # never replaced
    all_options = {w for options in neighbours.cache.values() for w in options}
    assert not all_options & {"not", "no", "never"}  # never inserted


def test_masked_lm_augmentation_needs_a_trained_head(tiny_bert):
    train = sentiment_split(8)
    args = AugmentationArguments(augment_method="masked_lm", augment_prob=0.5)
    with pytest.raises(ConfigError, match="no trained masked-LM head"):
        augment_training_set(train, args, "embedded:all-MiniLM-L6-v2", seed=0)
    # tiny_bert is saved as BertForMaskedLM: its head is complete (random, but the mechanics are real)
    out, report = augment_training_set(train, args, str(tiny_bert), seed=0)
    assert len(out) == 16 and report["unchanged_copies"] < 8
    again, _ = augment_training_set(train, args, str(tiny_bert), seed=0)
    assert out["text"][:] == again["text"][:]


def test_augmentation_changes_the_training_run_but_not_validation(tiny_bert, sentiment_csv, tmp_path):
    common = [
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--max_train_samples",
        "48",
        "--per_device_train_batch_size",
        "16",
        "--num_train_epochs",
        "1",
        "--logging_steps",
        "1",
        "--max_length",
        "32",
        "--remove_duplicates",
        "exact",
    ]
    plain, augmented = tmp_path / "plain", tmp_path / "augmented"
    extra = ["--augment_method", "random_deletion", "--augment_copies", "2", "--augment_prob", "0.2"]
    with ThreadPoolExecutor(2) as pool:  # two real launches side by side: most of their time is start-up
        runs = [
            pool.submit(launch, "bert_cls.py", *common, "--output_dir", str(plain)),
            pool.submit(launch, "bert_cls.py", *common, *extra, "--output_dir", str(augmented)),
        ]
        for run in runs:
            run.result()

    def events(run, kind):
        lines = (run / "events.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("kind") == kind]

    data_plain, data_aug = events(plain, "data")[0], events(augmented, "data")[0]
    kept = data_plain["train_rows_after"]
    assert data_plain["cleaning"]["exact_duplicates"]["removed"] == 48 - kept
    assert (data_plain["augmented_rows"], data_aug["augmented_rows"]) == (0, 2 * kept)
    steps = [json.loads((r / "eval_results.json").read_text())["global_step"] for r in (plain, augmented)]
    assert steps == [-(-kept // 16), -(-3 * kept // 16)]  # three times the examples, three times the steps
    losses = [[e["train/loss"] for e in events(r, "train")] for r in (plain, augmented)]
    assert len(losses[1]) > len(losses[0])
    report = json.loads((augmented / "data_report.json").read_text())
    assert report["augmentation"]["examples"] and report["cleaning"]["train_rows_after"] == kept
    assert "Data report: augmentation: random_deletion" in (augmented / "train.log").read_text()
    assert "augmentation: random_deletion" in (augmented / "README.md").read_text()
    # validation is the same held-out share in both runs, never augmented
    assert "16 examples" in (plain / "README.md").read_text()
    assert "16 examples" in (augmented / "README.md").read_text()
