"""Runs on a real Slurm cluster: a one-node slurmctld + slurmd on this machine (tests/slurm_cluster.py),
driven through `tunelab train --target slurm` and tunelab.launch. No mock scheduler: every job here is
really submitted with sbatch, scheduled, run with srun, cancelled or requeued by Slurm."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, sentiment_rows
from slurm_cluster import SlurmCluster, missing_binaries

from tunelab.launch import lifecycle, slurm
from tunelab.launch.command import Resources
from tunelab.runs import Run, list_runs

WAIT_S = 120  # every wait on the cluster
BIN = Path(sys.executable).with_name("tunelab")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"needs Slurm ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons run as root")
    cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm_env(cluster, monkeypatch):
    """Slurm commands of this process (tunelab.launch.slurm) and its children talk to the test cluster."""
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    return cluster


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("slurm-data")
    files = {}
    for name, n, seed in (("train", 96, 0), ("validation", 64, 1)):
        path = folder / f"{name}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(sentiment_rows(n, seed=seed))
        files[f"{name}_file"] = str(path)
    return files


def config(tiny_bert: Path, data: dict[str, str], **overrides) -> dict:
    return {
        **data,
        "model_name_or_path": str(tiny_bert),
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "num_train_epochs": 3,
        "logging_steps": 1,
        "seed": 11,
        **overrides,
    }


def failure_detail(cluster: SlurmCluster, run: Run) -> str:
    job = (run.status().get("slurm") or {}).get("job_id")
    shown = cluster.run(["scontrol", "show", "job", str(job)], check=False).stdout if job else ""
    queue = cluster.run(["squeue"], check=False).stdout
    log = (
        (run.path / "process.log").read_text(errors="replace")[-3000:]
        if (run.path / "process.log").exists()
        else ""
    )
    return (
        f"status: {json.dumps(run.status())}\nsqueue:\n{queue}\nscontrol show job:\n{shown}\n"
        f"process.log:\n{log}\n{cluster.log_tail()}"
    )


def until(condition, what: str, cluster: SlurmCluster, run: Run, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{failure_detail(cluster, run)}")
        time.sleep(0.2)


def finish(cluster: SlurmCluster, run: Run, job) -> dict:
    try:
        status = lifecycle.wait(run, job, timeout=WAIT_S)
    except Exception as e:  # noqa: BLE001 - a timeout fails with Slurm's view and the logs
        pytest.fail(f"{e}\n{failure_detail(cluster, run)}")
    assert status["state"] == "finished", failure_detail(cluster, run)
    return status


def train_losses(run: Run) -> dict[int, float]:
    return {e["step"]: e["train/loss"] for e in run.events("train")}


def tunelab(*args: str, env: dict | None = None):
    import subprocess

    return subprocess.run(
        [str(BIN), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=WAIT_S,
    )


# ---- submit and watch -----------------------------------------------------------------------------


def test_train_target_slurm_submits_a_job_that_trains_a_loadable_model(slurm_env, tiny_bert, data, tmp_path):
    """`tunelab train cls --target slurm` writes job.sbatch, submits it, and the job's run learns."""
    runs = tmp_path / "runs"
    flags = [f"--{k}={v}" for k, v in config(tiny_bert, data).items()]
    proc = tunelab("train", "cls", "--target", "slurm", "--cpus-per-task", "1", "--runs-dir", runs, *flags)
    assert proc.returncode == 0, proc.stderr
    (run,) = list_runs(runs)
    job = run.status()["slurm"]["job_id"]
    assert f"Slurm job {job}" in proc.stderr
    script = (run.path / "job.sbatch").read_text()
    assert "#SBATCH --requeue" in script and "srun " in script and "--resume_from_checkpoint latest" in script
    assert slurm_env.job_info(job) is not None  # Slurm really has the job

    finish(slurm_env, run, lifecycle.SlurmJob(run, job))
    assert slurm_env.job_state(job) == "COMPLETED"
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(run.path)
    assert model.config.num_labels == 2
    metrics = json.loads((run.path / "eval_results.json").read_text())
    assert metrics["eval/accuracy"] >= 0.8  # the majority baseline is 0.5

    listed = tunelab("runs", "list", "--runs-dir", runs)
    assert run.id in listed.stdout and "finished" in listed.stdout, listed.stdout
    shown = tunelab("runs", "show", run.id, "--runs-dir", runs)
    assert f"slurm (Slurm job {job}" in shown.stdout, shown.stdout


