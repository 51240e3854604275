"""Chat tab: streaming generation from a causal-LM run or model, multi-turn, with a Stop button."""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from tunelab.errors import TuneLabError
from tunelab.infer import Generator

from .loaded import load, model_spec
from .state import AppState, UserError, clean_message

_stops: dict[str, threading.Event] = {}


def text_of(content: Any) -> str:
    """Message content as text (gradio may hand back a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return str(content or "")


def said_in_one_line(pieces):
    """The generator's pieces; a failure of the model is one line in the page, not a server traceback."""
    try:
        yield from pieces
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None


def build(state: AppState) -> None:
    with gr.Tab("Chat", id="chat") as tab:
        gr.Markdown(
            "Talk to a causal LM you trained (or any local/Hub GPT-2 style model). A chat fine-tuned model "
            "(task causal-lm on conversations) gets each turn in its chat template and ends its reply at its "
            "end-of-turn token; a model pretrained on plain text only continues a transcript."
        )
        with gr.Row():
            run_id = gr.Dropdown(
                state.model_choices("causal-lm"),
                label="Causal-LM run",
                allow_custom_value=True,
                elem_id="chat-run",
            )
            model_path = gr.Textbox(label="…or a model folder / Hub id", placeholder="overrides the run")
        with gr.Row():
            with gr.Column(scale=3):
                # replies are the model's plain text: quotes and asterisks are not Markdown
                chatbot = gr.Chatbot(label="Chat", height=360, elem_id="chat-box", render_markdown=False)
                with gr.Row():
                    message = gr.Textbox(
                        label="Message", placeholder="Type and press Enter", scale=4, elem_id="chat-message"
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                    stop = gr.Button("Stop", variant="stop", scale=1)
                    clear = gr.Button("Clear", scale=1)
            with gr.Column(scale=1):
                temperature = gr.Slider(
                    0, 2, value=0.8, step=0.05, label="Temperature (0: greedy)", elem_id="chat-temperature"
                )
                top_p = gr.Slider(0.05, 1, value=0.95, step=0.05, label="Top-p")
                top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k")
                max_new = gr.Slider(1, 512, value=64, step=1, label="Max new tokens")
                repetition = gr.Slider(1.0, 2.0, value=1.1, step=0.05, label="Repetition penalty")

        def respond(msg, history, rid, path, temp, p, k, n, rep, request: gr.Request):
            msg = (msg or "").strip()
            if not msg:
                raise UserError("Type a message first.")
            generator = load(Generator, model_spec(state, rid, path))
            history = [{"role": h["role"], "content": text_of(h["content"])} for h in (history or [])]
            prompt = generator.chat_prompt(history, msg)
            event = threading.Event()
            key = request.session_hash if request else "default"
            _stops[key] = event
            history = [*history, {"role": "user", "content": msg}, {"role": "assistant", "content": ""}]
            yield history, ""
            reply = ""
            pieces = generator.stream(
                prompt,
                max_new_tokens=int(n),
                temperature=float(temp),
                top_p=float(p),
                top_k=int(k),
                repetition_penalty=float(rep),
                stop_event=event,
            )
            for piece in said_in_one_line(pieces):
                reply += piece
                # A base LM goes on to write the user's next turn: end the reply there.
                cut = reply.find("\nUser:")
                if cut >= 0:
                    event.set()
                    reply = reply[:cut]
                history[-1]["content"] = reply.strip()
                yield history, ""
                if cut >= 0:
                    break
            _stops.pop(key, None)

        def stop_generation(request: gr.Request):
            event = _stops.get(request.session_hash if request else "default")
            if event:
                event.set()

        inputs = [message, chatbot, run_id, model_path, temperature, top_p, top_k, max_new, repetition]
        send.click(respond, inputs, [chatbot, message], api_name="chat")
        message.submit(respond, inputs, [chatbot, message], api_name=False)
        stop.click(stop_generation, None, None, api_name="stop_chat")
        clear.click(lambda: [], None, [chatbot], api_name=False)
        tab.select(
            lambda: gr.update(choices=state.model_choices("causal-lm")),
            None,
            [run_id],
            api_name=False,
        )
