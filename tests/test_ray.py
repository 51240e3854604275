"""A recipe on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``: a head and
a second node, one CPU each), through Ray Train (``tunelab.launch.ray_driver``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from tunelab.runs import Run

pytest.importorskip("ray", reason="Ray is an optional dependency: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes with one CPU each: two one-CPU workers can only run one on each. Stopped after."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        made.add_node(num_cpus=1)
        made.wait_for_nodes(timeout=120)
        yield made
    finally:
        made.shutdown()


def drive(cluster, *args: str) -> subprocess.CompletedProcess:
    """``python -m tunelab.launch.ray_driver --address <the cluster> ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "tunelab.launch.ray_driver", "--address", cluster.address, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "RAY_DISABLE_USAGE_STATS": "1"},
        timeout=120,
    )


def test_a_classifier_trains_as_two_gloo_workers_on_two_nodes_and_loads(
    cluster, tiny_bert, sentiment_csv, tmp_path
):
    out = tmp_path / "run"
    proc = drive(
        cluster,
        *("--workers", "2", "--cpus-per-worker", "1", "recipes/bert_cls.py"),
        *("--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_csv)),
        *("--max_train_steps", "20", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3"),
        *("--max_length", "32", "--logging_steps", "5", "--output_dir", str(out)),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (out / "train.log").read_text()
    assert (
        "processes = 2, device = cpu" in log and "total batch size (with parallel, accumulation) = 16" in log
    )
    assert Run(out).status()["state"] == "finished"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(**tokenizer(["the film is great and superb"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)


def test_a_failed_recipe_fails_the_ray_run_with_its_reason(cluster, tmp_path):
    proc = drive(
        cluster,
        *("--workers", "2", "recipes/bert_cls.py", "--train_file", str(tmp_path / "missing.csv")),
        *("--output_dir", str(tmp_path / "run")),
    )
    assert proc.returncode == 1
    assert "error: the run failed on the Ray cluster" in proc.stderr
    assert Run(tmp_path / "run").status()["state"] == "failed"
