"""`tunelab train`: plan a recipe's run for this machine or a Slurm cluster, start it and follow it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunelab.tasks import TASKS, get_task, help_lines

from .common import STOP_GRACE_S, CliError, add_command, info, runs_dir_of, runs_dir_option


def resolved_config(task: str, recipe_args: list[str]) -> dict[str, Any]:
    """The recipe's own parsing of ``[--config FILE] --key value ...``: wrong keys fail in a second."""
    from tunelab.args import parse_args, to_config

    return to_config(*parse_args(get_task(task).argument_types(), list(recipe_args)))


def placement(args: argparse.Namespace):
    """(Resources, target, target options) from the command line and the targets file."""
    from tunelab.launch import Resources
    from tunelab.launch.targets import RESOURCE_KEYS, load_targets

    target = getattr(args, "target", "local") or "local"
    cluster = {
        "nodes": getattr(args, "nodes", None),
        "gpus_per_node": getattr(args, "gpus_per_node", None),
        "cpus_per_task": getattr(args, "cpus_per_task", None),
    }
    slurm_options = {
        key: getattr(args, key, None)
        for key in ("partition", "time", "account", "qos")
        if getattr(args, key, None)
    }
    if getattr(args, "sbatch_arg", None):
        slurm_options["sbatch_args"] = list(args.sbatch_arg)
    ray_options = {
        key: getattr(args, key, None)
        for key in ("ray_address", "max_failures")
        if getattr(args, key, None) is not None
    }

    def flags(values: dict[str, Any]) -> str:
        return ", ".join(f"--{k.replace('_', '-')}" for k, v in values.items() if v is not None)

    if target == "local" and (slurm_options or ray_options or any(v is not None for v in cluster.values())):
        raise CliError(
            f"{flags({**cluster, **slurm_options, **ray_options})}: cluster options; add --target slurm or ray"
        )
    if target == "ray" and slurm_options:
        raise CliError(
            f"{flags(slurm_options)}: Slurm options; --target ray takes --ray-address, --max-failures"
        )
    if target == "slurm" and ray_options:
        raise CliError(f"{flags(ray_options)}: Ray options; add --target ray")
    if target != "local" and getattr(args, "gpus", None):
        raise CliError(f"--gpus names this machine's GPUs; on {target.title()} ask for --gpus-per-node")
    options: dict[str, Any] = {}
    if target != "local":  # what the command line leaves out comes from the targets file
        defaults = load_targets(getattr(args, "targets", None))[target]
        cluster = {k: v if v is not None else defaults.get(k) for k, v in cluster.items()}
        options = {k: v for k, v in defaults.items() if k not in RESOURCE_KEYS}
    if target == "slurm":
        extra = [
            *options.get("sbatch_args", []),
            *slurm_options.get("sbatch_args", []),
        ]  # the file's, then these
        options.update(slurm_options)
        if extra:
            options["sbatch_args"] = extra
    elif target == "ray":
        options.update({k.removeprefix("ray_"): v for k, v in ray_options.items()})
    resources = Resources(
        device=getattr(args, "device", "auto"),
        num_processes=args.num_processes,
        gpu_ids=getattr(args, "gpus", None),
        nodes=cluster["nodes"] or 1,
        gpus_per_node=cluster["gpus_per_node"] or None,
        cpus_per_task=cluster["cpus_per_task"] or None,
    )
    return resources, target, options


def recipe_config(args: argparse.Namespace, recipe_args: list[str]) -> dict[str, Any]:
    recipe_args = list(recipe_args)
    if args.config:
        recipe_args = ["--config", args.config, *recipe_args]
    if args.mixed_precision:
        recipe_args += ["--mixed_precision", args.mixed_precision]
    return resolved_config(args.recipe, recipe_args)


