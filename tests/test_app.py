"""The real app on a free port, driven with gradio_client: upload, train (real `accelerate launch`
subprocesses), stop/resume, classify, chat, compare, and the file routes' path checks."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, sentiment_rows

from tunelab.launch.process import ProcessRef, kill_run

if str(ROOT) not in sys.path:  # the app is a package at the repo root, not installed
    sys.path.insert(0, str(ROOT))

gradio_client = pytest.importorskip("gradio_client")

RUN_TIMEOUT_S = 300
STEPS_TOGETHER = 150  # tiny steps: long enough that a run still trains while the other one starts up
RUNS_DIR: list[Path] = [Path("runs")]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    from gradio_client import Client

    from app.ui import build_app, launch_options

    base = tmp_path_factory.mktemp("app")
    runs_dir, data_dir = base / "runs", base / "data"
    demo = build_app(runs_dir, data_dir)
    _, url, _ = demo.launch(
        server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_options(runs_dir, data_dir)
    )
    client = Client(url, verbose=False)
    RUNS_DIR[0] = runs_dir
    yield {
        "client": client,
        "url": url.rstrip("/"),
        "runs": runs_dir,
        "data": data_dir,
        "state": demo.tunelab_state,
    }
    state = demo.tunelab_state
    state.queue.shutdown()
    for run in state.runs():  # never leave training processes behind
        kill_run(ProcessRef.from_dict(run.status().get("process")), run.id)
    demo.close()


def wait_for(
    client,
    run_id: str,
    states: tuple[str, ...],
    timeout: float = RUN_TIMEOUT_S,
    seen: list | None = None,
    until=None,
) -> dict:
    deadline = time.time() + timeout
    status: dict = {}
    while time.time() < deadline:
        status = client.predict(run_id, api_name="/run_status")
        if seen is not None and (not seen or seen[-1] != status.get("state")):
            seen.append(status.get("state"))
        if status.get("state") in states and (until is None or until(status)):
            return status
        if status.get("state") == "failed" and "failed" not in states:
            break
        time.sleep(0.5)
    log = ""
    for name in ("train.log", "process.log"):
        path = RUNS_DIR[0] / run_id / name
        if path.exists():
            log += path.read_text()[-3000:]
    raise AssertionError(
        f"run {run_id} did not reach {states}: {json.dumps(status, default=str)[:2000]}\n{log}"
    )


def submit(client, **settings) -> str:
    message, run_id = client.predict(json.dumps(settings), api_name="/submit_run")
    assert run_id and run_id in message
    return run_id


@pytest.fixture(scope="module")
def uploaded(app_server, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("upload") / "my reviews (1).csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(160))
    from gradio_client import handle_file

    result = app_server["client"].predict(handle_file(str(path)), api_name="/upload_dataset")
    dataset = result[0]["value"]
    assert dataset == "my-reviews-1.csv"  # a sanitized name in the app's data folder
    assert "passes the checks" in result[1] and "160 rows" in result[1]
    assert (app_server["data"] / dataset).exists()
    preview = result[3]
    assert preview["headers"] == ["text", "label"] and len(preview["data"]) == 50
    return dataset


def tiny_cls_settings(dataset: str, tiny_bert: Path, **extra) -> dict:
    return {
        "task": "classification",
        "dataset": dataset,
        "base_kind": "local folder",
        "base_path": str(tiny_bert),
        "num_train_epochs": 3,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 16,
        "max_length": 32,
        "max_train_samples": 0,
        "mixed_precision": "no",
        "logging_steps": 2,
        **extra,
    }


def test_file_routes_refuse_paths_outside_the_app_folders(app_server):
    url, data = app_server["url"], app_server["data"]
    probes = [
        "/gradio_api/file=/etc/passwd",
        f"/gradio_api/file={data}/../../../../etc/passwd",
        "/gradio_api/file=../../../../etc/passwd",
        "/gradio_api/file=%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        f"/gradio_api/file={data}/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/gradio_api/file=/proc/self/environ",
        f"/gradio_api/file={ROOT}/pyproject.toml",
    ]
    for probe in probes:
        try:
            with urllib.request.urlopen(url + probe) as response:
                body = response.read().decode(errors="replace")
                raise AssertionError(f"{probe} was served ({response.status}): {body[:80]!r}")
        except urllib.error.HTTPError as e:
            assert e.code in (403, 404), (probe, e.code)
    # the app's own data folder stays readable (the sample datasets)
    with urllib.request.urlopen(f"{url}/gradio_api/file={data}/sample-sentiment.csv") as response:
        assert response.status == 200


def test_bad_upload_gives_a_readable_report_not_a_traceback(app_server, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine movie,pos\nbroken,row,here\n")
    result = app_server["client"].predict(handle_file(str(bad)), api_name="/upload_dataset")
    report, problems = result[1], result[2]
    assert "does not pass the checks" in report and "line 3" in report
    assert "Traceback" not in report and str(tmp_path) not in report  # no folder paths shown
    assert problems["data"][0][:3] == ["bad.csv", "3", ""]
    assert "fields" in problems["data"][0][3]


def test_an_unreadable_upload_is_not_kept_and_odd_names_become_names_the_app_accepts(app_server, tmp_path):
    from gradio_client import handle_file

    client, data = app_server["client"], app_server["data"]
    for name, content in (("empty.csv", b""), ("binary.csv", bytes(range(256)) * 8)):
        path = tmp_path / name
        path.write_bytes(content)
        result = client.predict(handle_file(str(path)), api_name="/upload_dataset")
        assert "cannot be read" in result[1] and "was not kept" in result[1], result[1]
        assert not (data / name).exists() and name not in result[0]["choices"]
    rows = "".join(
        f"review {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(20)
    )
    for name, kept in (("reviews..v2.csv", "reviews.v2.csv"), ("..%2F..%2Fy.csv", "y.csv")):
        folder = tmp_path / name.replace("%", "pct")
        folder.mkdir()
        (folder / name).write_text("text,label\n" + rows)
        result = client.predict(handle_file(str(folder / name)), api_name="/upload_dataset")
        assert result[0]["value"] == kept and "passes the checks" in result[1]
        check = client.predict(json.dumps({"dataset": kept}), api_name="/check_data_json")
        assert check.startswith("✓")  # the saved name is one the app accepts


def test_an_upload_over_the_size_cap_is_refused_and_nothing_is_kept(app_server, tmp_path):
    import httpx
    from gradio.utils import _parse_file_size, get_upload_folder

    from app.ui import MAX_FILE_SIZE

    cap = _parse_file_size(MAX_FILE_SIZE)
    big = tmp_path / "big.csv"
    with big.open("wb") as f:
        f.write(b"text,label\n")
        f.truncate(cap + 1)  # one byte over (sparse: no disk is used)

    def kept() -> list[tuple[str, int]]:
        folders = (app_server["data"], Path(get_upload_folder()))
        return sorted((str(p), p.stat().st_size) for d in folders if d.exists() for p in d.rglob("*"))

    before = kept()
    with big.open("rb") as f:
        reply = httpx.post(
            f"{app_server['url']}/gradio_api/upload", files={"files": ("big.csv", f, "text/csv")}, timeout=120
        )
    assert reply.status_code == 413 and f"maximum allowed size of {cap} bytes" in reply.text
    assert kept() == before  # neither the data folder nor gradio's upload folder holds any of it


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": "fast"}, "Learning rate: expected a number, got 'fast'"),
        ({"learning_rate": "nan"}, "Learning rate: expected a finite number"),
        ({"per_device_train_batch_size": [8]}, "expected a number"),
    ],
)
def test_a_value_that_is_not_a_number_is_a_short_error_naming_the_field(app_server, settings, message):
    cfg, command = app_server["client"].predict(
        json.dumps({"dataset": "sample-sentiment.csv", **settings}), api_name="/preview_run"
    )  # the preview shows the problem in place of the config
    assert cfg.startswith("# ") and message in cfg and "\n" not in cfg.strip() and command == ""


def test_data_tab_reports_duplicates_and_overlap_with_the_held_out_share(app_server, tmp_path):
    import re

    from gradio_client import handle_file

    # 10 copies of one review (9 exact, 1 differing in case and punctuation) among 36 distinct ones
    rows = [("a fine film", "pos")] * 9 + [("A fine film!", "pos")]
    rows += [(f"review number {i}", "pos" if i % 2 else "neg") for i in range(36)]
    path = tmp_path / "dupes.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    client = app_server["client"]
    dataset = client.predict(handle_file(str(path)), api_name="/upload_dataset")[0]["value"]
    report, examples = client.predict(dataset, "(auto)", "(none)", "(auto)", api_name="/cleaning_report")
    found = {t: int(n) for t, n in re.findall(r"^\| ([^|(]+?)(?: \([^|]*\))? \| (\d+) \|", report, re.M)}
    held_out_overlap = int(re.search(r"validation rows whose text is also in train: \*\*(\d+)", report)[1])
    assert "41 training rows, validation: 10% of dupes.csv" in report  # 5 of 46 held out, as in the Train tab
    assert str(tmp_path) not in report  # no folder paths shown
    # Whichever copies the seeded split holds out, each of the 10 is counted exactly once: the first in
    # train, the other train copies as exact/near duplicates, the held-out ones as overlap.
    in_train = 1 + found["exact duplicates"] + found["near duplicates"]
    assert in_train + held_out_overlap == 10
    assert found["also in validation/test"] == (in_train if held_out_overlap else 0)
    assert found["one text, several labels"] == 0
    assert {r[0] for r in examples["data"]} <= {"exact_duplicates", "near_duplicates", "leakage"}
    assert all("fine film" in r[2].lower() for r in examples["data"])
    # the Train tab passes the cleaning and augmentation options to the run's config
    chosen = {"remove_duplicates": "near", "remove_leakage": True, "augment_method": "random_swap"}
    cfg, _ = client.predict(json.dumps({"dataset": dataset, **chosen}), api_name="/preview_run")
    assert chosen.items() <= yaml.safe_load(cfg).items()
    bad, _ = client.predict(json.dumps({"dataset": dataset, "augment_copies": 0}), api_name="/preview_run")
    assert bad.startswith("#") and "augment_copies must be >= 1" in bad


def test_the_data_report_warns_of_a_rare_label_and_says_what_to_try(app_server, tmp_path):
    from gradio_client import handle_file

    rows = sentiment_rows(400)
    path = tmp_path / "rare.csv"
    with path.open("w", newline="") as f:
        rare = [r for r in rows if r[1] == "neg"][:194] + [r for r in rows if r[1] == "pos"][:6]
        csv.writer(f).writerows([("text", "label"), *rare])
    report = app_server["client"].predict(handle_file(str(path)), api_name="/upload_dataset")[1]
    assert "Imbalanced labels: the rarest label, 'pos', is 3.0% of the rows (6 of 200)" in report
    assert "class_weights balanced" in report
    cfg, _ = app_server["client"].predict(
        json.dumps({"dataset": "rare.csv", "class_weights": "balanced"}), api_name="/preview_run"
    )
    assert "class_weights: balanced" in cfg


def test_a_numeric_target_is_reported_as_regression_with_its_distribution(app_server, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "scores.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "score"), *((f"review {i}", i / 4) for i in range(40))])
    result = app_server["client"].predict(handle_file(str(path)), api_name="/upload_dataset")
    assert "regression target **score** (numbers from 0 to 9.75, mean 4.88" in result[1]
    assert "Target distribution" in str(result[4])  # the target's histogram in place of the label counts
    cfg, _ = app_server["client"].predict(
        json.dumps({"dataset": "scores.csv", "problem_type": "regression"}), api_name="/preview_run"
    )
    assert "problem_type: regression" in cfg and "label_column: score" in cfg


def test_several_labels_per_cell_are_reported_as_multi_label(app_server, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "topics.csv"
    rows = [(f"story {i}", ["news;sports", "news", "sports;weather;news"][i % 3]) for i in range(30)]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "topics"), *rows])
    result = app_server["client"].predict(handle_file(str(path)), api_name="/upload_dataset")
    assert "label column **topics** · multi_label, 3 labels, 2.00 per text" in result[1]
    assert "news (30), sports (20), weather (10)" in result[1]
    settings = {
        "dataset": "topics.csv",
        "problem_type": "multi_label",
        "threshold": 0.4,
        "tune_thresholds": True,
    }
    cfg, _ = app_server["client"].predict(json.dumps(settings), api_name="/preview_run")
    assert "problem_type: multi_label" in cfg and "threshold: 0.4" in cfg and "tune_thresholds: true" in cfg


def test_sample_datasets_ship_with_the_app(app_server):
    client = app_server["client"]
    result = client.predict("sample-python-docs-topics.csv", api_name="/use_sample")
    assert "passes the checks" in result[1] and "statements" in result[1]
    cfg, command = client.predict(json.dumps({"dataset": "sample-sentiment.csv"}), api_name="/preview_run")
    assert (
        "model_name_or_path: embedded:all-MiniLM-L6-v2" in cfg and "max_train_samples: null" in cfg
    )  # every row, never a silent sample
    assert command.startswith("ACCELERATE_USE_CPU=1 accelerate launch --quiet --num_processes 1")
    assert "recipes/bert_cls.py --config runs/<run-id>/config.yaml" in command
    two = json.dumps({"dataset": "sample-sentiment.csv", "num_processes": 2})
    assert "--multi_gpu --num_processes 2" in client.predict(two, api_name="/preview_run")[1]
    check = client.predict(json.dumps({"dataset": "sample-sentiment.csv"}), api_name="/check_data_json")
    assert check.startswith("✓") and "600 rows" in check


def test_the_chat_sample_is_checked_previewed_and_planned_as_chat_fine_tuning(app_server, tmp_path):
    from gradio_client import handle_file

    client = app_server["client"]
    result = client.predict("sample-python-chat.jsonl", api_name="/use_sample")
    assert "conversations (chat) for chat fine-tuning" in result[1] and "assistant replies" in result[1]
    preview = result[3]
    assert preview["headers"] == ["conversation"] and preview["data"][0][0].startswith("user: ")
    settings = {"task": "causal-lm", "dataset": "sample-python-chat.jsonl", "data_format": "auto"}
    check = client.predict(json.dumps(settings), api_name="/check_data_json")
    assert check.startswith("✓") and "conversations (chat) to fine-tune on" in check
    cfg, command = client.predict(json.dumps(settings | {"train_on_prompt": True}), api_name="/preview_run")
    assert "data_format: auto" in cfg and "train_on_prompt: true" in cfg and "recipes/gpt2_clm.py" in command
    bad = tmp_path / "bad-chat.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]})
    )
    result = client.predict(handle_file(str(bad)), api_name="/upload_dataset")
    assert "does not pass the checks" in result[1] and "unknown role 'bot'" in result[1]


def test_advanced_training_options_reach_the_run_config(app_server):
    """Optimizer, regularization and dropout settings of the Advanced section, for both tasks."""
    client = app_server["client"]
    options = {"optimizer": "sgd", "l1_lambda": 1e-5, "label_smoothing": 0.1, "hidden_dropout": 0.2}
    cfg, _ = client.predict(
        json.dumps({"dataset": "sample-sentiment.csv", **options, "attention_dropout": 0.05}),
        api_name="/preview_run",
    )
    config = yaml.safe_load(cfg)
    assert {k: config[k] for k in options} == options and config["attention_dropout"] == 0.05
    cfg, _ = client.predict(
        json.dumps({"task": "causal-lm", "dataset": "sample-python-docs.txt", "hidden_dropout": 0.1}),
        api_name="/preview_run",
    )
    config = yaml.safe_load(cfg)
    assert (config["resid_pdrop"], config["embd_pdrop"], config["optimizer"]) == (0.1, 0.1, "adamw")
    assert config["attn_pdrop"] is None  # blank: the model's own rate
    cfg, _ = client.predict(
        json.dumps({"dataset": "sample-sentiment.csv", "label_smoothing": 1.5}), api_name="/preview_run"
    )
    assert "label_smoothing must be in [0, 1)" in cfg  # the recipe's own check, shown before any run


def test_distillation_settings_need_a_teacher_and_reach_the_run_config(app_server, tiny_bert):
    client = app_server["client"]
    settings = {"task": "distillation", "dataset": "sample-sentiment.csv"}
    cfg, command = client.predict(json.dumps(settings), api_name="/preview_run")
    assert "needs a teacher" in cfg and command == ""  # the embedded encoder is no teacher
    settings.update(
        base_kind="local folder",
        base_path=str(tiny_bert),
        student_num_layers=1,
        temperature=3.0,
        alpha=0.25,
        unlabeled_dataset="sample-sentiment.csv",
    )
    cfg, command = client.predict(json.dumps(settings), api_name="/preview_run")
    config = yaml.safe_load(cfg)
    assert "recipes/distill_cls.py" in command
    assert config["teacher_name_or_path"] == str(tiny_bert)
    assert config["model_name_or_path"] == "embedded:all-MiniLM-L6-v2"  # the default; the teacher is used
    assert (config["student_num_layers"], config["temperature"], config["alpha"]) == (1, 3.0, 0.25)
    assert config["unlabeled_file"].endswith("sample-sentiment.csv")
    cfg, _ = client.predict(json.dumps({**settings, "alpha": 1.5}), api_name="/preview_run")
    assert "alpha must be in [0, 1]" in cfg  # the recipe's own check, before any run


def test_two_sessions_classifying_at_once_get_their_own_prediction_files(app_server, tiny_bert, tmp_path):
    """Files of the same name, classified by two browser sessions in the same second: each session gets
    its own predictions file holding its file's columns and the model's answers; the Classify uploads
    are not datasets; a day-old predictions file is removed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from gradio_client import Client, handle_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model_dir = tmp_path / "classifier"
    AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    ).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(model_dir)
    stale = app_server["data"] / "predictions" / "an-old-session" / "reviews-predictions.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("text,prediction\n")
    for path in (stale, stale.parent):
        os.utime(path, (time.time() - 2 * 86400,) * 2)
    datasets_before = app_server["state"].datasets()
    files = []
    for n, words in enumerate([("great", "superb", "fine"), ("dull", "awful", "bad", "tedious")]):
        (tmp_path / str(n)).mkdir()
        files.append(tmp_path / str(n) / "reviews.csv")
        with files[-1].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "review", "stars"])
            writer.writerows([f"{n}-{i}", f"a {w} film", i] for i, w in enumerate(words))
    clients = [Client(app_server["url"], verbose=False) for _ in files]
    together = threading.Barrier(len(files))

    def classify(n: int) -> str:
        together.wait(timeout=60)
        return clients[n].predict("", str(model_dir), handle_file(str(files[n])), api_name="/classify_file")

    with ThreadPoolExecutor(len(files)) as pool:
        outs = list(pool.map(classify, range(len(files))))
    kept = sorted((app_server["data"] / "predictions").rglob("*.csv"))
    assert len(kept) == 2 and kept[0].parent != kept[1].parent, kept  # one folder per session
    assert not stale.exists() and not stale.parent.exists()  # a day old: removed
    for n, out in enumerate(outs):
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        with files[n].open(newline="") as f:
            given = list(csv.DictReader(f))
        assert list(rows[0]) == ["id", "review", "stars", "prediction", "score", "prob_neg", "prob_pos"]
        assert [{k: r[k] for k in ("id", "review", "stars")} for r in rows] == given
        for row in rows:
            alone = clients[n].predict("", str(model_dir), row["review"], api_name="/classify")
            expected = {c["label"]: c["confidence"] for c in alone["confidences"]}
            assert float(row["prob_pos"]) == pytest.approx(expected["pos"], abs=1e-3)
            assert row["prediction"] == alone["label"]
    assert app_server["state"].datasets() == datasets_before  # Classify's files are not datasets


