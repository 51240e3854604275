"""Runs tab: every run in the runs folder (app or command line), live progress, log, curves and actions."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from typing import Any

import gradio as gr
import pandas as pd

from tunelab.errors import TuneLabError
from tunelab.launch import Resources
from tunelab.runs import ACTIVE_STATES, PROCESS_LOG, Run
from tunelab.sweep import list_sweeps, results_rows
from tunelab.tasks import get_task

from .plots import line_chart
from .state import (
    TASK_NAMES,
    AppState,
    UserError,
    age,
    clean_message,
    exports,
    failure_advice,
    format_seconds,
    number,
    run_progress,
    user_message,
)

REFRESH_S = 2.0
FINAL_MODEL = "final model"
EXPORT_LOG = "export.log"
EXPORT_TASKS = ("classification", "distillation", "causal-lm")
PRIVATE_STATUS = ("pid", "pgid", "process")  # where a run runs is not shown to the browser
RUN_COLUMNS = ["run", "task", "state", "stage", "progress", "ETA", "created", "result", "sweep"]


def main_result(status: dict[str, Any]) -> str:
    metrics = status.get("metrics") or {}
    for key in ("eval/accuracy", "eval/f1_micro", "eval/rmse", "eval/perplexity", "eval/loss"):
        if key in metrics:
            return f"{key.removeprefix('eval/')} {metrics[key]:.4g}"
    return (status.get("reason") or "")[:60]


def runs_table(state: AppState) -> pd.DataFrame:
    rows = []
    for run in state.runs():
        status = run.status()
        fraction, eta = run_progress(run, status)
        rows.append(
            {
                "run": run.id,
                "task": TASK_NAMES.get(status.get("task"), status.get("task", "")),
                "state": status.get("state", "unknown"),
                "stage": status.get("stage", "")
                + (
                    f" (Slurm: {status['slurm']['reason']})"
                    if (status.get("slurm") or {}).get("reason") and status.get("state") == "queued"
                    else ""
                ),
                "progress": f"{fraction * 100:.0f}%",
                "ETA": eta,
                "created": age(status.get("created")),
                "result": main_result(status),
                "sweep": f"{status['sweep']} #{status.get('trial')}" if status.get("sweep") else "",
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def sweep_view(state: AppState, sweep_id: str | None, param: str | None):
    """(parameter choices, summary, metric-vs-parameter scatter plot, trials table) of a sweep."""
    sweep = next((s for s in list_sweeps(state.runs_dir) if s.id == sweep_id), None)
    if sweep is None:
        return (
            gr.update(choices=[], value=None),
            "Choose a sweep.",
            gr.ScatterPlot(value=None),
            pd.DataFrame(),
        )
    record, rows = sweep.record(), results_rows(sweep)
    metric, names = record["metric"], list(record.get("space", {}))
    param = param if param in names else (names[0] if names else None)
    points = (
        pd.DataFrame(
            [{param: r[param], metric: r[metric], "state": r["state"], "trial": r["trial"]} for r in rows]
        ).dropna(subset=[metric])
        if rows and param
        else pd.DataFrame()
    )
    best = record.get("best")
    summary = (
        f"**{sweep.id}**: {len(rows)}/{record['n_trials']} trials, {record['direction']} eval/{metric}"
        + (f"; best: trial {best['number']} ({best['run']}) {best['value']:.4g}" if best else "")
    )
    plot = gr.ScatterPlot(value=points, x=param, y=metric, color="state", title=f"eval/{metric} vs {param}")
    return gr.update(choices=names, value=param), summary, plot, pd.DataFrame(rows)


def progress_html(fraction: float, label: str) -> str:
    pct = max(0.0, min(fraction, 1.0)) * 100
    return (
        f'<div class="tl-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
        f'aria-valuemax="100"><div style="width:{pct:.1f}%"></div></div><div>{pct:.0f}% {label}</div>'
    )


def curves(run: Run | None, prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(loss, lr, eval metrics) as long tables (step, value, series) for gr.LinePlot."""
    loss, lr, evals = [], [], []
    for event in run.events() if run else []:
        step = event.get("step")
        if step is None:
            continue
        if event.get("kind") == "train":
            if "train/loss" in event:
                loss.append({"step": step, "value": event["train/loss"], "series": f"{prefix}train/loss"})
            if "train/lr" in event:
                lr.append({"step": step, "value": event["train/lr"], "series": f"{prefix}train/lr"})
        elif event.get("kind") == "eval":
            for key, value in event.items():
                if key.startswith("eval/") and isinstance(value, (int, float)) and math.isfinite(value):
                    target = loss if key == "eval/loss" else evals
                    target.append({"step": step, "value": value, "series": f"{prefix}{key}"})
    columns = ["step", "value", "series"]
    return (
        pd.DataFrame(loss, columns=columns),
        pd.DataFrame(lr, columns=columns),
        pd.DataFrame(evals, columns=columns),
    )