def test_two_cpu_processes_inside_one_job_train_as_one_ddp_run(slurm_env, tiny_bert, data, tmp_path):
    run = lifecycle.prepare_run(
        "cls",
        config(tiny_bert, data, num_train_epochs=1, checkpointing_steps=4),
        Resources(num_processes=2, cpus_per_task=2),
        target="slurm",
        runs_dir=tmp_path,
        cwd=ROOT,
    )
    finish(slurm_env, run, lifecycle.start(run))
    log = (run.path / "train.log").read_text()
    assert "processes = 2, device = cpu" in log
    state = json.loads((run.checkpoints()[-1] / "trainer_state.json").read_text())
    assert state["world_size"] == 2


def test_a_pending_job_shows_slurms_reason(slurm_env, tiny_bert, data, tmp_path):
    """A job Slurm holds is queued with its reason (here JobHeldUser), and Stop removes it from the queue."""
    run = lifecycle.prepare_run(
        "cls",
        config(tiny_bert, data),
        target="slurm",
        target_options={"sbatch_args": ["--hold"]},
        runs_dir=tmp_path,
        cwd=ROOT,
    )
    job = lifecycle.start(run)
    status = until(
        lambda: (s := lifecycle.refresh(run))["slurm"].get("reason") and s,
        "the pending reason",
        slurm_env,
        run,
    )
    assert status["state"] == "queued"
    assert status["slurm"]["state"] == "PENDING" and status["slurm"]["reason"] == "JobHeldUser"
    assert lifecycle.stop(run) == "removed from the queue"
    assert slurm_env.wait_for_state(job.job_id, {"CANCELLED"}, timeout=WAIT_S) == "CANCELLED"
    assert run.status()["state"] == "stopped"


# ---- stop, resume, requeue ------------------------------------------------------------------------


def long_config(tiny_bert: Path, data: dict[str, str]) -> dict:
    """Long enough to be stopped or requeued mid-training; a checkpoint every 5 steps."""
    return config(
        tiny_bert,
        data,
        num_train_epochs=8,
        checkpointing_steps=5,
        mixed_precision="no",
        per_device_train_batch_size=4,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert, data) -> Run:
    """The same run, uninterrupted, on this machine: what a stopped or requeued Slurm run must equal."""
    run = lifecycle.prepare_run(
        "cls", long_config(tiny_bert, data), runs_dir=tmp_path_factory.mktemp("ref"), cwd=ROOT
    )
    status = lifecycle.wait(run, lifecycle.start(run), timeout=WAIT_S)
    assert status["state"] == "finished", (run.path / "process.log").read_text()[-3000:]
    return run


def assert_same_losses(run: Run, reference: Run) -> None:
    ref, losses = train_losses(reference), train_losses(run)
    assert len(ref) == 8 * 24 and losses.keys() == ref.keys()
    for step, loss in ref.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-6), step


def step_of(run: Run) -> int:
    return int(run.status().get("step") or 0)


def test_stop_mid_run_checkpoints_and_resume_submits_a_job_that_finishes(
    slurm_env, tiny_bert, data, tmp_path, reference
):
    run = lifecycle.prepare_run(
        "cls", long_config(tiny_bert, data), target="slurm", runs_dir=tmp_path, cwd=ROOT
    )
    first = lifecycle.start(run)
    until(lambda: step_of(run) >= 12, "step 12", slurm_env, run)
    said = lifecycle.stop(run, grace=WAIT_S)
    status = run.status()
    assert status["state"] == "stopped", (said, failure_detail(slurm_env, run))
    assert run.checkpoints(), failure_detail(slurm_env, run)
    assert slurm_env.job_state(first.job_id) == "COMPLETED"  # it ended by itself, not by scancel
    stopped_at = max(train_losses(run))
    assert stopped_at < 8 * 24

    lifecycle.resume(run)
    second = lifecycle.start(run)
    assert second.job_id != first.job_id
    finish(slurm_env, run, second)
    assert "Resumed from" in (run.path / "train.log").read_text()
    assert_same_losses(run, reference)


