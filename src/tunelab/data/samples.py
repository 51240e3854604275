"""Sample datasets that ship with TuneLab: written by the project or derived from text Python ships.

Nothing here is downloaded. ``materialize_samples(folder)`` writes the files on first use:

- ``sample-sentiment.csv``: short movie-review sentences (text, label pos/neg), generated from word lists.
- ``sample-python-docs-topics.csv``: paragraphs of Python's own reference documentation (``pydoc_data``)
  labelled with the family of the topic they come from (statements, expressions, types, data model).
- ``sample-python-docs.txt``: the same documentation as plain text, a corpus for causal-LM pretraining.
- ``sample-python-chat.jsonl``: conversations about Python's reference topics (``messages`` lists), the
  answers taken from that documentation in a few fixed forms: data for chat fine-tuning.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Topic family of each pydoc_data topic; topics not listed are left out (too mixed to label).
_STATEMENTS = {
    "assert",
    "assignment",
    "augassign",
    "break",
    "class",
    "compound",
    "continue",
    "del",
    "else",
    "for",
    "function",
    "global",
    "if",
    "import",
    "nonlocal",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "async",
    "yield",
}
_EXPRESSIONS = {
    "atom-identifiers",
    "atom-literals",
    "attribute-references",
    "await",
    "binary",
    "bitwise",
    "booleans",
    "calls",
    "comparisons",
    "exprlists",
    "in",
    "lambda",
    "operator-summary",
    "power",
    "shifting",
    "slicings",
    "subscriptions",
    "unary",
    "conversions",
}
_TYPES = {
    "bltin-code-objects",
    "bltin-ellipsis-object",
    "bltin-null-object",
    "bltin-type-objects",
    "dict",
    "floating",
    "imaginary",
    "integers",
    "lists",
    "numbers",
    "string-methods",
    "strings",
    "truth",
    "types",
    "typesfunctions",
    "typesmapping",
    "typesmethods",
    "typesmodules",
    "typesseq",
    "typesseq-mutable",
    "formatstrings",
}
_DATA_MODEL = {
    "attribute-access",
    "callable-types",
    "context-managers",
    "customization",
    "numeric-types",
    "objects",
    "sequence-types",
    "specialattrs",
    "specialnames",
}
TOPIC_FAMILIES = {
    **{t: "statements" for t in _STATEMENTS},
    **{t: "expressions" for t in _EXPRESSIONS},
    **{t: "types" for t in _TYPES},
    **{t: "data model" for t in _DATA_MODEL},
}


@dataclass(frozen=True)
class Sample:
    file_name: str
    task: str  # "classification" | "causal-lm"
    description: str
    build: Callable[[], str]


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs of a pydoc topic, whitespace collapsed; code blocks and headings left out."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines or lines[0].startswith(("   ", ">>>", "...")):
            continue  # indented blocks are code or grammar
        para = " ".join(line.strip() for line in lines)
        if len(para) >= 80 and not set(para) <= set("*=-~^ "):
            out.append(para[:400])
    return out


def python_docs_topics_csv() -> str:
    from pydoc_data.topics import topics

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    for name in sorted(topics):
        family = TOPIC_FAMILIES.get(name)
        if family:
            for para in _paragraphs(topics[name]):
                writer.writerow([para, family])
    return buf.getvalue()


def python_docs_text(max_chars: int = 400_000) -> str:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name].strip() for name in sorted(topics))
    return text[:max_chars] + "\n"


def _topic_title(text: str) -> str:
    """A pydoc topic's heading ('The "break" statement'), or its first sentence's start."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.rstrip(":.")[:80]


def python_chat_jsonl(seed: int = 0) -> str:
    """Conversations about the topics of Python's reference (``pydoc_data``): a user asks what a topic is,
    which part of the reference covers it, or for more (a second turn); the assistant answers from the
    documentation in fixed forms, so a small model fine-tuned on them answers in kind."""
    from pydoc_data.topics import topics

    rng = random.Random(seed)
    asks = [
        "What is {t}?",
        "Can you explain {t}?",
        "Tell me about {t}.",
        "I am learning Python. What is {t}?",
    ]
    more = ["Tell me more.", "And what else should I know?", "Go on, please."]
    rows = []
    for name in sorted(topics):
        family = TOPIC_FAMILIES.get(name)
        paragraphs = _paragraphs(topics[name])
        if not family or not paragraphs:
            continue
        title = _topic_title(topics[name])
        for ask in asks:
            messages = [
                {"role": "user", "content": ask.format(t=title)},
                {"role": "assistant", "content": paragraphs[0]},
            ]
            if len(paragraphs) > 1 and rng.random() < 0.5:
                follow = rng.choice(paragraphs[1:])
                messages += [
                    {"role": "user", "content": rng.choice(more)},
                    {"role": "assistant", "content": follow},
                ]
            rows.append({"messages": messages})
        where = f"Which part of the Python reference covers {title}?"
        answer = f"{title} belongs to the {family} part of the Python reference."
        rows.append(
            {"messages": [{"role": "user", "content": where}, {"role": "assistant", "content": answer}]}
        )
    rng.shuffle(rows)
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def sentiment_csv(rows: int = 600, seed: int = 0) -> str:
    """Short, learnable reviews: the label follows the sentiment words (with some negation)."""
    rng = random.Random(seed)
    good = [
        "great",
        "wonderful",
        "moving",
        "brilliant",
        "delightful",
        "superb",
        "charming",
        "funny",
        "warm",
        "gripping",
        "beautiful",
        "clever",
    ]
    bad = [
        "awful",
        "boring",
        "dull",
        "terrible",
        "clumsy",
        "tedious",
        "bland",
        "painful",
        "messy",
        "flat",
        "forgettable",
        "silly",
    ]
    things = ["film", "story", "acting", "script", "ending", "music", "cast", "plot", "dialogue", "direction"]
    openers = ["honestly", "overall", "i think", "to be fair", "in the end", "for me", ""]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    for i in range(rows):
        positive = i % 2 == 0
        words = good if positive else bad
        opener = rng.choice(openers)
        text = f"{opener + ', ' if opener else ''}the {rng.choice(things)} is {rng.choice(words)}"
        if rng.random() < 0.5:
            text += f" and the {rng.choice(things)} is {rng.choice(words)}"
        if rng.random() < 0.2:
            other = bad if positive else good
            text += f", not {rng.choice(other)} at all"
        writer.writerow([text, "pos" if positive else "neg"])
    return buf.getvalue()


SAMPLES: dict[str, Sample] = {
    s.file_name: s
    for s in (
        Sample(
            "sample-sentiment.csv",
            "classification",
            "600 short movie-review sentences, labels pos/neg (written by TuneLab)",
            sentiment_csv,
        ),
        Sample(
            "sample-python-docs-topics.csv",
            "classification",
            "paragraphs of Python's reference docs, labelled statements/expressions/types/data model",
            python_docs_topics_csv,
        ),
        Sample(
            "sample-python-docs.txt",
            "causal-lm",
            "400 kB of Python's reference documentation as plain text (for GPT-2 pretraining)",
            python_docs_text,
        ),
        Sample(
            "sample-python-chat.jsonl",
            "causal-lm",
            "conversations about Python's reference topics, answered from its docs (chat fine-tuning)",
            python_chat_jsonl,
        ),
    )
}


def materialize_samples(folder: Path) -> list[Path]:
    """Write every sample file into ``folder`` unless it is already there; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in SAMPLES.values():
        path = folder / sample.file_name
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(sample.build(), encoding="utf-8")
            tmp.replace(path)
        paths.append(path)
    return paths
