"""`tunelab classify`, `tunelab generate` and `tunelab chat`: a finished run's model (or any model folder
or Hub id) from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from tunelab.errors import writing

from .common import CliError, add_command, find_run, info, print_table, runs_dir_of, runs_dir_option


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
    rows, out_columns = prediction_table(records, columns, probabilities, labels, classifier.thresholds)
    if args.output:
        with writing("predictions", Path(args.output).resolve().parent):
            write_predictions(Path(args.output), rows, out_columns)
        info(args, f"wrote {len(rows)} predictions to {args.output}")
    elif args.json:
        for text, row, probs in zip(texts, rows, probabilities, strict=True):
            if classifier.regression:
                answer = {"prediction": row["prediction"]}
            elif classifier.multi_label:  # every label at or above its threshold
                answer = {"labels": classifier.chosen(probs), "probabilities": probs}
            else:
                answer = {"label": row["prediction"], "score": row["score"], "probabilities": probs}
            print(json.dumps({"text": text, **answer}, ensure_ascii=False))
    else:
        table = [
            [row["prediction"], *(f"{p:.4f}" for p in probs.values()), shorten(text, 70)]
            for text, row, probs in zip(texts, rows, probabilities, strict=True)
        ]
        heads = [labels[0].upper()] if classifier.regression else [f"P({k})" for k in labels]
        print_table(table, ["LABELS" if classifier.multi_label else "LABEL", *heads, "TEXT"])
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
    from tunelab.infer import Generator

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
        reply = stream_reply(generator, generator.chat_prompt(history, message), kwargs)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
    if interactive:
        print()
    return 0


def generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (no sampling)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens")
    parser.add_argument("--repetition-penalty", type=float, default=1.1, help="> 1 discourages repeats")
    parser.add_argument("--seed", type=int, default=None, help="make sampling repeatable")
    runs_dir_option(parser)


def register(commands) -> None:
    classify = add_command(
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
    runs_dir_option(classify)
    classify.set_defaults(func=cmd_classify)

    generate = add_command(
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
    generation_options(generate)
    generate.set_defaults(func=cmd_generate)

    chat = add_command(
        commands,
        "chat",
        "talk with a language model in the terminal",
        "Chat with a causal-LM run: each line of stdin is a message, the reply streams back.\n"
        "/reset clears the conversation; /exit or end of input (Ctrl-D) quits.",
        "  tunelab chat latest\n  echo 'hello there' | tunelab chat clm-20261123 --seed 0",
    )
    chat.add_argument("model", metavar="MODEL_OR_RUN", help="run id/folder, model folder or Hub id")
    generation_options(chat)
    chat.set_defaults(func=cmd_chat)
