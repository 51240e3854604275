"""Data tab: upload or pick a sample, run the recipes' preflight, preview, map columns, plot labels and lengths."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import gradio as gr
import pandas as pd

from tunelab.data.chat import read_conversations, resolve_data_format
from tunelab.data.classification import (
    as_number,
    imbalance_note,
    load_classification_data,
    preflight_classification,
)
from tunelab.data.clean import (
    DataCleaningArguments,
    clean_classification_data,
    report_examples,
    report_markdown,
)
from tunelab.data.files import TABLE_FORMATS, iter_records, read_text, resolve_source
from tunelab.data.samples import SAMPLES, materialize_samples
from tunelab.errors import TuneLabError

from .plots import bar_chart, histogram
from .state import DATA_SUFFIXES, AppState, UserError, clean_message, user_message

AUTO = "(auto)"
NONE = "(none)"
PREVIEW_ROWS = 50
PROBLEM_COLUMNS = ("file", "row", "column", "problem")
EMPTY_PREVIEW = pd.DataFrame(columns=["(upload a dataset or pick a sample to preview it)"])
LENGTH_SAMPLE = 2000
PLOT_WIDTH = 460  # two charts side by side
PROBLEM_RE = re.compile(
    r"^(?P<file>[^:]+): (?:(?:line|record|row) (?P<row>\d+)(?:, column (?P<col>\d+|'[^']*'))?: )?(?P<problem>.*)$",
    re.S,
)


def sanitize_name(name: str) -> str:
    """A safe file name for the data folder that the app then accepts as a dataset name: the file's own
    name (a %-encoded path is decoded first, then only its last part kept), letters, digits, '.', '-',
    '_', never two dots in a row, no leading dot."""
    name = Path(unquote(name).replace("\\", "/")).name
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip(".-_") or "dataset"
    return f"{stem[:80]}{suffix}"


def readable(path: Path) -> bool:
    """Whether the file can be read at all (an empty file or a binary renamed .csv cannot)."""
    try:
        read_preview(path)
    except TuneLabError:
        return False
    return True


def store_upload(state: AppState, uploaded: str | Path) -> Path:
    src = Path(uploaded)
    suffix = src.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise UserError(f"Unsupported file type {suffix or '(none)'}: use one of {', '.join(DATA_SUFFIXES)}.")
    state.data_dir.mkdir(parents=True, exist_ok=True)
    name = sanitize_name(src.name)
    dest = state.data_dir / name
    n = 1
    while dest.exists() and dest.read_bytes() != src.read_bytes():
        dest = state.data_dir / f"{Path(name).stem}-{n}{suffix}"
        n += 1
    shutil.copyfile(src, dest)
    return dest


@functools.lru_cache(maxsize=1)
def _length_tokenizer():
    from transformers import AutoTokenizer

    from tunelab.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))


def problem_table(message: str) -> pd.DataFrame:
    """One row (file, row, column, problem) parsed from a DataError message."""
    m = PROBLEM_RE.match(message)
    if not m:
        return pd.DataFrame([{"file": "", "row": "", "column": "", "problem": message}])
    return pd.DataFrame(
        [
            {
                "file": m["file"],
                "row": m["row"] or "",
                "column": (m["col"] or "").strip("'"),
                "problem": m["problem"],
            }
        ]
    )


def read_preview(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    if path.suffix.lower() == ".txt":
        lines = [line for line in read_text(path).splitlines() if line.strip()][:PREVIEW_ROWS]
        return ["text"], [{"text": line} for line in lines]
    header, records, _ = iter_records(path)
    rows = []
    try:
        for _, record in records:
            rows.append(record)
            if len(rows) >= PREVIEW_ROWS:
                break
    except TuneLabError:
        pass  # the rows before a broken one still preview; the checks below report the problem
    return header, rows


def _column_choice(value: str | None) -> str | None:
    return None if value in (None, "", AUTO, NONE) else value


def token_lengths(texts: list[str]) -> list[int]:
    """Token counts of (a sample of) the texts with the MiniLM tokenizer."""
    if not texts:
        return []
    tok = _length_tokenizer()
    return [len(ids) for ids in tok(texts[:LENGTH_SAMPLE], truncation=False)["input_ids"]]


def length_histogram(lengths: list[int]):
    return histogram(lengths, "Token lengths (MiniLM tokenizer)", "tokens", width=PLOT_WIDTH)


def token_length_plot(texts: list[str]):
    return length_histogram(token_lengths(texts))


def label_plot(labels: list[str], counts: dict[str, int]):
    return bar_chart(
        pd.DataFrame({"label": labels, "count": [counts[k] for k in labels]}),
        "label",
        "count",
        "Label distribution",
    )


def target_plot(records: list[dict[str, Any]], column: str):
    """A regression target's distribution (of the rows the token lengths are sampled from)."""
    values = [v for v in (as_number(r.get(column)) for r in records) if v is not None]
    return histogram(values, "Target distribution", column, width=PLOT_WIDTH, whole=False)


