"""Knowledge distillation: a tiny fine-tuned teacher distilled into a student with half its layers through
a real ``accelerate launch recipes/distill_cls.py``; label-set checks; the layer-dropped initialisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, run_recipe, sentiment_rows

from tunelab.runs import Run

LABELS = ["neg", "pos"]
ONE_THREAD = {"TUNELAB_NUM_THREADS": "1"}  # tiny models: one thread is as fast, and robust on a shared CPU


def fine_tune(base: Path, out: Path, rows: list[tuple[str, str]], labels: list[str], steps: int = 60) -> Path:
    """A small classifier fine-tuned in-process (a few seconds), saved as a model folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model gains nothing from more, and loses much on a busy machine
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        chunk = [rows[(step * 8 + i) % len(rows)] for i in range(8)]
        batch = tokenizer([t for t, _ in chunk], padding=True, return_tensors="pt")
        batch["labels"] = torch.tensor([labels.index(y) for _, y in chunk])
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert) -> Path:
    """The 2-layer tiny BERT fine-tuned on the sentiment phrases; it must be good for the test to mean much."""
    out = fine_tune(tiny_bert, tmp_path_factory.mktemp("teacher"), sentiment_rows(160), LABELS)
    held_out = sentiment_rows(64, seed=99)
    assert accuracy(out, held_out) >= 0.9
    return out