# How Slurm ends a job that must run again: a preemption or `scontrol requeue` signals every process of
# the job and puts it back in the queue; the time-limit warning (--signal=B:USR1@N) signals only the
# batch script, which checkpoints the run and requeues its own job.
INTERRUPTIONS = {
    "preempted": ["scontrol", "requeue"],
    "time-limit warning": ["scancel", "--batch", "--signal=USR1"],
}


@pytest.mark.parametrize("interruption", sorted(INTERRUPTIONS))
def test_a_job_requeued_mid_training_resumes_and_ends_as_the_uninterrupted_run(
    slurm_env, tiny_bert, data, tmp_path, reference, interruption
):
    """The requeued job continues from the newest checkpoint; the per-step losses equal the
    uninterrupted run's."""
    run = lifecycle.prepare_run(
        "cls", long_config(tiny_bert, data), target="slurm", runs_dir=tmp_path, cwd=ROOT
    )
    job = lifecycle.start(run)
    until(lambda: step_of(run) >= 12, "step 12", slurm_env, run)
    slurm_env.run([*INTERRUPTIONS[interruption], job.job_id])
    until(
        lambda: lifecycle.refresh(run)["state"] == "queued" or step_of(run) < 12,
        "the run to be queued again",
        slurm_env,
        run,
    )
    finish(slurm_env, run, job)
    info = slurm_env.job_info(job.job_id)
    assert info is not None and int(info["Restarts"]) >= 1, info  # the same job ran twice
    assert "Resumed from" in (run.path / "train.log").read_text()
    assert_same_losses(run, reference)


def test_a_job_cancelled_outside_tunelab_is_failed_with_slurms_state(slurm_env, tiny_bert, data, tmp_path):
    """`scancel` from a terminal (or an admin): the run does not stay "running" forever."""
    run = lifecycle.prepare_run(
        "cls", long_config(tiny_bert, data), target="slurm", runs_dir=tmp_path, cwd=ROOT
    )
    job = lifecycle.start(run)
    until(lambda: step_of(run) >= 5, "step 5", slurm_env, run)
    slurm_env.run(["scancel", job.job_id])
    status = lifecycle.wait(run, job, timeout=WAIT_S)
    assert status["state"] in ("failed", "stopped"), failure_detail(slurm_env, run)
    if status["state"] == "failed":  # the recipe was killed before it could record its ending
        assert f"Slurm job {job.job_id} ended CANCELLED" in status["reason"], status
    assert run.checkpoints()  # what it had saved is kept for a resume


# ---- the app --------------------------------------------------------------------------------------


def test_a_run_submitted_from_the_app_stops_resumes_and_finishes_on_slurm(
    slurm_env, tiny_bert, data, tmp_path
):
    """Train tab "Run on: Slurm cluster" through gradio_client, with defaults from a targets file; Stop
    and Resume in the Runs tab work as for a local run."""
    gradio_client = pytest.importorskip("gradio_client")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from app.ui import build_app, launch_options

    runs, data_dir = tmp_path / "runs", tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "reviews.csv").write_text(Path(data["train_file"]).read_text())
    targets = tmp_path / "targets.yaml"
    targets.write_text('slurm:\n  partition: debug\n  time: "00:30:00"\n  cpus_per_task: 1\n')
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
            "num_train_epochs": 8,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "max_train_samples": 0,
            "mixed_precision": "no",
            "logging_steps": 1,
            "checkpointing_steps": "5",
            "target": "slurm",
        }
        _, command = client.predict(json.dumps(settings), api_name="/preview_run")
        assert "#SBATCH --partition=debug" in command and "#SBATCH --time=00:30:00" in command
        message, run_id = client.predict(json.dumps(settings), api_name="/submit_run")
        assert run_id in message and "Slurm" in message
        run = Run(runs / run_id)
        until(lambda: step_of(run) >= 12, "step 12", slurm_env, run)
        first = run.status()["slurm"]["job_id"]
        client.predict(run_id, api_name="/stop_run")
        until(lambda: run.status().get("state") == "stopped", "the run to stop", slurm_env, run)
        assert run.checkpoints()
        client.predict(run_id, api_name="/resume_run")
        until(
            lambda: (run.status().get("slurm") or {}).get("job_id") not in (None, first),
            "a new Slurm job",
            slurm_env,
            run,
        )
        job = run.status()["slurm"]["job_id"]
        until(lambda: run.status().get("state") == "finished", "the run to finish", slurm_env, run)
        assert slurm_env.wait_for_state(job, {"COMPLETED", "FAILED"}, timeout=WAIT_S) == "COMPLETED"
        assert "Resumed from" in (run.path / "train.log").read_text()
        listed = {r["id"]: r for r in client.predict(api_name="/list_runs")}
        assert listed[run_id]["state"] == "finished", listed
        assert "#SBATCH --cpus-per-task=1" in (run.path / "job.sbatch").read_text()
    finally:
        demo.tunelab_state.queue.shutdown()
        demo.close()