def inspect_dataset(
    state: AppState, name: str, text_col: str | None, pair_col: str | None, label_col: str | None
):
    """(report, problems, preview, label plot, length plot, text/pair/label dropdown updates)."""
    empty_labels = None
    path = state.dataset_path(name)
    try:
        header, rows = read_preview(path)
    except TuneLabError as e:
        return failed_without_columns(f"{path.name} cannot be read", user_message(str(e)))
    preview = pd.DataFrame(rows, columns=header)
    if path.suffix.lower() == ".txt":
        text = read_text(path)
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        report = (
            f"### ✓ {path.name}: plain text for causal-LM pretraining\n"
            f"{len(text):,} characters, {len(text.splitlines()):,} lines, {len(paragraphs):,} paragraphs. "
            "Use it in the Train tab with the task *causal-lm*."
        )
        no = gr.update(choices=[AUTO], value=AUTO)
        state.remember_columns(path.name, None, None, None)
        return (
            report,
            pd.DataFrame(columns=["file", "row", "column", "problem"]),
            preview,
            empty_labels,
            token_length_plot(paragraphs),
            no,
            gr.update(choices=[NONE], value=NONE),
            no,
        )
    try:
        data_format = resolve_data_format(str(path))
    except TuneLabError:
        data_format = "text"  # not conversations: the classification checks below say what is wrong
    if data_format != "text":
        return conversations_report(state, path, data_format)
    text_choices = [AUTO, *header]
    pair_choices = [NONE, *header]
    try:
        _, columns, labels, reports = preflight_classification(
            str(path),
            text_column=_column_choice(text_col),
            text_pair_column=_column_choice(pair_col),
            label_column=_column_choice(label_col),
        )
    except TuneLabError as e:
        msg = user_message(str(e))
        return (
            f"### ✗ {path.name} does not pass the checks\n{msg}",
            problem_table(msg),
            preview,
            empty_labels,
            token_length_plot([]),
            gr.update(choices=text_choices, value=text_col or AUTO),
            gr.update(choices=pair_choices, value=pair_col or NONE),
            gr.update(choices=text_choices, value=label_col or AUTO),
        )
    counts = reports["train"].label_counts
    regression = reports["train"].problem_type == "regression"
    target = (
        f" · regression target **{columns.label}** (numbers {reports['train'].describe_target()}; set "
        "Problem type single_label in the Train tab if they are classes)"
        if regression
        else f" · label column **{columns.label}** · {reports['train'].describe_labels(labels)}"
    )
    report = (
        f"### ✓ {path.name} passes the checks\n"
        f"{reports['train'].rows:,} rows · text column **{columns.text}**"
        + (f" · pair column **{columns.text_pair}**" if columns.text_pair else "")
        + target
        + (
            f"\n\n⚠ Imbalanced labels: {note}"
            if (note := imbalance_note(counts, reports["train"].rows))
            else ""
        )
        + "\n\nThe Train tab now uses this dataset and these columns (task *classification*, or "
        "*causal-lm* on its text column)."
    )
    records = _first_records(path, LENGTH_SAMPLE)
    texts = [str(r.get(columns.text, "")) for r in records]
    lengths = token_lengths(texts)
    # what the Train tab starts from: this dataset, its columns, its size and its texts' lengths
    state.remember_columns(
        path.name, columns.text, columns.text_pair, columns.label, reports["train"].rows, lengths
    )
    return (
        report,
        pd.DataFrame(columns=["file", "row", "column", "problem"]),
        preview,
        target_plot(records, columns.label) if regression else label_plot(labels, counts),
        length_histogram(lengths),
        gr.update(choices=text_choices, value=columns.text),
        gr.update(choices=pair_choices, value=columns.text_pair or NONE),
        gr.update(choices=text_choices, value=columns.label),
    )


