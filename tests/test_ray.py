"""Runs on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``: a head with its
dashboard, which serves the Jobs API, and a second node; one CPU each): ``tunelab train --target ray``
submits a job that runs ``tunelab.launch.ray_driver``, whose Ray Train workers run the recipe."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, sentiment_rows

from tunelab.launch import lifecycle
from tunelab.runs import Run, list_runs

pytest.importorskip("ray", reason="Ray is an optional dependency: pip install -e '.[ray]'")

WAIT_S = 120
STEPS = 8 * 144 // 8  # epochs x rows / (2 workers x 4)
BIN = Path(sys.executable).with_name("tunelab")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes with one CPU each (two one-CPU workers can only run one on each) and the head's
    dashboard on a free loopback port. Stopped after the module's tests."""
    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    head = {"num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
    # A lost node is known in about 1.5 s (Ray's defaults: 3 s x 5 failed health checks, after 5 s).
    head["_system_config"] = {
        "health_check_initial_delay_ms": 1000,
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 3,
    }
    made = Cluster(initialize_head=True, head_node_args=head)
    try:
        made.add_node(num_cpus=1)
        made.wait_for_nodes(timeout=WAIT_S)
        made.url = f"http://{made.head_node.address_info['webui_url']}"
        yield made
    finally:
        made.shutdown()


def tunelab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "RAY_DISABLE_USAGE_STATS": "1"},
        timeout=WAIT_S,
    )