def throughput(run: Run) -> str:
    train = run.events("train")
    if not train:
        return ""
    last = train[-1]
    parts = []
    for key, unit in (("train/samples_per_s", "samples/s"), ("train/tokens_per_s", "tokens/s")):
        if isinstance(last.get(key), (int, float)):
            parts.append(f"{last[key]:,.0f} {unit}")
    if isinstance(last.get("perf/peak_mem_gb"), (int, float)):
        parts.append(f"peak memory {last['perf/peak_mem_gb']:.2f} GB")
    return "Throughput: " + " · ".join(parts) if parts else ""


def log_tail(run: Run, lines: int = 40) -> str:
    text = run.log_tail(lines)
    status = run.status()
    if not text or status.get("state") == "failed":
        try:
            extra = (run.path / PROCESS_LOG).read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            extra = []
        if extra:
            text = (text + "\n--- process output ---\n" if text else "") + "\n".join(extra)
    return clean_message(text) if text else "(no log yet)"


def describe(run: Run) -> str:
    status = run.status()
    state = status.get("state", "unknown")
    icon = {"queued": "⏳", "running": "▶", "finished": "✓", "failed": "✗", "stopped": "■"}.get(state, "?")
    lines = [
        f"### {icon} {run.id}: {state}",
        f"Stage: **{status.get('stage', '—')}**"
        + (f" · step {status.get('step', 0)}/{status['max_steps']}" if status.get("max_steps") else ""),
    ]
    from tunelab.launch.lifecycle import describe_job

    job = describe_job(status)
    if job:
        lines.append(f"{job}.")
    elif state == "queued":
        lines.append("Waiting for a free training slot on this machine.")
    if status.get("reason") and state in ("failed", "stopped"):
        lines.append(f"**Why:** {user_message(status['reason'])}")
        lines.append(f"**What to try:** {failure_advice(status['reason'])}")
    metrics = status.get("metrics") or {}
    for split, title in (("eval", "Final"), ("test", "Test file")):
        scores = [
            f"{key.partition('/')[2]} {value:.4g}"
            for key, value in metrics.items()
            if key.startswith(f"{split}/") and isinstance(value, (int, float))
        ]
        if scores:
            lines.append(f"{title}: " + ", ".join(scores))
    checkpoints = run.checkpoints()
    if checkpoints:
        lines.append(f"Checkpoints: {', '.join(c.name for c in checkpoints)}")
    if status.get("started") and status.get("ended") and state != "running":
        took = run.elapsed(status)  # every attempt: a stopped, then resumed run counts both parts
        if took:
            lines.append(f"Took {format_seconds(took)}.")
    tp = throughput(run)
    if tp:
        lines.append(tp)
    return "\n\n".join(lines)


def charts(run: Run | None) -> tuple:
    """The Loss, Learning-rate and Eval-metrics charts of a run (None: an empty plot)."""
    loss, lr, evals = curves(run)
    return (
        line_chart(loss, "Loss", "loss"),
        line_chart(lr, "Learning rate", "learning rate"),
        line_chart(evals, "Eval metrics", "metric"),
    )


def action_buttons(status: dict[str, Any] | None) -> tuple:
    """Stop (red) only while the run is queued or running; Resume only for a stopped or failed run."""
    state = (status or {}).get("state")
    active = state in ACTIVE_STATES
    return (
        gr.update(interactive=active, variant="stop" if active else "secondary"),
        gr.update(interactive=state in ("stopped", "failed")),
    )


