"""benchmarks/gpu_check.sh spends a short GPU lease: on a machine it cannot check it stops at once, in one
line that says why, before it installs or writes anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def gpu_check(tmp_path: Path, wheels: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3: this venv's
        "GPU_CHECK_WHEELS": str(wheels),
        "OUT": str(tmp_path / "out"),
        "TMPDIR": str(tmp_path / "tmp"),
        "CUDA_VISIBLE_DEVICES": "",  # no GPU, also on a machine that has one
    }
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)


def test_without_the_prepared_folder_it_says_to_run_prepare(tmp_path):
    proc = gpu_check(tmp_path, tmp_path / "no-wheels")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-wheels'}/ is missing: run 'bash benchmarks/gpu_check.sh prepare' in the "
        "project's venv first"
    ]


def test_on_a_machine_without_a_gpu_it_stops_before_installing_anything(tmp_path):
    wheels = tmp_path / "wheels"
    (wheels / "data").mkdir(parents=True)
    proc = gpu_check(tmp_path, wheels)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: no CUDA GPU visible to python3's torch; this check is for a GPU machine"
    ]
    assert not (tmp_path / "out").exists() and not any((tmp_path / "tmp").iterdir())
