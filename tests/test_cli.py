"""The `tunelab` command, run for real as the installed console script in subprocesses."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, sentiment_rows, tmpfs

from tunelab.launch.process import ProcessRef
from tunelab.runs import Run

BIN = Path(sys.executable).with_name("tunelab")


def tunelab(
    *args: str, env: dict | None = None, input: str | None = None, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN), *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0], proc.stderr


# ---- help ----------------------------------------------------------------------------------------


def test_console_script_is_installed_and_help_lists_every_command():
    assert BIN.exists(), f"{BIN} missing: `pip install -e .` installs the console script"
    proc = tunelab("--help")
    assert proc.returncode == 0
    for command in ("app", "train", "runs", "classify", "generate", "chat", "push"):
        assert f"    {command}" in proc.stdout
    assert "examples:" in proc.stdout
    module = subprocess.run([sys.executable, "-m", "tunelab.cli", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout == proc.stdout


@pytest.mark.parametrize(
    "command",
    [
        "app",
        "train",
        "runs",
        "runs list",
        "runs show",
        "runs stop",
        "runs resume",
        "runs rm",
        "classify",
        "generate",
        "chat",
        "push",
    ],
)
def test_every_subcommand_help_has_a_description_and_examples(command):
    proc = tunelab(*command.split(), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: tunelab {command}")
    assert "examples:\n  tunelab " in proc.stdout
    assert "--debug" in proc.stdout and "--quiet" in proc.stdout


def test_push_help_says_the_token_is_never_an_argument():
    proc = tunelab("push", "--help")
    assert "--token" not in proc.stdout and "HF_TOKEN" in proc.stdout


# ---- train: dry run ------------------------------------------------------------------------------


def dry_run_parts(stdout: str) -> tuple[dict, str]:
    text, _, command = stdout.partition("# command (not run: --dry-run)\n")
    return yaml.safe_load(text), command.strip()


def test_train_dry_run_prints_resolved_yaml_and_command_and_trains_nothing(tmp_path):
    tiny_bert = tmp_path / "some-model"  # a dry run loads no model
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model_name_or_path: {tiny_bert}\ntrain_file: {data}\nlearning_rate: 0.001\n")
    runs = tmp_path / "runs"
    proc = tunelab(
        "train", "cls", "--config", config, "--num_train_epochs", "2", "--dry-run", "--runs-dir", runs
    )
    assert proc.returncode == 0, proc.stderr
    resolved, command = dry_run_parts(proc.stdout)
    assert resolved["learning_rate"] == 0.001 and resolved["num_train_epochs"] == 2.0
    assert resolved["per_device_train_batch_size"] == 32  # a default from the dataclasses
    assert resolved["output_dir"].startswith(str(runs / "cls-"))
    # The run is planned from its own resolved config.yaml, as it will be started (and resumed).
    assert " launch " in command and command.endswith(f"--config {resolved['output_dir']}/config.yaml")
    assert "recipes/bert_cls.py --config" in command and "--num_processes 1" in command
    assert not runs.exists()


def test_train_dry_run_on_cpu_with_two_processes_uses_the_linked_cpu_form(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\ngood,pos\nbad,neg\n")
    proc = tunelab(
        "train", "cls", "--train_file", data, "--num-processes", "2", "--mixed-precision", "bf16", "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr
    resolved, command = dry_run_parts(proc.stdout)
    assert command.startswith("ACCELERATE_USE_CPU=1 ")
    for part in (
        "--multi_gpu",
        "--num_processes 2",
        "--num_machines 1",
        "--dynamo_backend no",
        "--main_process_port 0",
        "--mixed_precision bf16",
    ):
        assert part in command
    assert resolved["mixed_precision"] == "bf16"  # the recipe gets it too, not only the launcher


def test_train_with_an_unknown_key_fails_in_one_line_before_launching(tmp_path):
    proc = tunelab("train", "cls", "--train_file", "x.csv", "--learning_rat", "1e-4", "--runs-dir", tmp_path)
    assert_one_line_error(proc, "unknown argument --learning_rat. Did you mean: --learning_rate")
    assert "accelerate" not in proc.stderr


# ---- train for real, then work with the run --------------------------------------------------------


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_bert) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A real tiny classification run started by `tunelab train cls` (returns runs dir, data, process)."""
    work = tmp_path_factory.mktemp("cli-train")
    data = work / "reviews.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(160))
    config = work / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_bert),
                "train_file": str(data),
                "num_train_epochs": 1,
                "max_train_steps": 4,
                "per_device_train_batch_size": 16,
                "max_length": 32,
                "logging_steps": 2,
                "learning_rate": 1e-3,
            }
        )
    )
    runs = work / "runs"
    proc = tunelab("train", "cls", "--config", config, "--runs-dir", runs, cwd=work)
    return runs, data, proc


