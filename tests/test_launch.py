"""The launcher: one planner for every caller, on explicit hardware; run state under a lock; processes
known by more than their pid; the task registry and every shipped config."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from tunelab.args import parse_args
from tunelab.errors import ConfigError
from tunelab.hardware import Hardware, resolve_precision
from tunelab.launch import Resources, accelerate_command, lifecycle
from tunelab.launch.process import ProcessRef, boot_id, hostname, start_time
from tunelab.runs import Run
from tunelab.tasks import TASKS, get_task

RECIPE = ROOT / "recipes" / "bert_cls.py"
CPU = Hardware(gpus=0, cpus=2)
CPU_BF16 = Hardware(gpus=0, cpu_bf16=True, cpus=32)
ONE_GPU = Hardware(gpus=1, gpu_bf16=True, gpu_name="H200")
EIGHT_OLD_GPUS = Hardware(gpus=8, gpu_bf16=False, gpu_name="V100")


def plan(resources: Resources, hardware: Hardware, precision: str = "auto"):
    return accelerate_command(RECIPE, ["--config", "c.yaml"], resources, hardware, precision, cwd=ROOT)


# ---- the planner -----------------------------------------------------------------------------------


def test_cpu_machine_gets_one_fp32_process_with_accelerate_use_cpu():
    command = plan(Resources(), CPU)
    assert command.env == {"ACCELERATE_USE_CPU": "1"}
    assert command.text() == (
        "ACCELERATE_USE_CPU=1 accelerate launch --quiet --num_processes 1 --num_machines 1 "
        "--mixed_precision no --dynamo_backend no recipes/bert_cls.py --config c.yaml"
    )


def test_two_cpu_processes_take_the_only_form_that_links_them():
    # --cpu with 2 processes silently runs one; --multi_gpu without ACCELERATE_USE_CPU runs unlinked copies.
    command = plan(Resources(num_processes=2), CPU)
    assert command.env == {"ACCELERATE_USE_CPU": "1"}
    assert command.argv[:6] == ["accelerate", "launch", "--quiet", "--multi_gpu", "--num_processes", "2"]
    assert "--main_process_port" in command.argv and "--cpu" not in command.argv


def test_gpu_machine_plans_its_gpus_without_accelerate_use_cpu():
    one = plan(Resources(), ONE_GPU)
    assert one.env == {} and one.device == "cuda" and one.processes == 1 and one.precision == "bf16"
    assert "--multi_gpu" not in one.argv
    eight = plan(Resources(), EIGHT_OLD_GPUS)
    assert eight.env == {} and eight.processes == 8 and eight.precision == "fp16"  # no bf16 before Ampere
    assert "--multi_gpu" in eight.argv and eight.argv[eight.argv.index("--num_processes") + 1] == "8"
    chosen = plan(Resources(gpu_ids="2,5"), EIGHT_OLD_GPUS)
    assert chosen.processes == 2 and chosen.argv[chosen.argv.index("--gpu_ids") + 1] == "2,5"


def test_cpu_can_be_asked_for_on_a_gpu_machine_and_impossible_asks_fail_clearly():
    on_cpu = plan(Resources(device="cpu"), ONE_GPU)
    assert on_cpu.env == {"ACCELERATE_USE_CPU": "1"} and on_cpu.precision == "no"
    with pytest.raises(ConfigError, match="no GPU"):
        plan(Resources(device="cuda"), CPU)
    with pytest.raises(ConfigError, match="has 1 GPU"):
        plan(Resources(num_processes=4), ONE_GPU)
    with pytest.raises(ConfigError, match="GPUs 0 to 7"):
        plan(Resources(gpu_ids="8"), EIGHT_OLD_GPUS)
    with pytest.raises(ConfigError, match="positive whole number"):
        Resources(num_processes=0)


def test_auto_precision_follows_the_hardware_and_explicit_choices_win():
    assert resolve_precision("auto", CPU, on_gpu=False) == "no"
    assert resolve_precision("auto", CPU_BF16, on_gpu=False) == "bf16"
    assert plan(Resources(), CPU_BF16).precision == "bf16"
    assert plan(Resources(), ONE_GPU, "no").precision == "no"
    with pytest.raises(ConfigError, match="mixed_precision"):
        plan(Resources(), CPU, "fp8")


def test_app_and_cli_plan_the_same_command_on_this_machine(tmp_path, sentiment_csv):
    """The app's Train tab preview and `tunelab train --dry-run` for the same settings."""
    sys.path.insert(0, str(ROOT))
    from app.queue import RunQueue
    from app.state import AppState
    from app.train_tab import preview

    runs = tmp_path / "runs"
    state = AppState(runs_dir=runs, data_dir=sentiment_csv.parent, queue=RunQueue(runs, cwd=ROOT))
    settings = {"dataset": sentiment_csv.name, "num_train_epochs": 1, "learning_rate": 5e-5, "seed": 3}
    app_config, app_command = preview(state, settings)
    config = yaml.safe_load(app_config.replace("<data>/", f"{sentiment_csv.parent}/"))
    config = {k: v for k, v in config.items() if v is not None and k != "output_dir"}
    config_file = tmp_path / "same.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "train", "cls", "--config", str(config_file), "--dry-run"]
        + ["--runs-dir", str(runs), "--output_dir", str(runs / "RUN-ID")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    cli_command = out.strip().splitlines()[-1]
    assert app_command.replace("runs/<run-id>", "RUN") == cli_command.replace(
        str((runs / "RUN-ID").relative_to(ROOT) if runs.is_relative_to(ROOT) else runs / "RUN-ID"), "RUN"
    )
    assert app_command.startswith("ACCELERATE_USE_CPU=1 accelerate launch --quiet --num_processes 1")


def test_the_app_plans_a_gpu_machine_for_its_gpus(tmp_path, sentiment_csv):
    sys.path.insert(0, str(ROOT))
    from app.queue import RunQueue
    from app.state import AppState
    from app.train_tab import preview

    runs = tmp_path / "runs"
    gpu_box = Hardware(gpus=2, gpu_bf16=True, gpu_name="H200")
    state = AppState(runs_dir=runs, data_dir=sentiment_csv.parent, queue=RunQueue(runs), hardware=gpu_box)
    _, command = preview(state, {"dataset": sentiment_csv.name})
    assert "ACCELERATE_USE_CPU" not in command
    assert "--multi_gpu --num_processes 2" in command and "--mixed_precision bf16" in command
    config, command = preview(state, {"dataset": sentiment_csv.name, "num_processes": 3})
    assert command == "" and "has 2 GPU" in config  # refused with the reason, not planned for the CPU


PROBE = """
import json, os, sys
import torch
keys = ("ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_DYNAMO_BACKEND", "OMP_NUM_THREADS",
        "KMP_BLOCKTIME", "MASTER_PORT", "TUNELAB_PROBE")
print(json.dumps({"env": {k: os.environ.get(k) for k in keys}, "argv": sys.argv, "name": __name__,
                  "path0": sys.path[0], "threads": torch.get_num_threads()}))
sys.exit(int(sys.argv[-1]))
"""


@pytest.mark.parametrize("precision", ["bf16", "no"])
def test_a_one_process_run_gets_what_accelerate_launch_gives_it_in_one_interpreter(tmp_path, precision):
    """executable() runs one process without accelerate's second interpreter (tunelab.launch.inline):
    the script sees the environment, argv, __name__, sys.path[0] and threads that `accelerate launch`
    gives it, and its exit status comes back."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    command = accelerate_command(script, ["--flag", "a b", "3"], Resources(device="cpu"), CPU, precision)
    env = {**os.environ, **command.env, "TUNELAB_PROBE": "kept"}
    env.pop("OMP_NUM_THREADS", None)
    seen = []
    for argv in (
        command.executable(),
        [sys.executable, "-m", "accelerate.commands.launch", *command.argv[2:]],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert proc.returncode != 0, proc.stderr  # the script's exit status 3 (accelerate says 1)
        seen.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    inline, accelerate = seen
    assert "tunelab.launch.inline" in command.executable()
    assert inline == accelerate
    assert inline["env"]["ACCELERATE_MIXED_PRECISION"] == precision and inline["name"] == "__main__"
    assert inline["argv"][1:] == ["--flag", "a b", "3"] and inline["path0"] == str(tmp_path)


def test_several_processes_still_go_through_accelerates_launcher(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    command = accelerate_command(script, ["0"], Resources(device="cpu", num_processes=2), CPU, "no")
    proc = subprocess.run(
        command.executable(),
        capture_output=True,
        text=True,
        env={**os.environ, **command.env},
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ranks = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(ranks) == 2 and all(r["env"]["MASTER_PORT"] for r in ranks)


# ---- the task registry -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_shipped_config_parses_against_its_recipes_arguments(task):
    configs = get_task(task).configs()
    assert configs, f"no configs shipped for {task} in {get_task(task).configs_dir}"
    assert get_task(task).recipe_path().is_file()
    for config in configs:
        parsed = parse_args(get_task(task).argument_types(), ["--config", str(config)])
        assert len(parsed) == len(get_task(task).arguments), config


def test_shipped_sweep_spaces_parse_against_their_recipes():
    from tunelab.sweep import load_space

    for space_file in sorted((ROOT / "recipes" / "configs" / "sweeps").glob("*.yaml")):
        task = get_task(space_file.stem.split("_")[0])
        assert load_space(space_file, task.argument_types()), space_file


def test_app_and_status_names_come_from_the_registry():
    assert get_task("classification") is get_task("cls")
    with pytest.raises(ConfigError, match="unknown task"):
        get_task("regression")


# ---- run state -------------------------------------------------------------------------------------


def _writer(path: str, index: int, rounds: int) -> None:
    run = Run(Path(path))
    for r in range(rounds):
        run.update_status(**{f"w{index}_{r}": r})


def test_concurrent_status_writers_lose_no_field(tmp_path):
    """The recipe, the app's scheduler and `tunelab runs stop` write status.json at the same time."""
    run = Run(tmp_path / "run")
    run.update_status(state="queued")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(str(run.path), i, 200)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    status = run.status()
    assert all(f"w{i}_{r}" in status for i in range(2) for r in range(200))
    assert status["state"] == "queued"


def test_elapsed_time_sums_every_attempt(tmp_path):
    """Bounded by the clock read around each status change, so a slow machine cannot fail it: the time
    between attempts (0.3 s) never counts."""
    run = Run(tmp_path / "run")

    def attempt(ending: str) -> tuple[float, float]:
        """(the least, the most) time this attempt can have run."""
        before = time.time()
        run.update_status(state="running")
        started = time.time()
        time.sleep(0.2)
        ending_at = time.time()
        run.update_status(state=ending)
        return ending_at - started, time.time() - before

    least, most = attempt("stopped")
    assert least <= run.elapsed() <= most
    time.sleep(0.3)  # time between attempts does not count
    second_least, second_most = attempt("finished")
    assert least + second_least <= run.elapsed() <= most + second_most


def test_a_watcher_never_overwrites_an_ending(tmp_path):
    run = Run(tmp_path / "run")
    run.update_status(state="finished")
    assert run.update_status(expect=("running",), state="failed") is None
    assert run.state == "finished"


# ---- processes --------------------------------------------------------------------------------------


def _running_run(tmp_path: Path, process: dict) -> Run:
    run = lifecycle.prepare_run("cls", {"train_file": "x.csv"}, runs_dir=tmp_path, cwd=tmp_path)
    run.update_status(state="running", process=process)
    return run


def test_a_reused_pid_is_not_taken_for_the_live_run(tmp_path):
    """After a restart a recorded pid can name an unrelated process: it is neither alive nor signalled."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        recorded = {
            "pid": stranger.pid,
            "pgid": stranger.pid,
            "start": (start_time(stranger.pid) or 0) - 1000,  # the run's process started earlier
            "boot": boot_id(),
            "host": hostname(),
        }
        run = _running_run(tmp_path, recorded)
        status = lifecycle.refresh(run)
        assert status["state"] == "failed" and "ended unexpectedly" in status["reason"]
        # A folder of an older TuneLab records the pid alone: the stranger lacks the run's marker.
        old = _running_run(tmp_path, {"pid": stranger.pid, "pgid": stranger.pid})
        assert lifecycle.refresh(old)["state"] == "failed"
        with pytest.raises(lifecycle.LaunchError, match="not running"):
            lifecycle.stop(old, grace=1)
        time.sleep(0.2)
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_run_of_another_machine_is_left_as_it_is(tmp_path):
    elsewhere = {"pid": 1, "pgid": 1, "start": 1, "boot": "other-boot", "host": "node-7"}
    run = _running_run(tmp_path, elsewhere)
    assert lifecycle.refresh(run)["state"] == "running"
    assert not lifecycle.is_local_and_running_here(run) or ProcessRef.from_dict(elsewhere).on_this_machine()


def test_dead_processes_mark_the_run_failed_with_the_launchers_reason(tmp_path):
    run = _running_run(tmp_path, {})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; print('RuntimeError: CUDA error: device-side assert'); sys.exit(1)",
        ],
        stdout=open(run.path / "process.log", "w"),  # noqa: SIM115
        env={**os.environ, "TUNELAB_RUN_ID": run.id},
        start_new_session=True,
    )
    run.update_status(process=ProcessRef.of(proc.pid).to_dict())
    proc.wait()
    status = lifecycle.refresh(run)
    assert status["state"] == "failed"
    assert "device-side assert" in status["reason"]


def test_prepare_writes_config_launch_record_and_command_once(tmp_path):
    run = lifecycle.prepare_run(
        "cls",
        {"train_file": "data.csv", "learning_rate": 1e-4},
        Resources(num_processes=2),
        runs_dir=tmp_path,
    )
    assert run.state == "queued" and run.config()["learning_rate"] == 1e-4
    record = json.loads((run.path / "launch.json").read_text())
    assert record["task"] == "cls" and record["resources"]["num_processes"] == 2
    assert (
        "--multi_gpu --num_processes 2" in run.command() and "--resume_from_checkpoint" not in run.command()
    )
    with pytest.raises(ConfigError, match="learnig_rate"):
        lifecycle.prepare_run("cls", {"learnig_rate": 1}, runs_dir=tmp_path)


def test_a_command_txt_edited_to_run_something_else_is_not_run(tmp_path):
    """Resume plans the run again from config.yaml and launch.json; text in the run folder never runs."""
    marker = tmp_path / "ran"
    run = lifecycle.prepare_run(
        "cls", {"train_file": str(tmp_path / "missing.csv")}, runs_dir=tmp_path, cwd=ROOT
    )
    (run.path / "command.txt").write_text(f"touch {marker} && accelerate launch recipes/bert_cls.py\n")
    proc = lifecycle.start(run)
    status = lifecycle.wait(run, proc, timeout=120)
    assert not marker.exists()
    log = (run.path / "process.log").read_text()
    assert "recipes/bert_cls.py --config" in log and "touch" not in log
    assert status["state"] == "failed" and "missing.csv" in status["reason"]  # the recipe's own check ran
