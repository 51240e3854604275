"""`tunelab sweep`: an Optuna search whose trials are runs started like `tunelab train`."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from tunelab.tasks import TASKS, get_task

from .common import CliError, add_command, info, print_table, runs_dir_of, runs_dir_option
from .train import placement, recipe_config, resolved_config


def trial_launcher(args: argparse.Namespace, base_args: list[str]):
    """Prepare and start one sweep trial the way `tunelab train` does (the same planner and lifecycle);
    its output goes to the run folder's process.log (the sweep's terminal shows one line per trial)."""
    from tunelab import launch
    from tunelab.sweep import param_args

    def start(params: dict[str, Any], run_dir: Path, status: dict[str, Any]):
        config = recipe_config(args, [*base_args, *param_args(params)])
        resources, target, options = placement(args)
        run = launch.prepare_run(
            args.recipe, config, resources, target, options, run_dir=run_dir, status=status
        )
        return run, launch.start(run)

    return start


def new_sweep(args: argparse.Namespace):
    """Check the space and the base config (every range end and choice) before any trial; create the sweep."""
    from tunelab.sweep import (
        DEFAULT_METRIC,
        check_space_values,
        create_sweep,
        direction_of,
        load_space,
        param_args,
    )

    if not args.space:
        raise CliError("--space SPACE.yaml is required (its format: `tunelab sweep --help`)")
    if args.trials is None:
        raise CliError("--trials N is required (how many trials to run)")
    if args.config and not Path(args.config).is_file():
        raise CliError(f"config file {args.config} does not exist")
    space = load_space(Path(args.space), get_task(args.recipe).argument_types())
    config_args = ["--config", args.config] if args.config else []
    base_config = resolved_config(args.recipe, [*config_args, *args.recipe_args])
    check_space_values(
        space,
        lambda values: resolved_config(args.recipe, [*config_args, *args.recipe_args, *param_args(values)]),
    )
    metric = (
        args.metric or base_config.get("metric_for_best_model") or DEFAULT_METRIC.get(args.recipe, "loss")
    ).removeprefix("eval/")
    recipe_args = list(args.recipe_args)
    if not base_config.get("metric_for_best_model") and "metric_for_best_model" not in space:
        # The run keeps (and reports) its best model by this metric: the one the sweep compares.
        recipe_args += ["--metric_for_best_model", metric]
    return create_sweep(
        runs_dir_of(args),
        args.name,
        task=args.recipe,
        config=str(Path(args.config).resolve()) if args.config else None,
        recipe_args=recipe_args,
        space=space,
        metric=metric,
        direction=args.direction or direction_of(metric),
        n_trials=args.trials,
        seed=args.sampler_seed,
        prune=not args.no_prune,
        launch={
            "recipe": f"recipes/{get_task(args.recipe).recipe}",
            "num_processes": args.num_processes,
            "mixed_precision": args.mixed_precision,
        },
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    from tunelab.sweep import SweepRunner, open_sweep, write_results

    runs_dir = runs_dir_of(args)
    if args.resume:
        if args.config or args.space or args.recipe_args:
            raise CliError(
                "--resume continues a sweep with its own config and space; only --trials may change"
            )
        sweep = open_sweep(args.resume, runs_dir)
        record = sweep.record()
        if record.get("task") != args.recipe:
            raise CliError(f"sweep {sweep.id} searches {record.get('task')} runs, not {args.recipe}")
        if args.trials is not None:
            if args.trials < 1:
                raise CliError(f"--trials must be at least 1, got {args.trials}")
            sweep.save({**record, "n_trials": args.trials})
        launch = record.get("launch") or {}
        args.config = record.get("config")
        args.num_processes = launch.get("num_processes")
        args.mixed_precision = launch.get("mixed_precision")
    else:
        sweep = new_sweep(args)
    record = sweep.record()
    info(
        args,
        f"sweep {sweep.id}: {record['n_trials']} trials of {get_task(args.recipe).title}, "
        f"{record['direction']} eval/{record['metric']}\n  folder: {sweep.path}",
    )
    runner = SweepRunner(sweep, trial_launcher(args, record["recipe_args"]), say=lambda m: info(args, m))

    # `kill` of the sweep stops its running trial (with a checkpoint) like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: runner.request_stop())
    try:
        best = runner.run(record["n_trials"])
    except KeyboardInterrupt:
        where = f" --runs-dir {args.runs_dir}" if getattr(args, "runs_dir", None) else ""
        info(
            args,
            f"sweep interrupted; continue it with `tunelab sweep {args.recipe} --resume {sweep.id}{where}`",
        )
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        print_sweep_results(write_results(sweep))
    if best is None:
        raise CliError(f"no trial of sweep {sweep.id} completed (see the reasons above and in {sweep.path})")
    info(
        args,
        f"best: trial {best['number']} ({best['run']}), eval/{record['metric']} {best['value']:.4g}\n"
        f"  best config: {sweep.path / 'best_config.yaml'}\n"
        f"  train it: tunelab train {args.recipe} --config {sweep.path / 'best_config.yaml'}",
    )
    return 0


def print_sweep_results(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = [c for c in rows[0] if c != "reason"]
    cells = [
        ["-" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in columns]
        for r in rows
    ]
    print_table(cells, [c.upper() for c in columns])


def register(commands) -> None:
    sweep = add_command(
        commands,
        "sweep",
        "search hyperparameters with Optuna (each trial is a run)",
        "Search recipe arguments with Optuna (seeded TPE sampler; trials that fall behind the median\n"
        "of earlier ones at the same step are pruned: stopped with a checkpoint). Every trial is a\n"
        "normal run (`tunelab runs list`, the app) launched like `tunelab train`. The sweep folder\n"
        "RUNS_DIR/NAME holds sweep.json, study.db (for --resume), results.csv/.md and\n"
        "best_config.yaml (the base config with the best parameters).\n"
        "Other --key value flags go to every trial. SPACE.yaml maps recipe arguments to ranges:\n"
        "  learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}\n"
        "  warmup_ratio: {type: float, low: 0.0, high: 0.2, step: 0.05}\n"
        "  num_warmup_steps: {type: int, low: 0, high: 100, step: 10}\n"
        "  per_device_train_batch_size: {type: categorical, choices: [8, 16, 32]}\n"
        "  lr_scheduler_type: [linear, cosine]      # a plain list is a categorical",
        "  tunelab sweep cls --config recipes/configs/bert_cls/sst2_minilm.yaml \\\n"
        "      --space recipes/configs/sweeps/cls_lr_batch.yaml --trials 12\n"
        "  tunelab sweep clm --config recipes/configs/gpt2_clm/shakespeare_tiny.yaml \\\n"
        "      --space recipes/configs/sweeps/clm_lr_schedule.yaml --trials 8 --metric perplexity\n"
        "  tunelab sweep cls --resume sweep-cls-20261123-171200-ab12",
        allow_abbrev=False,
    )
    sweep.add_argument("recipe", choices=sorted(TASKS), help="the recipe, as in `tunelab train`")
    sweep.add_argument(
        "--config", metavar="FILE", default=None, help="YAML file of the base recipe arguments"
    )
    sweep.add_argument("--space", metavar="SPACE.yaml", default=None, help="the search space (format above)")
    sweep.add_argument(
        "--trials", type=int, metavar="N", default=None, help="trials to run (pruned and failed count)"
    )
    sweep.add_argument(
        "--metric",
        default=None,
        help="eval metric to optimize, e.g. accuracy, f1, loss, perplexity "
        "(default: the config's metric_for_best_model, else accuracy for cls, loss for clm)",
    )
    sweep.add_argument(
        "--direction",
        choices=("maximize", "minimize"),
        default=None,
        help="default: minimize for loss and perplexity, else maximize",
    )
    sweep.add_argument(
        "--name", default=None, help="the sweep's id and folder (default: sweep-<task>-<time>-<hex>)"
    )
    sweep.add_argument(
        "--resume", metavar="SWEEP", default=None, help="continue an interrupted sweep (id or folder)"
    )
    sweep.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    sweep.add_argument("--no-prune", action="store_true", help="run every trial to its end")
    sweep.add_argument(
        "--num-processes", "--num_processes", type=int, default=None, metavar="N", help="processes per trial"
    )
    sweep.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), default=None, help="precision of every trial"
    )
    runs_dir_option(sweep)
    sweep.set_defaults(func=cmd_sweep, accepts_recipe_args=True)
