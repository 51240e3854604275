"""recipes/bert_mlm.py: masked-LM domain adaptation, then classification from the adapted encoder.

One real `accelerate launch` of the recipe on a tiny BERT (Python documentation text) and one of
bert_cls.py from its folder; the data pieces (blocks, line by line, whole-word masks, fixed validation
masks) in process; the CLI's dry run; and the app's "adapt to my domain first" queueing."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import yaml
from conftest import ROOT, run_recipe

if str(ROOT) not in sys.path:  # the app is a package at the repo root, not installed
    sys.path.insert(0, str(ROOT))


# One thread per run: on a busy 2-core CI machine, two OpenMP threads per process spin against the other
# jobs and a tiny model's step gets ~10x slower (measured 0.08 s -> ~1 s here).
ONE_THREAD = {"TUNELAB_NUM_THREADS": "1"}


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory):
    from tunelab.data.samples import python_docs_text

    path = tmp_path_factory.mktemp("mlm-data") / "python_docs.txt"
    path.write_text(python_docs_text(40_000))
    return path


@pytest.fixture(scope="module")
def tokenizer(embedded_encoder_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_encoder_path)


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, tiny_bert, docs_file):
    out = tmp_path_factory.mktemp("mlm-run") / "run"
    run_recipe(
        "bert_mlm.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(docs_file),
        "--output_dir",
        str(out),
        "--max_seq_length",
        "64",
        "--validation_split_percentage",
        "10",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "2e-3",
        "--max_train_steps",
        "40",
        "--logging_steps",
        "10",
        "--mixed_precision",
        "no",
        env=ONE_THREAD,
    )
    return out


def test_adaptation_lowers_the_held_out_masked_lm_loss(mlm_run):
    status = json.loads((mlm_run / "status.json").read_text())
    assert status["state"] == "finished" and status["task"] == "mlm"
    evals = [e for e in read_events(mlm_run) if e["kind"] == "eval"]
    before, after = evals[0], evals[-1]
    assert before["step"] == 0 and after["step"] == 40
    # Same validation masks before and after (fixed seed): measured 10.3 -> ~7.7 nats on this corpus.
    assert after["eval/loss"] < before["eval/loss"] - 1.5, (before, after)
    assert after["eval/perplexity"] < before["eval/perplexity"] / 4
    report = json.loads((mlm_run / "eval_results.json").read_text())
    assert report["eval/loss_before"] == pytest.approx(before["eval/loss"])
    assert "pipeline_tag: fill-mask" in (mlm_run / "README.md").read_text()
    assert (mlm_run / "model.safetensors").exists() and (mlm_run / "tokenizer.json").exists()


def test_the_saved_model_scores_what_the_run_reported(mlm_run, tokenizer):
    """Reload the folder and score the same fixed validation masks independently of the run."""
    from transformers import AutoModelForMaskedLM

    from tunelab.data.mlm import load_mlm_texts, mask_once, pad_masked, tokenize_mlm

    config = yaml.safe_load((mlm_run / "config.yaml").read_text())
    texts = load_mlm_texts(config["train_file"], None, None, None, config["validation_split_percentage"])
    examples = mask_once(
        tokenize_mlm(texts.validation, tokenizer, 64, False, False, "v"), tokenizer, 0.15, False
    )
    batch = pad_masked(examples, tokenizer.pad_token_id)
    model = AutoModelForMaskedLM.from_pretrained(mlm_run).eval()
    with torch.no_grad():
        loss = model(**batch).loss.item()  # the model's own loss: a mean over every masked token
    report = json.loads((mlm_run / "eval_results.json").read_text())
    assert loss == pytest.approx(report["eval/loss"], abs=1e-3)


def test_bert_cls_fine_tunes_the_adapted_encoder(mlm_run, sentiment_csv, tmp_path):
    from transformers import AutoModelForMaskedLM

    from tunelab.models import load_classifier

    # The classifier keeps every encoder weight of the MLM run; only its head is new.
    classifier = load_classifier(str(mlm_run), ["neg", "pos"])
    adapted = AutoModelForMaskedLM.from_pretrained(mlm_run).bert.state_dict()
    encoder = classifier.bert.state_dict()
    assert all(torch.equal(adapted[k], encoder[k]) for k in adapted)

    out = tmp_path / "cls"
    run_recipe(
        "bert_cls.py",
        "--model_name_or_path",
        str(mlm_run),
        "--train_file",
        str(sentiment_csv),
        "--output_dir",
        str(out),
        "--max_train_steps",
        "8",
        "--max_length",
        "32",
        "--mixed_precision",
        "no",
        env=ONE_THREAD,
    )
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and "eval/accuracy" in status["metrics"]


def test_blocks_are_full_and_line_by_line_keeps_one_example_per_line(tokenizer):
    import datasets

    from tunelab.data.mlm import tokenize_mlm

    lines = [f"line number {i} says something about python classes and functions" for i in range(40)]
    texts = datasets.Dataset.from_dict({"text": lines})
    blocks = tokenize_mlm(texts, tokenizer, 32, line_by_line=False, whole_word_mask=False, where="t")
    per_line = tokenize_mlm(texts, tokenizer, 8, line_by_line=True, whole_word_mask=False, where="t")
    total = sum(len(tokenizer(t)["input_ids"]) for t in lines)
    assert len(blocks) == total // 32 and all(len(b) == 32 for b in blocks["input_ids"])
    assert len(per_line) == 40 and all(len(x) == 8 for x in per_line["input_ids"])  # truncated


def test_whole_word_masking_masks_every_piece_of_a_word_together(tokenizer):
    import datasets

    from tunelab.data.mlm import MaskingCollator, tokenize_mlm

    texts = datasets.Dataset.from_dict(
        {"text": ["unbelievably tokenization internationalization", "hyperparameterization is short"]}
    )
    examples = tokenize_mlm(texts, tokenizer, 32, line_by_line=True, whole_word_mask=True, where="t")
    batch = MaskingCollator(tokenizer, 0.5, whole_word_mask=True, seed=3)(list(examples))
    assert batch["input_ids"].shape == batch["labels"].shape  # ragged lines padded, offsets included
    for ids, labels in zip(examples["input_ids"], batch["labels"], strict=True):
        pieces = tokenizer.convert_ids_to_tokens(ids)
        masked = (labels[: len(ids)] != -100).tolist()
        assert any(masked)
        for i in range(1, len(ids)):
            if pieces[i].startswith("##"):
                assert masked[i] == masked[i - 1], (pieces, masked)


def test_validation_masks_do_not_depend_on_the_global_random_state(tokenizer):
    import datasets

    from tunelab.data.mlm import mask_once, tokenize_mlm

    texts = datasets.Dataset.from_dict(
        {"text": [f"sentence {i} about lists and dictionaries" for i in range(20)]}
    )
    examples = tokenize_mlm(texts, tokenizer, 16, line_by_line=True, whole_word_mask=False, where="t")
    torch.manual_seed(1)
    first = mask_once(examples, tokenizer, 0.15, False)
    torch.manual_seed(2)
    second = mask_once(examples, tokenizer, 0.15, False)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_bad_input_fails_with_a_clear_message(tmp_path):
    from tunelab.args import parse_args
    from tunelab.data.mlm import load_mlm_texts
    from tunelab.errors import ConfigError, DataError
    from tunelab.mlm import MaskedLMArguments, load_masked_lm

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        load_mlm_texts(str(empty), None, None, None, 5)
    few = tmp_path / "few.txt"
    few.write_text("one line\ntwo lines\n")
    with pytest.raises(DataError, match="too few"):
        load_mlm_texts(str(few), None, None, None, 5)
    with pytest.raises(ConfigError, match="mlm_probability"):
        parse_args((MaskedLMArguments,), ["--train_file", "x.txt", "--mlm_probability", "1.5"])
    with pytest.raises(ConfigError, match="longer than the model's 512 positions"):
        load_masked_lm("embedded:all-MiniLM-L6-v2", 1024)


def test_cli_train_mlm_dry_run_resolves_the_recipe_arguments(tmp_path, capsys):
    from tunelab.cli import main

    code = main(["train", "mlm", "--train_file", "notes.txt", "--whole_word_mask", "true", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "whole_word_mask: true" in out and "mlm_probability: 0.15" in out
    assert "train_file: notes.txt" in out and "recipes/bert_mlm.py --config " in out


def test_app_queues_adaptation_then_classification_from_its_folder(tmp_path, sentiment_csv):
    from app.queue import RunQueue
    from app.state import AppState
    from app.train_tab import base_run_choices, submit

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(sentiment_csv, data_dir / "reviews.csv")
    queue = RunQueue(tmp_path / "runs", max_concurrent=2, cwd=ROOT)
    queue.start = lambda: None  # schedule by hand: no training process in this test
    state = AppState(tmp_path / "runs", data_dir, queue)

    message, cls_id = submit(
        state, {"task": "classification", "dataset": "reviews.csv", "domain_adaptation": True}
    )
    cls_run = state.run(cls_id)
    (mlm_run,) = [r for r in state.runs() if r.id != cls_id]
    assert mlm_run.status()["task"] == "mlm" and mlm_run.config()["text_column"] == "text"
    assert cls_run.config()["model_name_or_path"] == str(mlm_run.path)
    assert cls_run.status()["after"] == mlm_run.id and mlm_run.id in message

    # While the adaptation has not finished, the classification run waits even with a free slot ...
    mlm_run.update_status(state="running")
    assert not queue.dependency_ready(cls_run) and cls_run.state == "queued"
    # ... and when it fails, the classification run fails at once, naming it.
    mlm_run.update_status(state="failed", reason="crashed: boom")
    queue.tick()
    assert cls_run.state == "failed" and mlm_run.id in cls_run.status()["reason"]

    # A finished adaptation is offered as the base of a classification run.
    (mlm_run.path / "config.json").write_text("{}")
    (mlm_run.path / "model.safetensors").write_bytes(b"")
    mlm_run.update_status(state="finished")
    assert mlm_run.id in base_run_choices(state, "classification")