def failed_without_columns(heading: str, message: str) -> tuple:
    """The Data tab's outputs for a file that failed before any column could be chosen."""
    no = gr.update(choices=[AUTO], value=AUTO)
    empty = (EMPTY_PREVIEW, None, token_length_plot([]), no, gr.update(choices=[NONE], value=NONE), no)
    return (f"### ✗ {heading}\n{message}", problem_table(message), *empty)


def transcript(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def conversations_report(state: AppState, path: Path, data_format: str) -> tuple:
    """The Data tab's outputs for a chat or instruction file: every row checked, the conversations
    previewed as transcripts, their lengths."""
    no = gr.update(choices=[AUTO], value=AUTO)
    try:
        conversations = read_conversations(resolve_source(str(path), TABLE_FORMATS), data_format)
    except TuneLabError as e:
        return failed_without_columns(f"{path.name} does not pass the checks", user_message(str(e)))
    turns = sum(sum(m["role"] == "assistant" for m in c) for c in conversations)
    report = (
        f"### ✓ {path.name}: {len(conversations):,} conversations ({data_format}) for chat fine-tuning\n"
        f"{turns:,} assistant replies to learn ({turns / len(conversations):.2f} per conversation). Use it in "
        "the Train tab with the task *causal-lm* (Data format: auto finds it), from a finished run or from "
        "a new GPT-2: only the replies are learned, formatted by the model's chat template."
    )
    state.remember_columns(path.name, None, None, None)
    texts = [transcript(c) for c in conversations]
    preview = pd.DataFrame({"conversation": texts[:PREVIEW_ROWS]})
    return (
        report,
        pd.DataFrame(columns=list(PROBLEM_COLUMNS)),
        preview,
        None,
        token_length_plot(texts),
        no,
        gr.update(choices=[NONE], value=NONE),
        no,
    )


def cleaning_report(
    state: AppState, name: str, text_col: str | None, pair_col: str | None, label_col: str | None
) -> tuple[str, pd.DataFrame]:
    """Duplicates, conflicting labels and train/validation overlap of a classification file, with the
    validation share the Train tab holds out (the recipe's defaults: 10%, seed 42)."""
    examples = pd.DataFrame(columns=["rule", "row", "text", "detail"])
    path = state.dataset_path(name) if name else None
    if path is None or path.suffix.lower() == ".txt" or not path.exists():
        return "", examples
    try:
        data = load_classification_data(
            str(path),
            text_column=_column_choice(text_col),
            text_pair_column=_column_choice(pair_col),
            label_column=_column_choice(label_col),
        )
    except TuneLabError:
        return "", examples  # the check above already shows the problem
    report = clean_classification_data(data, DataCleaningArguments())  # report only: nothing removed
    rows = report_examples(report)
    note = (
        '\n\nNothing is removed unless asked: the Train tab\'s "Data cleaning and augmentation" options '
        "apply the rules to the training split."
    )
    return clean_message(report_markdown(report, data.validation_source)) + note, pd.DataFrame(
        rows, columns=examples.columns
    )


def _first_records(path: Path, n: int) -> list[dict[str, Any]]:
    _, records, _ = iter_records(path)
    out = []
    for _, record in records:
        out.append(record)
        if len(out) >= n:
            break
    return out


def build(state: AppState) -> None:
    with gr.Tab("Data", id="data") as tab:
        gr.Markdown(
            "Upload a dataset or start from a sample that ships with TuneLab. The same checks as the "
            "recipes run here; datasets are kept in the app's data folder for later runs."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="Upload csv / tsv / json / jsonl / parquet / txt",
                    file_types=list(DATA_SUFFIXES),
                    type="filepath",
                    elem_id="data-upload",
                )
                sample = gr.Dropdown(
                    label="…or a sample dataset",
                    choices=[(f"{n} — {s.description}", n) for n, s in SAMPLES.items()],
                    value="sample-sentiment.csv",
                )
                use_sample = gr.Button("Use sample", elem_id="use-sample")
            with gr.Column(scale=1):
                dataset = gr.Dropdown(
                    label="Dataset in the data folder",
                    choices=state.datasets(),
                    allow_custom_value=True,
                    elem_id="data-dataset",
                )
                with gr.Row():
                    text_col = gr.Dropdown(
                        label="Text column", choices=[AUTO], value=AUTO, allow_custom_value=True
                    )
                    pair_col = gr.Dropdown(
                        label="Text pair column", choices=[NONE], value=NONE, allow_custom_value=True
                    )
                    label_col = gr.Dropdown(
                        label="Label column", choices=[AUTO], value=AUTO, allow_custom_value=True
                    )
                check = gr.Button("Check with these columns", variant="primary", elem_id="data-check")
        report = gr.Markdown(elem_id="data-report")
        problems = gr.Dataframe(
            headers=list(PROBLEM_COLUMNS),
            label="Problems (file, row, column, problem)",
            interactive=False,
            elem_id="data-problems",
        )
        preview = gr.Dataframe(
            EMPTY_PREVIEW,
            label=f"Preview (first {PREVIEW_ROWS} rows)",
            interactive=False,
            max_height=300,
            elem_id="data-preview",
        )
        with gr.Row():
            labels_plot = gr.Plot(label="Label distribution", elem_id="data-label-plot")
            length_plot = gr.Plot(label="Token lengths", elem_id="data-length-plot")
        outputs = [report, problems, preview, labels_plot, length_plot, text_col, pair_col, label_col]
        cleaning_md = gr.Markdown(elem_id="data-cleaning")
        cleaning_examples = gr.Dataframe(
            headers=["rule", "row", "text", "detail"],
            label="Cleaning report: examples per rule (row: position in the training split)",
            interactive=False,
            max_height=300,
            elem_id="data-cleaning-examples",
        )
        cleaning = dict(
            fn=lambda name, t, p, lab: cleaning_report(state, name, t, p, lab),
            inputs=[dataset, text_col, pair_col, label_col],
            outputs=[cleaning_md, cleaning_examples],
        )

        def do_inspect(name, t, p, lab):
            return inspect_dataset(state, name, t, p, lab)

        def do_upload(file):
            if not file:
                raise UserError("Choose a file to upload.")
            dest = store_upload(state, file)
            result = inspect_dataset(state, dest.name, AUTO, NONE, AUTO)
            if not readable(dest):  # not a dataset: not kept, so never listed (its report says why)
                dest.unlink(missing_ok=True)
                note = "\n\nThe file was not kept in the data folder: fix it and upload it again."
                return gr.update(choices=state.datasets(), value=None), result[0] + note, *result[1:]
            return gr.update(choices=state.datasets(), value=dest.name), *result

        def do_sample(name):
            if name not in SAMPLES:
                raise UserError("Unknown sample.")
            materialize_samples(state.data_dir)
            result = inspect_dataset(state, name, AUTO, NONE, AUTO)
            return gr.update(choices=state.datasets(), value=name), *result

        def do_select(name):
            if not name:
                return gr.skip()
            return inspect_dataset(state, name, AUTO, NONE, AUTO)

        upload.upload(do_upload, [upload], [dataset, *outputs], api_name="upload_dataset").then(
            **cleaning, api_name=False
        )
        use_sample.click(do_sample, [sample], [dataset, *outputs], api_name="use_sample").then(
            **cleaning, api_name=False
        )
        check.click(
            do_inspect, [dataset, text_col, pair_col, label_col], outputs, api_name="check_dataset"
        ).then(**cleaning, api_name="cleaning_report")
        dataset.input(do_select, [dataset], outputs, api_name=False).then(**cleaning, api_name=False)
        tab.select(lambda: gr.update(choices=state.datasets()), None, [dataset], api_name=False)