def logits_of(model_dir: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def accuracy(model_dir: Path, rows: list[tuple[str, str]]) -> float:
    predicted = logits_of(model_dir, [t for t, _ in rows]).argmax(-1).tolist()
    return sum(LABELS[p] == y for p, (_, y) in zip(predicted, rows, strict=True)) / len(rows)


def layer_weights(model_dir: Path, layer: int) -> torch.Tensor:
    from safetensors.torch import load_file

    weights = load_file(model_dir / "model.safetensors")
    prefix = f"bert.encoder.layer.{layer}."
    return torch.cat([v.flatten() for k, v in sorted(weights.items()) if k.startswith(prefix)])


def test_distilled_student_has_half_the_layers_starts_from_the_teacher_and_learns(
    tmp_path, teacher, sentiment_csv
):
    unlabeled = tmp_path / "unlabeled.txt"
    extra = [f"honestly, {text}" for text, _ in sentiment_rows(80, seed=5)]  # none is a training text
    unlabeled.write_text("\n".join(extra) + "\n")
    out = tmp_path / "run"
    run_recipe(
        "distill_cls.py",
        "--teacher_name_or_path",
        str(teacher),
        "--train_file",
        str(sentiment_csv),
        "--unlabeled_file",
        str(unlabeled),
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "3e-4",
        "--num_train_epochs",
        "3",
        "--logging_steps",
        "1",
        "--latency_samples",
        "16",
        "--seed",
        "7",
        "--sparse_embeddings",  # the student's word embeddings: row by row, as in bert_cls.py
        "true",
        # fp32 everywhere: the cached logits are compared with an fp32 forward below (with bf16, which
        # `auto` picks on a CPU with AMX, they differ by ~1e-2, as any bf16 forward does)
        "--mixed_precision",
        "no",
        "--output_dir",
        str(out),
        env=ONE_THREAD,
    )
    assert Run(out).status()["state"] == "finished"
    assert "Word embeddings: sparse gradients" in (out / "train.log").read_text()
    report = json.loads((out / "eval_results.json").read_text())
    # Half the layers, and the config says so (the saved student loads with plain transformers).
    assert report["teacher"]["layers"] == 2 and report["student"]["layers"] == 1
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    # Initialised from the teacher's layer 0 (kept), not layer 1 (dropped): training moved it only a little.
    student_layer = layer_weights(out, 0)
    to_kept = (student_layer - layer_weights(teacher, 0)).norm()
    to_dropped = (student_layer - layer_weights(teacher, 1)).norm()
    assert to_kept < 0.5 * to_dropped, (to_kept, to_dropped)
    # It learns: far above chance on held-out phrases, as the teacher.
    held_out = sentiment_rows(64, seed=99)
    assert accuracy(out, held_out) >= 0.9
    assert report["eval/accuracy"] >= 0.9 and report["teacher"]["eval/accuracy"] >= 0.9
    # The teacher ran once per example (labeled 144 + unlabeled 80), not once per epoch: training read its
    # cached logits, which are the teacher's own.
    kd = report["distillation"]
    assert kd["labeled_examples"] == 144 and kd["unlabeled_examples"] == 80
    assert kd["teacher_examples_forwarded"] == 144 + 80
    assert Run(out).status()["metrics"]["eval/accuracy"] == report["eval/accuracy"]
    assert report["global_step"] == 3 * 14  # 3 epochs of 224 examples in batches of 16 were trained on
    cached = torch.load(out / "teacher_logits.pt", weights_only=True)["logits"]
    assert cached.shape == (224, 2)
    texts = [t for t, _ in sentiment_rows(160)] + extra
    expected = logits_of(teacher, texts)
    nearest = torch.cdist(cached, expected).min(dim=1).values
    assert nearest.max() < 1e-3  # every cached row is the teacher's logits of one of the texts
    # The report: latency at batch 1 and 32 for both, and the card's comparison table.
    for side in ("teacher", "student"):
        assert report[side]["latency_ms_batch_1"] > 0 and report[side]["latency_ms_batch_32"] > 0
        assert report[side]["size_mb"] > 0
    assert report["ratios"]["parameters"] > 1
    card = (out / "README.md").read_text()
    assert "teacher vs student" in card and "CPU latency, batch 32" in card


def test_student_with_another_label_set_is_refused(tmp_path, teacher, tiny_bert, sentiment_csv):
    three = ["bad", "good", "meh"]
    rows = [(t, "good" if y == "pos" else "bad") for t, y in sentiment_rows(16)]
    student = fine_tune(tiny_bert, tmp_path / "student", rows, three, steps=1)
    out = tmp_path / "run"
    proc = run_recipe(
        "distill_cls.py",
        "--teacher_name_or_path",
        str(teacher),
        "--student_name_or_path",
        str(student),
        "--train_file",
        str(sentiment_csv),
        "--output_dir",
        str(out),
        env=ONE_THREAD,
        check=False,
    )
    assert proc.returncode == 1
    assert "must predict the teacher's label set" in proc.stderr and "'meh'" in proc.stderr
    assert "Traceback" not in proc.stderr
    status = Run(out).status()
    assert status["state"] == "failed" and "label set" in status["reason"]


def test_class_weights_are_refused_with_the_reason(tmp_path, tiny_bert, sentiment_csv):
    """A student learns the teacher's probabilities: class weights belong to the teacher's run."""
    out = tmp_path / "run"
    proc = run_recipe(
        "distill_cls.py",
        "--teacher_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--class_weights",
        "balanced",
        "--output_dir",
        str(out),
        env=ONE_THREAD,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "class_weights applies to bert_cls.py" in proc.stderr
    assert Run(out).status()["state"] == "failed"


def test_a_multi_label_training_file_is_refused_with_the_reason(tmp_path, tiny_bert):
    """The distillation loss compares one distribution over classes; a label set per text has none."""
    out = tmp_path / "run"
    train = FIXTURES / "good" / "ml_topics.jsonl"
    proc = run_recipe(
        "distill_cls.py",
        *("--teacher_name_or_path", str(tiny_bert), "--train_file", str(train), "--output_dir", str(out)),
        env=ONE_THREAD,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "this training file's target is a multi_label one" in proc.stderr


def test_data_labels_follow_the_teacher_and_unknown_labels_are_refused():
    from datasets import ClassLabel, Dataset

    from tunelab.data.classification import ClassificationData, Columns
    from tunelab.distill import align_labels
    from tunelab.errors import DataError

    def split(ids):
        return Dataset.from_dict({"text": ["x"] * len(ids), "label": ids}).cast_column(
            "label", ClassLabel(names=["neg", "pos"])
        )

    data = ClassificationData(
        Columns("text", "label"), ["neg", "pos"], split([0, 1]), split([1]), None, "v", None
    )
    flipped = align_labels(data, ["pos", "neg"], "train.csv")
    assert flipped.labels == ["pos", "neg"]
    assert flipped.train["label"] == [1, 0] and flipped.validation["label"] == [0]
    with pytest.raises(DataError, match="'neg' are not labels of the teacher"):
        align_labels(data, ["pos", "other"], "train.csv")


def test_layer_dropped_student_copies_the_kept_layers():
    from transformers import AutoModelForSequenceClassification, BertConfig

    from tunelab.distill import layer_dropped_student, layers_to_keep

    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(config).eval()
    keep = layers_to_keep(6, None, None)
    assert (
        keep == [0, 2, 4]
        and layers_to_keep(6, None, 2) == [0, 3]
        and layers_to_keep(6, [1, 5], None) == [1, 5]
    )
    student = layer_dropped_student(teacher, keep).eval()
    assert student.config.num_hidden_layers == 3
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in enumerate(keep):
        for key in s:
            if key.startswith(f"bert.encoder.layer.{new}."):
                assert torch.equal(s[key], t[key.replace(f"layer.{new}.", f"layer.{old}.", 1)])
    for key in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(s[key], t[key])
    # Keeping every layer gives the teacher back, output for output.
    ids = torch.randint(0, 100, (2, 7))
    same = layer_dropped_student(teacher, list(range(6))).eval()
    assert torch.allclose(same(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-6)
