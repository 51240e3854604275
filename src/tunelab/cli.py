"""The ``tunelab`` command: the web app, training, run folders, inference and the Hub from a shell.

A thin layer over the library: recipes run through ``accelerate launch`` (never imported), runs are read
through ``tunelab.runs``, inference goes through ``tunelab.infer`` and pushes through ``tunelab.hub``.
Heavy imports (torch, transformers, gradio) happen inside the subcommand that needs them, so ``--help``
and ``tunelab runs list`` answer at once.

Errors a user can cause print one line (``error: ...``) and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tunelab
from tunelab.errors import ConfigError, TuneLabError, writing
from tunelab.tasks import TASKS, get_task, help_lines  # light: no torch

# Metrics that name "best" in `runs list`, in order of preference, with their direction.
BEST_METRICS = {"accuracy": max, "f1": max, "perplexity": min, "loss": min}
STOP_GRACE_S = 60.0  # tunelab.launch.STOP_GRACE_S, without importing the launcher for --help


class CliError(TuneLabError):
    """A wrong use of the command itself (unknown run, missing file, ...)."""


# ---- small helpers -------------------------------------------------------------------------------


def info(args: argparse.Namespace, message: str) -> None:
    """Progress and status lines go to stderr (stdout stays clean for pipes); --quiet hides them."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def project_root(needs: str) -> Path:
    """The source tree that holds ``recipes/`` and ``app/``: they sit beside the package, not inside it.

    An editable/source install finds it from the package's own location; a plain ``pip install .``
    needs ``TUNELAB_ROOT`` (the Docker images use an editable install, so neither is needed there).
    """
    candidates = [os.environ.get("TUNELAB_ROOT"), Path(tunelab.__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if candidate and (Path(candidate) / needs).exists():
            return Path(candidate)
    raise CliError(
        f"cannot find TuneLab's {needs} (it lives in the source tree, not in the installed package): "
        "install from a checkout with `pip install -e .`, or set TUNELAB_ROOT to the checkout"
    )


def default_runs_dir() -> Path:
    """``tunelab.args.default_runs_dir`` without importing it: tunelab.args imports transformers (seconds),
    which `tunelab runs list` must not wait for. tests/test_cli.py checks that the two agree."""
    return Path(os.environ.get("TUNELAB_RUNS_DIR", "runs"))


def runs_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.runs_dir) if getattr(args, "runs_dir", None) else default_runs_dir()


def format_time(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# ---- runs ----------------------------------------------------------------------------------------


def find_run(spec: str, runs_dir: Path, required: bool = True):
    """A run by folder path, id in the runs dir, unique id prefix, or ``latest``."""
    from tunelab.runs import STATUS_FILE, Run, list_runs

    path = Path(spec).expanduser()
    if (path / STATUS_FILE).is_file():
        return Run(path)
    if (runs_dir / spec / STATUS_FILE).is_file():
        return Run(runs_dir / spec)
    runs = list_runs(runs_dir)
    if spec == "latest" and runs:
        return runs[0]
    matches = [r for r in runs if r.id.startswith(spec)] if spec and "/" not in spec else []
    if len(matches) == 1:
        return matches[0]
    if not required:
        return None
    if len(matches) > 1:
        raise CliError(f"run {spec!r} is ambiguous in {runs_dir}: {', '.join(r.id for r in matches[:5])}")
    raise CliError(f"no run {spec!r} in {runs_dir} (`tunelab runs list --runs-dir DIR` shows the runs)")


def refreshed(run) -> dict[str, Any]:
    """The run's status, settled against its processes or cluster job (a killed run is marked failed)."""
    from tunelab.launch import refresh

    return refresh(run)


def shown_state(status: dict[str, Any]) -> str:
    """The run's state; a Slurm run's queued state with Slurm's pending reason (Resources, Priority ...)."""
    state = status.get("state", "unknown")
    slurm = status.get("slurm") or {}
    if state == "queued" and slurm.get("job_id") and slurm.get("reason"):
        return f"queued ({slurm['reason']})"
    return state


def _slurm_job(status: dict[str, Any]) -> str:
    from tunelab.launch.slurm import describe

    job = describe(status)
    return f" ({job})" if job else ""


def base_model_of(config: dict[str, Any]) -> str:
    name = config.get("model_name_or_path")
    if not name:
        return f"scratch ({config['model_size']})" if config.get("model_size") else "-"
    if name.startswith("embedded:"):  # tunelab.args.EMBEDDED_ENCODER
        return f"{name.removeprefix('embedded:')} (embedded)"
    path = Path(name)
    return path.name if path.is_absolute() or name.startswith(".") else name


def best_metric(run) -> str:
    """The best evaluation of the run's main metric (from its eval events, else its final metrics)."""
    config = run.config()
    preferred = config.get("metric_for_best_model")
    names = ([preferred] if preferred else []) + list(BEST_METRICS)
    evals = run.events("eval")
    final = run.status().get("metrics") or {}
    for name in names:
        values = [e[f"eval/{name}"] for e in evals if isinstance(e.get(f"eval/{name}"), (int, float))]
        if not values and isinstance(final.get(f"eval/{name}"), (int, float)):
            values = [final[f"eval/{name}"]]
        if values:
            pick = BEST_METRICS.get(name, max if "loss" not in name and "perplexity" not in name else min)
            return f"{name} {pick(values):.4g}"
    return "-"


def cmd_runs_list(args: argparse.Namespace) -> int:
    from tunelab.runs import list_runs

    runs_dir = runs_dir_of(args)
    runs = list_runs(runs_dir)
    if not runs:
        info(args, f"no runs in {runs_dir} (start one with `tunelab train cls ...` or in the app)")
        return 0
    rows = []
    for run in runs:
        status = refreshed(run)
        step = status.get("step")
        steps = f"{step if step is not None else '-'}/{status.get('max_steps') or '-'}"
        rows.append(
            [
                run.id,
                shown_state(status),
                status.get("task", "-"),
                base_model_of(run.config()),
                steps,
                best_metric(run),
                format_time(status.get("started") or status.get("created")),
                format_duration(run.elapsed(status)),
            ]
        )
    print_table(rows, ["ID", "STATUS", "TASK", "BASE MODEL", "STEP", "BEST", "STARTED", "DURATION"])
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    import yaml

    run = find_run(args.run, runs_dir_of(args))
    status = refreshed(run)
    step = status.get("step")
    where = run.launch_record()
    lines = [
        ("run", run.id),
        ("folder", str(run.path.resolve())),
        ("status", f"{shown_state(status)}" + (f" ({status['stage']})" if status.get("stage") else "")),
        ("reason", status.get("reason") or "-"),
        ("task", status.get("task", "-")),
        ("base model", base_model_of(run.config())),
        ("step", f"{step if step is not None else '-'}/{status.get('max_steps') or '-'}"),
        ("started", format_time(status.get("started") or status.get("created"))),
        ("duration", format_duration(run.elapsed(status))),
        ("target", where.get("target", "local") + _slurm_job(status)),
        ("best", best_metric(run)),
        ("checkpoints", ", ".join(p.name for p in run.checkpoints()) or "-"),
        ("model", "yes (from_pretrained works on the folder)" if run.has_model() else "not saved yet"),
        ("command", run.command() or "-"),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    metrics = status.get("metrics") or {}
    if metrics:
        print("\nfinal metrics:")
        for key, value in metrics.items():
            print(f"  {key:<20} {value:.4f}" if isinstance(value, float) else f"  {key:<20} {value}")
    config = run.config()
    if config:
        print("\nconfig:")
        print("  " + yaml.safe_dump(config, sort_keys=False).rstrip().replace("\n", "\n  "))
    tail = run.log_tail(args.lines)
    if tail:
        print(f"\nlog (last {args.lines} lines of {run.path / 'train.log'}):")
        print("  " + tail.replace("\n", "\n  "))
    return 0


def cmd_runs_stop(args: argparse.Namespace) -> int:
    from tunelab.launch import stop

    run = find_run(args.run, runs_dir_of(args))
    info(args, f"stopping {run.id}: it saves a checkpoint and exits (killed after {args.grace:.0f} s)")
    print(f"{run.id}: {stop(run, grace=args.grace)}")
    return 0


def cmd_runs_rm(args: argparse.Namespace) -> int:
    from tunelab.launch import is_active, stop

    runs_dir = runs_dir_of(args)
    run = find_run(args.run, runs_dir)
    if is_active(run):
        if not args.force:
            raise CliError(
                f"run {run.id} is {run.state}: stop it first (`tunelab runs stop {run.id}`) or pass --force"
            )
        stop(run, grace=args.grace)
    shutil.rmtree(run.path)
    print(f"removed {run.path}")
    return 0


def cmd_runs_resume(args: argparse.Namespace) -> int:
    from tunelab.launch import lifecycle

    run = find_run(args.run, runs_dir_of(args))
    if args.dry_run:
        if not run.launch_record():
            raise CliError(f"run {run.id} has no launch.json yet; resume it once to give it one")
        print(lifecycle.planned_command_text(run, run.launch_record()))
        return 0
    lifecycle.resume(run)
    checkpoints = run.checkpoints()
    info(
        args,
        f"resuming {run.id} from {checkpoints[-1].name}"
        if checkpoints
        else f"{run.id} has no checkpoint: it starts again from step 0 in the same folder",
    )
    return start_and_follow(args, run)


# ---- train ---------------------------------------------------------------------------------------


def resolved_config(task: str, recipe_args: list[str]) -> dict[str, Any]:
    """The recipe's own parsing of ``[--config FILE] --key value ...``: wrong keys fail in a second."""
    from tunelab.args import parse_args, to_config

    return to_config(*parse_args(get_task(task).argument_types(), list(recipe_args)))


def placement(args: argparse.Namespace):
    """(Resources, target, target options) from the command line."""
    from tunelab.launch import Resources

    target = getattr(args, "target", "local") or "local"
    cluster = {
        "nodes": getattr(args, "nodes", None),
        "gpus_per_node": getattr(args, "gpus_per_node", None),
        "cpus_per_task": getattr(args, "cpus_per_task", None),
    }
    options = {
        key: getattr(args, key, None)
        for key in ("partition", "time", "account", "qos")
        if getattr(args, key, None)
    }
    if getattr(args, "sbatch_arg", None):
        options["sbatch_args"] = list(args.sbatch_arg)
    if target == "local" and (options or any(v is not None for v in cluster.values())):
        flags = [f"--{k.replace('_', '-')}" for k, v in {**cluster, **options}.items() if v]
        raise CliError(f"{', '.join(flags)}: cluster options; add --target slurm")
    if target == "slurm" and getattr(args, "gpus", None):
        raise CliError("--gpus names this machine's GPUs; on Slurm ask for --gpus-per-node")
    if target == "slurm":  # what the command line leaves out comes from the targets file
        from tunelab.launch.slurm import RESOURCE_KEYS, load_targets

        defaults = load_targets(getattr(args, "targets", None))
        cluster = {k: v if v is not None else defaults.get(k) for k, v in cluster.items()}
        extra = [*defaults.get("sbatch_args", []), *options.get("sbatch_args", [])]  # the file's, then these
        options = {**{k: v for k, v in defaults.items() if k not in RESOURCE_KEYS}, **options}
        if extra:
            options["sbatch_args"] = extra
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
    if isinstance(proc, launch.SlurmJob) and not getattr(args, "wait", False):
        info(
            args,
            f"run {run.id}: submitted as Slurm job {proc.job_id}\n  folder: {run.path}\n"
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
        elif isinstance(proc, launch.SlurmJob):
            from tunelab.launch.slurm import cancel

            cancel(proc.job_id)
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


# ---- sweep ---------------------------------------------------------------------------------------


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


# ---- app -----------------------------------------------------------------------------------------


def check_auth(value: str | None) -> str | None:
    """Checked here for a one-line error before gradio loads; app.ui.launch takes the string."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise CliError("--auth must be user:password (or set TUNELAB_AUTH=user:password)")
    return value


def cmd_app(args: argparse.Namespace) -> int:
    root = project_root("app")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    auth = check_auth(args.auth or os.environ.get("TUNELAB_AUTH"))
    from tunelab.launch.slurm import load_targets

    load_targets(args.targets)  # a wrong targets file is one line, before gradio loads
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from app import ui
    except ModuleNotFoundError as e:
        if e.name in ("app", "app.ui"):
            raise CliError(f"the web app is missing ({root / 'app' / 'ui.py'} not found)") from None
        raise CliError(
            f"the web app needs the package {e.name!r}: install the project with `pip install -e .`"
        ) from None
    data_dir = Path(args.data_dir or os.environ.get("TUNELAB_DATA_DIR") or "data")
    info(
        args, f"TuneLab app on http://{args.host}:{args.port}/ (runs: {runs_dir_of(args)}, data: {data_dir})"
    )
    ui.launch(
        host=args.host,
        port=args.port,
        auth=auth,
        runs_dir=runs_dir_of(args),
        data_dir=data_dir,
        share=False,
        max_concurrent_runs=args.max_concurrent_runs,
        targets_file=args.targets,
    )
    return 0


# ---- inference -----------------------------------------------------------------------------------


def model_spec(args: argparse.Namespace) -> str:
    """A run (id, prefix, folder or 'latest') becomes its folder; anything else goes to tunelab.infer."""
    run = find_run(args.model, runs_dir_of(args), required=False)
    return str(run.path) if run is not None else args.model


def cmd_classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tunelab.infer import Classifier
    from tunelab.predictions import prediction_table, read_texts, write_predictions

    if not args.texts and not args.file:
        raise CliError("give texts to classify or --file FILE")
    texts, records, columns = list(args.texts), [{"text": t} for t in args.texts], ["text"]
    if args.file:
        file_texts, file_records, columns = read_texts(Path(args.file), args.text_column)
        texts, records = texts + file_texts, records + file_records
    if not texts:
        raise CliError(f"{args.file}: no texts in the file")
    spec = model_spec(args)
    info(args, f"loading the classifier from {spec} ...")
    classifier = Classifier.load(spec, runs_dir_of(args))
    # A bar on stderr where it is a terminal (tqdm's disable=None); none under --quiet or in a pipe.
    with tqdm(total=len(texts), unit="text", desc="classifying", disable=True if args.quiet else None) as bar:
        probabilities = classifier.predict(
            texts, batch_size=args.batch_size, progress=lambda done, _: bar.update(done - bar.n)
        )
    labels = classifier.labels
    rows, out_columns = prediction_table(records, columns, probabilities, labels)
    if args.output:
        with writing("predictions", Path(args.output).resolve().parent):
            write_predictions(Path(args.output), rows, out_columns)
        info(args, f"wrote {len(rows)} predictions to {args.output}")
    elif args.json:
        for text, row in zip(texts, rows, strict=True):
            print(
                json.dumps(
                    {
                        "text": text,
                        "label": row["prediction"],
                        "score": row["score"],
                        "probabilities": {k: row[f"prob_{k}"] for k in labels},
                    },
                    ensure_ascii=False,
                )
            )
    else:
        table = [
            [row["prediction"], *(f"{row[f'prob_{k}']:.4f}" for k in labels), shorten(text, 70)]
            for text, row in zip(texts, rows, strict=True)
        ]
        print_table(table, ["LABEL", *(f"P({k})" for k in labels), "TEXT"])
    return 0


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1")
    if not 0 < args.top_p <= 1:
        raise CliError("--top-p must be in (0, 1]")
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
    }


def cmd_generate(args: argparse.Namespace) -> int:
    kwargs = generation_kwargs(args)  # before the slow imports: a wrong option fails at once
    from tunelab.infer import Generator

    spec = model_spec(args)
    info(args, f"loading the language model from {spec} ...")
    generator = Generator.load(spec, runs_dir_of(args))
    for i, prompt in enumerate(args.prompts):
        if i:
            print("\n" + "-" * 40)
        print(prompt, end="", flush=True)
        for piece in generator.stream(prompt, **kwargs):
            print(piece, end="", flush=True)
        print()
    return 0


# The base GPT-2 continues the transcript with the next turns; a reply ends where one begins.
TURN_MARKERS = ("\nUser:", "\nAssistant:")


def held_back(text: str) -> int:
    """How many trailing characters could still become a turn marker (not printed yet)."""
    for marker in TURN_MARKERS:
        for k in range(min(len(marker), len(text)), 0, -1):
            if text.endswith(marker[:k]):
                return k
    return 0


def stream_reply(generator, prompt: str, kwargs: dict[str, Any]) -> str:
    """Print the reply as it streams, up to the first turn marker; return it."""
    stop = threading.Event()
    reply, printed = "", 0
    for piece in generator.stream(prompt, stop_event=stop, **kwargs):
        if stop.is_set():
            continue  # let the generation thread reach its stop criterion
        reply = (reply + piece).lstrip() if not reply else reply + piece
        cut = min((i for i in (reply.find(m) for m in TURN_MARKERS) if i >= 0), default=-1)
        if cut >= 0:
            reply = reply[:cut]
            stop.set()
        end = len(reply) if stop.is_set() else len(reply) - held_back(reply)
        print(reply[printed:end], end="", flush=True)
        printed = max(printed, end)
    print(reply[printed:], flush=True)
    return reply.strip()


def cmd_chat(args: argparse.Namespace) -> int:
    kwargs = generation_kwargs(args)
    from tunelab.infer import Generator, chat_prompt

    spec = model_spec(args)
    info(args, f"loading the language model from {spec} ...")
    generator = Generator.load(spec, runs_dir_of(args))
    interactive = sys.stdin.isatty()
    info(args, "type a message and Enter; /reset clears the conversation, /exit or Ctrl-D ends it")
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        message = line.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            history.clear()
            info(args, "(conversation cleared)")
            continue
        if interactive:
            print("bot> ", end="", flush=True)
        reply = stream_reply(generator, chat_prompt(history, message), kwargs)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
    if interactive:
        print()
    return 0


# ---- export --------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from tunelab.export import ExportOptions, parse_prune

    options = ExportOptions(
        quantize=args.quantize,
        prune=parse_prune(args.prune),
        recovery_steps=args.recovery_steps,
        validation_file=args.validation_file,
        max_eval_samples=args.max_eval_samples,
    )  # checked before the run is looked up or a model loads: a wrong option fails at once
    run = find_run(args.run, runs_dir_of(args), required=False)
    if run is None:
        raise CliError(
            f"{args.run!r} is not a run folder or a run id in {runs_dir_of(args)} "
            "(export works on a finished run; `tunelab runs list` shows them)"
        )
    from tunelab.export import export_run

    info(args, f"exporting {run.path} ({args.quantize}{', prune ' + args.prune if args.prune else ''}) ...")
    report = export_run(run.path, args.output, options, quiet=args.quiet)
    print((Path(report["export"]) / "report.md").read_text().rstrip())
    info(args, f"export folder: {report['export']} (tunelab classify/generate take it like a run)")
    return 0


# ---- hub -----------------------------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    from tunelab.hub import push_to_hub

    run = find_run(args.run, runs_dir_of(args), required=False)
    folder = run.path if run is not None else Path(args.run)
    if run is None and not folder.is_dir():
        raise CliError(f"no run or model folder {args.run!r} (in {runs_dir_of(args)} or here)")
    if run is not None and refreshed(run).get("state") in ("queued", "running"):
        raise CliError(f"run {run.id} is still {run.state}; push it once it has finished")
    info(
        args,
        f"pushing the model files of {folder} to {args.repo_id} ({'private' if args.private else 'public'}) ...",
    )
    url = push_to_hub(
        folder, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    print(url)
    return 0


# ---- parser --------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if (
            "default" not in text
            and not flag
            and action.default not in (None, argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def _common(debug_default: Any = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """--debug and --quiet, accepted before or after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug", action="store_true", default=debug_default, help="show the full traceback of an error"
    )
    parent.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=debug_default,
        help="no progress messages or progress bars",
    )
    return parent


def _runs_dir_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `tunelab runs --runs-dir D show X` and `tunelab runs show X --runs-dir D` both work.
    parser.add_argument(
        "--runs-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="folder of run folders (default: $TUNELAB_RUNS_DIR, else ./runs)",
    )


def _sub(subparsers: Any, name: str, summary: str, description: str, examples: str, **kwargs: Any):
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        parents=[_common()],
        epilog="examples:\n" + examples,
        formatter_class=_Formatter,
        **kwargs,
    )
    return parser


def _generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (no sampling)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens")
    parser.add_argument("--repetition-penalty", type=float, default=1.1, help="> 1 discourages repeats")
    parser.add_argument("--seed", type=int, default=None, help="make sampling repeatable")
    _runs_dir_option(parser)


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "on a Slurm cluster (--target slurm: the runs dir must be on the cluster's shared filesystem)"
    )
    group.add_argument(
        "--target",
        choices=("local", "slurm"),
        default="local",
        help="local: this machine; slurm: submit a batch job (job.sbatch in the run folder) and return",
    )
    group.add_argument("--nodes", type=int, default=None, metavar="N", help="nodes (one task per node)")
    group.add_argument("--gpus-per-node", type=int, default=None, metavar="G", help="GPUs on each node")
    group.add_argument("--cpus-per-task", type=int, default=None, metavar="C", help="CPU cores on each node")
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
        "--wait", action="store_true", help="follow a Slurm run's log until its job ends (Ctrl-C stops it)"
    )
    group.add_argument(
        "--targets",
        metavar="FILE",
        default=None,
        help="defaults for the options above (default: ~/.config/tunelab/targets.yaml, if it exists)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="TuneLab: fine-tune and train transformer models with the Hugging Face stack.\n"
        "Every command works on run folders (default ./runs or $TUNELAB_RUNS_DIR), shared with the web app.",
        epilog="examples:\n"
        "  tunelab app                                   # the web app on http://127.0.0.1:7860\n"
        "  tunelab train cls --train_file reviews.csv    # fine-tune MiniLM on a labelled csv\n"
        "  tunelab runs list\n"
        '  tunelab classify latest "what a wonderful film"\n'
        "  tunelab push latest --repo-id me/my-classifier\n\n"
        "`tunelab COMMAND --help` tells more about each command.",
        formatter_class=_Formatter,
        parents=[_common(debug_default=False)],
    )
    parser.add_argument("--version", action="version", version=f"tunelab {tunelab.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    app = _sub(
        commands,
        "app",
        "start the web app",
        "Start the TuneLab web app (Gradio): train, watch runs, try models, push to the Hub.",
        "  tunelab app\n  tunelab app --host 0.0.0.0 --port 8080 --auth admin:s3cret\n"
        "  TUNELAB_AUTH=admin:s3cret tunelab app --runs-dir /data/runs",
    )
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    app.add_argument("--port", type=int, default=7860, help="port to listen on")
    _runs_dir_option(app)
    app.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder of uploaded data sets (default: $TUNELAB_DATA_DIR, else ./data)",
    )
    app.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=None,
        help="require a login (default: $TUNELAB_AUTH, which keeps it out of `ps`)",
    )
    app.add_argument("--max-concurrent-runs", type=int, default=1, metavar="N", help="trainings run at once")
    app.add_argument(
        "--targets",
        metavar="FILE",
        default=None,
        help="Slurm defaults for 'Run on: Slurm cluster' (default: ~/.config/tunelab/targets.yaml, if it exists)",
    )
    app.set_defaults(func=cmd_app)

    train = _sub(
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
        "  tunelab train distill --train_file labelled.csv --teacher_name_or_path runs/cls-big",
        allow_abbrev=False,
    )
    train.add_argument(
        "recipe",
        choices=sorted(TASKS),
        help="cls: text classification; clm: causal LM; mlm: masked-LM domain adaptation; "
        "distill: distill a finished cls run into a smaller student",
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
    _cluster_options(train)
    _runs_dir_option(train)
    train.set_defaults(func=cmd_train, accepts_recipe_args=True)

    sweep = _sub(
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
    _runs_dir_option(sweep)
    sweep.set_defaults(func=cmd_sweep, accepts_recipe_args=True)

    runs = _sub(
        commands,
        "runs",
        "list, show, stop, resume or remove runs",
        "Work with the run folders (the same ones the app shows). Without an action: list.\n"
        "RUN is a run id, a unique prefix of one, a run folder, or `latest`.",
        "  tunelab runs\n  tunelab runs show latest\n  tunelab runs stop cls-20261123-1712\n"
        "  tunelab runs resume cls-20261123-1712\n  tunelab runs rm cls-20261123-1712",
    )
    _runs_dir_option(runs)
    runs.set_defaults(func=cmd_runs_list)
    actions = runs.add_subparsers(dest="action", metavar="ACTION", title="actions")
    sub = _sub(
        actions, "list", "table of runs, newest first", "List the runs, newest first.", "  tunelab runs list"
    )
    _runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_list)
    sub = _sub(
        actions,
        "show",
        "status, config, metrics and log of a run",
        "Show a run: status, config, final metrics and the end of its log.",
        "  tunelab runs show latest\n  tunelab runs show cls-20261123 --lines 100",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--lines", type=int, default=20, help="lines of train.log to show")
    _runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_show)
    sub = _sub(
        actions,
        "stop",
        "stop a running run (it saves a checkpoint)",
        "Ask the run to stop (its stop file; every process polls it): it saves a checkpoint and exits.\n"
        "After --grace seconds it is killed (SIGKILL; its last checkpoint stays usable). A queued run\n"
        "is taken off the queue.",
        "  tunelab runs stop latest\n  tunelab runs stop cls-20261123 --grace 10",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--grace", type=float, default=STOP_GRACE_S, help="seconds before SIGKILL")
    _runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_stop)
    sub = _sub(
        actions,
        "resume",
        "continue a stopped or failed run from its last checkpoint",
        "Start the run again in its folder, planned again from its config.yaml and launch.json for\n"
        "this machine: it continues from its last checkpoint.",
        "  tunelab runs resume latest",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--dry-run", action="store_true", help="print the command; run nothing")
    _runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_resume)
    sub = _sub(
        actions,
        "rm",
        "delete a run folder",
        "Delete a run folder with its checkpoints and model. A running run needs --force\n"
        "(it is stopped first).",
        "  tunelab runs rm cls-20261123-171200-ab12\n  tunelab runs rm latest --force",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--force", action="store_true", help="stop and delete a running run")
    sub.add_argument("--grace", type=float, default=10.0, help="with --force: seconds before SIGKILL")
    _runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_rm)

    classify = _sub(
        commands,
        "classify",
        "label texts with a classifier",
        "Classify texts with a finished run or any sequence-classification model folder.\n"
        "Texts come as arguments or from --file (txt: one per line; csv/tsv/json/jsonl: the\n"
        "text column). --output writes the input rows with prediction, score and prob_<label>.",
        '  tunelab classify latest "a wonderful film" "a dull script"\n'
        "  tunelab classify cls-20261123 --file reviews.csv --output predictions.csv\n"
        "  tunelab classify ./my-model --file texts.txt --json",
    )
    classify.add_argument("model", metavar="MODEL_OR_RUN", help="run id/folder, model folder or Hub id")
    classify.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    classify.add_argument("--file", metavar="F", default=None, help="csv/tsv/json/jsonl/txt file of texts")
    classify.add_argument(
        "--text-column", default=None, help="column of the texts in --file (default: detected)"
    )
    classify.add_argument(
        "--output", metavar="P", default=None, help="write predictions to a csv/tsv/jsonl file"
    )
    classify.add_argument("--json", action="store_true", help="print one JSON object per text")
    classify.add_argument("--batch-size", type=int, default=64, help="texts per forward pass")
    _runs_dir_option(classify)
    classify.set_defaults(func=cmd_classify)

    generate = _sub(
        commands,
        "generate",
        "continue prompts with a language model",
        "Continue prompts with a finished causal-LM run or any model folder; the text streams.",
        '  tunelab generate latest "ROMEO:"\n'
        '  tunelab generate clm-20261123 "Once upon a time" --max-new-tokens 200 --seed 1\n'
        '  tunelab generate ./gpt2-run "def main" --temperature 0   # greedy',
    )
    generate.add_argument("model", metavar="MODEL_OR_RUN", help="run id/folder, model folder or Hub id")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT")
    _generation_options(generate)
    generate.set_defaults(func=cmd_generate)

    chat = _sub(
        commands,
        "chat",
        "talk with a language model in the terminal",
        "Chat with a causal-LM run: each line of stdin is a message, the reply streams back.\n"
        "/reset clears the conversation; /exit or end of input (Ctrl-D) quits.",
        "  tunelab chat latest\n  echo 'hello there' | tunelab chat clm-20261123 --seed 0",
    )
    chat.add_argument("model", metavar="MODEL_OR_RUN", help="run id/folder, model folder or Hub id")
    _generation_options(chat)
    chat.set_defaults(func=cmd_chat)

    export = _sub(
        commands,
        "export",
        "compress a run's model for CPU inference (int8, pruning)",
        "Export a finished run for fast CPU inference: dynamic int8 quantization of the Linear layers\n"
        "with ONNX Runtime, optionally after structured pruning (layers=N keeps the lowest N encoder\n"
        "layers, ffn=F keeps the share F of each feed-forward block) and a short recovery fine-tune with\n"
        "the run's own recipe; magnitude=F zeroes weights (saves no time: the matrices stay dense).\n"
        "Prints and writes a report (size, CPU latency at batch 1 and 32, accuracy or validation loss,\n"
        "before and after). `tunelab classify`, `tunelab generate` and the app load the export folder.",
        "  tunelab export latest --quantize int8\n"
        "  tunelab export cls-20261123 --prune layers=4,ffn=0.5 --recovery-steps 300 --output sst2-small\n"
        '  tunelab classify runs/cls-20261123/export-int8 "a wonderful film"',
    )
    export.add_argument("run", metavar="RUN", help="run id, unique prefix, run folder or `latest`")
    export.add_argument("--quantize", default="int8", help="int8, or none (export fp32, e.g. after pruning)")
    export.add_argument(
        "--prune", metavar="SPEC", default=None, help="layers=N, ffn=F and/or magnitude=F, comma-separated"
    )
    export.add_argument(
        "--recovery-steps",
        "--recovery_steps",
        type=int,
        default=200,
        metavar="N",
        help="fine-tune steps after structured pruning (0: none)",
    )
    export.add_argument(
        "--output", metavar="DIR", default=None, help="export folder (default: RUN/export-<quantize>)"
    )
    export.add_argument(
        "--validation-file",
        "--validation_file",
        metavar="F",
        default=None,
        help="data for accuracy/loss (default: the run's validation data)",
    )
    export.add_argument(
        "--max-eval-samples", "--max_eval_samples", type=int, default=None, metavar="N", help="limit it"
    )
    _runs_dir_option(export)
    export.set_defaults(func=cmd_export)

    push = _sub(
        commands,
        "push",
        "upload a run's model to the Hugging Face Hub",
        "Upload a finished run's model files (weights, config, tokenizer, model card) to the Hub.\n"
        "The token comes from HF_TOKEN or the login saved by `hf auth login`; it is never an\n"
        "argument (arguments end up in shell history and `ps`).",
        "  tunelab push latest --repo-id me/sst2-minilm\n"
        "  HF_TOKEN=hf_... tunelab push cls-20261123 --repo-id my-org/model --public --revision v1",
    )
    push.add_argument("run", metavar="RUN", help="run id/folder, or a model folder")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the model repository")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private",
        dest="private",
        action="store_true",
        default=True,
        help="a new repository is private (default)",
    )
    visibility.add_argument(
        "--public", dest="private", action="store_false", help="a new repository is public"
    )
    push.add_argument(
        "--revision", metavar="BRANCH", default=None, help="branch to push to (created if needed)"
    )
    push.add_argument("--commit-message", default=None, help="default: Upload <run> with TuneLab")
    _runs_dir_option(push)
    push.set_defaults(func=cmd_push)
    return parser


# ---- main ----------------------------------------------------------------------------------------


def error_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror[0].lower()}{error.strerror[1:]}{where}"
    return str(error) or type(error).__name__


def joined_sbatch_args(argv: list[str]) -> list[str]:
    """``--sbatch-arg --qos=high`` as ``--sbatch-arg=--qos=high`` (argparse takes a value that looks
    like an option only in the joined form)."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        out.append(f"{item}={next(items, '')}" if item == "--sbatch-arg" else item)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(joined_sbatch_args(sys.argv[1:] if argv is None else list(argv)))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if extra and not getattr(args, "accepts_recipe_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.recipe_args = extra
    if args.quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tunelab runs list | head`: the reader left; stay quiet like other Unix tools.
        sys.stderr.close()
        return 0
    except (TuneLabError, OSError, ConfigError) as error:
        if args.debug:
            raise
        print(f"error: {error_message(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