@pytest.mark.slow
def test_train_classifier_then_classify_and_report(app_server, uploaded, tiny_bert, tmp_path, monkeypatch):
    client = app_server["client"]
    from gradio_client import handle_file

    held_out = tmp_path / "held out.csv"
    with held_out.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *sentiment_rows(30, seed=9)])
    test_set = client.predict(handle_file(str(held_out)), api_name="/upload_dataset")[0]["value"]
    run_id = submit(client, **tiny_cls_settings(uploaded, tiny_bert, test_dataset=test_set))
    run_dir = app_server["runs"] / run_id
    assert (run_dir / "config.yaml").exists() and (run_dir / "command.txt").exists()
    status = wait_for(client, run_id, ("finished",))
    # balanced labels: the majority baseline is 0.5; the phrases are easy, so well above it
    assert status["metrics"]["eval/accuracy"] >= 0.8 and status["metrics"]["test/accuracy"] >= 0.8, status
    label = client.predict(run_id, "", "the film is wonderful and superb", api_name="/classify")
    assert {c["label"] for c in label["confidences"]} == {"neg", "pos"}
    texts = tmp_path / "texts.txt"
    texts.write_text("the plot is dull\nthe cast is brilliant\n")
    out = client.predict(run_id, "", handle_file(str(texts)), api_name="/classify_file")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == ["the plot is dull", "the cast is brilliant"]
    assert list(rows[0]) == ["text", "prediction", "score", "prob_neg", "prob_pos"]
    confusion, mistakes = client.predict(run_id, api_name="/validation_report")
    assert confusion["value"]["headers"] == ["true \\ predicted", "neg", "pos"]
    assert confusion["label"] == "Confusion matrix (validation)"
    assert mistakes["headers"]
    cache = run_dir / "validation_report.json"  # computed once, kept in the run folder
    written = cache.stat().st_mtime_ns
    assert client.predict(run_id, api_name="/validation_report") == (confusion, mistakes)
    assert cache.stat().st_mtime_ns == written  # the second report is read back, not recomputed
    # the test set the run was given: its scores, confusion matrix and every prediction
    scores, test_confusion, predictions = (
        u["value"] for u in client.predict(run_id, api_name="/test_report")
    )
    assert f"accuracy {status['metrics']['test/accuracy']:.4g}" in scores
    assert sum(sum(row[1:]) for row in test_confusion["data"]) == 30
    with open(predictions) as f:
        assert [(r["text"], r["gold"]) for r in csv.DictReader(f)] == sentiment_rows(30, seed=9)
    details = client.predict(run_id, api_name="/run_details")[1]  # the Runs tab's description
    assert f"Test file: loss {status['metrics']['test/loss']:.4g}, accuracy" in details
    runs = client.predict(api_name="/list_runs")
    assert any(r["id"] == run_id and r["state"] == "finished" for r in runs)
    # continue for one more epoch from the finished model: a new run that starts from this one
    message = client.predict(run_id, 1, api_name="/continue_run")
    new_id = message.split("**")[1]
    new_cfg = (app_server["runs"] / new_id / "config.yaml").read_text()
    assert str(run_dir) in new_cfg and "num_train_epochs: 1.0" in new_cfg
    wait_for(client, new_id, ("finished",))
    diff, _, _, metrics = client.predict(run_id, new_id, api_name="/compare_runs")
    assert any(row[0] == "model_name_or_path" for row in diff["data"])
    assert any(row[0] == "eval/accuracy" for row in metrics["data"])
    assert not any(
        row[0] == "resume_from_checkpoint" for row in diff["data"]
    )  # how it started, not a setting
    for _, a, b in metrics["data"]:  # four significant digits
        for value in (a, b):
            assert not isinstance(value, float) or value == float(f"{value:.4g}"), metrics["data"]
    # fork the final model at learning rate 1e-7 for 2 steps: it starts from the parent's weights, so it
    # ends within a few 1e-7 of them (Adam moves a weight by about the rate a step); a fork from the base
    # model would hold the base's weights and a new random head
    from safetensors.torch import load_file

    message = client.predict(run_id, "final model", 1, 1e-7, 2, api_name="/fork_run")
    fork_id = message.split("**")[1]
    fork_status = wait_for(client, fork_id, ("finished",))
    assert fork_status["step"] == 2
    parent_weights = load_file(run_dir / "model.safetensors")
    fork_weights = load_file(app_server["runs"] / fork_id / "model.safetensors")
    assert parent_weights.keys() == fork_weights.keys()
    moved = max((fork_weights[k] - parent_weights[k]).abs().max().item() for k in parent_weights)
    assert 0 < moved < 1e-5, moved
    base_weights = load_file(tiny_bert / "model.safetensors")
    shared = base_weights.keys() & parent_weights.keys()  # the encoder (the base has no classifier head)
    assert max((base_weights[k] - parent_weights[k]).abs().max().item() for k in shared) > 1e-3
    # the Hub tab pushes the model with its card (the run's scores in it) to a (fake) Hub
    push_through_the_hub_tab(client, run_dir, status, monkeypatch, tmp_path)


