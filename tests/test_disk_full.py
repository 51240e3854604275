"""A full disk is one line, keeps the last good checkpoint, leaves no temp folder, and the run resumes once
space is freed: a real run on a small tmpfs, and each write site made to fail the ways a full disk fails."""

from __future__ import annotations

import errno
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, sentiment_rows, tmpfs
from test_lifecycle import WAIT_S, write_csv

from tunelab.errors import DiskFullError, writing
from tunelab.launch import lifecycle
from tunelab.runs import EventWriter, Run

ONE_LINE = re.compile(r"disk full while writing (.+) in (\S+): free (\d+) MB and resume")


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs: room for the run and one checkpoint of the tiny BERT, not for a second."""
    with tmpfs(tmp_path / "disk", "40m") as mount:
        yield mount


def test_a_full_disk_is_one_line_keeps_the_last_checkpoint_and_the_run_resumes(
    small_disk, tiny_bert, tmp_path
):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(144))
    config = {
        "train_file": str(train),
        "model_name_or_path": str(tiny_bert),
        "per_device_train_batch_size": 8,
        "max_train_steps": 8,
        "checkpointing_steps": "2",
        "save_total_limit": 3,
        "seed": 7,
    }
    run = lifecycle.prepare_run("cls", config, runs_dir=small_disk, cwd=ROOT)
    status = lifecycle.wait(run, lifecycle.start(run), timeout=WAIT_S)
    log = (run.path / "process.log").read_text(errors="replace")
    assert status["state"] == "failed", log[-3000:]
    match = ONE_LINE.fullmatch(status["reason"])
    assert match, status["reason"]
    assert match.group(1) == "checkpoint step-4" and match.group(2) == str(run.path / "checkpoints")
    assert 10 <= int(match.group(3)) <= 60  # about one checkpoint of this model
    assert "Traceback" not in log
    checkpoints = sorted(p.name for p in (run.path / "checkpoints").iterdir())
    assert checkpoints == ["step-2"]  # intact, and no .tmp-step-4 taking the space
    assert (run.path / "checkpoints" / "step-2" / "trainer_state.json").exists()

    # The user frees space (here: the disk grows) and resumes; the run continues from step 2.
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    lifecycle.resume(run)
    status = lifecycle.wait(run, lifecycle.start(run), timeout=WAIT_S)
    assert status["state"] == "finished", (run.path / "process.log").read_text()[-3000:]
    assert "Resumed from" in (run.path / "train.log").read_text()
    assert (run.path / "model.safetensors").exists()


# ---- each write site, failing as a full disk fails -------------------------------------------------


def raise_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def raise_safetensors_error(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


@pytest.mark.parametrize("failure", [raise_enospc, raise_safetensors_error])
def test_a_checkpoint_that_cannot_be_written_leaves_the_last_one_and_no_temp_folder(
    failure, accelerator, tmp_path, monkeypatch
):
    import torch

    from tunelab.train import TrainState, save_checkpoint

    model, optimizer = accelerator.prepare(
        torch.nn.Linear(4, 2), torch.optim.AdamW(torch.nn.Linear(4, 2).parameters())
    )
    state = TrainState(global_step=2)
    first = save_checkpoint(accelerator, state, tmp_path, keep=3)
    real_save_state = accelerator.save_state

    def save_then_fail(folder):  # half a checkpoint is written, then the disk is full
        real_save_state(folder)
        failure()

    monkeypatch.setattr(accelerator, "save_state", save_then_fail)
    state.global_step = 4
    with pytest.raises(DiskFullError) as error:
        save_checkpoint(accelerator, state, tmp_path, keep=3)
    assert ONE_LINE.fullmatch(str(error.value)).group(1) == "checkpoint step-4"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [first.name]


@pytest.mark.parametrize("failure", [raise_enospc, raise_safetensors_error])
def test_the_best_model_that_cannot_be_written_keeps_the_previous_best(
    failure, accelerator, tmp_path, monkeypatch
):
    import torch

    from tunelab.train import save_best_model

    model = accelerator.prepare(torch.nn.Linear(4, 2))
    best = tmp_path / "checkpoints" / "best"
    save_best_model(accelerator, model, best)
    before = {p.name: p.read_bytes() for p in best.iterdir()}
    monkeypatch.setattr(accelerator, "save_model", failure)
    with pytest.raises(DiskFullError, match="disk full while writing the best model in"):
        save_best_model(accelerator, model, best)
    assert {p.name: p.read_bytes() for p in best.iterdir()} == before
    assert sorted(p.name for p in best.parent.iterdir()) == ["best"]


def test_an_event_that_cannot_be_written_names_events_jsonl(tmp_path, monkeypatch):
    events = EventWriter(tmp_path)
    monkeypatch.setattr(
        events, "_file", type("Full", (), {"name": str(tmp_path / "events.jsonl"), "write": raise_enospc})()
    )
    with pytest.raises(DiskFullError, match=f"disk full while writing events.jsonl in {tmp_path}: free"):
        events.write("train", step=1)


def test_the_final_model_that_cannot_be_written_fails_the_run_with_one_line(tmp_path):
    import torch

    from tunelab.recipe import failure_reason, saving

    run = Run(tmp_path / "run")
    run.update_status(state="running")
    with pytest.raises(DiskFullError) as error, saving(run, torch.nn.Linear(1000, 1000)):
        raise_safetensors_error()
    match = ONE_LINE.fullmatch(failure_reason(error.value))
    assert match and match.group(1) == "the final model" and match.group(2) == str(run.path)


def test_status_json_is_rewritten_in_place_when_no_temp_file_fits(tmp_path, monkeypatch):
    """A run that fails for lack of space can still say so in status.json."""
    run = Run(tmp_path / "run")
    run.update_status(state="running", step=3, reason="x" * 200)
    real_write_text = Path.write_text

    def full_for_new_files(self, *args, **kwargs):
        if self.name.startswith(".status.json."):
            raise_enospc()
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_for_new_files)
    run.update_status(
        state="failed", reason="disk full while writing checkpoint step-4 in x: free 5 MB and resume"
    )
    assert run.status()["state"] == "failed" and run.status()["step"] == 3
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


def test_other_errors_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(ValueError), writing("x", tmp_path):
        raise ValueError("not a disk problem")
