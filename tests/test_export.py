"""`tunelab export`: int8 ONNX Runtime export of real tiny runs, pruning with a recovery fine-tune, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_recipe

from tunelab.errors import ConfigError
from tunelab.export import ExportOptions, export_run, parse_prune, prune_model
from tunelab.infer import Classifier, Generator

BIN = Path(sys.executable).with_name("tunelab")
FAST = {"latency_examples": 4, "repeats": 1}  # the report's timings: enough to run, not to compare


def tunelab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_bert) -> Path:
    """A tiny BERT fine-tuned on the toy sentiment set by the real recipe (a few seconds of training)."""
    import csv

    from conftest import sentiment_rows

    work = tmp_path_factory.mktemp("export-cls")
    data = work / "reviews.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(200))
    out = work / "run"
    run_recipe(
        "bert_cls.py",
        *("--model_name_or_path", str(tiny_bert), "--train_file", str(data), "--output_dir", str(out)),
        *("--max_train_steps", "30", "--per_device_train_batch_size", "16", "--learning_rate", "2e-3"),
        *("--max_length", "32", "--logging_steps", "10", "--seed", "1"),
    )
    return out


def test_int8_export_is_smaller_loads_everywhere_and_agrees_with_fp32(cls_run, tmp_path):
    out = tmp_path / "int8"
    report = export_run(cls_run, out, ExportOptions(**FAST))

    assert json.loads((out / "export.json").read_text())["quantize"] == "int8"
    assert report["before"]["accuracy"] > 0.75  # the run learned the toy task: the comparison means something
    assert report["after"]["accuracy"] >= report["before"]["accuracy"] - 0.05
    assert report["prediction_agreement"] >= 0.9
    assert report["after"]["size_mb"] * 2 < report["before"]["size_mb"]
    assert set(report["after"]["latency_ms"]) == {"batch_1", "batch_32"}
    assert "| size on disk |" in (out / "report.md").read_text()

    texts = ["the film is wonderful and superb", "the plot is awful and boring"]
    fp32, int8 = Classifier.load(cls_run), Classifier.load(out)
    assert int8.labels == fp32.labels
    for a, b in zip(fp32.predict(texts), int8.predict(texts), strict=True):
        assert max(a, key=a.get) == max(b, key=b.get)
        assert a == pytest.approx(b, abs=0.1)

    proc = tunelab("classify", out, *texts, "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    labels = [json.loads(line)["label"] for line in proc.stdout.splitlines()]
    assert labels == [max(p, key=p.get) for p in fp32.predict(texts)]


def test_structured_pruning_drops_layers_and_ffn_width_and_recovers_with_the_recipe(cls_run, tmp_path):
    out = tmp_path / "pruned"
    report = export_run(
        cls_run, out, ExportOptions(prune=parse_prune("layers=1,ffn=0.5"), recovery_steps=10, **FAST)
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (1, 64)
    prune = report["prune"]
    assert prune["parameters_after"] < prune["parameters_before"]
    recovery = Path(prune["recovery_run"])
    assert json.loads((recovery / "status.json").read_text())["state"] == "finished"
    assert "bert_cls" in (recovery / "command.txt").read_text()  # the recipe itself, not a copy of its loop
    predictions = Classifier.load(out).predict(["the music is charming", "the cast is dull"])
    assert all(sum(p.values()) == pytest.approx(1.0, abs=1e-4) for p in predictions)


def test_magnitude_pruning_zeroes_weights_but_keeps_the_shapes(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    done = prune_model(model, parse_prune("magnitude=0.5"))
    encoder_weights = sum(m.weight.numel() for m in model.bert.encoder.modules() if hasattr(m, "in_features"))
    assert done["weights_zeroed"] == pytest.approx(encoder_weights / 2, rel=0.01)
    assert {n: p.shape for n, p in model.named_parameters()} == shapes  # no smaller matrices: no time saved
    assert "saves no time" in done["note"]


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("export-clm")
    data = work / "chat.txt"
    data.write_text("User: hello there\nAssistant: hello, how are you?\n" * 120)
    out = work / "run"
    run_recipe(
        "gpt2_clm.py",
        *("--train_file", str(data), "--output_dir", str(out), "--max_train_steps", "15"),
        *("--block_size", "32", "--per_device_train_batch_size", "8", "--tokenizer_vocab_size", "300"),
        *("--config_overrides", "n_layer=2,n_embd=64,n_head=2", "--learning_rate", "3e-3"),
        *("--max_eval_samples", "4", "--validation_split_percentage", "10"),
    )
    return out


def test_gpt2_int8_export_generates_and_reports_validation_loss(clm_run, tmp_path):
    out = tmp_path / "clm-int8"
    report = export_run(clm_run, out, ExportOptions(max_eval_samples=4, **FAST))
    assert report["metric"] == "loss"
    assert abs(report["after"]["loss"] - report["before"]["loss"]) < 0.1
    generator = Generator.load(out)
    text = generator.generate("User: hello", max_new_tokens=8, temperature=0)
    assert isinstance(text, str) and text
    assert "".join(generator.stream("User: hello", max_new_tokens=8, temperature=0)) == text


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="--quantize 'int4' is not supported"):
        ExportOptions(quantize="int4")
    with pytest.raises(ConfigError, match="keys layers, ffn, magnitude"):
        parse_prune("heads=2")
    with pytest.raises(ConfigError, match="in \\(0, 1\\)"):
        parse_prune("ffn=1.5")
    with pytest.raises(ConfigError, match="not a run folder"):
        export_run(tmp_path)

    one_line_error(tunelab("export", tmp_path / "nowhere"), "is not a run folder or a run id")
    # Options are checked before the run is looked up or a model loads.
    one_line_error(tunelab("export", tmp_path, "--quantize", "int4"), "--quantize 'int4' is not supported")
    one_line_error(tunelab("export", tmp_path, "--prune", "layers=0"), "keep at least 1 layer")
    assert not os.listdir(tmp_path)