# ---- bad input ------------------------------------------------------------------------------------


def assert_one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], proc.stderr
    return errors[0]


def test_no_slurm_on_the_path_is_one_line_and_writes_no_run(tmp_path, tiny_bert, data):
    env = {"PATH": str(Path(sys.executable).parent)}  # the venv only: no sbatch
    flags = [f"--{k}={v}" for k, v in config(tiny_bert, data).items()]
    proc = tunelab("train", "cls", "--target", "slurm", "--runs-dir", tmp_path / "runs", *flags, env=env)
    assert_one_line_error(proc, "`sbatch` is not on the PATH")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--partition", "gpu-big"], ["partition 'gpu-big' is not on this cluster", "debug"]),
        (["--nodes", "3"], ["Slurm refused `sbatch --test-only`", "node"]),
        (["--time", "soon"], ["is not a Slurm time limit"]),
    ],
)
def test_what_slurm_would_refuse_is_one_line_and_writes_no_run(
    slurm_env, tmp_path, tiny_bert, data, flags, fragments
):
    runs = tmp_path / "runs"
    options = [f"--{k}={v}" for k, v in config(tiny_bert, data).items()]
    proc = tunelab("train", "cls", "--target", "slurm", *flags, "--runs-dir", runs, *options)
    assert_one_line_error(proc, *fragments)
    assert not runs.exists() or not any(runs.iterdir())
    assert not slurm_env.job_ids()


def test_cluster_options_without_target_slurm_are_refused(tmp_path, tiny_bert, data):
    proc = tunelab(
        "train", "cls", "--partition", "debug", "--runs-dir", tmp_path, "--train_file", data["train_file"]
    )
    assert_one_line_error(proc, "--partition", "--target slurm")


def test_a_jobcomp_line_is_read_with_its_spaces_kept():
    record = slurm.parse_record(
        "JobId=7 UserId=root(0) GroupId=root(0) Name=tunelab-x JobState=FAILED Partition=debug "
        "TimeLimit=UNLIMITED StartTime=2026-12-04T02:00:00 NodeList=vm ExitCode=1:0 WorkDir=/a b"
    )
    assert record["JobState"] == "FAILED" and record["ExitCode"] == "1:0" and record["WorkDir"] == "/a b"


def test_targets_file_defaults_reach_the_job_script_and_the_command_line_wins(tmp_path, data):
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        'slurm:\n  partition: gpu\n  time: "04:00:00"\n  gpus_per_node: 2\n  sbatch_args: ["--constraint=a100"]\n'
    )
    proc = tunelab(
        "train", "cls", "--target", "slurm", "--targets", targets, "--time", "01:00:00", "--sbatch-arg", "--qos=high", "--dry-run",
        "--runs-dir", tmp_path / "runs", "--train_file", data["train_file"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for line in (
        "--partition=gpu",
        "--time=01:00:00",
        "--gpus-per-node=2",
        "--constraint=a100",
        "--qos=high",
    ):
        assert f"#SBATCH {line}" in script, script
    # two GPUs on each node: two processes, no CPU flag, the recipe picks bf16/fp16 on the node itself
    assert "--num_processes 2" in script and "ACCELERATE_USE_CPU" not in script
    assert not (tmp_path / "runs").exists()


def test_a_broken_targets_file_is_one_line_naming_the_place(tmp_path, data):
    targets = tmp_path / "targets.yaml"
    targets.write_text("slurm:\n  partition: [gpu\n")
    proc = tunelab(
        "train",
        "cls",
        "--target",
        "slurm",
        "--targets",
        targets,
        "--dry-run",
        "--train_file",
        data["train_file"],
    )
    assert_one_line_error(proc, str(targets), "is not valid YAML (line 3")
    proc = tunelab("app", "--targets", tmp_path / "missing.yaml")
    assert_one_line_error(proc, "missing.yaml does not exist")