def push_through_the_hub_tab(client, run_dir: Path, status: dict, monkeypatch, tmp_path: Path) -> None:
    from fake_hub import FakeHub, hub_environment

    token = "hf_UserTypedToken0123456789abcdefgh"
    hub_environment(monkeypatch, tmp_path)
    with FakeHub(token) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        message, field = client.predict(run_dir.name, "me/reviews", True, token, api_name="/push_to_hub")
        assert message.startswith(f"✓ Pushed **{run_dir.name}**") and field == "", message
        files = hub.files("me/reviews")
        assert hub.repos["me/reviews"].private
    assert files["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert card == (run_dir / "README.md").read_text()
    assert "## Evaluation results" in card and f"{status['metrics']['eval/accuracy']:.4g}" in card
    assert token not in card and str(run_dir) not in card


@pytest.mark.slow
def test_distill_a_classifier_then_export_the_student_for_cpu(app_server, uploaded, tiny_bert):
    client = app_server["client"]
    teacher = submit(client, **tiny_cls_settings(uploaded, tiny_bert, num_train_epochs=4))
    teacher_status = wait_for(client, teacher, ("finished",))
    settings = tiny_cls_settings(
        uploaded,
        tiny_bert,
        task="distillation",
        base_kind="finished run",
        base_run=teacher,
        student_num_layers=1,
        num_train_epochs=4,
        per_device_train_batch_size=16,
    )
    config_yaml, command = client.predict(json.dumps(settings), api_name="/preview_run")
    config = yaml.safe_load(config_yaml)
    assert "recipes/distill_cls.py" in command
    assert config["teacher_name_or_path"].endswith(teacher) and config["student_num_layers"] == 1
    student = submit(client, **settings)
    status = wait_for(client, student, ("finished",))
    assert status["task"] == "distill"
    student_config = json.loads((app_server["runs"] / student / "config.json").read_text())
    assert student_config["num_hidden_layers"] == 1  # the teacher has 2
    # the student learned from its teacher: it stays close to the teacher's accuracy, well above chance
    assert status["metrics"]["eval/accuracy"] >= min(0.75, teacher_status["metrics"]["eval/accuracy"] - 0.1)
    texts = ["the film is wonderful and superb", "the plot is awful and boring"]
    fp32 = [client.predict(student, "", t, api_name="/classify") for t in texts]

    message, report = client.predict(student, "int8", "", 0, api_name="/export_run")
    assert f"{student}/export-int8" in message and "tunelab export" in message
    assert "| size on disk |" in report and "| accuracy |" in report
    export_dir = app_server["runs"] / student / "export-int8"
    assert (export_dir / "model.onnx").is_file() and (export_dir / "export.json").is_file()
    # the export is a model of the Classify tab: it agrees with the fp32 student
    for text, before in zip(texts, fp32, strict=True):
        after = client.predict(f"{student}/export-int8", "", text, api_name="/classify")
        assert after["label"] == before["label"]
    # a wrong option is a readable error, not a traceback, and nothing is exported
    with pytest.raises(Exception, match="prune") as error:
        client.predict(student, "int8", "layers=abc", 0, api_name="/export_run")
    assert "Traceback" not in str(error.value)
    with pytest.raises(Exception, match="no export named"):
        client.predict(f"{student}/export-fp99", "", texts[0], api_name="/classify")


@pytest.mark.slow
def test_stop_then_resume_finishes_from_the_checkpoint(app_server, uploaded, tiny_bert):
    client = app_server["client"]
    run_id = submit(
        client,
        **tiny_cls_settings(
            uploaded,
            tiny_bert,
            num_train_epochs=1,
            max_train_steps=150,
            per_device_train_batch_size=4,
            logging_steps=5,
        ),
    )
    seen: list = []
    wait_for(
        client,
        run_id,
        ("running",),
        seen=seen,
        until=lambda s: s.get("stage") == "training" and s.get("step", 0) >= 5,
    )
    message = client.predict(run_id, api_name="/stop_run")
    assert "stopping" in message
    status = wait_for(client, run_id, ("stopped",), seen=seen, timeout=90)
    assert "stopped" in status["reason"]
    checkpoints = list((app_server["runs"] / run_id / "checkpoints").glob("step-*"))
    assert checkpoints, "a stop should leave a checkpoint"
    stopped_at = status["step"]
    first_attempt_s = status["elapsed_s"]
    assert "Resuming" in client.predict(run_id, api_name="/resume_run")
    status = wait_for(client, run_id, ("finished",), seen=seen)
    assert status["step"] == 150 > stopped_at
    states = [s for s in seen if s != "queued"]
    assert states == ["running", "stopped", "running", "finished"], seen
    log = (app_server["runs"] / run_id / "train.log").read_text()
    assert "Resum" in log
    # "Took" is the time spent training, over both attempts
    from app.state import format_seconds

    final = json.loads((app_server["runs"] / run_id / "status.json").read_text())
    info = client.predict(run_id, api_name="/run_details")[1]
    took = re.search(r"Took ([^.]+)\.", info).group(1)
    assert took == format_seconds(final["elapsed_s"])
    assert final["elapsed_s"] > first_attempt_s > 0  # both attempts, not the resumed one alone


def test_two_runs_train_at_once_and_a_full_queue_refuses_more(app_server, uploaded, tiny_bert):
    """``max_concurrent_runs 2``: two real runs train at the same moment and both finish; with both slots
    taken one more run waits, and one past the queue's bound is refused with a message, leaving nothing."""
    from app.queue import MAX_QUEUED

    client, queue = app_server["client"], app_server["state"].queue
    settings = tiny_cls_settings(
        uploaded,
        tiny_bert,
        num_train_epochs=1,
        max_train_steps=STEPS_TOGETHER,
        per_device_train_batch_size=4,
        logging_steps=25,
    )
    queue.max_concurrent = 2
    try:
        # Both submitted at once, so they start up side by side: a second run submitted only once the
        # first is running could still be starting when the first has finished its steps (a loaded CPU).
        first, second = submit(client, **settings), submit(client, **settings)
        training = lambda s: s.get("stage") == "training" and s.get("step", 0) >= 1  # noqa: E731
        wait_for(client, first, ("running",), until=training)
        wait_for(client, second, ("running",), until=training)
        assert training(client.predict(first, api_name="/run_status")), "the first run ended too soon"
        queue.max_queued = 1
        waiting = submit(client, **settings)
        assert client.predict(waiting, api_name="/run_status")["state"] == "queued"  # both slots are taken
        before = sorted(p.name for p in app_server["runs"].iterdir())
        with pytest.raises(Exception, match="The queue is full: 1 run is already waiting"):
            submit(client, **settings)
        assert sorted(p.name for p in app_server["runs"].iterdir()) == before  # the refused run left nothing
        assert client.predict(waiting, api_name="/stop_run") == "removed from the queue"
        ended = [wait_for(client, run, ("finished",)) for run in (first, second)]
        assert max(s["started"] for s in ended) < min(s["ended"] for s in ended)  # they overlapped in time
        assert client.predict(waiting, api_name="/run_status")["state"] == "stopped"  # never started
    finally:
        queue.max_concurrent, queue.max_queued = 1, MAX_QUEUED


@pytest.fixture(scope="module")
def slow_lm(embedded_encoder_path, tmp_path_factory) -> Path:
    """A random 24-layer GPT-2: slow enough on a quiet 2-core CPU, warm, that 512 new tokens take far
    longer than the tests below wait (12 layers, once loaded and warmed up by an earlier reply, streamed
    a token every 25 ms: 12 s for 512, too close to the 5 s wait)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tunelab.models import LOADING

    path = tmp_path_factory.mktemp("slow-lm")
    with LOADING:  # the app loads models in this process too: never two loads at once
        tokenizer = AutoTokenizer.from_pretrained(embedded_encoder_path)
        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=tokenizer.vocab_size, n_layer=24, n_embd=384, n_head=6, n_positions=1024
        )
        GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def generating() -> list:
    """The app's generation threads (the app runs in this process)."""
    import threading

    return [t for t in threading.enumerate() if t.name == "tunelab-generate" and t.is_alive()]


def test_the_stop_button_ends_a_reply_within_a_second(app_server, slow_lm):
    from app.chat_tab import text_of

    client = app_server["client"]
    job = client.submit("hello there", [], "", str(slow_lm), 0.8, 0.95, 50, 512, 1.0, api_name="/chat")
    deadline = time.monotonic() + 60
    while len(job.outputs()) < 4 and not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)  # the user's turn, then pieces of the reply
    assert not job.done() and len(job.outputs()) >= 4, "the reply should still be streaming"
    client.predict(api_name="/stop_chat")  # the same session as the reply's, as in one browser tab
    stopped = time.monotonic()
    history = job.result(timeout=30)[0]
    assert time.monotonic() - stopped < 1.0, "the reply went on after Stop"
    while generating() and time.monotonic() - stopped < 1.0:
        time.sleep(0.05)
    assert not generating(), "the model is still generating a second after Stop"
    assert history[-1]["role"] == "assistant" and text_of(history[-1]["content"])  # what came is kept


