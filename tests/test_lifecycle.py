"""Stop at any moment, resume to the same end: real recipe runs started, stopped and resumed through
tunelab.launch, the one lifecycle the app, the CLI and the sweep use."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import pytest
from conftest import ROOT, sentiment_rows

from tunelab.launch import lifecycle
from tunelab.launch.command import Resources
from tunelab.runs import Run
from tunelab.stopping import StopControl

WAIT_S = 120  # every wait of these tests


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("lifecycle-data")
    return {
        "train_file": str(write_csv(folder / "train.csv", sentiment_rows(144))),
        # A validation set large enough that an evaluation lasts a few seconds at batch size 1.
        "validation_file": str(write_csv(folder / "validation.csv", sentiment_rows(1000, seed=1))),
    }


def best_model_config(tiny_bert: Path, data: dict[str, str]) -> dict:
    """eval_steps + load_best_model_at_end + early stopping: the run the issue found could never finish."""
    return {
        **data,
        "model_name_or_path": str(tiny_bert),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 1,
        "learning_rate": 1e-3,
        "num_train_epochs": 4,
        "logging_steps": 1,
        "eval_steps": 18,
        "load_best_model_at_end": True,
        "early_stopping_patience": 1,
        "seed": 7,
    }


def until(condition, what: str, run: Run, proc=None, timeout: float = WAIT_S):
    """Poll ``condition`` until it holds; on timeout (or an early end of the run) fail with its log."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        ended = proc is not None and proc.poll() is not None and not condition()
        if ended or time.monotonic() > deadline:
            log = (run.path / "process.log").read_text(errors="replace")[-4000:]
            pytest.fail(f"{'the run ended' if ended else 'timed out'} waiting for {what}:\n{log}")
        time.sleep(0.02)


def start(run: Run):
    proc = lifecycle.start(run)
    assert proc is not None
    return proc


def finish(run: Run, proc) -> dict:
    status = lifecycle.wait(run, proc, timeout=WAIT_S)
    assert status["state"] == "finished", (run.path / "process.log").read_text()[-4000:]
    return status


def train_losses(run: Run) -> dict[int, float]:
    return {e["step"]: e["train/loss"] for e in run.events("train")}


def final_model(run: Run) -> dict:
    from safetensors.torch import load_file

    return load_file(run.path / "model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert, data) -> Run:
    """The uninterrupted run every stopped-and-resumed run must end equal to."""
    runs = tmp_path_factory.mktemp("reference-runs")
    run = lifecycle.prepare_run("cls", best_model_config(tiny_bert, data), runs_dir=runs, cwd=ROOT)
    finish(run, start(run))
    return run


def assert_same_end(resumed: Run, reference: Run) -> None:
    ref_losses, losses = train_losses(reference), train_losses(resumed)
    assert losses.keys() == ref_losses.keys()
    for step, loss in ref_losses.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-6), step
    ref_final = json.loads((reference.path / "eval_results.json").read_text())
    final = json.loads((resumed.path / "eval_results.json").read_text())
    assert final["global_step"] == ref_final["global_step"]
    for key in ("eval/loss", "eval/accuracy", "eval/f1"):
        assert final[key] == pytest.approx(ref_final[key], rel=1e-4, abs=1e-6), key
    ref_evals = [(e["step"], e["eval/accuracy"]) for e in reference.events("eval")]
    assert [(e["step"], e["eval/accuracy"]) for e in resumed.events("eval")][-len(ref_evals) :] == ref_evals
    ref_weights, weights = final_model(reference), final_model(resumed)
    assert weights.keys() == ref_weights.keys()
    for name, tensor in ref_weights.items():
        assert (weights[name] - tensor).abs().max() < 1e-4, name


def test_the_reference_run_early_stops_and_ends_on_its_best_model(reference):
    """What the resumed runs are compared with really exercises best model and early stopping."""
    final = json.loads((reference.path / "eval_results.json").read_text())
    assert final["eval/accuracy"] >= 0.9
    assert final["global_step"] < 4 * 18  # early stopping ended it before the 4 epochs
    assert "Loading the best model" in (reference.path / "train.log").read_text()


