"""Classify tab: label probabilities for a text or a file of texts; a run's confusion matrix and its most
confidently wrong validation examples."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tunelab.errors import TuneLabError, writing
from tunelab.infer import Classifier
from tunelab.predictions import prediction_table, read_texts, remove_older_than, write_predictions
from tunelab.runs import TEST_PREDICTIONS

from .loaded import load, model_spec
from .state import AppState, UserError, clean_message

MAX_FILE_TEXTS = 20_000
PREDICTIONS_DIR = "predictions"  # under the data folder, one folder per browser session
KEEP_PREDICTIONS_S = 24 * 3600
MAX_VALIDATION = 1000


def _reporter(progress: gr.Progress, what: str) -> Callable[[int, int], None]:
    return lambda done, total: progress(done / total, desc=f"{what} {done}/{total} texts")


def classify_file(
    state: AppState,
    spec: str,
    file: str,
    session: str | None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Classify the texts of ``file``; the path of its predictions: the file's columns plus the predicted
    label, its score and each label's probability, in a folder of this browser session's own (under
    <data>/predictions, away from the datasets; files there go after a day)."""
    try:
        texts, records, columns = read_texts(Path(file), how_to_name="name the column of texts 'text'")
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    if not texts:
        raise UserError("The file has no texts.")
    if len(texts) > MAX_FILE_TEXTS:
        raise UserError(f"At most {MAX_FILE_TEXTS} texts per file.")
    classifier = load(Classifier, spec)
    probabilities = classifier.predict(texts, progress=progress)
    rows, out_columns = prediction_table(records, columns, probabilities, classifier.labels)
    folder = state.data_dir / PREDICTIONS_DIR
    remove_older_than(folder, KEEP_PREDICTIONS_S)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(file).stem)[:60] or "texts"
    name = f"{stem}-predictions-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.csv"
    out = folder / (re.sub(r"[^A-Za-z0-9]", "", session or "")[:32] or "no-session") / name
    try:
        with writing("predictions", folder.parent):
            write_predictions(out, rows, out_columns)
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    return str(out)