def run_details(state: AppState, run_id: str | None):
    """(progress, description, log, loss plot, lr plot, eval plot, status json, checkpoint choices,
    stop button, resume button)."""
    empty = (None, None, None)
    if not run_id:
        return (
            progress_html(0, ""),
            "Choose a run.",
            "",
            *empty,
            {},
            gr.update(choices=[FINAL_MODEL]),
            *action_buttons(None),
        )
    try:
        run = state.run(run_id)
    except gr.Error:
        return (
            progress_html(0, ""),
            "This run no longer exists.",
            "",
            *empty,
            {},
            gr.update(),
            *action_buttons(None),
        )
    status = run.status()
    fraction, eta = run_progress(run, status)
    safe_status = {k: v for k, v in status.items() if k not in PRIVATE_STATUS}
    choices = [FINAL_MODEL, *[c.name for c in run.checkpoints()]]
    return (
        progress_html(fraction, eta),
        describe(run),
        log_tail(run),
        *charts(run),
        safe_status,
        gr.update(choices=choices),
        *action_buttons(status),
    )


def task_of(run: Run) -> str:
    return TASK_NAMES.get(run.status().get("task"), "classification")


def start_from(config: dict[str, Any], run: Run) -> None:
    """Point a copied config at ``run``'s final model (a distillation's model is its student)."""
    if task_of(run) == "distillation":
        config.pop("student_layers", None)
        config.pop("student_num_layers", None)
        config["student_name_or_path"] = str(run.path)
    else:
        config["model_name_or_path"] = str(run.path)


def derived_run(
    state: AppState, run: Run, config: dict[str, Any], origin: str, resume_from: str | None = None
) -> Run:
    """A new run with ``config``, launched how ``run`` was (its launch record's resources)."""
    record = run.launch_record()
    config = {
        k: v for k, v in config.items() if k not in ("output_dir", "resume_from_checkpoint", "run_name")
    }
    if resume_from:
        config["resume_from_checkpoint"] = resume_from
    return state.queue.submit(
        task_of(run), config, Resources.from_dict(record.get("resources")), origin=origin
    )


def continue_run(state: AppState, run_id: str, epochs: float) -> str:
    """A new run training N more epochs: from the final model (finished) or the last checkpoint (stopped)."""
    run = state.run(run_id)
    epochs = number(epochs or 1, "Epochs")
    config = {k: v for k, v in run.config().items() if v is not None}
    config.pop("max_train_steps", None)
    if run.has_model():
        start_from(config, run)
        config["num_train_epochs"] = epochs
    elif run.checkpoints():
        last = run.checkpoints()[-1]
        done = json.loads((last / "trainer_state.json").read_text()).get("epoch", 0)
        config.update(num_train_epochs=float(done) + epochs)
        new = derived_run(state, run, config, origin=f"{run.id}/{last.name}", resume_from=str(last))
        return f"Queued **{new.id}**: {epochs:g} more epochs from {run.id}/{last.name}."
    else:
        raise UserError("This run has neither a final model nor a checkpoint to continue from.")
    new = derived_run(state, run, config, origin=run.id)
    return f"Queued **{new.id}**: {epochs:g} more epochs from {run.id}."


def fork_run(
    state: AppState, run_id: str, source: str, epochs: float, learning_rate: float, max_steps: int
) -> str:
    """A new run from the final model (fresh optimizer, new settings) or a checkpoint (its state, new length)."""
    run = state.run(run_id)
    config = {k: v for k, v in run.config().items() if v is not None}
    config.update(
        num_train_epochs=number(epochs or 1, "Epochs"), learning_rate=number(learning_rate, "Learning rate")
    )
    config.pop("max_train_steps", None)
    max_steps = number(max_steps or 0, "Max steps", int)
    if max_steps > 0:
        config["max_train_steps"] = max_steps
    if source in (None, "", FINAL_MODEL):
        if not run.has_model():
            raise UserError("This run has no final model; fork from one of its checkpoints.")
        start_from(config, run)
        new = derived_run(state, run, config, origin=run.id)
        return f"Queued **{new.id}** from {run.id}'s final model."
    checkpoint = next((c for c in run.checkpoints() if c.name == source), None)
    if checkpoint is None:
        raise UserError("That checkpoint does not exist.")
    new = derived_run(state, run, config, origin=f"{run.id}/{checkpoint.name}", resume_from=str(checkpoint))
    return (
        f"Queued **{new.id}** from {run.id}/{checkpoint.name} (optimizer and schedule continue from the "
        "checkpoint; the new length applies)."
    )