def cmd_train(args: argparse.Namespace) -> int:
    from tunelab import launch

    config = recipe_config(args, args.recipe_args)
    resources, target, options = placement(args)
    run_dir = Path(config["output_dir"]) if config.get("output_dir") else None
    runs_dir = runs_dir_of(args)
    if args.dry_run:
        import yaml

        run, config, _, command = launch.plan(
            args.recipe, config, resources, target, options, run_dir, runs_dir
        )
        print(
            f"# resolved arguments of {get_task(args.recipe).title} (recipes/{get_task(args.recipe).recipe})"
        )
        print(yaml.safe_dump(config, sort_keys=False).rstrip())
        print(f"# run folder: {run.path}")
        print("# command (not run: --dry-run)")
        print(command)
        return 0
    if run_dir is not None and run_dir.exists() and any(run_dir.iterdir()):
        raise CliError(
            f"{run_dir} already holds a run: `tunelab runs resume {run_dir}` continues it, or choose "
            "another --output_dir"
        )
    run = launch.prepare_run(
        args.recipe,
        config,
        resources,
        target,
        options,
        runs_dir=runs_dir,
        run_dir=run_dir,
        status={"source": "cli"},
    )
    return start_and_follow(args, run)


def start_and_follow(args: argparse.Namespace, run) -> int:
    """Start a prepared (or re-queued) run and follow it: a local run until it ends (Ctrl-C stops it
    like `runs stop`, twice kills it)."""
    from tunelab import launch

    print(f"$ {run.command()}", file=sys.stderr, flush=True)
    try:
        proc = launch.start(run)
    except launch.LaunchError as e:
        run.update_status(expect=("queued",), state="failed", stage="failed", reason=str(e))
        raise
    if proc is None:
        raise CliError(f"run {run.id} was started by someone else meanwhile (it is {run.state})")
    if isinstance(proc, launch.ClusterJob):
        if getattr(args, "wait", False):
            info(args, f"run {run.id}: submitted as {proc}; following its log (Ctrl-C stops it)")
        else:
            info(
                args,
                f"run {run.id}: submitted as {proc}\n  folder: {run.path}\n"
                f"  follow it with `tunelab runs show {run.id}`; stop it with `tunelab runs stop {run.id}`",
            )
            return 0
    tail = threading.Thread(target=_echo_log, args=(args, run, proc), daemon=True)
    tail.start()
    interrupts = 0

    def interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            info(args, "stopping: the run saves a checkpoint and exits (Ctrl-C again to kill it)")
            threading.Thread(target=launch.stop, args=(run,), kwargs={"grace": STOP_GRACE_S}).start()
        elif isinstance(proc, launch.ClusterJob):
            proc.cancel()
        else:
            from tunelab.launch.process import ProcessRef, kill_run

            kill_run(ProcessRef.from_dict(run.status().get("process")), run.id)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = launch.wait(run, proc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    tail.join(timeout=2)
    report_run(args, run, status)
    return 0 if status.get("state") in ("finished", "stopped") else 1


def _echo_log(args: argparse.Namespace, run, proc) -> None:
    """The run's process.log on stderr while it runs (the recipe writes there, not to this terminal)."""
    from tunelab.runs import PROCESS_LOG

    if args.quiet:
        return
    with contextlib.suppress(OSError), open(run.path / PROCESS_LOG, errors="replace") as log:
        log.seek(0, os.SEEK_END)
        while True:
            line = log.readline()
            if line:
                sys.stderr.write(line)
                continue
            if proc.poll() is not None:
                sys.stderr.write(log.read())
                return
            time.sleep(0.2)


def report_run(args: argparse.Namespace, run, status: dict[str, Any]) -> None:
    metrics = status.get("metrics") or {}
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    ok = status.get("state") in ("finished", "stopped")
    info(
        args,
        f"run {run.id}: {status.get('state')}"
        + (f" ({summary})" if summary else "")
        + (f": {status['reason']}" if status.get("reason") and not ok else "")
        + f"\n  folder: {run.path}",
    )


def cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "on a cluster (--target slurm or ray: the runs dir must be on a filesystem the cluster's nodes share)"
    )
    group.add_argument(
        "--target",
        choices=("local", "slurm", "ray"),
        default="local",
        help="local: this machine; slurm: submit a batch job (job.sbatch in the run folder) and return; "
        "ray: submit a Ray job (Ray Train workers) and return",
    )
    group.add_argument("--nodes", type=int, default=None, metavar="N", help="nodes (one task per node)")
    group.add_argument("--gpus-per-node", type=int, default=None, metavar="G", help="GPUs on each node")
    group.add_argument(
        "--cpus-per-task",
        "--cpus-per-node",
        dest="cpus_per_task",
        type=int,
        default=None,
        metavar="C",
        help="CPU cores on each node",
    )
    group.add_argument("--partition", default=None, metavar="P")
    group.add_argument("--time", default=None, metavar="HH:MM:SS", help="the job's time limit")
    group.add_argument("--account", default=None, metavar="A")
    group.add_argument("--qos", default=None, metavar="Q")
    group.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help='one more sbatch option, e.g. --sbatch-arg="--constraint=a100" (repeatable)',
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="URL",
        help="the Ray cluster's dashboard, as `ray job submit --address` takes (http://HEAD:8265)",
    )
    group.add_argument(
        "--max-failures",
        type=int,
        default=None,
        metavar="F",
        help="Ray: lost workers Ray Train restarts from the last checkpoint (default 0)",
    )
    group.add_argument(
        "--wait", action="store_true", help="follow a cluster run's log until its job ends (Ctrl-C stops it)"
    )
    group.add_argument(
        "--targets",
        metavar="FILE",
        default=None,
        help="defaults for the options above (default: ~/.config/tunelab/targets.yaml, if it exists)",
    )


