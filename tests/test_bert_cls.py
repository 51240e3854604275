"""The classification recipe end to end, through real ``accelerate launch`` runs on tiny real models."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import kill_when, launch, run_recipe, start

from tunelab.runs import Run

COMMON = [
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "1e-3",
    "--logging_steps",
    "1",
    "--seed",
    "7",
]


def train_losses(run_dir: Path) -> dict[int, float]:
    """train/loss per step; a resumed run logs some steps twice, the later line is the one that counts."""
    return {e["step"]: e["train/loss"] for e in Run(run_dir).events("train")}


def test_tiny_run_learns_and_saves_a_loadable_model(tmp_path, tiny_bert, sentiment_csv):
    out = tmp_path / "run"
    run_recipe(
        "bert_cls.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--num_train_epochs",
        "3",
        "--eval_steps",
        "20",
        "--output_dir",
        str(out),
        *COMMON,
    )
    run = Run(out)
    assert run.status()["state"] == "finished"
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval/accuracy"] >= 0.9, metrics  # the phrases are separable: a learning model gets them
    assert metrics["labels"] == ["neg", "pos"]
    assert len(metrics["confusion_matrix"]) == 2
    losses = list(train_losses(out).values())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5

    from transformers import pipeline

    classify = pipeline("text-classification", model=str(out))
    assert classify("the acting is wonderful and brilliant")[0]["label"] == "pos"
    assert classify("the plot is awful and tedious")[0]["label"] == "neg"
    card = (out / "README.md").read_text()
    assert "accelerate launch" in card and "| accuracy |" in card  # the command, and the results table
    assert "bert_cls.py" in run.command()


def test_two_process_ddp_run_on_cpu(tmp_path, tiny_bert, sentiment_csv):
    out = tmp_path / "ddp"
    proc = launch(
        "bert_cls.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--num_train_epochs",
        "4",
        "--output_dir",
        str(out),
        "--checkpointing_steps",
        "5",
        *COMMON,
        processes=2,
    )
    assert "processes = 2" in (out / "train.log").read_text(), proc.stderr[-2000:]
    state = json.loads(next((out / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["world_size"] == 2
    # 144 training rows / (8 per device * 2 devices) = 9 optimizer steps per epoch.
    assert max(train_losses(out)) == 36
    assert json.loads((out / "eval_results.json").read_text())["eval/accuracy"] >= 0.9
    assert "--multi_gpu --num_processes 2" in Run(out).command()


def test_a_test_file_is_scored_by_the_final_model_and_every_prediction_written(
    tmp_path, tiny_bert, sentiment_csv
):
    """Two processes (DDP shares the test batches out and pads the last one): test/accuracy in
    eval_results.json is what test_predictions.csv says, row for row in the file's order, and each row's
    probabilities are the saved model's own for that row's text."""
    import csv

    import torch
    from conftest import sentiment_rows
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # 41 rows (DDP pads the last batch), lengths varied so that shortest-first batching reorders them
    test_rows = [(text + " really" * (i % 4), label) for i, (text, label) in enumerate(sentiment_rows(41, 5))]
    test_file = tmp_path / "test.csv"
    with test_file.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *test_rows])
    out = tmp_path / "run"
    launch(
        "bert_cls.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--test_file",
        str(test_file),
        "--num_train_epochs",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--mixed_precision",
        "no",
        "--output_dir",
        str(out),
        *COMMON,
        processes=2,
    )
    results = json.loads((out / "eval_results.json").read_text())
    with (out / "test_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["text"], r["gold"]) for r in rows] == test_rows
    right = sum(r["gold"] == r["predicted"] for r in rows)
    assert results["test/accuracy"] == pytest.approx(right / len(rows))
    assert sum(map(sum, results["test/confusion_matrix"])) == 41
    assert set(results["test/per_class"]) == {"neg", "pos"}
    assert results["test/accuracy"] >= 0.8, results  # the phrases are separable: the final model gets them
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        for row in rows:
            probs = model(**tokenizer(row["text"], return_tensors="pt")).logits.softmax(-1)[0]
            assert float(row["prob_pos"]) == pytest.approx(
                probs[model.config.label2id["pos"]].item(), abs=1e-4
            )
            assert row["predicted"] == model.config.id2label[int(probs.argmax())]
    assert Run(out).status()["metrics"]["test/accuracy"] == results["test/accuracy"]
    card = (out / "README.md").read_text()
    assert "| metric | validation | test |" in card and "validation and test splits" in card


def test_balanced_class_weights_raise_the_rare_labels_recall(tmp_path, tiny_bert):
    """96/4 training rows: the unweighted model mostly predicts the common label; class_weights balanced
    (the rare label's loss weighed 24x the common one's, from the training split's counts) finds the rare one much more often, on a test
    file with both in equal numbers."""
    import csv

    from conftest import sentiment_rows

    rows = sentiment_rows(1200, seed=1)
    train = [r for r in rows if r[1] == "neg"][:576] + [r for r in rows if r[1] == "pos"][:24]
    files = {"train.csv": train, "test.csv": sentiment_rows(40, seed=2)}
    for name, content in files.items():
        with (tmp_path / name).open("w", newline="") as f:
            csv.writer(f).writerows([("text", "label"), *content])
    recall = {}
    for weights in ("none", "balanced"):
        out = tmp_path / weights
        proc = run_recipe(
            "bert_cls.py",
            "--model_name_or_path",
            str(tiny_bert),
            "--train_file",
            str(tmp_path / "train.csv"),
            "--test_file",
            str(tmp_path / "test.csv"),
            "--class_weights",
            weights,
            "--num_train_epochs",
            "3",
            "--per_device_train_batch_size",
            "16",
            "--learning_rate",
            "1e-3",
            "--mixed_precision",
            "no",
            "--seed",
            "7",
            "--output_dir",
            str(out),
        )
        recall[weights] = json.loads((out / "eval_results.json").read_text())["test/per_class"]["pos"][
            "recall"
        ]
        if weights == "none":  # the recipe says what to try
            assert "the rarest label, 'pos', is 4.0% of the rows (24 of 600)" in proc.stderr
    assert recall["balanced"] >= recall["none"] + 0.3, recall
    # 540 training rows after the stratified 10% hold-out: 518 neg, 22 pos -> 540 / (2 * count)
    assert "Class weights: neg 0.521, pos 12.3" in (tmp_path / "balanced" / "train.log").read_text()


def regression_rows(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """Texts with a learnable numeric target: 1.5 for each 'great' among filler words, plus 0.5."""
    import random

    rng = random.Random(seed)
    filler = ["the", "film", "story", "was", "and", "plot", "cast", "music", "ending", "really"]
    rows = []
    for _ in range(n):
        k = rng.randint(0, 4)
        words = ["great"] * k + [rng.choice(filler) for _ in range(8 - k)]
        rng.shuffle(words)
        rows.append((" ".join(words), 1.5 * k + 0.5))
    return rows


def test_a_numeric_target_trains_a_regression_model(tmp_path, tiny_bert):
    """A label column of numbers like 3.5 is detected as a regression target: one output, MSE, and
    Pearson > 0.8 on a test file; the saved folder is a transformers regression model."""
    import csv

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for name, rows in (("train.csv", regression_rows(400)), ("test.csv", regression_rows(60, seed=1))):
        with (tmp_path / name).open("w", newline="") as f:
            csv.writer(f).writerows([("text", "score"), *rows])
    out = tmp_path / "run"
    run_recipe(
        "bert_cls.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(tmp_path / "train.csv"),
        "--test_file",
        str(tmp_path / "test.csv"),
        "--num_train_epochs",
        "6",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "2e-3",
        "--mixed_precision",
        "no",
        "--seed",
        "7",
        "--output_dir",
        str(out),
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert results["problem_type"] == "regression" and results["labels"] == ["score"]
    assert results["test/pearson"] > 0.8, results
    assert results["test/rmse"] == pytest.approx(results["test/loss"] ** 0.5, rel=1e-4)
    with (out / "test_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    errors = [float(r["predicted"]) - float(r["gold"]) for r in rows]
    assert results["test/mae"] == pytest.approx(sum(map(abs, errors)) / len(errors), abs=1e-4)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    with torch.no_grad():
        first = model(**AutoTokenizer.from_pretrained(out)(rows[0]["text"], return_tensors="pt")).logits
    assert first.item() == pytest.approx(float(rows[0]["predicted"]), abs=1e-4)
    from transformers import pipeline

    assert pipeline("text-classification", model=str(out))(rows[0]["text"])[0]["score"] == pytest.approx(
        first.item()
    )
    # tunelab classify writes the number; tunelab export refuses the model with the reason
    predictions = tmp_path / "predictions.csv"
    subprocess.run(
        [
            "tunelab",
            "classify",
            str(out),
            "--file",
            str(tmp_path / "test.csv"),
            "--output",
            str(predictions),
            "-q",
        ],
        check=True,
        timeout=120,
    )
    with predictions.open() as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["text", "score", "prediction"]
    for mine, theirs in zip(written, rows, strict=True):
        assert float(mine["prediction"]) == pytest.approx(float(theirs["predicted"]), abs=1e-4)
    from app.classify_tab import confusion_table, wrong_examples  # the app's validation report

    worst = wrong_examples(out, out)
    assert list(worst.columns) == ["text", "true", "predicted", "error"] and len(worst) == 20
    assert worst["error"].is_monotonic_decreasing and confusion_table(out, "test") is None
    export = subprocess.run(["tunelab", "export", str(out)], capture_output=True, text=True, timeout=120)
    assert export.returncode != 0 and "this run is a regression model" in export.stderr


def multi_label_rows(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Texts with two label families: a topic (4) and a tone (3), each told by its own words."""
    import random

    rng = random.Random(seed)
    topics = {
        "sports": ["match", "goal", "team", "coach"],
        "politics": ["vote", "senate", "minister", "law"],
        "tech": ["software", "chip", "laptop", "code"],
        "food": ["recipe", "pasta", "bread", "soup"],
    }
    tones = {
        "happy": ["wonderful", "delightful", "great"],
        "angry": ["outrageous", "infuriating", "furious"],
        "sad": ["tragic", "gloomy", "heartbreaking"],
    }
    filler = ["the", "a", "today", "news", "about", "really", "this", "was"]
    rows = []
    for _ in range(n):
        topic, tone = rng.choice(sorted(topics)), rng.choice(sorted(tones))
        words = [rng.choice(topics[topic]), rng.choice(topics[topic]), rng.choice(tones[tone])]
        words += rng.sample(filler, 4)
        rng.shuffle(words)
        rows.append((" ".join(words), [topic, tone]))
    return rows


def test_several_labels_per_text_train_a_multi_label_model(tmp_path, tiny_bert):
    """';'-separated label cells are detected as multi_label: a sigmoid per label, micro-F1 on a test
    file far above the most frequent label set's, thresholds tuned on validation saved in config.json
    and used by TuneLab's inference; the folder works with pipeline(..., top_k=None)."""
    import csv
    from collections import Counter

    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer
    from transformers import pipeline

    from tunelab.infer import Classifier

    train_rows, test_rows = multi_label_rows(480), multi_label_rows(80, seed=1)
    for name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        with (tmp_path / name).open("w", newline="") as f:
            csv.writer(f).writerows([("text", "labels"), *((t, ";".join(labels)) for t, labels in rows)])
    out = tmp_path / "run"
    run_recipe(
        "bert_cls.py",
        *("--model_name_or_path", str(tiny_bert), "--train_file", str(tmp_path / "train.csv")),
        *("--test_file", str(tmp_path / "test.csv"), "--num_train_epochs", "8"),
        *("--per_device_train_batch_size", "16", "--learning_rate", "2e-3", "--mixed_precision", "no"),
        *("--seed", "7", "--tune_thresholds", "true", "--output_dir", str(out)),
    )
    results = json.loads((out / "eval_results.json").read_text())
    labels = ["angry", "food", "happy", "politics", "sad", "sports", "tech"]
    assert results["problem_type"] == "multi_label" and results["labels"] == labels
    binarize = MultiLabelBinarizer(classes=labels).fit_transform
    gold = binarize([row[1] for row in test_rows])
    # the baseline: every test text gets the training set's most frequent label set
    common = Counter(tuple(sorted(row[1])) for row in train_rows).most_common(1)[0][0]
    baseline = f1_score(gold, binarize([common] * len(test_rows)), average="micro")
    assert results["test/f1_micro"] >= baseline + 0.35, (results, baseline)
    assert set(results["test/per_class"]["sports"]) >= {"precision", "recall", "f1", "support", "threshold"}
    with (out / "test_predictions.csv").open() as f:
        written = list(csv.DictReader(f))
    assert [r["gold"] for r in written] == [";".join(row[1]) for row in test_rows]
    predicted = binarize([r["predicted"].split(";") if r["predicted"] else [] for r in written])
    assert results["test/f1_micro"] == pytest.approx(f1_score(gold, predicted, average="micro"))
    assert results["test/subset_accuracy"] == pytest.approx((predicted == gold).all(1).mean())
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["thresholds"] == results["thresholds"] != dict.fromkeys(labels, 0.5)  # tuned
    classifier = Classifier.load(out)
    assert classifier.thresholds == results["thresholds"]
    probabilities = classifier.predict([r["text"] for r in written])
    for row, probs in zip(written, probabilities, strict=True):
        assert ";".join(sorted(classifier.chosen(probs))) == ";".join(sorted(row["predicted"].split(";")))
    scores = pipeline("text-classification", model=str(out), top_k=None)([written[0]["text"]])[0]
    assert {s["label"]: s["score"] for s in scores} == pytest.approx(probabilities[0], abs=1e-5)
    # tunelab classify lists every label at or above its threshold; tunelab export refuses the model
    answer = subprocess.run(
        ["tunelab", "-q", "classify", str(out), written[0]["text"], "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(answer.stdout)["labels"] == classifier.chosen(probabilities[0])
    export = subprocess.run(["tunelab", "export", str(out)], capture_output=True, text=True, timeout=120)
    assert export.returncode != 0 and "this run is a multi-label classifier" in export.stderr
    # the app: every label at or above its threshold, a per-label report, wrong label sets
    from app.classify_tab import confusion_table, decision, wrong_examples

    shown = decision(classifier, probabilities[0])
    chosen = classifier.chosen(probabilities[0])
    assert shown.startswith("Labels: ") and all(f"**{k}**" in shown for k in chosen)
    assert shown.count("**") == 2 * len(chosen)
    per_label = confusion_table(out, "test")
    assert list(per_label["label"]) == labels and per_label["f1"].tolist() == pytest.approx(
        [results["test/per_class"][k]["f1"] for k in labels], abs=1e-4
    )
    worst = wrong_examples(out, out)
    assert list(worst.columns) == ["text", "true", "predicted", "confidence"]
    assert worst["confidence"].is_monotonic_decreasing and (worst["true"] != worst["predicted"]).all()


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_bert, sentiment_csv):
    args = [
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--num_train_epochs",
        "3",
        "--checkpointing_steps",
        "4",
        "--eval_steps",
        "12",
        "--save_total_limit",
        "3",
        *COMMON,
    ]
    reference = tmp_path / "reference"
    launch("bert_cls.py", *args, "--output_dir", str(reference))

    killed = tmp_path / "killed"
    proc = start("bert_cls.py", *args, "--output_dir", str(killed))
    kill_when(proc, lambda: (killed / "checkpoints" / "step-8").exists())
    proc.wait()
    assert Run(killed).status()["state"] == "running"  # a SIGKILL leaves no chance to write anything
    assert not (killed / "eval_results.json").exists()

    launch("bert_cls.py", *args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest")
    assert "Resumed from" in (killed / "train.log").read_text()
    ref_losses, resumed_losses = train_losses(reference), train_losses(killed)
    assert resumed_losses.keys() == ref_losses.keys()
    for step, loss in ref_losses.items():
        assert resumed_losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), step
    ref_final = json.loads((reference / "eval_results.json").read_text())
    resumed_final = json.loads((killed / "eval_results.json").read_text())
    for key in ("eval/loss", "eval/accuracy", "eval/f1"):
        assert resumed_final[key] == pytest.approx(ref_final[key], rel=1e-4, abs=1e-5)
    assert Run(killed).status()["state"] == "finished"


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, tiny_bert, sentiment_csv):
    out = tmp_path / "stopped"
    proc = start(
        "bert_cls.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--num_train_epochs",
        "50",
        "--output_dir",
        str(out),
        *COMMON,
        stderr=subprocess.PIPE,
    )
    kill_when(proc, lambda: Run(out).events("train"), signal.SIGTERM, timeout=120)
    _, stderr = proc.communicate(timeout=120)
    status = Run(out).status()
    assert status["state"] == "stopped", stderr[-3000:]
    assert Run(out).checkpoints(), "SIGTERM must leave a checkpoint to resume from"
    assert b"Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.shared_data
def test_lora_with_its_defaults_learns_sst2_and_the_merged_model_loads_without_peft(tmp_path, sst2_dir):
    """`--use_peft true` and nothing else: LoRA's own learning rate and a fully trained head. On 2,000
    SST-2 sentences, 2 epochs, validation accuracy is far above the majority class's; the saved model is
    merged (plain transformers, no adapter files) and predicts."""
    import csv

    from transformers import pipeline

    from tunelab.args import LORA_LEARNING_RATE

    out = tmp_path / "lora"
    run_recipe(
        "bert_cls.py",
        *("--train_file", str(sst2_dir / "train.tsv"), "--validation_file", str(sst2_dir / "validation.tsv")),
        *("--max_train_samples", "2000", "--num_train_epochs", "2", "--use_peft", "true"),
        *("--seed", "42", "--output_dir", str(out)),
    )
    results = json.loads((out / "eval_results.json").read_text())
    with (sst2_dir / "validation.tsv").open() as f:
        labels = [row["label"] for row in csv.DictReader(f, delimiter="\t")]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)  # 0.509
    assert results["eval/accuracy"] >= majority + 0.2, (results["eval/accuracy"], majority)
    assert Run(out).config()["learning_rate"] == LORA_LEARNING_RATE
    assert not (out / "adapter_config.json").exists()  # merged: a plain transformers model
    classify = pipeline("text-classification", model=str(out))
    assert classify("a moving, beautifully acted film")[0]["label"] == "1"
    assert classify("a dull, tedious mess")[0]["label"] == "0"
