"""`tunelab runs`: list, show, stop, resume and remove run folders."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from .common import (
    STOP_GRACE_S,
    CliError,
    add_command,
    find_run,
    format_duration,
    format_time,
    info,
    print_table,
    refreshed,
    runs_dir_of,
    runs_dir_option,
)
from .train import start_and_follow

# Metrics that name "best" in `runs list`, in order of preference, with their direction.
BEST_METRICS = {"accuracy": max, "f1": max, "perplexity": min, "loss": min}


def shown_state(status: dict[str, Any]) -> str:
    """The run's state; a Slurm run's queued state with Slurm's pending reason (Resources, Priority ...)."""
    state = status.get("state", "unknown")
    slurm = status.get("slurm") or {}
    if state == "queued" and slurm.get("job_id") and slurm.get("reason"):
        return f"queued ({slurm['reason']})"
    return state


def _cluster_job(status: dict[str, Any]) -> str:
    from tunelab.launch.lifecycle import describe_job

    job = describe_job(status)
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
        ("target", where.get("target", "local") + _cluster_job(status)),
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
    job = status.get("ray") or {}
    if status.get("target") == "ray" and job.get("job_id"):  # the job's own output, from the Jobs API
        from tunelab.launch.ray_jobs import job_logs

        tail = "\n".join(job_logs(job["address"], job["job_id"]).splitlines()[-args.lines :])
        print(
            f"\nRay job logs (last {args.lines} lines; all: ray job logs {job['job_id']} --address {job['address']}):"
        )
        print("  " + (tail.replace("\n", "\n  ") if tail else "(the cluster does not answer)"))
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


def register(commands) -> None:
    runs = add_command(
        commands,
        "runs",
        "list, show, stop, resume or remove runs",
        "Work with the run folders (the same ones the app shows). Without an action: list.\n"
        "RUN is a run id, a unique prefix of one, a run folder, or `latest`.",
        "  tunelab runs\n  tunelab runs show latest\n  tunelab runs stop cls-20261123-1712\n"
        "  tunelab runs resume cls-20261123-1712\n  tunelab runs rm cls-20261123-1712",
    )
    runs_dir_option(runs)
    runs.set_defaults(func=cmd_runs_list)
    actions = runs.add_subparsers(dest="action", metavar="ACTION", title="actions")
    sub = add_command(
        actions, "list", "table of runs, newest first", "List the runs, newest first.", "  tunelab runs list"
    )
    runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_list)
    sub = add_command(
        actions,
        "show",
        "status, config, metrics and log of a run",
        "Show a run: status, config, final metrics and the end of its log.",
        "  tunelab runs show latest\n  tunelab runs show cls-20261123 --lines 100",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--lines", type=int, default=20, help="lines of train.log to show")
    runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_show)
    sub = add_command(
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
    runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_stop)
    sub = add_command(
        actions,
        "resume",
        "continue a stopped or failed run from its last checkpoint",
        "Start the run again in its folder, planned again from its config.yaml and launch.json for\n"
        "this machine: it continues from its last checkpoint.",
        "  tunelab runs resume latest",
    )
    sub.add_argument("run", metavar="RUN")
    sub.add_argument("--dry-run", action="store_true", help="print the command; run nothing")
    runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_resume)
    sub = add_command(
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
    runs_dir_option(sub)
    sub.set_defaults(func=cmd_runs_rm)
