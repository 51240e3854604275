"""Compare tab: two runs side by side: config diff, overlaid curves, final metrics, the same prompt answered."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from tunelab.infer import Generator

from .loaded import load
from .plots import line_chart
from .runs_tab import curves
from .state import AppState, UserError, clean_message

BASE = "(base model of A)"


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in NOT_SETTINGS and a.get(k) != b.get(k)]
    rows = [
        {"setting": k, "A": clean_message(str(a.get(k))), "B": clean_message(str(b.get(k)))} for k in keys
    ]
    return pd.DataFrame(rows or [{"setting": "(same settings)", "A": "", "B": ""}])


# Where a run lives and how it was started, not how it trains.
NOT_SETTINGS = ("output_dir", "resume_from_checkpoint")


def rounded(value: Any) -> Any:
    """Four significant digits for a metric (an integer such as a step stays as it is)."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def final_metrics(status_a: dict, status_b: dict) -> pd.DataFrame:
    ma, mb = status_a.get("metrics") or {}, status_b.get("metrics") or {}
    keys = list(dict.fromkeys([*ma, *mb]))
    rows = [
        {"metric": k, "A": rounded(ma.get(k)), "B": rounded(mb.get(k))}
        for k in keys
        if not isinstance(ma.get(k, 0), (dict, list))
    ]
    return pd.DataFrame(rows or [{"metric": "(no final metrics yet)", "A": None, "B": None}])


def compare(state: AppState, a_id: str, b_id: str):
    a, b = state.run(a_id), state.run(b_id)
    loss_a, _, eval_a = curves(a, "A ")
    loss_b, _, eval_b = curves(b, "B ")
    return (
        config_diff(a.config(), b.config()),
        line_chart(pd.concat([loss_a, loss_b]), "Loss (A vs B)", "loss", width=460),
        line_chart(pd.concat([eval_a, eval_b]), "Eval metrics (A vs B)", "metric", width=460),
        final_metrics(a.status(), b.status()),
    )


def generate_both(state: AppState, a_id: str, b_id: str, prompt: str, max_new: int, temperature: float):
    if not (prompt or "").strip():
        raise UserError("Type a prompt first.")
    a = state.run(a_id)
    specs = [str(a.path)]
    if b_id == BASE:
        base = a.config().get("model_name_or_path")
        if not base:
            raise UserError("Run A was trained from scratch: it has no base model to compare with.")
        specs.append(base)
    else:
        specs.append(str(state.run(b_id).path))
    outs = []
    for spec in specs:
        gen = load(Generator, spec)
        outs.append(
            prompt + gen.generate(prompt, max_new_tokens=int(max_new), temperature=float(temperature), seed=0)
        )
    return outs[0], outs[1]


def build(state: AppState) -> None:
    with gr.Tab("Compare", id="compare") as tab:
        with gr.Row():
            run_a = gr.Dropdown(
                state.run_choices(), label="Run A", allow_custom_value=True, elem_id="compare-a"
            )
            run_b = gr.Dropdown(
                state.run_choices(), label="Run B", allow_custom_value=True, elem_id="compare-b"
            )
            compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
        diff = gr.Dataframe(
            headers=["setting", "A", "B"],
            label="Settings that differ",
            interactive=False,
            elem_id="compare-diff",
        )
        with gr.Row():
            loss_plot = gr.Plot(label="Loss (A vs B)", elem_id="compare-loss-plot")
            eval_plot = gr.Plot(label="Eval metrics (A vs B)", elem_id="compare-eval-plot")
        metrics = gr.Dataframe(headers=["metric", "A", "B"], label="Final metrics", interactive=False)
        with gr.Accordion("Causal LMs: the same prompt, both models", open=False):
            gr.Markdown(
                f"Choose **{BASE}** as run B to compare a fine-tuned run with the model it started from."
            )
            with gr.Row():
                prompt = gr.Textbox("The ", label="Prompt", scale=3)
                max_new = gr.Slider(1, 256, value=48, step=1, label="Max new tokens")
                temperature = gr.Slider(0, 2, value=0.0, step=0.05, label="Temperature (0: greedy)")
            gen_btn = gr.Button("Generate with both")
            with gr.Row():
                out_a = gr.Textbox(label="A", lines=6, interactive=False)
                out_b = gr.Textbox(label="B", lines=6, interactive=False)

        compare_btn.click(
            lambda a, b: compare(state, a, b),
            [run_a, run_b],
            [diff, loss_plot, eval_plot, metrics],
            api_name="compare_runs",
        )
        gen_btn.click(
            lambda a, b, p, n, t: generate_both(state, a, b, p, n, t),
            [run_a, run_b, prompt, max_new, temperature],
            [out_a, out_b],
            api_name="compare_generate",
        )

        def refresh():
            choices = state.run_choices()
            return gr.update(choices=choices), gr.update(choices=[*choices, BASE])

        tab.select(refresh, None, [run_a, run_b], api_name=False)