def register(commands) -> None:
    train = add_command(
        commands,
        "train",
        "train with a recipe (accelerate launch)",
        "Run a task's recipe through `accelerate launch`:\n"
        + help_lines()
        + "\n(mlm adapts an encoder to your text before `train cls --model_name_or_path RUN`).\n"
        "Every other --key value goes to the recipe (names of the transformers examples:\n"
        "--train_file, --num_train_epochs, --learning_rate, ...); flags override --config.\n"
        "The exact command is printed first; the exit code is the recipe's. Ctrl-C stops the run\n"
        "after saving a checkpoint (`tunelab runs resume RUN` continues it).",
        "  tunelab train cls --train_file reviews.csv --num_train_epochs 1\n"
        "  tunelab train cls --config recipes/configs/bert_cls/sst2_minilm.yaml --dry-run\n"
        "  tunelab train clm --train_file input.txt --num-processes 2 --mixed-precision bf16\n"
        "  tunelab train mlm --train_file notes.txt --max_train_steps 300 --output_dir runs/mlm-notes\n"
        "  tunelab train cls --train_file labelled.csv --model_name_or_path runs/mlm-notes\n"
        "  tunelab train distill --train_file labelled.csv --teacher_name_or_path runs/cls-big\n"
        "  tunelab train cls --train_file /shared/reviews.csv --runs-dir /shared/runs --target slurm --nodes 2\n"
        "  tunelab train cls --train_file /shared/reviews.csv --runs-dir /shared/runs --target ray \\\n"
        "      --ray-address http://head:8265 --nodes 2 --gpus-per-node 4",
        allow_abbrev=False,
    )
    train.add_argument(
        "recipe",
        choices=sorted(TASKS),
        help="; ".join(f"{t.id}: {t.title}" for t in TASKS.values()),
    )
    train.add_argument("--config", metavar="FILE", default=None, help="YAML file of recipe arguments")
    train.add_argument(
        "--num-processes",
        "--num_processes",
        type=int,
        default=None,
        metavar="N",
        help="processes per machine (default: one per GPU, else 1; on CPU: linked processes, gloo DDP)",
    )
    train.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the GPUs where there are any, else the CPU",
    )
    train.add_argument("--gpus", metavar="IDS", default=None, help="which local GPUs, e.g. 0,1")
    train.add_argument(
        "--mixed-precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="training precision (default: the recipe's auto: bf16 where the hardware is fast at it)",
    )
    train.add_argument(
        "--dry-run", action="store_true", help="print the resolved arguments and the command; run nothing"
    )
    cluster_options(train)
    runs_dir_option(train)
    train.set_defaults(func=cmd_train, accepts_recipe_args=True)