def export_argv(run: Run, quantize: str, prune: str | None, recovery_steps: int) -> list[str]:
    """The `tunelab export` command line of these choices (what the app runs and shows)."""
    argv = ["tunelab", "export", str(run.path), "--quantize", quantize]
    if prune:
        argv += ["--prune", prune, "--recovery-steps", str(recovery_steps)]
    return argv


def export_model(
    state: AppState, run_id: str, quantize: str, prune: str | None, recovery_steps: float
) -> tuple[str, str]:
    """Run `tunelab export` on a finished run (a subprocess, as from a shell); (message, report.md).

    The export measures latency and accuracy and may fine-tune after pruning: it runs in its own process
    so that a crash or a long recovery fine-tune never takes the app down, and one at a time."""
    from tunelab.export import ExportOptions, default_output_dir, parse_prune

    run = state.run(run_id)
    if not run.has_model():
        raise UserError(f"Run {run.id} has no final model yet (it is {run.state}); export a finished run.")
    if task_of(run) not in EXPORT_TASKS:
        raise UserError("Export works on classification, distillation and causal-LM runs.")
    prune = (prune or "").strip() or None
    try:  # the same checks as the CLI, before a process starts
        options = ExportOptions(
            quantize=quantize,
            prune=parse_prune(prune),
            recovery_steps=number(recovery_steps or 0, "Recovery steps", int),
        )
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    if options.prune and task_of(run) == "causal-lm":
        raise UserError("Pruning works on BERT-family classifiers; export a causal-LM run without it.")
    argv = export_argv(run, quantize, prune, options.recovery_steps)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    with (run.path / EXPORT_LOG).open("ab") as log:
        log.write(f"\n$ {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "tunelab.cli", *argv[1:]],
            cwd=state.queue.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    out = default_output_dir(run, options)
    if proc.returncode != 0 or not (out / "report.md").is_file():
        lines = (run.path / EXPORT_LOG).read_text(errors="replace").splitlines()
        why = next((ln for ln in reversed(lines) if ln.startswith("error:")), None)
        why = why.removeprefix("error:").strip() if why else f"it exited with code {proc.returncode}"
        raise UserError(f"The export failed: {clean_message(why)} (the run's {EXPORT_LOG} has the output).")
    return (
        f"Exported **{run.id}/{out.name}**: pick it in the Classify or Chat tab.\n\n"
        f"`{shlex.join(argv).replace(str(run.path), f'{state.runs_dir.name}/{run.id}')}`",
        (out / "report.md").read_text(),
    )


def export_reports(state: AppState, run_id: str | None) -> str:
    """The report of each export of a run (newest last)."""
    if not run_id:
        return ""
    try:
        run = state.run(run_id)
    except gr.Error:
        return ""
    parts = []
    for folder in exports(run.path):
        report = folder / "report.md"
        text = report.read_text() if report.is_file() else "(no report)"
        parts.append(f"#### {run.id}/{folder.name}\n\n{text}")
    return "\n\n".join(parts) or "No export of this run yet."


# ---- actions on the selected run (the tab's buttons and API) ---------------------------------------


def status_of(state: AppState, rid: str) -> dict:
    """status.json of a run (pid/pgid left out)."""
    return {k: v for k, v in state.run(rid).status().items() if k not in PRIVATE_STATUS}


def list_runs_api(state: AppState) -> list[dict]:
    """Every run with its status (pid/pgid left out)."""
    return [
        {
            "id": r.id,
            **{k: v for k, v in r.status().items() if k not in PRIVATE_STATUS},
            "checkpoints": [c.name for c in r.checkpoints()],
        }
        for r in state.runs()
    ]


def stop_run(state: AppState, rid):
    return state.queue.stop(state.run(rid))


def resume_run(state: AppState, rid):
    run = state.run(rid)
    if not get_task(task_of(run)).recipe_path().exists():
        raise UserError("The recipe of this run is not installed.")
    try:
        state.queue.resume(run)
    except (ValueError, TuneLabError) as e:
        raise UserError(str(e)) from None
    return f"Resuming **{run.id}** from its last checkpoint (queued)."


def delete_run(state: AppState, rid):
    run = state.run(rid)
    try:
        state.queue.delete(run)
    except ValueError as e:
        raise UserError(str(e)) from None
    return f"Deleted {rid}."


def settle_message(state: AppState, rid, message):
    """A "stopping" note goes once the run has stopped (the state above says how it ended)."""
    try:
        ended = rid and state.run(rid).state not in ACTIVE_STATES
    except gr.Error:
        ended = True
    return "" if ended and "stopping" in (message or "") else gr.skip()


def build(state: AppState) -> None:
    with gr.Tab("Runs", id="runs") as tab:
        timer = gr.Timer(REFRESH_S)
        with gr.Row():
            table = gr.Dataframe(
                runs_table(state),
                label="Runs (also those started from the command line)",
                interactive=False,
                max_height=260,
                elem_id="runs-table",
            )
        with gr.Row():
            run_id = gr.Dropdown(
                state.run_choices(), label="Run", allow_custom_value=True, scale=3, elem_id="runs-select"
            )
            stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="runs-stop")
            resume_btn = gr.Button("Resume", scale=1, elem_id="runs-resume")
            delete_btn = gr.Button("Delete", scale=1)
        action_msg = gr.Markdown(elem_id="runs-action")
        progress = gr.HTML(progress_html(0, ""))
        info = gr.Markdown(elem_id="runs-info")
        with gr.Row():
            loss_plot = gr.Plot(label="Loss", elem_id="runs-loss-plot")
            lr_plot = gr.Plot(label="Learning rate", elem_id="runs-lr-plot")
            eval_plot = gr.Plot(label="Eval metrics", elem_id="runs-eval-plot")
        log = gr.Textbox(
            label="Log (last 40 lines)", lines=12, max_lines=45, interactive=False, elem_id="runs-log"
        )
        with gr.Accordion("Continue or fork", open=False):
            with gr.Row():
                more_epochs = gr.Number(1, label="More epochs", minimum=0.1)
                continue_btn = gr.Button("Continue for N more epochs")
            with gr.Row():
                fork_source = gr.Dropdown(
                    [FINAL_MODEL], value=FINAL_MODEL, label="Fork from", allow_custom_value=True
                )
                fork_epochs = gr.Number(1, label="Epochs", minimum=0.1)
                fork_lr = gr.Number(5e-5, label="Learning rate", minimum=0)
                fork_steps = gr.Number(0, label="Max steps (0: by epochs)", precision=0, minimum=0)
                fork_btn = gr.Button("Fork with these settings")
        _export_section(state, run_id)
        with gr.Accordion("status.json", open=False):
            status_json = gr.JSON()
        _sweeps_section(state, tab)

        details = [
            progress,
            info,
            log,
            loss_plot,
            lr_plot,
            eval_plot,
            status_json,
            fork_source,
            stop_btn,
            resume_btn,
        ]

        def refresh(selected):
            choices = state.run_choices()
            value = selected if selected in choices else (choices[0] if choices else None)
            return (runs_table(state), gr.update(choices=choices, value=value), *run_details(state, value))

        timer.tick(refresh, [run_id], [table, run_id, *details], api_name=False, show_progress="hidden")

        timer.tick(
            lambda r, m: settle_message(state, r, m),
            [run_id, action_msg],
            [action_msg],
            api_name=False,
            show_progress="hidden",
        )
        tab.select(refresh, [run_id], [table, run_id, *details], api_name=False)
        run_id.input(lambda r: run_details(state, r), [run_id], details, api_name="run_details")
        stop_btn.click(lambda r: stop_run(state, r), [run_id], [action_msg], api_name="stop_run")
        resume_btn.click(lambda r: resume_run(state, r), [run_id], [action_msg], api_name="resume_run")
        delete_btn.click(lambda r: delete_run(state, r), [run_id], [action_msg], api_name="delete_run")
        continue_btn.click(
            lambda r, n: continue_run(state, r, n),
            [run_id, more_epochs],
            [action_msg],
            api_name="continue_run",
        )
        fork_btn.click(
            lambda r, s, e, lr_, m: fork_run(state, r, s, e, lr_, m),
            [run_id, fork_source, fork_epochs, fork_lr, fork_steps],
            [action_msg],
            api_name="fork_run",
        )

        def run_status(rid: str) -> dict:
            """status.json of a run (pid/pgid left out)."""
            return status_of(state, rid)

        def list_runs() -> list[dict]:
            """Every run with its status (pid/pgid left out)."""
            return list_runs_api(state)

        gr.api(run_status, api_name="run_status")
        gr.api(list_runs, api_name="list_runs")


