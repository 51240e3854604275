"""`tunelab sweep`: Optuna over recipe arguments, every trial a real `accelerate launch` run of
recipes/bert_cls.py on a tiny BERT; the sweep folder, the best config, failures, and the app's view."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, sentiment_rows

from tunelab.cli import main
from tunelab.errors import ConfigError
from tunelab.runs import Run, list_runs
from tunelab.sweep import load_space

TRIALS = 6


def tunelab(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunelab.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


@pytest.fixture(scope="module")
def sweep_done(tmp_path_factory, tiny_bert) -> dict:
    """A 6-trial sweep over learning rate and base model (one of the two models does not exist, so the
    trials that draw it fail for real inside the recipe)."""
    base = tmp_path_factory.mktemp("sweep")
    data = base / "reviews.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(160))
    config = base / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "train_file": str(data),
                "max_length": 32,
                "per_device_train_batch_size": 16,
                "max_train_steps": 24,
                "eval_steps": 6,
                "logging_steps": 6,
                "mixed_precision": "no",
                "seed": 7,
            }
        )
    )
    space = base / "space.yaml"
    missing = base / "no-such-model"
    space.write_text(
        "learning_rate: {type: float, low: 3e-4, high: 3e-2, log: true}\n"
        f"model_name_or_path: [{tiny_bert}, {missing}]\n"
    )
    runs = base / "runs"
    proc = tunelab(
        "sweep", "cls", "--config", str(config), "--space", str(space), "--trials", str(TRIALS),
        "--name", "tiny-sweep", "--runs-dir", str(runs), "--sampler-seed", "3", "--num_processes", "1",
    )  # fmt: skip
    return {
        "proc": proc,
        "runs": runs,
        "sweep": runs / "tiny-sweep",
        "config": config,
        "missing": str(missing),
    }


@pytest.mark.slow
def test_sweep_picks_the_best_trial_and_writes_its_config(sweep_done):
    proc, runs, folder = sweep_done["proc"], sweep_done["runs"], sweep_done["sweep"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((folder / "sweep.json").read_text())
    trials = record["trials"]
    assert len(trials) == TRIALS and {t["state"] for t in trials} <= {"complete", "pruned", "failed"}

    finished = {}  # run id -> final eval/accuracy, read from the run folders themselves
    for t in trials:
        run = Run(runs / t["run"])
        status = run.status()
        assert status["sweep"] == "tiny-sweep" and status["trial"] == t["number"]  # the app groups by these
        assert run.config()["learning_rate"] == pytest.approx(t["params"]["learning_rate"])
        if t["params"]["model_name_or_path"] == sweep_done["missing"]:
            # A trial that fails inside the recipe is recorded failed; the sweep goes on.
            assert t["state"] == "failed" and status["state"] == "failed", (t, status)
            assert "no-such-model" in t["reason"]
        elif t["state"] == "pruned":
            assert status["state"] == "stopped" and status.get("pruned") is True
            assert run.checkpoints(), "a pruned run stops like `runs stop`: with a checkpoint"
        else:
            assert t["state"] == "complete" and status["state"] == "finished"
            finished[run.id] = status["metrics"]["eval/accuracy"]
            assert t["value"] == pytest.approx(finished[run.id])
    assert any(t["state"] == "failed" for t in trials), "seed 3 draws the missing model at least once"
    assert len(finished) >= 2

    best = record["best"]
    assert best["value"] == pytest.approx(max(finished.values()))
    assert finished[best["run"]] == pytest.approx(best["value"])
    assert best["value"] >= 0.75  # some learning rate in the range learns the separable phrases

    best_config = yaml.safe_load((folder / "best_config.yaml").read_text())
    best_params = next(t["params"] for t in trials if t["number"] == best["number"])
    assert best_config["learning_rate"] == pytest.approx(best_params["learning_rate"])
    assert best_config["model_name_or_path"] == best_params["model_name_or_path"]
    base = yaml.safe_load(sweep_done["config"].read_text())
    assert {k: best_config[k] for k in base} == base  # the base config, with only the searched keys changed
    assert "output_dir" not in best_config
    from tunelab.cli import resolved_config

    assert resolved_config("cls", ["--config", str(folder / "best_config.yaml")])["learning_rate"] == (
        pytest.approx(best_params["learning_rate"])
    )  # the recipe accepts it as it is

    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == list(range(TRIALS))
    assert [r["run"] for r in rows if r["best"] == "*"] == [best["run"]]
    assert best["run"] in proc.stdout and "ACCURACY" in proc.stdout  # the printed table
    assert (folder / "results.md").read_text().count("\n") == TRIALS + 2
    assert (folder / "study.db").is_file()
    # Trials are ordinary runs (the CLI's and the app's run list); the sweep folder is not a run.
    listed = {r.id for r in list_runs(runs)}
    assert listed == {t["run"] for t in trials}


@pytest.mark.slow
def test_app_runs_tab_groups_a_sweeps_trials(sweep_done, tmp_path):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from gradio_client import Client

    from app.ui import build_app, launch_options

    runs = sweep_done["runs"]
    demo = build_app(runs, tmp_path / "data")
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(runs, tmp_path / "data"),
    )
    try:
        client = Client(url, verbose=False)
        record = json.loads((sweep_done["sweep"] / "sweep.json").read_text())
        listed = {r["id"]: r for r in client.predict(api_name="/list_runs")}
        assert {r["sweep"] for r in listed.values()} == {"tiny-sweep"}
        param, summary, plot, table = client.predict("tiny-sweep", api_name="/sweep_view")
        assert "tiny-sweep" in summary and f"{TRIALS}/{TRIALS} trials" in summary
        assert record["best"]["run"] in summary
        assert param["value"] == "learning_rate"
        points = plot["value"]["data"]
        with_value = [t for t in record["trials"] if t.get("value") is not None]
        assert len(points) == len(with_value) >= 2  # one point per trial with a value (failed ones have none)
        assert len(table["data"]) == TRIALS

        from app.runs_tab import runs_table

        frame = runs_table(demo.tunelab_state)
        assert sorted(frame["sweep"]) == sorted(f"tiny-sweep #{n}" for n in range(TRIALS))
    finally:
        demo.tunelab_state.queue.shutdown()
        demo.close()


def test_unknown_space_key_fails_before_any_trial(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rat: {type: float, low: 1e-5, high: 1e-3, log: true}\n")
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    runs = tmp_path / "runs"
    code = main(
        [
            "sweep",
            "cls",
            "--train_file",
            str(data),
            "--space",
            str(space),
            "--trials",
            "3",
            "--runs-dir",
            str(runs),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "unknown key 'learning_rat'" in err and "Did you mean: learning_rate" in err, err
    assert str(space) in err and err.count("\n") == 1  # one line, no traceback
    assert not runs.exists()  # no sweep folder, no trial


def test_a_value_the_recipe_refuses_fails_before_any_trial(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("warmup_ratio: {type: float, low: 0.0, high: 1.5}\n")
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    runs = tmp_path / "runs"
    code = main(
        [
            "sweep",
            "cls",
            "--train_file",
            str(data),
            "--space",
            str(space),
            "--trials",
            "3",
            "--runs-dir",
            str(runs),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "warmup_ratio=1.5 is refused" in err and "[0, 1)" in err, err
    assert not runs.exists()


def test_space_format(tmp_path):
    from tunelab.args import ClassificationArguments, LoraArguments, TrainingArguments

    types = (ClassificationArguments, TrainingArguments, LoraArguments)
    space = load_space(
        {
            "learning_rate": {
                "type": "float",
                "low": "1e-5",
                "high": "1e-3",
                "log": True,
            },  # YAML reads 1e-5 as str
            "num_warmup_steps": {"type": "int", "low": 0, "high": 100, "step": 10},
            "lr_scheduler_type": ["linear", "cosine"],
            "per_device_train_batch_size": {"type": "categorical", "choices": [8, 16, 32]},
        },
        types,
    )
    assert space["learning_rate"].low == 1e-5 and space["learning_rate"].log
    assert space["lr_scheduler_type"].choices == ("linear", "cosine")
    assert space["num_warmup_steps"].edge_values() == [0, 100]
    bad = {
        "learning_rate: {type: float, low: 1e-3, high: 1e-5}": "low (0.001) must be below high",
        "learning_rate: {type: float, low: 0, high: 1e-3, log: true}": "log: true needs low > 0",
        "learning_rate: {type: uniform, low: 0, high: 1}": "type must be one of float, int, categorical",
        "learning_rate: {type: float, low: 0, hgh: 1}": "unknown option 'hgh'",
        "num_warmup_steps: {type: int, low: 0, high: 10.5}": "whole number",
        "lr_scheduler_type: {type: categorical, choices: []}": "non-empty list",
        "output_dir: [a, b]": "cannot be searched",
        "learning_rate: 0.001": "must be a mapping",
    }
    for text, message in bad.items():
        path = tmp_path / "space.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match="space.yaml") as info:
            load_space(path, types)
        assert message in str(info.value), (text, str(info.value))


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_where_it_stopped(sweep_done):
    """Runs after the tests above (it adds trials to their sweep): SIGTERM to the sweep stops its running
    trial and records it interrupted; --resume continues the same study up to the new --trials."""
    import signal
    import time

    runs, folder = sweep_done["runs"], sweep_done["sweep"]
    common = ["--runs-dir", str(runs), "--resume", "tiny-sweep"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli", "sweep", "cls", *common, "--trials", str(TRIALS + 2)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not any(t["state"] == "running" for t in json.loads((folder / "sweep.json").read_text())["trials"]):
        assert proc.poll() is None and time.time() < deadline, "the resumed sweep started no trial"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    assert "--resume tiny-sweep" in proc.stderr.read()
    trials = json.loads((folder / "sweep.json").read_text())["trials"]
    interrupted = [t for t in trials if t["state"] == "interrupted"]
    assert len(interrupted) == 1 and Run(runs / interrupted[0]["run"]).status()["state"] == "stopped"

    done = tunelab("sweep", "cls", *common, "--trials", str(TRIALS + 1))
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((folder / "sweep.json").read_text())
    ended = [t for t in record["trials"] if t["state"] in ("complete", "pruned", "failed")]
    assert len(ended) == TRIALS + 1 and len(record["trials"]) == TRIALS + 2
    assert [t["number"] for t in record["trials"]] == list(range(TRIALS + 2))  # one Optuna study throughout
    new = record["trials"][-1]["params"]
    assert all(t["params"] != new for t in record["trials"][:-1])  # the resumed sampler does not replay
    with (folder / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == TRIALS + 2
