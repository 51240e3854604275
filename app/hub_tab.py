"""Hub tab: push a finished run's model to the Hugging Face Hub.

The token is used for this one push only: it is never written to disk, logs, configs or model cards,
never shown back, and the field is cleared after every attempt.
"""

from __future__ import annotations

import os

import gradio as gr

from tunelab.errors import TuneLabError
from tunelab.hub import push_to_hub

from .state import AppState, clean_message


def push(state: AppState, run_id: str, repo_id: str, private: bool, token: str) -> tuple[str, str]:
    """(message, "") — the second value clears the token field."""
    try:
        run = state.run(run_id)
    except gr.Error as e:
        return f"✗ {e.message}", ""
    repo_id = (repo_id or "").strip()
    if not repo_id:
        return "✗ Enter a repository id such as `your-name/my-model`.", ""
    if not run.has_model():
        return f"✗ Run {run.id} has no final model (it is {run.state}).", ""
    typed = (token or "").strip()
    if not typed and not state.reach.server_hub_token:
        return (
            "✗ Type a Hugging Face write token: this server does not lend its own (its admin can allow "
            "that with --allow-server-hub-token).",
            "",
        )
    secret = typed or os.environ.get("HF_TOKEN") or None
    try:
        pushed = push_to_hub(run.path, repo_id, private=bool(private), token=secret)
    except TuneLabError as e:
        return f"✗ {clean_message(str(e))}", ""
    except Exception as e:  # noqa: BLE001 - one line, and the token field is cleared whatever happened
        return f"✗ The push failed: {type(e).__name__}. The run folder is unchanged.", ""
    finally:
        secret = token = None  # noqa: F841 - drop the references as soon as the push is over
    visibility = "private" if private else "public"
    if pushed.made_private:
        visibility = "private: the repository existed as public and was made private"
    return f"✓ Pushed **{run.id}** to [{repo_id}]({pushed.url}) ({visibility}).", ""


def build(state: AppState) -> None:
    with gr.Tab("Hub", id="hub") as tab:
        gr.Markdown(
            "Push a finished run's model files (weights, config, tokenizer, model card) to the Hugging "
            "Face Hub. Logs, checkpoints and the run's config stay on this machine. The token is used "
            "for the push only and never stored"
            + (
                "; leave it empty to use the server's `HF_TOKEN` or `hf auth login`."
                if state.reach.server_hub_token
                else "; this server does not lend its own token: type yours."
            )
        )
        with gr.Row():
            run_id = gr.Dropdown(
                state.run_choices(with_model=True),
                label="Finished run",
                allow_custom_value=True,
                elem_id="hub-run",
            )
            repo_id = gr.Textbox(label="Repository id", placeholder="your-name/my-model", elem_id="hub-repo")
            private = gr.Checkbox(True, label="Private")
        token = gr.Textbox(
            label="Hugging Face token (write)", type="password", placeholder="hf_…", elem_id="hub-token"
        )
        push_btn = gr.Button("Push to the Hub", variant="primary", elem_id="hub-push")
        result = gr.Markdown(elem_id="hub-result")
        push_btn.click(
            lambda r, rid, p, t: push(state, r, rid, p, t),
            [run_id, repo_id, private, token],
            [result, token],
            api_name="push_to_hub",
        )
        tab.select(
            lambda: gr.update(choices=state.run_choices(with_model=True)), None, [run_id], api_name=False
        )