def run_config(tiny_bert: Path, train_file: Path) -> dict:
    """Long enough to be stopped mid-training (8 epochs of 144 rows, 2 x 4 a step: 144 steps), a
    checkpoint every 5 steps, every step's loss logged."""
    return {
        "model_name_or_path": str(tiny_bert),
        "train_file": str(train_file),
        "num_train_epochs": 8,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "max_length": 32,
        "logging_steps": 1,
        "checkpointing_steps": 5,
        "mixed_precision": "no",
        "seed": 11,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-data") / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(160))
    return path


@pytest.fixture(scope="module")
def submitted(cluster, tiny_bert, data, tmp_path_factory):
    """`tunelab train cls --target ray --nodes 2 --wait`, uninterrupted: (the command's result, its run).
    From a project folder with a relative runs dir, as a user types it: the workers find the config."""
    project = tmp_path_factory.mktemp("ray-project")
    flags = [f"--{k}={v}" for k, v in run_config(tiny_bert, data).items()]
    proc = tunelab(
        *("train", "cls", "--target", "ray", "--ray-address", cluster.url, "--nodes", "2"),
        *("--cpus-per-node", "1", "--wait", "--runs-dir", "runs", *flags),
        cwd=project,
    )
    (run,) = list_runs(project / "runs")
    return proc, run


def train_losses(run: Run) -> dict[int, float]:
    return {e["step"]: e["train/loss"] for e in run.events("train")}


def test_train_target_ray_trains_two_gloo_workers_on_two_nodes_and_the_model_loads(submitted):
    proc, run = submitted
    status = run.status()
    assert proc.returncode == 0, (proc.stderr[-4000:], status)
    assert status["state"] == "finished", status
    job = status["ray"]["job_id"]
    assert f"Ray job {job}" in proc.stderr
    from ray.job_submission import JobSubmissionClient

    assert (
        JobSubmissionClient(status["ray"]["address"]).get_job_status(job).value == "SUCCEEDED"
    )  # Ray ran it
    log = (run.path / "train.log").read_text()
    assert "processes = 2, device = cpu" in log, log[-2000:]
    assert "total batch size (with parallel, accumulation) = 8" in log
    assert len(train_losses(run)) == STEPS
    assert "ray job submit --address" in run.command() and "--config runs/" in run.command()
    output = (run.path / "process.log").read_text()  # the job's output, also in the run folder
    assert "(RayTrainWorker pid=" in output and "processes = 2, device = cpu" in output, output[-3000:]

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run.path)
    tokenizer = AutoTokenizer.from_pretrained(run.path)
    logits = model(**tokenizer(["the film is great and superb"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)

    shown = tunelab("runs", "show", run.id, "--runs-dir", run.path.parent)
    assert f"ray (Ray job {job})" in shown.stdout, shown.stdout
    job_logs = shown.stdout.split(f"all: ray job logs {job} --address")[1]
    assert "(RayTrainWorker pid=" in job_logs, shown.stdout  # read from Ray through the Jobs API


def two_node_run(cluster, tiny_bert: Path, data: Path, runs_dir: Path, max_failures: int) -> Run:
    """A run of run_config() prepared for the cluster's two nodes, one worker on each."""
    from tunelab.launch import Resources

    run = lifecycle.prepare_run(
        "cls",
        run_config(tiny_bert, data),
        Resources(nodes=2, cpus_per_task=1),
        target="ray",
        target_options={"address": cluster.url, "max_failures": max_failures},
        runs_dir=runs_dir,
        cwd=ROOT,
    )
    assert f"--max-failures {max_failures}" in run.command()
    return run


def lose_second_node(cluster) -> None:
    """The second node dies (its raylet and workers killed, no grace) and a new one joins: room for the
    workers of a restarted worker group or of the next job."""
    (second,) = [node for node in cluster.list_all_nodes() if node is not cluster.head_node]
    cluster.remove_node(second, allow_graceful=False)
    cluster.add_node(num_cpus=1)


def assert_same_losses(run: Run, reference: Run) -> None:
    """Every step's training loss is the uninterrupted run's."""
    expected, losses = train_losses(reference), train_losses(run)
    assert len(expected) == STEPS and losses.keys() == expected.keys()
    for step, loss in expected.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-6), step


def until(condition, what: str, run: Run, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = (run.path / "process.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{run.status()}\n{log}")
        time.sleep(0.1)


def test_a_stopped_run_resumes_then_a_lost_node_fails_it_and_resume_ends_as_the_uninterrupted_run(
    cluster, tiny_bert, data, tmp_path, submitted
):
    """One run, three Ray jobs (each job start costs ~40 s on a 2-core VM, so the two interruptions share a
    run): stopped mid-run, it checkpoints and its job ends by itself; resumed, its second node dies (raylet
    and workers killed) after a new checkpoint, and with --max-failures 0 the run fails as Ray reports it,
    its checkpoint kept; resumed again, every step's loss is the uninterrupted run's."""
    run = two_node_run(cluster, tiny_bert, data, tmp_path, max_failures=0)
    first = lifecycle.start(run)
    until(lambda: int(run.status().get("step") or 0) >= 6, "step 6", run)  # early: CI's machines are fast
    said = lifecycle.stop(run, grace=WAIT_S)
    status = run.status()
    assert status["state"] == "stopped", (said, status)
    stopped_at = run.checkpoints()
    assert stopped_at
    assert status["ray"]["state"] == "SUCCEEDED"  # the job ended by itself, not by stop_job
    assert max(train_losses(run)) < STEPS

    lifecycle.resume(run)
    second = lifecycle.start(run)
    assert second.job_id != first.job_id
    until(lambda: run.checkpoints()[-1:] != stopped_at[-1:], "a checkpoint after the resume", run)
    lose_second_node(cluster)
    status = lifecycle.wait(run, second, timeout=WAIT_S)
    output = (run.path / "process.log").read_text(errors="replace")
    assert status["state"] == "failed" and status["ray"]["state"] == "FAILED", (status, output[-4000:])
    # Said by whichever tells first: the surviving rank (its peer is gone) or Ray (a worker failed).
    said = status["reason"]
    assert said.startswith((f"Ray job {second.job_id} ended FAILED: ", "crashed: ")) and "worker" in said, (
        said
    )
    assert run.checkpoints()

    lifecycle.resume(run)
    third = lifecycle.start(run)
    status = lifecycle.wait(run, third, timeout=WAIT_S)
    output = (run.path / "process.log").read_text(errors="replace")
    assert status["state"] == "finished" and status["ray"]["state"] == "SUCCEEDED", (status, output[-4000:])
    assert "Resumed from" in (run.path / "train.log").read_text()
    assert_same_losses(run, submitted[1])


def test_a_failed_recipe_fails_the_ray_run_with_the_recipes_reason(cluster, tmp_path):
    from tunelab.launch import Resources

    run = lifecycle.prepare_run(
        "cls",
        {"train_file": str(tmp_path / "missing.csv")},
        Resources(nodes=2),
        target="ray",
        target_options={"address": cluster.url},
        runs_dir=tmp_path / "runs",
        cwd=ROOT,
    )
    job = lifecycle.start(run)
    status = lifecycle.wait(run, job, timeout=WAIT_S)
    assert status["state"] == "failed", status
    assert "missing.csv" in status["reason"], status["reason"]
    assert status["ray"]["state"] == "FAILED"


def test_a_cluster_that_does_not_answer_is_one_line_and_no_run_folder(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    runs = tmp_path / "runs"
    proc = tunelab(
        *("train", "cls", "--target", "ray", "--ray-address", f"127.0.0.1:{closed}"),
        *("--runs-dir", runs, "--train_file", tmp_path / "x.csv"),
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"no Ray cluster answers at http://127.0.0.1:{closed}" in lines[0], proc.stderr
    assert not runs.exists() or not any(runs.iterdir())

    proc = tunelab("train", "cls", "--target", "ray", "--train_file", tmp_path / "x.csv", "--dry-run")
    assert "--target ray needs the cluster's address: --ray-address" in proc.stderr


def test_a_run_folder_the_node_cannot_write_is_refused_in_one_line(tmp_path, capsys):
    """What a runs dir that is not on a filesystem the cluster shares looks like from the node."""
    from tunelab.launch import ray_driver

    missing = tmp_path / "not-shared" / "run"
    code = ray_driver.main(["--workers", "2", "--run-dir", str(missing), "recipes/bert_cls.py"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"error: the run folder {missing} is not there on the Ray node {socket.gethostname()}: put the runs "
        "dir on a filesystem every node of the cluster shares"
    )


def test_a_run_submitted_from_the_app_to_the_ray_cluster_finishes_and_is_listed(
    cluster, tiny_bert, data, tmp_path
):
    """Train tab "Run on: Ray cluster" through gradio_client, the address and nodes from a targets file."""
    gradio_client = pytest.importorskip("gradio_client")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from app.ui import build_app, launch_options

    runs, data_dir = tmp_path / "runs", tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "reviews.csv").write_text(data.read_text())
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"ray:\n  address: {cluster.url}\n  nodes: 2\n")
    demo = build_app(runs, data_dir, targets_file=targets)
    _, url, _ = demo.launch(
        server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **launch_options(runs, data_dir)
    )
    try:
        client = gradio_client.Client(url, verbose=False)
        settings = {
            "task": "classification",
            "dataset": "reviews.csv",
            "base_kind": "local folder",
            "base_path": str(tiny_bert),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "max_train_samples": 0,
            "mixed_precision": "no",
            "target": "ray",
        }
        _, command = client.predict(json.dumps(settings), api_name="/preview_run")
        assert f"ray job submit --address {cluster.url}" in command and "--workers 2" in command, command
        message, run_id = client.predict(json.dumps(settings), api_name="/submit_run")
        assert run_id in message and "Ray cluster" in message, message
        run = Run(runs / run_id)
        until(lambda: lifecycle.refresh(run).get("state") in ("finished", "failed"), "the run to end", run)
        assert run.status()["state"] == "finished", run.status()
        assert "processes = 2, device = cpu" in (run.path / "train.log").read_text()
        listed = {r["id"]: r for r in client.predict(api_name="/list_runs")}
        assert listed[run_id]["state"] == "finished", listed
    finally:
        demo.tunelab_state.queue.shutdown()
        demo.close()


def test_a_lost_node_with_max_failures_restarts_the_workers_and_the_run_ends_as_uninterrupted(
    cluster, tiny_bert, data, tmp_path, submitted
):
    """The second node dies mid-run (its raylet and workers killed) and a new node joins: with
    --max-failures 1 Ray Train restarts the worker group and the recipe continues from its last checkpoint,
    within the same job; every step's loss is the uninterrupted run's."""
    run = two_node_run(cluster, tiny_bert, data, tmp_path, max_failures=1)
    job = lifecycle.start(run)
    until(lambda: run.checkpoints(), "the first checkpoint (step 5)", run)  # early: CI's machines are fast
    lose_second_node(cluster)
    status = lifecycle.wait(run, job, timeout=WAIT_S)
    output = (run.path / "process.log").read_text(errors="replace")
    assert status["state"] == "finished", (status, output[-4000:])
    assert status["ray"]["state"] == "SUCCEEDED" and status["attempts"] == 1, status  # one job, restarted
    assert "Resumed from" in (run.path / "train.log").read_text(), output[-4000:]
    assert_same_losses(run, submitted[1])


def test_a_failed_jobs_reason_is_the_drivers_line_even_when_rays_forwarded_logs_come_after_it():
    from tunelab.launch.ray_jobs import failure_line

    output = (
        "(RayTrainWorker pid=2916) RuntimeError: Connection closed by peer\n"
        "error: the run failed on the Ray cluster: Training failed due to worker errors: A worker health "
        "check failed\n"
        "(TrainController pid=2796) ray.exceptions.ActorDiedError: The actor died unexpectedly\n"
    )
    assert failure_line(output) == (
        "error: the run failed on the Ray cluster: Training failed due to worker errors: A worker health check "
        "failed"
    )
    assert (
        failure_line(output.splitlines()[0])
        == "(RayTrainWorker pid=2916) RuntimeError: Connection closed by peer"
    )