def test_stop_after_an_evaluation_then_resume_ends_as_the_uninterrupted_run(
    reference, tiny_bert, data, tmp_path
):
    run = lifecycle.prepare_run("cls", best_model_config(tiny_bert, data), runs_dir=tmp_path, cwd=ROOT)
    proc = start(run)
    until(
        lambda: run.events("eval") and run.status().get("stage") == "training",
        "the first evaluation",
        run,
        proc,
    )
    asked = time.monotonic()
    outcome = lifecycle.stop(run, grace=WAIT_S)
    assert run.status()["state"] == "stopped", outcome
    assert time.monotonic() - asked < 15
    assert run.checkpoints() and (run.path / "checkpoints" / "best").is_dir()
    proc.wait(WAIT_S)

    lifecycle.resume(run)
    finish(run, start(run))
    assert_same_end(run, reference)
    assert not (run.path / "checkpoints" / "best").exists()  # a finished run keeps its model at the root


def test_stop_during_an_evaluation_saves_and_resume_evaluates_again(reference, tiny_bert, data, tmp_path):
    run = lifecycle.prepare_run("cls", best_model_config(tiny_bert, data), runs_dir=tmp_path, cwd=ROOT)
    proc = start(run)
    until(lambda: run.status().get("stage") == "evaluating", "an evaluation", run, proc)
    asked = time.monotonic()
    lifecycle.stop(run, grace=WAIT_S)
    status = run.status()
    assert status["state"] == "stopped", status
    assert time.monotonic() - asked < 10  # the evaluation was cut short, not waited out
    (checkpoint,) = run.checkpoints()[-1:]
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    assert saved["pending_eval"] is True and saved["global_step"] == 18
    assert not run.events("eval")  # the interrupted evaluation recorded nothing
    proc.wait(WAIT_S)

    lifecycle.resume(run)
    finish(run, start(run))
    assert_same_end(run, reference)


def test_a_two_process_run_that_logs_every_50_steps_stops_within_seconds(tiny_bert, data, tmp_path):
    """Every rank checks the stop request after every optimizer step, not only on logging steps."""
    config = {
        "train_file": data["train_file"],
        "model_name_or_path": str(tiny_bert),
        "per_device_train_batch_size": 8,
        "num_train_epochs": 200,
        "logging_steps": 50,
        "seed": 7,
    }
    run = lifecycle.prepare_run(
        "cls", config, Resources(device="cpu", num_processes=2), runs_dir=tmp_path, cwd=ROOT
    )
    proc = start(run)
    until(lambda: run.status().get("stage") == "training", "training to begin", run, proc)
    time.sleep(1.0)  # into the first epochs, before the first log at step 50
    asked = time.monotonic()
    outcome = lifecycle.stop(run, grace=WAIT_S)
    took = time.monotonic() - asked
    status = run.status()
    assert status["state"] == "stopped" and "killed" not in outcome, (outcome, status)
    assert took < 10, f"the stop took {took:.1f} s"
    (checkpoint,) = run.checkpoints()[-1:]
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    assert saved["world_size"] == 2 and saved["global_step"] > 0
    assert "processes = 2" in (run.path / "train.log").read_text()
    proc.wait(WAIT_S)


# ---- the stop request and status.json ----------------------------------------------------------------


def test_a_stop_request_written_between_two_recipe_writes_survives(tmp_path):
    run = Run(tmp_path / "run")
    run.update_status(state="running", stage="training", step=3)
    previous = signal.getsignal(signal.SIGTERM)
    control = StopControl(run.path)  # what every rank of the recipe runs
    control.in_loop = True  # as in the training loop: the request sets the flag
    try:
        control.since = time.time() - 1  # this attempt began before the request
        run.request_stop("stopped from the app")
        run.update_status(step=4, stage="training")  # the recipe's next write knows nothing of it
        run.update_status(stage="evaluating")
        assert run.stop_request()["reason"] == "stopped from the app"
        assert control.stop_file_request() is not None
        until(lambda: control.requested, "the stop flag", run, timeout=10)
        assert control.reason == "stopped from the app"
    finally:
        control.close()
        signal.signal(signal.SIGTERM, previous)
