"""A recipe on a Ray cluster, through Ray Train:

    python -m tunelab.launch.ray_driver --workers N [--use-gpu] [--cpus-per-worker C] [--address ADDR]
        [--mixed-precision P] [--max-failures F] [--run-dir DIR] [--cwd DIR] [--storage-path DIR]
        recipes/<recipe>.py <recipe arguments>

Ray Train's ``TorchTrainer`` starts N workers on the cluster (``ScalingConfig``) and links them in one
torch process group (gloo on CPUs, NCCL on GPUs; it sets RANK, WORLD_SIZE, MASTER_ADDR, ... for each).
Every worker runs the recipe's own ``main(argv)`` with the environment accelerate's launcher gives one
process (``tunelab.launch.inline.prepare``), and Accelerate takes the process group Ray Train made: the
same recipe and training loop as a local run, no copy of either. The run folder must be one every worker
can write (a shared filesystem, or the disk of a one-machine cluster): with ``--run-dir``, the driver and
every worker check that first and refuse a folder their node cannot write, in one line.

``tunelab train --target ray`` submits this driver through the Ray Jobs API (``tunelab.launch.ray_jobs``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

# The run's log as a file shows it: every worker's lines (not "[repeated 2x across cluster]"), no colours.
DRIVER_LOG_ENV = {"RAY_DEDUP_LOGS": "0", "RAY_COLOR_PREFIX": "0"}
# The recipe's prints stay prints: Ray Train's print patch would also log what libraries print into a
# buffer (dill's disassembly while datasets hashes a function) on the root logger.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def worker_environment(recipe: str, recipe_args: list[str], mixed_precision: str, use_gpu: bool) -> dict:
    """What accelerate's launcher would add to the environment of one process of this run."""
    from .inline import prepare

    launch = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", mixed_precision]
    launch += ["--dynamo_backend", "no", *([] if use_gpu else ["--cpu"]), recipe, *recipe_args]
    prepared = prepare(launch)
    assert prepared is not None, "one process always takes accelerate's simple launcher"
    _, _, env = prepared
    added = {k: v for k, v in env.items() if os.environ.get(k) != v}
    added.pop("OMP_NUM_THREADS", None)  # a worker's threads are its CPUs on its node (below)
    return added


def unwritable(run_dir: str | None) -> str:
    """Why this node cannot write the run folder ('' when it can)."""
    if not run_dir or os.access(run_dir, os.W_OK):
        return ""
    import socket

    return (
        f"the run folder {run_dir} is not {'writable' if os.path.isdir(run_dir) else 'there'} on the Ray "
        f"node {socket.gethostname()}: put the runs dir on a filesystem every node of the cluster shares"
    )


def run_recipe(config: dict[str, Any]) -> None:
    """One Ray Train worker: the recipe's main in this process. A failed recipe fails the worker."""
    import runpy

    import torch

    why = unwritable(config.get("run_dir"))
    if why:
        raise RuntimeError(why)
    os.chdir(config["cwd"])  # the recipe's relative paths are the driver's (a Ray worker starts elsewhere)
    os.environ.update(config["env"])
    # The recipe logs to the console as it does in a local launch (rank 0 tells, the others warn):
    # Ray Train's own console handler on the root logger would show every line again, from every rank.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not isinstance(handler, logging.FileHandler) and isinstance(handler, logging.StreamHandler):
            root.removeHandler(handler)
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    main = runpy.run_path(config["recipe"], run_name="tunelab_recipe")["main"]
    try:
        main(config["args"])
    except SystemExit as e:  # the recipe's own ending: 0 is a clean stop, anything else a failure
        if e.code not in (None, 0):
            raise RuntimeError(
                f"the recipe ended with exit status {e.code}; see the run's train.log"
            ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunelab.launch.ray_driver", description=__doc__)
    parser.add_argument("--workers", type=int, required=True, help="training processes in all")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--address", default=None, help="the cluster (default: RAY_ADDRESS or the job's)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="lost workers Ray Train restarts (from the last checkpoint)",
    )
    parser.add_argument(
        "--placement",
        default="PACK",
        choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
        help="where the workers go (Ray's placement strategies; SPREAD: one per node where it can)",
    )
    parser.add_argument("--run-dir", default=None, help="the run folder: refused when a node cannot write it")
    parser.add_argument("--cwd", default=None, help="where the recipe's relative paths start (default: here)")
    parser.add_argument(
        "--storage-path", default=None, help="Ray Train's own results (default: ~/ray_results)"
    )
    parser.add_argument("recipe")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.workers < 1:
        parser.error("--workers must be at least 1")
    why = unwritable(ns.run_dir)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if ns.cwd:
        os.chdir(ns.cwd)

    for key, value in DRIVER_LOG_ENV.items():  # read when Ray is imported
        os.environ.setdefault(key, value)
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        print("error: Ray is not installed here: pip install 'tunelab[ray]' (Ray Train)", file=sys.stderr)
        return 2

    recipe = str(Path(ns.recipe).resolve())
    ray.init(address=ns.address, log_to_driver=True, runtime_env={"env_vars": WORKER_ENV})
    trainer = TorchTrainer(
        run_recipe,
        train_loop_config={
            "recipe": recipe,
            "args": ns.recipe_args,
            "env": worker_environment(recipe, ns.recipe_args, ns.mixed_precision, ns.use_gpu),
            "cpus_per_worker": ns.cpus_per_worker,
            "run_dir": ns.run_dir,
            "cwd": os.getcwd(),
        },
        scaling_config=ScalingConfig(
            num_workers=ns.workers,
            use_gpu=ns.use_gpu,
            resources_per_worker={"CPU": ns.cpus_per_worker, **({"GPU": 1} if ns.use_gpu else {})},
            placement_strategy=ns.placement,
        ),
        run_config=RunConfig(
            name="tunelab",
            storage_path=ns.storage_path or str(Path.home() / "ray_results"),
            failure_config=FailureConfig(max_failures=ns.max_failures),
        ),
    )
    try:
        result = trainer.fit()
        error = result.error
    except Exception as e:  # noqa: BLE001 - Ray Train raises what ended the run (TrainingFailedError)
        error = e
    if error is not None:
        said = " ".join(str(error).split())[:2000]
        print(f"error: the run failed on the Ray cluster: {said}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
