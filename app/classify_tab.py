"""Classify tab: label probabilities for a text or a file of texts; a run's confusion matrix and its most
confidently wrong validation examples."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tunelab.data.files import iter_records, read_text
from tunelab.errors import TuneLabError
from tunelab.infer import Classifier

from .loaded import load, model_spec
from .state import AppState, UserError, clean_message

MAX_FILE_TEXTS = 20_000
MAX_VALIDATION = 1000


def read_texts(path: Path) -> list[str]:
    """Texts of an uploaded file: one per line of a .txt, else the 'text' (or first) column."""
    if path.suffix.lower() == ".txt":
        return [line for line in read_text(path).splitlines() if line.strip()]
    header, records, _ = iter_records(path)
    column = next((c for c in header if c.lower() in ("text", "sentence", "review", "content")), header[0])
    return [str(r.get(column, "")) for _, r in records]


def classify_file(state: AppState, spec: str, file: str) -> str:
    try:
        texts = read_texts(Path(file))
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    if not texts:
        raise UserError("The file has no texts.")
    if len(texts) > MAX_FILE_TEXTS:
        raise UserError(f"At most {MAX_FILE_TEXTS} texts per file.")
    classifier = load(Classifier, spec)
    probs = classifier.predict(texts)
    out_dir = state.data_dir / "predictions"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"predictions-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "prediction", "confidence", *[f"p({label})" for label in classifier.labels]])
        for text, p in zip(texts, probs, strict=True):
            best = max(p, key=p.get)
            writer.writerow(
                [text, best, f"{p[best]:.4f}", *[f"{p[label]:.4f}" for label in classifier.labels]]
            )
    return str(out)


def confusion_table(run_dir: Path) -> pd.DataFrame:
    try:
        report = json.loads((run_dir / "eval_results.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return pd.DataFrame({"": ["no eval_results.json in this run"]})
    labels, matrix = report.get("labels") or [], report.get("confusion_matrix") or []
    rows = [
        {"true \\ predicted": label, **{p: int(v) for p, v in zip(labels, row, strict=False)}}
        for label, row in zip(labels, matrix, strict=False)
    ]
    return pd.DataFrame(rows)


def wrong_examples(
    state: AppState, run_dir: Path, top: int = 20, model_dir: Path | None = None
) -> pd.DataFrame:
    """Re-run the model (the run's, or ``model_dir``: one of its exports) on the run's own validation split
    (same files, split, seed as config.yaml)."""
    from tunelab.data.classification import load_classification_data

    config = yaml_config(run_dir)
    try:
        data = load_classification_data(
            config["train_file"],
            config.get("validation_file"),
            None,
            config.get("text_column"),
            config.get("text_pair_column"),
            config.get("label_column"),
            float(config.get("validation_split_percentage", 10.0)),
            None,
            config.get("max_eval_samples"),
            int(config.get("seed", 42)),
            config.get("dataset_config_name"),
        )
    except (TuneLabError, KeyError) as e:
        raise UserError(f"Cannot reload this run's validation data: {clean_message(str(e))}") from None
    validation = data.validation.select(range(min(len(data.validation), MAX_VALIDATION)))
    classifier = load(Classifier, str(model_dir or run_dir))
    texts = validation["text"]
    if "text_pair" in validation.column_names:  # show both parts; predict on the pair
        probs = _predict_pairs(classifier, texts, validation["text_pair"])
        texts = [f"{a} ‖ {b}" for a, b in zip(texts, validation["text_pair"], strict=True)]
    else:
        probs = classifier.predict(texts)
    names = data.labels
    rows = []
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
    if not rows:
        return pd.DataFrame({"text": [f"no mistakes on {len(texts)} validation examples"]})
    return pd.DataFrame(rows[:top])


def _predict_pairs(classifier: Classifier, texts: list[str], pairs: list[str]) -> list[dict[str, float]]:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            enc = classifier.tokenizer(
                texts[start : start + 32],
                pairs[start : start + 32],
                truncation=True,
                max_length=classifier.max_length,
                padding=True,
                return_tensors="pt",
            )
            probs = torch.softmax(
                classifier.model(**enc.to(classifier.model.device)).logits.float(), -1
            ).cpu()
            out += [dict(zip(classifier.labels, row.tolist(), strict=True)) for row in probs]
    return out


def yaml_config(run_dir: Path) -> dict[str, Any]:
    from tunelab.runs import Run

    return Run(run_dir).config()


def build(state: AppState) -> dict[str, Any]:
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
            with gr.Column():
                texts_file = gr.File(
                    label="A file of texts (txt: one per line; csv/jsonl: a text column)",
                    file_types=[".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet"],
                    type="filepath",
                )
                file_btn = gr.Button("Classify the file")
                predictions = gr.File(label="Predictions (csv)", interactive=False)
        with gr.Accordion("Validation report of the run", open=False):
            report_btn = gr.Button("Show confusion matrix and confident mistakes")
            confusion = gr.Dataframe(
                headers=["true \\ predicted"], label="Confusion matrix (validation)", interactive=False
            )
            mistakes = gr.Dataframe(
                headers=["text", "true", "predicted", "confidence"],
                label="Most confidently wrong validation examples",
                interactive=False,
                wrap=True,
            )

        def classify(rid, path, value):
            if not (value or "").strip():
                raise UserError("Type a text first.")
            return load(Classifier, model_spec(state, rid, path)).predict([value])[0]

        def do_file(rid, path, file):
            if not file:
                raise UserError("Upload a file of texts first.")
            return classify_file(state, model_spec(state, rid, path), file)

        def report(rid):
            run = state.run((rid or "").partition("/")[0])  # an export is scored on its run's split
            if not run.has_model():
                raise UserError("This run has no final model yet.")
            return confusion_table(run.path), wrong_examples(state, run.path, model_dir=state.model_dir(rid))

        classify_btn.click(classify, [run_id, model_path, text], [label], api_name="classify")
        text.submit(classify, [run_id, model_path, text], [label], api_name=False)
        file_btn.click(do_file, [run_id, model_path, texts_file], [predictions], api_name="classify_file")
        report_btn.click(report, [run_id], [confusion, mistakes], api_name="validation_report")
        tab.select(
            lambda: gr.update(choices=state.model_choices("classification")),
            None,
            [run_id],
            api_name=False,
        )
    return {"run_id": run_id}