def _export_section(state: AppState, run_id: gr.Dropdown) -> None:
    """The "Export for CPU inference" accordion of the selected run, and its events."""
    with gr.Accordion("Export for CPU inference (int8, pruning)", open=False):
        gr.Markdown(
            "Dynamic int8 quantization with ONNX Runtime (smaller and faster on CPU), optionally after "
            "structured pruning with a short recovery fine-tune. The report gives size, CPU latency and "
            "accuracy (or validation loss) before and after. The export appears in Classify and Chat."
        )
        with gr.Row():
            export_quantize = gr.Dropdown(["int8", "none"], value="int8", label="Quantize")
            export_prune = gr.Textbox(
                label="Prune (optional, classifiers)",
                placeholder="e.g. layers=4 or layers=4,ffn=0.5",
                info="layers=N keeps the lowest N layers · ffn=F keeps F of each feed-forward block",
            )
            export_steps = gr.Number(200, label="Recovery fine-tune steps", precision=0, minimum=0)
            export_btn = gr.Button("Export", elem_id="runs-export")
        export_msg = gr.Markdown(elem_id="runs-export-msg")
        export_md = gr.Markdown(elem_id="runs-export-report")
    export_btn.click(
        lambda r, q, p, n: export_model(state, r, q, p, n),
        [run_id, export_quantize, export_prune, export_steps],
        [export_msg, export_md],
        api_name="export_run",
        concurrency_limit=1,
        concurrency_id="export",
    )
    run_id.input(lambda r: export_reports(state, r), [run_id], [export_md], api_name=False)