def test_train_cls_prints_the_command_and_finishes_on_cpu(cls_run):
    runs, _, proc = cls_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    first = proc.stderr.splitlines()[0]
    assert first.startswith("$ ACCELERATE_USE_CPU=1 ") and "launch" in first and "bert_cls.py" in first
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 4
    assert (run_dir / "model.safetensors").exists()


def test_runs_list_shows_the_run_as_finished(cls_run):
    runs, _, _ = cls_run
    proc = tunelab("runs", "list", "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "TASK", "BASE", "MODEL", "STEP", "BEST", "STARTED", "DURATION"]
    assert row.startswith("cls-") and " finished " in row and " cls " in row and " 4/4 " in row
    assert "accuracy " in row
    # The env var is the default runs dir, as for the recipes and the app.
    assert tunelab("runs", env={"TUNELAB_RUNS_DIR": str(runs)}).stdout == proc.stdout


def test_runs_show_prints_status_config_final_metrics_and_log_tail(cls_run):
    runs, _, _ = cls_run
    proc = tunelab("runs", "show", "latest", "--runs-dir", runs, "--lines", "5")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "status:      finished (done)" in out
    assert "final metrics:" in out and "eval/accuracy" in out
    assert "config:\n  model_name_or_path:" in out and "max_train_steps: 4" in out
    assert "log (last 5 lines" in out and "Final:" in out


def test_runs_resume_plans_the_run_again_from_its_config_and_launch_record(cls_run):
    runs, _, _ = cls_run
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    proc = tunelab("runs", "resume", run_dir.name, "--runs-dir", runs, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    command = proc.stdout.strip()
    assert command.startswith("ACCELERATE_USE_CPU=1 ") and "bert_cls.py" in command
    # No checkpoint: it would start again, from the config.yaml as seen from the directory it was launched in.
    *_, flag, config_path = shlex.split(command)
    cwd = Path(json.loads((run_dir / "launch.json").read_text())["cwd"])
    assert flag == "--config" and (cwd / config_path).resolve() == (run_dir / "config.yaml").resolve()
    assert (run_dir / "command.txt").read_text().strip() == command
    assert_one_line_error(tunelab("runs", "resume", run_dir.name, "--runs-dir", runs), "is finished")


def test_classify_a_run_prints_labels_and_probabilities(cls_run):
    runs, _, _ = cls_run
    texts = ["the film is great and superb", "the plot is awful and dull"]
    proc = tunelab("classify", "latest", *texts, "--json", "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["text"] for a in answers] == texts
    for answer in answers:
        assert set(answer["probabilities"]) == {"neg", "pos"}
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4
        assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)


def test_the_predictor_runs_at_the_runs_length_and_answers_in_input_order(cls_run):
    """Length-sorted batches with dynamic padding give each text the probabilities it gets alone."""
    import dataclasses

    from tunelab.infer import Classifier

    runs, _, _ = cls_run
    run_dir = next(p for p in runs.iterdir() if (p / "config.json").exists())
    classifier = Classifier.load(run_dir)
    assert classifier.max_length == 32  # the run's max_length, not the model's 512
    trained = Run(run_dir).status()["mixed_precision"]
    assert classifier.precision == (trained if trained in ("bf16", "fp16") else "no")
    texts = ["ok", "the film is " + "really " * 40 + "wonderful", "a dull plot", "the cast is great " * 3]
    fp32 = dataclasses.replace(classifier, precision="no")  # exact, to tell the texts' answers apart
    batched = fp32.predict(texts, batch_size=2)
    firsts = sorted(p["neg"] for p in batched)
    assert min(b - a for a, b in zip(firsts, firsts[1:], strict=False)) > 1e-5  # each text has its own answer
    for text, together in zip(texts, batched, strict=True):
        (alone,) = fp32.predict([text])  # one text, no padding
        assert together == pytest.approx(alone, abs=1e-6), text
    for autocast, exact in zip(classifier.predict(texts, batch_size=2), batched, strict=True):
        assert autocast == pytest.approx(exact, abs=1e-2)
    seen = []
    classifier.predict(texts * 3, batch_size=5, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(5, 12), (10, 12), (12, 12)]


def test_classify_file_writes_a_csv_with_predictions_and_probabilities(cls_run, tmp_path):
    runs, data, _ = cls_run
    out = tmp_path / "out" / "predictions.csv"
    proc = tunelab("classify", "latest", "--file", data, "--output", out, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 160
    assert list(rows[0]) == ["text", "label", "prediction", "score", "prob_neg", "prob_pos"]
    assert all(r["prediction"] in ("neg", "pos") for r in rows)
    assert abs(float(rows[0]["prob_neg"]) + float(rows[0]["prob_pos"]) - 1) < 1e-4


def test_predictions_on_a_full_disk_are_one_line(cls_run, tmp_path):
    runs, data, _ = cls_run
    with tmpfs(tmp_path / "full", "64k") as disk:
        (disk / "filler").write_bytes(b"x" * 60_000)  # what else fills the disk
        proc = tunelab("classify", "latest", "--file", data, "--output", disk / "p.csv", "--runs-dir", runs)
        assert_one_line_error(proc, f"disk full while writing predictions in {disk}: free ")
        assert proc.stderr.strip().endswith("MB and resume")


def test_classify_a_text_file_prints_a_table_and_quiet_prints_nothing_else(cls_run, tmp_path):
    runs, _, _ = cls_run
    txt = tmp_path / "texts.txt"
    txt.write_text("great film\n\nawful film\n")
    proc = tunelab("classify", "latest", "--file", txt, "--runs-dir", runs, "--quiet")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["LABEL", "P(neg)", "P(pos)", "TEXT"]
    assert [r.split(maxsplit=3)[3] for r in rows] == ["great film", "awful film"]
    assert proc.stderr == ""


def test_push_without_a_token_says_how_to_log_in(cls_run, tmp_path):
    runs, _, _ = cls_run
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no cached login there
    proc = subprocess.run(
        [str(BIN), "push", "latest", "--repo-id", "me/model", "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_one_line_error(proc, "no Hugging Face token: set HF_TOKEN or run `hf auth login`")


# ---- generation ------------------------------------------------------------------------------------

CHAT_LINES = "\n".join(f"User: hello {i}\nAssistant: the film is great." for i in range(300))


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory) -> tuple[Path, Path]:
    """A real tiny GPT-2 run of `tunelab train clm` (BPE trained by the recipe) on chat lines."""
    work = tmp_path_factory.mktemp("cli-clm")
    data = work / "chat.txt"
    data.write_text(CHAT_LINES)
    runs = work / "runs"
    proc = tunelab(
        "train",
        "clm",
        "--train_file",
        data,
        "--max_train_steps",
        "30",
        "--block_size",
        "64",
        "--per_device_train_batch_size",
        "8",
        "--config_overrides",
        "n_layer=2,n_embd=64,n_head=2",
        "--tokenizer_vocab_size",
        "320",
        "--learning_rate",
        "3e-3",
        "--max_eval_samples",
        "8",
        "--runs-dir",
        runs,
        "--quiet",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return runs, run_dir


def test_generate_streams_the_prompt_and_its_continuation(clm_run):
    runs, _ = clm_run
    prompt = "User: hello 7\nAssistant:"
    proc = tunelab(
        "generate", "latest", prompt, "--temperature", "0", "--max-new-tokens", "12", "--runs-dir", runs
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("User: hello 7\nAssistant:")
    assert "the film is great" in proc.stdout[len("User: hello 7\nAssistant:") :]


def test_generate_past_the_context_returns_at_once_with_the_cut_note(clm_run):
    """More new tokens than the model's context: the reply stops at the context and says so (it used to
    crash in the generating thread and hang for two minutes)."""
    runs, run_dir = clm_run
    context = json.loads((run_dir / "config.json").read_text())["n_positions"]
    start = time.monotonic()
    proc = tunelab(
        "generate", "latest", "ROMEO:", "--max-new-tokens", context + 344, "--runs-dir", runs, timeout=60
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = proc.stdout.strip()
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:") + 20
    assert text.endswith(f"[reply cut at the model's context of {context} tokens]")
    assert took < 30, took


def test_an_error_while_generating_is_raised_at_once_not_after_the_streamer_timeout(embedded_encoder_path):
    """A tokenizer whose ids the model does not have (a mismatched folder): one line, in a second."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tunelab.infer import GenerationError, Generator

    tokenizer = AutoTokenizer.from_pretrained(embedded_encoder_path)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_layer=1, n_embd=16, n_head=2, n_positions=64))
    start = time.monotonic()
    with pytest.raises(GenerationError, match="generation failed: IndexError"):
        list(Generator(model, tokenizer).stream("hello world", max_new_tokens=5))
    assert time.monotonic() - start < 10


def test_chat_replies_stop_at_the_next_turn_and_exit_on_slash_exit(clm_run):
    _, run_dir = clm_run
    proc = tunelab(
        "chat",
        run_dir,
        "--temperature",
        "0",
        "--max-new-tokens",
        "30",
        "--quiet",
        input="hello 1\nhello 2\n/exit\nhello 3\n",
    )
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.splitlines()
    assert len(replies) == 2, proc.stdout  # "hello 3" came after /exit
    for reply in replies:
        assert "the film is great" in reply and "User:" not in reply
    ended = tunelab("chat", run_dir, "--max-new-tokens", "4", "--quiet", input="")  # EOF at once
    assert ended.returncode == 0 and ended.stdout == ""


def test_generate_rejects_bad_options_in_one_line(tmp_path):
    assert_one_line_error(tunelab("generate", tmp_path, "hi", "--top-p", "2"), "--top-p must be in (0, 1]")


# ---- errors and run management ---------------------------------------------------------------------


def test_default_runs_dir_is_the_librarys(monkeypatch):
    from tunelab import args
    from tunelab.cli import common as cli

    monkeypatch.setenv("TUNELAB_RUNS_DIR", "/somewhere/runs")
    assert cli.default_runs_dir() == args.default_runs_dir()
    monkeypatch.delenv("TUNELAB_RUNS_DIR")
    assert cli.default_runs_dir() == args.default_runs_dir()


def test_unknown_run_is_a_one_line_error(tmp_path):
    for args in (["runs", "show", "nope"], ["runs", "rm", "nope"], ["runs", "stop", "nope"]):
        assert_one_line_error(tunelab(*args, "--runs-dir", tmp_path), "no run 'nope' in")
    debug = tunelab("--debug", "runs", "show", "nope", "--runs-dir", tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def fake_run(runs: Path, run_id: str, state: str, proc: subprocess.Popen | None = None) -> Path:
    """A run folder as a recipe writes it, owned by ``proc`` (a real process in its own group)."""
    folder = runs / run_id
    folder.mkdir(parents=True)
    status = {
        "state": state,
        "task": "cls",
        "created": time.time(),
        "started": time.time(),
        "step": 3,
        "max_steps": 10,
    }
    if proc is not None:
        status["process"] = ProcessRef.of(proc.pid).to_dict()
    (folder / "status.json").write_text(json.dumps(status))
    (folder / "config.yaml").write_text("model_name_or_path: embedded:all-MiniLM-L6-v2\n")
    return folder


def sleeper(run_id: str, runs: Path, polite: bool = True) -> subprocess.Popen:
    """A process standing in for a run's launcher (marked as the run's, in its own group). A polite one
    listens for stop requests as recipes do (tunelab.stopping) and exits; a stubborn one ignores them."""
    code = "import time, pathlib\n"
    if polite:
        code += (
            "from tunelab.stopping import StopControl\n"
            f"control = StopControl.install(pathlib.Path({str(runs / run_id)!r}))\n"
            "control.in_loop = True\n"
            "print('ready', flush=True)\n"
            "while not control.requested: time.sleep(0.05)\n"
        )
    else:
        code += "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(120)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TUNELAB_RUN_ID": run_id, "TUNELAB_ATTEMPT_START": str(time.time() - 5)},
    )
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_runs_rm_refuses_a_running_run_without_force_and_removes_others(tmp_path):
    process = sleeper("cls-running", tmp_path)
    try:
        running = fake_run(tmp_path, "cls-running", "running", process)
        done = fake_run(tmp_path, "cls-done", "finished")
        listing = tunelab("runs", "--runs-dir", tmp_path).stdout
        assert "cls-running  running" in listing and "cls-done     finished" in listing
        assert_one_line_error(tunelab("runs", "rm", "cls-running", "--runs-dir", tmp_path), "--force")
        assert running.exists()
        proc = tunelab("runs", "rm", "cls-done", "--runs-dir", tmp_path)
        assert proc.returncode == 0 and not done.exists()
        proc = tunelab("runs", "rm", "cls-running", "--force", "--runs-dir", tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert not running.exists()
        assert process.wait(timeout=10) == 0  # it was asked to stop, and did
    finally:
        process.kill()
        process.wait()


def test_runs_stop_asks_the_run_to_stop_then_kills_it_after_the_grace_period(tmp_path):
    polite, stubborn = sleeper("clm-polite", tmp_path), sleeper("clm-stubborn", tmp_path, polite=False)
    try:
        fake_run(tmp_path, "clm-polite", "running", polite)
        fake_run(tmp_path, "clm-stubborn", "running", stubborn)
        proc = tunelab("runs", "stop", "clm-polite", "--runs-dir", tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert polite.wait(timeout=10) == 0
        assert json.loads((tmp_path / "clm-polite" / "status.json").read_text())["state"] == "stopped"
        start = time.monotonic()
        proc = tunelab("runs", "stop", "clm-stubborn", "--grace", "1", "--runs-dir", tmp_path)
        assert proc.returncode == 0 and "killed after 1 s" in proc.stdout
        assert stubborn.wait(timeout=10) == -signal.SIGKILL and time.monotonic() - start < 15
        assert json.loads((tmp_path / "clm-stubborn" / "status.json").read_text())["state"] == "stopped"
        assert_one_line_error(tunelab("runs", "stop", "clm-polite", "--runs-dir", tmp_path), "is not running")
    finally:
        for p in (polite, stubborn):
            p.kill()
            p.wait()


def test_app_rejects_a_malformed_auth_before_starting():
    assert_one_line_error(tunelab("app", "--auth", "nopassword"), "--auth must be user:password")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (ROOT / "app" / "ui.py").exists(), reason="app/ui.py (the web app) is not written yet"
)
def start_app(port: int, runs: Path, data: Path) -> subprocess.Popen:
    """`tunelab app` as a user starts it, once it answers (fails with its output after 90 s)."""
    proc = subprocess.Popen(
        [str(BIN), "app", "--port", str(port), "--runs-dir", str(runs), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app ended: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                assert response.status == 200
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the app did not answer within 90 s: {proc.stdout.read()[-3000:]}")


def test_app_serves_the_web_app(tmp_path):
    proc = start_app(free_port(), tmp_path / "runs", tmp_path / "data")
    proc.terminate()
    proc.wait(timeout=30)


def test_a_killed_app_started_again_keeps_its_training_run_and_its_queue(tmp_path, tiny_bert):
    """SIGKILL the app with one run training and one queued: started again, it shows the first still
    running until it finishes, then starts the second."""
    from gradio_client import Client

    runs, data = tmp_path / "runs", tmp_path / "data"
    port = free_port()
    app = start_app(port, runs, data)
    settings = {
        "task": "classification",
        "dataset": "sample-sentiment.csv",
        "base_kind": "local folder",
        "base_path": str(tiny_bert),
        "per_device_train_batch_size": 8,
        "logging_steps": 1,
        "mixed_precision": "no",
    }
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        ids = [
            client.predict(json.dumps({**settings, "max_train_steps": steps}), api_name="/submit_run")[1]
            for steps in (600, 20)  # the first outlasts the restart
        ]
        first, second = (Run(runs / i) for i in ids)
        wait_until(lambda: first.events("train"), "the first run to train", first)
        assert second.state == "queued"
    finally:
        app.kill()
        app.wait(timeout=30)
    assert first.state == "running"  # the recipe lives on in its own session

    app = start_app(port, runs, data)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert client.predict(ids[0], api_name="/run_status")["state"] == "running"
        assert client.predict(ids[1], api_name="/run_status")["state"] == "queued"
        wait_until(lambda: first.state == "finished", "the first run to finish", first, timeout=240)
        wait_until(lambda: second.state == "finished", "the second run to finish", second)
        assert second.status()["started"] >= first.status()["ended"] - 1.5  # one slot: one after the other
    finally:
        app.terminate()
        app.wait(timeout=30)


def wait_until(condition, what: str, run: Run, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if run.state == "failed" or time.monotonic() > deadline:
            log = "".join(
                (run.path / n).read_text(errors="replace")[-2000:]
                for n in ("process.log", "train.log")
                if (run.path / n).exists()
            )
            pytest.fail(f"waiting for {what}: {run.status()}\n{log}")
        time.sleep(0.3)