def confusion_table(run_dir: Path, split: str = "validation") -> pd.DataFrame | None:
    """The run's confusion matrix on its validation split, or on its test file (None: no test file); a
    multi-label model's per-label report (precision, recall, F1, support, threshold) instead."""
    try:
        report = json.loads((run_dir / "eval_results.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None if split == "test" else pd.DataFrame({"": ["no eval_results.json in this run"]})
    key = "test/confusion_matrix" if split == "test" else "confusion_matrix"
    if report.get("problem_type") == "regression":
        return None if split == "test" else pd.DataFrame({"": ["a regression model: no confusion matrix"]})
    if report.get("problem_type") == "multi_label":
        per_label = report.get("test/per_class" if split == "test" else "per_class")
        if per_label is None:
            return None if split == "test" else pd.DataFrame({"": ["no per-label report in this run"]})
        return pd.DataFrame([{"label": name, **scores} for name, scores in per_label.items()]).round(4)
    if split == "test" and key not in report:
        return None
    labels, matrix = report.get("labels") or [], report.get(key) or []
    rows = [
        {"true \\ predicted": label, **{p: int(v) for p, v in zip(labels, row, strict=False)}}
        for label, row in zip(labels, matrix, strict=False)
    ]
    return pd.DataFrame(rows)


def table_title(run_dir: Path, split: str) -> str:
    """What confusion_table shows: a confusion matrix, or a multi-label model's per-label scores."""
    try:
        multi_label = (
            json.loads((run_dir / "eval_results.json").read_text()).get("problem_type") == "multi_label"
        )
    except (OSError, ValueError):
        multi_label = False
    return f"{'Per-label scores' if multi_label else 'Confusion matrix'} ({split})"


REPORT_FILE = "validation_report.json"


def _model_fingerprint(model_dir: Path) -> list[list[Any]]:
    """Name, size and mtime of the files that make the model: a retrained or re-exported model has another."""
    files = [
        f for f in sorted(model_dir.iterdir()) if f.suffix in (".json", ".safetensors", ".onnx", ".data")
    ]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.name != REPORT_FILE]


def wrong_examples(
    run_dir: Path, model_dir: Path, top: int = 20, progress: Callable[[int, int], None] | None = None
) -> pd.DataFrame:
    """The most confidently wrong examples of the model in ``model_dir`` (the run's, or one of its exports)
    on the run's own validation split (same files, split, seed as config.yaml). Computed once per model:
    the result is kept in the model's folder (validation_report.json) until the model changes."""
    cache = model_dir / REPORT_FILE
    fingerprint = _model_fingerprint(model_dir)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("model") == fingerprint and cached.get("top") == top:
            return _mistakes_frame(cached["mistakes"], cached["examples"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    rows, examples = _find_mistakes(run_dir, model_dir, progress)
    rows = rows[:top]
    with contextlib.suppress(OSError):  # a read-only run folder: the report is still shown, just not kept
        cache.write_text(
            json.dumps({"model": fingerprint, "top": top, "examples": examples, "mistakes": rows})
        )
    return _mistakes_frame(rows, examples)


def _mistakes_frame(rows: list[dict[str, Any]], examples: int) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({"text": [f"no mistakes on {examples} validation examples"]})
    return pd.DataFrame(rows)


def _find_mistakes(
    run_dir: Path, model_dir: Path, progress: Callable[[int, int], None] | None
) -> tuple[list[dict[str, Any]], int]:
    """(wrong predictions, most confident first; number of validation examples scored)."""
    from tunelab.data.classification import classification_data

    config = yaml_config(run_dir)
    try:
        data = classification_data(config, test_file=None, max_train_samples=None)
    except (TuneLabError, KeyError) as e:
        raise UserError(f"Cannot reload this run's validation data: {clean_message(str(e))}") from None
    validation = data.validation.select(range(min(len(data.validation), MAX_VALIDATION)))
    classifier = load(Classifier, str(model_dir))
    texts = validation["text"]
    pairs = validation["text_pair"] if "text_pair" in validation.column_names else None
    probs = classifier.predict(texts, pairs, progress=progress)
    if pairs is not None:  # show both parts; predicted on the pair
        texts = [f"{a} ‖ {b}" for a, b in zip(texts, pairs, strict=True)]
    names = data.labels
    rows = []
    if classifier.regression:  # the largest errors first
        for text, gold, p in zip(texts, validation["label"], probs, strict=True):
            predicted = p[names[0]]
            rows.append(
                {"text": text, "true": round(gold, 4), "predicted": round(predicted, 4), "error": 0.0}
            )
            rows[-1]["error"] = round(abs(predicted - gold), 4)
        return sorted(rows, key=lambda r: -r["error"]), len(texts)
    if classifier.multi_label:  # a wrong label set; its confidence: that of its surest wrong decision
        for text, gold, p in zip(texts, validation["label"], probs, strict=True):
            chosen, true = classifier.chosen(p), [names[i] for i in gold]
            wrong = set(chosen) ^ set(true)
            if wrong:
                sure = max(p[k] if k in chosen else 1 - p[k] for k in wrong)
                row = {"text": text, "true": "; ".join(true), "predicted": "; ".join(chosen)}
                rows.append(row | {"confidence": round(sure, 4)})
        rows.sort(key=lambda r: -r["confidence"])
        return rows, len(texts)
    for text, gold, p in zip(texts, validation["label"], probs, strict=True):
        predicted = max(p, key=p.get)
        if predicted != names[gold]:
            rows.append(
                {
                    "text": text,
                    "true": names[gold],
                    "predicted": predicted,
                    "confidence": round(p[predicted], 4),
                }
            )
    rows.sort(key=lambda r: -r["confidence"])
    return rows, len(texts)


def decision(classifier: Classifier, probabilities: Any) -> str | None:
    """A multi-label model's answer: every label at or above its threshold, most probable first (None
    for other models). ``probabilities``: the Label's {label: probability}."""
    if not classifier.multi_label or not isinstance(probabilities, dict):
        return None
    cut = classifier.thresholds or {}
    chosen = classifier.chosen(probabilities)
    listed = ", ".join(f"**{k}** {probabilities[k]:.2f} (threshold {cut[k]:.2f})" for k in chosen)
    return f"Labels: {listed or 'none reaches its threshold'}"


def yaml_config(run_dir: Path) -> dict[str, Any]:
    from tunelab.runs import Run

    return Run(run_dir).config()


def build(state: AppState) -> None:
    with gr.Tab("Classify", id="classify") as tab:
        with gr.Row():
            run_id = gr.Dropdown(
                state.model_choices("classification"),
                label="Classification run",
                allow_custom_value=True,
                elem_id="classify-run",
            )
            model_path = gr.Textbox(label="…or a model folder / Hub id", placeholder="overrides the run")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Text", lines=3, elem_id="classify-text")
                classify_btn = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                label = gr.Label(label="Label probabilities", num_top_classes=10, elem_id="classify-label")
                labels_chosen = gr.Markdown(visible=False, elem_id="classify-decision")
            with gr.Column():
                texts_file = gr.File(
                    label="A file of texts (txt: one per line; csv/jsonl: a text column)",
                    file_types=[".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet"],
                    type="filepath",
                )
                file_btn = gr.Button("Classify the file")
                predictions = gr.File(label="Predictions (csv)", interactive=False)
        with gr.Accordion("Validation and test reports of the run", open=False):
            report_btn = gr.Button("Show confusion matrices and confident mistakes")
            confusion = gr.Dataframe(
                headers=["true \\ predicted"], label="Confusion matrix (validation)", interactive=False
            )
            mistakes = gr.Dataframe(
                headers=["text", "true", "predicted", "confidence"],
                label="Most confidently wrong validation examples",
                interactive=False,
                wrap=True,
                column_widths=["64%", "12%", "12%", "12%"],  # else a long text pushes the rest out of view
            )
            test_scores = gr.Markdown(visible=False, elem_id="classify-test-scores")
            test_confusion = gr.Dataframe(
                label="Confusion matrix (test file)", interactive=False, visible=False
            )
            test_file = gr.File(label="Test predictions (csv)", interactive=False, visible=False)

        def classify(rid, path, value):
            if not (value or "").strip():
                raise UserError("Type a text first.")
            classifier = load(Classifier, model_spec(state, rid, path))
            answer = classifier.predict([value])[0]
            if classifier.regression:  # one number, not a distribution over labels
                ((name, number),) = answer.items()
                return f"{name} = {number:.4g}"
            return answer

        def decide(rid, path, shown):
            """A multi-label model's answer under the bars (each label's own probability)."""
            answer = decision(load(Classifier, model_spec(state, rid, path)), shown)
            return gr.update(value=answer, visible=answer is not None)

        def do_file(rid, path, file, request: gr.Request, progress=gr.Progress()):
            if not file:
                raise UserError("Upload a file of texts first.")
            spec = model_spec(state, rid, path)
            return classify_file(state, spec, file, request.session_hash, _reporter(progress, "classifying"))

        def report(rid, progress=gr.Progress()):
            run = state.run((rid or "").partition("/")[0])  # an export is scored on its run's split
            if not run.has_model():
                raise UserError("This run has no final model yet.")
            mistakes = wrong_examples(run.path, state.model_dir(rid), progress=_reporter(progress, "scoring"))
            return gr.update(
                value=confusion_table(run.path), label=table_title(run.path, "validation")
            ), mistakes

        for event, api_name in ((classify_btn.click, "classify"), (text.submit, False)):
            event(classify, [run_id, model_path, text], [label], api_name=api_name).then(
                decide, [run_id, model_path, label], [labels_chosen], api_name=False
            )
        file_btn.click(do_file, [run_id, model_path, texts_file], [predictions], api_name="classify_file")

        def test_report(rid):
            """The final model's scores on the run's test file, its confusion matrix and predictions."""
            run = state.run((rid or "").partition("/")[0])
            metrics = run.status().get("metrics") or {}
            scores = ", ".join(
                f"{k.removeprefix('test/')} {v:.4g}" for k, v in metrics.items() if k.startswith("test/")
            )
            if not scores:
                hidden = gr.update(visible=False)
                return gr.update(value="This run had no test file.", visible=True), hidden, hidden
            table = confusion_table(run.path, "test")  # None for a regression model
            predictions = run.path / TEST_PREDICTIONS
            return (
                gr.update(value=f"**Test file**: {scores}", visible=True),
                gr.update(value=table, visible=table is not None, label=table_title(run.path, "test file")),
                gr.update(
                    value=str(predictions) if predictions.is_file() else None, visible=predictions.is_file()
                ),
            )

        report_btn.click(report, [run_id], [confusion, mistakes], api_name="validation_report").then(
            test_report, [run_id], [test_scores, test_confusion, test_file], api_name="test_report"
        )
        tab.select(
            lambda: gr.update(choices=state.model_choices("classification")),
            None,
            [run_id],
            api_name=False,
        )