def _sweeps_section(state: AppState, tab: gr.Tab) -> None:
    """The "Sweeps" accordion: a sweep's trials and its metric against each hyperparameter."""
    with gr.Accordion("Sweeps (tunelab sweep)", open=False):
        with gr.Row():
            sweep_id = gr.Dropdown([s.id for s in list_sweeps(state.runs_dir)], label="Sweep", scale=2)
            sweep_param = gr.Dropdown([], label="Hyperparameter", scale=1)
        sweep_info = gr.Markdown()
        sweep_plot = gr.ScatterPlot(x="x", y="y", color="state", height=280)
        sweep_trials = gr.Dataframe(
            headers=["trial", "best", "run", "state"], label="Trials", interactive=False, max_height=260
        )

    sweep_outputs = [sweep_param, sweep_info, sweep_plot, sweep_trials]

    def sweep_choices():
        return gr.update(choices=[s.id for s in list_sweeps(state.runs_dir)])

    tab.select(sweep_choices, None, [sweep_id], api_name=False)
    sweep_id.focus(sweep_choices, None, [sweep_id], api_name=False)
    sweep_id.change(lambda s: sweep_view(state, s, None), [sweep_id], sweep_outputs, api_name="sweep_view")
    sweep_param.input(
        lambda s, p: sweep_view(state, s, p), [sweep_id, sweep_param], sweep_outputs, api_name=False
    )
