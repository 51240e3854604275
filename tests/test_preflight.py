"""Bad input for the classification recipe fails before training with one clear message naming the file,
the line and the column; valid edge cases (quoted multi-line fields, GLUE-style TSVs, JSON layouts,
Parquet, folders) load exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, run_recipe, sentiment_rows, shared_file

from tunelab.data.classification import load_classification_data, preflight_classification
from tunelab.errors import ConfigError, DataError

BAD = FIXTURES / "bad"
GOOD = FIXTURES / "good"

# (fixture, extra arguments, fragments the message must contain, caught by preflight before any loading)
BAD_CASES = [
    ("cls_ragged_row.csv", {}, ["line 4", "3 fields", "header has 2", "text, label"], True),
    ("cls_bad_utf8.csv", {}, ["line 3", "column 4", "0xe9", "not valid UTF-8", "iconv"], True),
    (
        "cls_missing_label_column.csv",
        {},
        ["no label column", "the columns are: text, review_id", "--label_column"],
        True,
    ),
    (
        "cls_missing_label_column.csv",
        {"label_column": "stars"},
        ["column 'stars' (label_column) does not exist", "the columns are: text, review_id"],
        True,
    ),
    ("cls_empty_text.tsv", {}, ["line 3", "column 'sentence'", "empty"], True),
    ("cls_null_text.jsonl", {}, ["line 3", "column 'text'", "missing (null)"], True),
    ("cls_missing_key.jsonl", {}, ["line 2", "column 'text'", "missing"], True),
    ("cls_empty_label.csv", {}, ["line 3", "column 'label'", "empty"], True),
    ("cls_one_class.csv", {}, ["column 'label'", "only one class ('pos')", "at least 2"], True),
    (
        "cls_unseen_label_validation.csv",
        {"validation_file": "self", "train_file": GOOD / "cls_unseen_label_train.csv"},
        ["line 4", "column 'label'", "'neutral' never appears in the training data", "neg, pos"],
        True,
    ),
    (
        "cls_unseen_label_validation.csv",
        {"test_file": "self", "train_file": GOOD / "cls_unseen_label_train.csv"},
        ["line 4", "column 'label'", "'neutral' never appears in the training data", "neg, pos"],
        True,
    ),
    (
        "reg_not_a_number.csv",
        {},
        ["line 8", "column 'score'", "expected a number for the regression target, got 'n/a'"],
        True,
    ),
    (
        "cls_unseen_label_validation.csv",
        {"problem_type": "regression"},
        ["line 2", "column 'label'", "expected a number for the regression target, got 'pos'"],
        True,
    ),
    ("ml_empty_label.csv", {}, ["line 4", "column 'labels'", "the value is empty"], True),
    ("ml_empty_list.jsonl", {}, ["line 3", "column 'labels'", "the list of labels is empty"], True),
    ("ml_not_a_label.jsonl", {}, ["line 2", "column 'labels'", "expected labels", "0.5"], True),
    (
        "ml_unseen_label_validation.csv",
        {"test_file": "self", "train_file": GOOD / "ml_topics.jsonl"},
        ["line 3", "column 'labels'", "'angry' never appears in the training data", "happy, politics"],
        True,
    ),
    ("cls_header_only.csv", {}, ["no rows", "train split"], True),
    (
        "cls_header_only.csv",
        {"validation_file": "self", "train_file": GOOD / "cls_unseen_label_train.csv"},
        ["no rows", "validation split"],
        True,
    ),
    ("cls_empty_file.csv", {}, ["the file is empty"], True),
    ("cls_blank_lines_only.csv", {}, ["the file is empty"], True),
    ("cls_invalid_json.jsonl", {}, ["line 2", "column 32", "invalid JSON"], True),
    ("cls_invalid_json_array.json", {}, ["line 3", "column 35", "invalid JSON"], True),
    ("cls_json_not_records.json", {}, ["expected a list of records", "keys texts, labels"], True),
    ("cls_not_an_object.jsonl", {}, ["line 2", "expected a JSON object, got list"], True),
    ("cls_corrupt.parquet", {}, ["not a readable Parquet file"], True),
    ("cls_unknown_extension.xlsx", {}, ["unsupported file type '.xlsx'", ".csv", ".parquet"], True),
    (
        "cls_ambiguous_columns.csv",
        {},
        ["several columns could be the text (text, sentence)", "--text_column"],
        True,
    ),
    ("cls_mixed_folder", {}, ["mixes formats (.csv, .json)"], True),
    ("cls_folder_different_columns", {}, ["b.csv", "(label, text) differ from those of", "a.csv"], True),
    ("cls_unterminated_quote.csv", {}, ["line 3", "cannot parse the row", "quotes"], True),
    ("cls_text_not_a_string.jsonl", {}, ["line 2", "column 'text'", "expected text, got int"], True),
    # a float among class ids; left on auto, a column of numbers like 0.5 is a regression target
    (
        "cls_float_label.jsonl",
        {"problem_type": "single_label"},
        ["line 2", "column 'label'", "got float 0.5"],
        True,
    ),
    (
        "cls_mixed_label_types.jsonl",
        {},
        ["line 3", "column 'label'", "label '1' is text", "line 1 is an integer"],
        True,
    ),
    (
        "cls_leading_zero_labels.csv",
        {},
        ["line 4", "column 'label'", "'007' is the same number as label '7'", "line 2"],
        True,
    ),
    ("cls_empty_column_name.csv", {}, ["line 1", "empty column name"], True),
    ("cls_duplicate_columns.csv", {}, ["line 1", "repeats the column name(s) label"], True),
    # Valid on its own; nothing is left to train on once 60% of 2 rows (rounded up) is held out.
    ("cls_too_few_rows.csv", {"validation_split_percentage": 60}, ["2 rows leave none for training"], False),
]


def call_args(name: str, extra: dict) -> dict:
    args = {
        "train_file": str(BAD / name),
        **{k: str(v) if isinstance(v, Path) else v for k, v in extra.items()},
    }
    for split in ("validation_file", "test_file"):
        if args.get(split) == "self":
            args[split] = str(BAD / name)
    return args


@pytest.mark.parametrize(
    ("name", "extra", "fragments", "in_preflight"),
    BAD_CASES,
    ids=[f"{c[0]}{'+' + ','.join(c[1]) if c[1] else ''}" for c in BAD_CASES],
)
def test_bad_input_gets_one_clear_message_naming_file_line_and_column(name, extra, fragments, in_preflight):
    args = call_args(name, extra)
    preflight_args = {k: v for k, v in args.items() if k != "validation_split_percentage"}
    with pytest.raises(DataError) as error:
        load_classification_data(**args)
    message = str(error.value)
    if in_preflight:  # the check runs before anything is loaded with datasets
        with pytest.raises(DataError) as preflight_error:
            preflight_classification(**preflight_args)
        assert str(preflight_error.value) == message
    assert name in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def test_every_bad_classification_fixture_has_a_case():
    # cls_*, ml_* and reg_* files are this module's; clm_* files belong to the causal-LM tests.
    ours = [*BAD.glob("cls_*"), *BAD.glob("ml_*"), *BAD.glob("reg_*")]
    assert {p.name for p in ours} == {case[0] for case in BAD_CASES}


def load_all(path: Path, **kwargs):
    """Load a file as both train and validation, so validation holds every row in file order."""
    return load_classification_data(str(path), validation_file=str(path), **kwargs)


def test_quoted_multiline_csv_fields_with_commas_and_quotes_load_intact():
    data = load_all(GOOD / "cls_multiline_quoted.csv")
    assert data.validation["text"] == [
        'A film, in short,\r\nthat "works" on two lines',
        "plain text",
        "ends with a newline\n",
        "commas, commas",
    ]
    assert data.labels == ["neg", "pos"]
    assert data.validation["label"] == [1, 0, 0, 1]
    assert data.train_report.rows == 4


def test_tsv_written_with_quotes_is_read_with_quotes():
    data = load_all(GOOD / "cls_quoted.tsv")
    assert data.validation["text"] == ['He said "hi"\tand left', "two\nlines", "plain", "also plain"]


def test_glue_style_tsv_keeps_its_double_quotes_verbatim():
    # SST-2/GLUE TSVs have no quoting: a text may open a quote it never closes. Read as quoted, this file
    # would fail on line 2 (or silently merge lines 4-5); read verbatim, every line is one row, as written.
    data = load_all(GOOD / "cls_sst2_style.tsv")
    assert data.validation["text"] == [
        '" frailty " offers chills',
        'it \'s a "charming" film',
        '"unbalanced opening quote',
        'ends with a quote"',
        "plain words",
    ]
    assert data.validation["label"] == [1, 1, 0, 0, 1]


def test_folder_of_quoted_and_verbatim_tsv_files_loads_each_its_own_way():
    data = load_all(GOOD / "cls_tsv_folder")
    assert len(data.validation) == 9
    assert 'He said "hi"\tand left' in data.validation["text"]
    assert '"unbalanced opening quote' in data.validation["text"]


def test_glue_style_tsv_with_a_ragged_row_says_it_was_read_without_quoting(tmp_path):
    path = tmp_path / "glue.tsv"
    path.write_text('sentence\tlabel\n"a quote\t1\nno label here\nfine\t0\n')
    with pytest.raises(DataError, match=r"glue.tsv: line 3: the row has 1 fields .* read without quoting"):
        preflight_classification(str(path))


def test_line_and_paragraph_separators_inside_a_text_do_not_split_the_row():
    data = load_all(GOOD / "cls_line_separator_in_text.csv")
    assert data.validation["text"] == [
        "first\u2028still the first row",
        "form\x0cfeed inside",
        "nel\x85inside",
    ]


def test_integer_labels_keep_their_ids():
    data = load_all(GOOD / "cls_int_labels.jsonl")
    assert data.labels == ["0", "1", "2"]
    assert data.validation["label"] == [i % 3 for i in range(12)]


def test_string_labels_map_in_sorted_order_whatever_the_row_order(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("text,label\na,zebra\nb,apple\nc,mango\nd,apple\n")
    data = load_all(path)
    assert data.labels == ["apple", "mango", "zebra"]
    assert data.label2id == {"apple": 0, "mango": 1, "zebra": 2}
    assert data.validation["label"] == [2, 0, 1, 0]


@pytest.mark.parametrize("name", ["cls_records.json", "cls_data_field.json"])
def test_json_arrays_and_wrapped_records_load(name):
    data = load_all(GOOD / name)
    expected = json.loads((GOOD / name).read_text())
    records = expected["data"] if isinstance(expected, dict) else expected
    assert data.validation["text"] == [r["text"] for r in records]


def test_parquet_file_loads_with_its_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"review": ["great", "dull", "fine", "awful"], "stars": [1, 0, 1, 0]}), path)
    data = load_all(path, text_column="review", label_column="stars")
    assert data.validation["text"] == ["great", "dull", "fine", "awful"]
    assert data.labels == ["0", "1"] and data.validation["label"] == [1, 0, 1, 0]


def test_parquet_null_text_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": ["great", None], "label": ["pos", "neg"]}), path)
    with pytest.raises(DataError, match=r"reviews.parquet: row 2, column 'text': the value is missing"):
        preflight_classification(str(path))


def test_text_pair_columns_are_detected():
    data = load_all(GOOD / "cls_pair.csv")
    assert (data.columns.text, data.columns.text_pair, data.columns.label) == (
        "sentence1",
        "sentence2",
        "label",
    )
    assert data.validation["text_pair"][1] == "A man runs."
    assert data.labels == ["contradiction", "entailment"]


def test_folder_of_csv_files_loads_every_row():
    data = load_all(GOOD / "cls_folder")
    assert data.train_report.rows == 5
    assert sorted(data.validation["text"]) == ["boring", "dull plot", "great film", "lovely", "superb"]


def test_missing_file_and_empty_folder_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        preflight_classification(str(tmp_path / "nope.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder has no data files"):
        preflight_classification(str(tmp_path / "empty"))


def test_held_out_validation_is_stratified_and_seeded(tmp_path):
    import csv

    path = tmp_path / "reviews.csv"
    rows = sentiment_rows(60)
    rows = [r for r in rows if r[1] == "pos"][:30] + [r for r in rows if r[1] == "neg"][:10]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    first = load_classification_data(str(path), validation_split_percentage=20, seed=7)
    again = load_classification_data(str(path), validation_split_percentage=20, seed=7)
    other = load_classification_data(str(path), validation_split_percentage=20, seed=8)
    assert first.validation["text"] == again.validation["text"]
    assert first.validation["text"] != other.validation["text"]
    assert sorted(first.validation["label"]) == [0, 0, 1, 1, 1, 1, 1, 1]  # 20% of 30 pos and of 10 neg
    assert len(first.train) == 32
    assert "stratified, seed 7" in first.validation_source


def test_too_few_rows_per_class_to_stratify_still_splits():
    data = load_classification_data(str(GOOD / "cls_pair.csv"), validation_split_percentage=10)
    assert (len(data.train), len(data.validation)) == (3, 1)
    assert "not stratified" in data.validation_source


def test_real_sst2_tsv_passes_preflight():
    path = shared_file("sst2", "validation.tsv")
    _, columns, labels, reports = preflight_classification(str(path), validation_file=str(path))
    assert (columns.text, columns.label, labels) == ("sentence", "label", ["0", "1"])
    assert reports["train"].rows == sum(1 for _ in path.open()) - 1


def recipe_stderr(stderr: str) -> str:
    """The recipe's own stderr: conftest's ``launch`` runs without ``--quiet`` (which the tunelab CLI passes),
    so ``accelerate launch`` adds its own CalledProcessError traceback after a non-zero exit; only that one
    may follow."""
    recipe, marker, launcher = stderr.partition("Traceback (most recent call last):")
    if marker:
        frames = [line for line in launcher.splitlines() if line.startswith('  File "')]
        assert all("accelerate" in f or "<frozen runpy>" in f for f in frames), launcher
        assert "CalledProcessError" in launcher and "returned non-zero exit status 1" in launcher, launcher
    return recipe


@pytest.mark.parametrize(
    ("train", "extra", "fragment"),
    [
        (BAD / "cls_ragged_row.csv", [], "cls_ragged_row.csv: line 4: the row has 3 fields"),
        (
            GOOD / "cls_unseen_label_train.csv",
            ["--validation_file", str(BAD / "cls_unseen_label_validation.csv")],
            "cls_unseen_label_validation.csv: line 4, column 'label': label 'neutral' never appears",
        ),
        (
            GOOD / "cls_unseen_label_train.csv",
            ["--class_weights", "neutral=3"],
            "class_weights: 'neutral' is not a label of the training data (its labels: neg, pos).",
        ),
    ],
    ids=["ragged_row", "unseen_validation_label", "class_weights_unknown_label"],
)
def test_recipe_rejects_bad_input_with_exit_1_and_no_traceback(tmp_path, tiny_bert, train, extra, fragment):
    output_dir = tmp_path / "run"
    proc = run_recipe(
        "bert_cls.py",
        "--train_file",
        str(train),
        *extra,
        "--model_name_or_path",
        str(tiny_bert),
        "--output_dir",
        str(output_dir),
        "--max_train_steps",
        "2",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    stderr = recipe_stderr(proc.stderr)
    assert fragment in stderr
    assert "Traceback" not in stderr
    status = json.loads((output_dir / "status.json").read_text())
    assert status["state"] == "failed"
    assert fragment in status["reason"]
    assert not (output_dir / "model.safetensors").exists()


# ---- columns a person would agree with -----------------------------------------------------------


def write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def product_reviews(n: int) -> list[list[str]]:
    """Long multi-line quoted reviews and a three-valued string label column with an unusual name."""
    domains = ["books", "kitchen", "electronics"]
    return [
        [
            f'Review {i}: "{domains[i % 3]}" item,\nsecond line of a long text number {i} with, commas',
            domains[i % 3],
        ]
        for i in range(n)
    ]


def test_a_two_column_file_with_string_labels_under_another_name_is_detected(tmp_path):
    path = write_rows(tmp_path / "reviews.csv", ["review", "domain"], product_reviews(300))
    _, columns, labels, reports = preflight_classification(str(path))
    assert (columns.text, columns.label) == ("review", "domain")
    assert labels == ["books", "electronics", "kitchen"] and reports["train"].rows == 300


def test_the_label_and_text_are_found_by_their_values_among_other_columns(tmp_path):
    rows = [
        [i, f"title {i}", f"a much longer body of text for entry {i}, " * 3, ["news", "sport"][i % 2]]
        for i in range(200)
    ]
    path = write_rows(tmp_path / "posts.csv", ["id", "title", "body", "topic"], rows)
    _, columns, labels, _ = preflight_classification(str(path))
    assert (columns.text, columns.label) == ("body", "topic") and labels == ["news", "sport"]


def test_two_columns_that_could_be_the_label_are_named_in_the_question(tmp_path):
    rows = [
        [f"text number {i} " * 4, ["news", "sport"][i % 2], ["en", "fr", "de"][i % 3]] for i in range(200)
    ]
    path = write_rows(tmp_path / "two.csv", ["body", "topic", "lang"], rows)
    with pytest.raises(DataError, match=r"several columns could be the label \(topic, lang\)"):
        preflight_classification(str(path))
    _, columns, _, _ = preflight_classification(str(path), label_column="lang")
    assert (columns.text, columns.label) == ("body", "lang")


def test_a_list_or_separated_label_cell_is_multi_label_with_a_set_per_row(tmp_path):
    """JSON lists (jsonl) and ';'-separated csv cells are detected as multi_label; each row keeps its
    labels as a set of ids (order and repeats do not matter), and every split is checked against train."""
    data = load_all(GOOD / "ml_topics.jsonl")
    assert data.problem_type == "multi_label"
    assert data.labels == ["happy", "politics", "sad", "sports", "tech"]
    names = [[data.labels[i] for i in row] for row in data.validation["label"]]
    assert names == [["sports", "happy"], ["politics", "sad"], ["tech"], ["sports", "sad"]]
    assert data.train_report.label_counts == {"sports": 2, "sad": 2, "happy": 1, "politics": 1, "tech": 1}
    csv_file = tmp_path / "topics.csv"
    csv_file.write_text('text,labels\na,"news; sports"\nb,sports;sports\nc,"[""news""]"\nd,weather\n')
    data = load_all(csv_file)
    assert data.problem_type == "multi_label" and data.labels == ["news", "sports", "weather"]
    assert [sorted(row) for row in data.validation["label"]] == [[0, 1], [1], [0], [2]]
    # a custom separator, and the override back to one label per text
    csv_file.write_text("text,labels\na,news|sports\nb,sports\n")
    assert load_all(csv_file).problem_type == "single_label"
    assert load_all(csv_file, label_separator="|", problem_type="multi_label").labels == ["news", "sports"]
    assert load_all(csv_file, label_separator="|").problem_type == "multi_label"


def test_multi_label_balanced_weights_are_each_labels_negatives_over_positives():
    from tunelab.data.classification import class_weights

    data = load_all(GOOD / "ml_topics.jsonl")  # 4 rows; sports and sad in 2, the others in 1
    weights = dict(zip(data.labels, class_weights("balanced", data), strict=True))
    assert weights == {"happy": 3.0, "politics": 3.0, "sad": 1.0, "sports": 1.0, "tech": 3.0}
    assert class_weights("tech=4", data) == [1.0, 1.0, 1.0, 1.0, 4.0]
    with pytest.raises(ConfigError, match="'news' is not a label of the training data"):
        class_weights("news=2", data)


def test_group_by_length_batches_pad_less_than_random_ones(sst2_dir):
    """The length-grouped sampler's batches hold texts of similar length: far less padding than
    shuffled batches of the same texts."""
    from transformers import AutoTokenizer

    from tunelab.data.batching import classification_dataloaders, tokenize_classification
    from tunelab.models import resolve_model_path

    data = load_classification_data(str(sst2_dir / "train.tsv"), max_train_samples=2000)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))
    train, _ = tokenize_classification(data.train, tokenizer, 128)
    padding = {}
    for grouped in (True, False):
        loader, _ = classification_dataloaders(train, train, tokenizer, 32, 32, grouped, 0, on_gpu=False)
        real = total = 0
        for batch in loader:
            real += int(batch["attention_mask"].sum())
            total += batch["attention_mask"].numel()
        padding[grouped] = 1 - real / total
    assert padding[True] < 0.25 * padding[False], padding