def test_a_client_that_disconnects_ends_its_generation(app_server, slow_lm):
    """A browser that goes away mid-reply (its event stream closed) stops the model generating: the
    model's forward passes are counted, so the test holds on a machine of any speed (a guard on the
    streaming rate failed on a faster CI machine)."""
    import uuid

    import httpx

    from app.loaded import load
    from tunelab.infer import Generator

    generator = load(Generator, str(slow_lm))  # the very model the app's chat will use (its cache)
    steps: list[int] = []
    hook = generator.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        url = app_server["url"]
        dependencies = httpx.get(f"{url}/config", timeout=30).json()["dependencies"]
        chat = next(i for i, d in enumerate(dependencies) if d.get("api_name") == "chat")
        session = uuid.uuid4().hex[:11]
        data = ["hello there", [], "", str(slow_lm), 0.8, 0.95, 50, 512, 1.0]  # 512 new tokens
        joined = httpx.post(
            f"{url}/gradio_api/queue/join",
            json={
                "data": data,
                "fn_index": chat,
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
            timeout=30,
        )
        assert joined.status_code == 200, joined.text

        updates = 0
        with httpx.stream(
            "GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=60
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_generating":
                    updates += 1
                    if updates == 6:  # the user's turn, then five pieces of the reply: leave
                        break
        left_at = len(steps)
        assert generating(), "the reply should still be generating when the client leaves"
        deadline = time.monotonic() + 60  # a reply left to run would end by itself, at 512 tokens
        while generating() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not generating(), "the model is still generating a minute after the client left"
        assert len(steps) < 400, (
            f"generation went on after the client disconnected: {len(steps)} of 512 tokens "
            f"({left_at} when it left)"
        )
    finally:
        hook.remove()


@pytest.mark.slow
def test_gpt2_run_then_streamed_chat(app_server):
    client = app_server["client"]
    run_id = submit(
        client,
        task="causal-lm",
        dataset="sample-python-docs.txt",
        max_train_steps=30,
        block_size=64,
        per_device_train_batch_size=8,
        learning_rate=2e-3,
        logging_steps=5,
        mixed_precision="no",
        tokenizer_vocab_size=1024,
    )
    wait_for(client, run_id, ("finished",))
    job = client.submit("The with statement", [], run_id, "", 0.8, 0.95, 50, 24, 1.1, api_name="/chat")
    job.result(timeout=120)
    updates = job.outputs()
    from transformers import AutoModelForCausalLM

    from app.chat_tab import text_of

    replies = [text_of(u[0][-1]["content"]) for u in updates]
    changed = [r for prev, r in zip(replies, replies[1:], strict=False) if r != prev]
    assert len(changed) >= 3 and replies[-1], replies  # the reply streamed in several pieces
    history = updates[-1][0]
    assert history[0]["role"] == "user" and history[-1]["role"] == "assistant"
    # Compare: the same model twice answers alike (greedy); another model (other weights) differently
    other = app_server["runs"] / f"{run_id}-other"
    shutil.copytree(app_server["runs"] / run_id, other)
    from tunelab.models import LOADING

    with LOADING:  # the app loads models in this process too: never two loads at once
        model = AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(other).config)
    model.save_pretrained(other)  # fresh random weights, same tokenizer
    a, b = client.predict(run_id, run_id, "The ", 8, 0.0, api_name="/compare_generate")
    assert a == b and a.startswith("The ")
    a, c = client.predict(run_id, other.name, "The ", 8, 0.0, api_name="/compare_generate")
    assert a != c and c.startswith("The ")
    # more new tokens than the model's context (256): the reply is cut there, says so, and ends at once
    context = json.loads((app_server["runs"] / run_id / "config.json").read_text())["n_positions"]
    start = time.monotonic()
    job = client.submit("def f", [], run_id, "", 0.8, 0.95, 50, 500, 1.1, api_name="/chat")
    history = job.result(timeout=60)[0]
    assert time.monotonic() - start < 30

    reply = text_of(history[-1]["content"])
    assert reply.endswith(f"[reply cut at the model's context of {context} tokens]"), history


def test_a_deleted_run_is_gone_from_disk_and_from_the_list(app_server, tiny_bert):
    from tunelab.runs import Run

    client = app_server["client"]
    run = Run(app_server["runs"] / "cls-to-delete")
    shutil.copytree(tiny_bert, run.path)
    run.update_status(state="finished", task="cls")
    assert "cls-to-delete" in json.dumps(client.predict(api_name="/list_runs"))
    assert "Deleted cls-to-delete" in client.predict("cls-to-delete", api_name="/delete_run")
    assert not run.path.exists()
    assert "cls-to-delete" not in json.dumps(client.predict(api_name="/list_runs"))
    with pytest.raises(Exception, match="does not exist"):
        client.predict("cls-to-delete", api_name="/delete_run")


def test_lora_left_at_the_default_learning_rate_takes_loras_own(app_server):
    from tunelab.args import LORA_LEARNING_RATE

    client = app_server["client"]
    for settings, expected in (
        ({"use_peft": True}, LORA_LEARNING_RATE),  # the page's default rate, not chosen: LoRA's
        ({"use_peft": True, "learning_rate": 3e-4}, 3e-4),  # chosen: kept
        ({}, 1e-4),  # classification's default (batch 32)
    ):
        cfg, _ = client.predict(
            json.dumps({"dataset": "sample-sentiment.csv", **settings}), api_name="/preview_run"
        )
        assert yaml.safe_load(cfg)["learning_rate"] == expected, (settings, cfg)
