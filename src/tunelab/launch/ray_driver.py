"""A recipe on a Ray cluster, through Ray Train:

    python -m tunelab.launch.ray_driver --workers N [--use-gpu] [--cpus-per-worker C] [--address ADDR]
        [--mixed-precision P] recipes/<recipe>.py <recipe arguments>

Ray Train's ``TorchTrainer`` starts N workers on the cluster (``ScalingConfig``) and links them in one
torch process group (gloo on CPUs, NCCL on GPUs; it sets RANK, WORLD_SIZE, MASTER_ADDR, ... for each).
Every worker runs the recipe's own ``main(argv)`` with the environment accelerate's launcher gives one
process (``tunelab.launch.inline.prepare``), and Accelerate takes the process group Ray Train made: the
same recipe and training loop as a local run, no copy of either. The run folder must be one every worker
can write (a shared filesystem, or the disk of a one-machine cluster).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


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


def run_recipe(config: dict[str, Any]) -> None:
    """One Ray Train worker: the recipe's main in this process. A failed recipe fails the worker."""
    import runpy

    import torch

    os.environ.update(config["env"])
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
    parser.add_argument("recipe")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.workers < 1:
        parser.error("--workers must be at least 1")

    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        print("error: Ray is not installed here: pip install 'tunelab[ray]' (Ray Train)", file=sys.stderr)
        return 2

    recipe = str(Path(ns.recipe).resolve())
    ray.init(address=ns.address, log_to_driver=True)
    trainer = TorchTrainer(
        run_recipe,
        train_loop_config={
            "recipe": recipe,
            "args": ns.recipe_args,
            "env": worker_environment(recipe, ns.recipe_args, ns.mixed_precision, ns.use_gpu),
            "cpus_per_worker": ns.cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=ns.workers,
            use_gpu=ns.use_gpu,
            resources_per_worker={"CPU": ns.cpus_per_worker, **({"GPU": 1} if ns.use_gpu else {})},
        ),
        run_config=RunConfig(name="tunelab", storage_path=str(Path.home() / "ray_results")),
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
