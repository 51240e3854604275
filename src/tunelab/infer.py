"""Classification and generation from a finished run folder or any model folder / Hub id."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, TuneLabError
from .models import LOADING, resolve_model_path
from .runs import Run


def resolve_model(model_or_run: str | Path, runs_dir: Path | None = None) -> str:
    """A run id (in runs_dir), a run folder, a model folder, the embedded default or a Hub id."""
    spec = str(model_or_run)
    if runs_dir is not None and not Path(spec).exists() and (runs_dir / spec).is_dir():
        spec = str(runs_dir / spec)
    path = Path(spec)
    if (path / "status.json").exists() and not Run(path).has_model():
        state = Run(path).state
        raise ConfigError(f"run {path.name} has no final model yet (it is {state}); wait for it to finish.")
    return resolve_model_path(spec)


def _load(auto_model: Any, path: str, what: str) -> tuple[Any, Any]:
    """Model (on the GPU when there is one, in eval mode) and tokenizer from a resolved folder or Hub id."""
    from transformers import AutoTokenizer

    with LOADING:  # one load at a time in this process (see tunelab.models.LOADING)
        if (Path(path) / "export.json").is_file():  # a `tunelab export` folder: ONNX Runtime on the CPU
            from .ort import load_export

            task = "clm" if "CausalLM" in auto_model.__name__ else "cls"
            return load_export(path, task), AutoTokenizer.from_pretrained(path)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model = auto_model.from_pretrained(path).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as e:
            raise ConfigError(f"cannot load {what} from {path}: {str(e).splitlines()[0]}") from None
    return model, tokenizer


def trained_settings(path: Path) -> tuple[int | None, str]:
    """(max_length, mixed precision) the model was trained at, from its run folder (an export's is the
    folder above it); (None, "no") for a model that is not a run's."""
    if (path / "export.json").is_file():  # ONNX Runtime runs the export at its own precision
        max_length, _ = trained_settings(path.parent)
        return max_length, "no"
    if not (path / "config.yaml").is_file():
        return None, "no"
    run = Run(path)
    config, status = run.config(), run.status()
    precision = status.get("mixed_precision") or config.get("mixed_precision") or "no"
    length = config.get("max_length")
    return (int(length) if length else None), (precision if precision in ("auto", "fp16", "bf16") else "no")


def _usable_precision(precision: str, device: torch.device) -> str:
    """The training's autocast precision where this device runs it natively, else fp32 ("no"); "auto" (a
    run from before status.json kept the precision) is what training would pick on this device."""
    from .hardware import detect_hardware, resolve_precision

    hardware, on_gpu = detect_hardware(), device.type == "cuda"
    if precision == "auto":
        return resolve_precision("auto", hardware, on_gpu)
    if precision == "bf16" and not (hardware.gpu_bf16 if on_gpu else hardware.cpu_bf16):
        return "fp16" if on_gpu else "no"
    return precision if on_gpu or precision == "bf16" else "no"  # no fp16 autocast on a CPU


@dataclass
class Classifier:
    """A sequence classifier with its tokenizer; ``predict`` gives label probabilities.

    Inference runs as the model was trained: texts cut at the run's own ``max_length``, autocast to the
    run's bf16/fp16 where this device supports it. Texts are batched by length (longest first) with
    dynamic padding, so a batch of short texts is not padded to the longest text of the file."""

    model: Any
    tokenizer: Any
    max_length: int = 512
    precision: str = "no"

    @classmethod
    def load(cls, model_or_run: str | Path, runs_dir: Path | None = None) -> Classifier:
        from transformers import AutoModelForSequenceClassification

        path = resolve_model(model_or_run, runs_dir)
        model, tokenizer = _load(AutoModelForSequenceClassification, path, "a classifier")
        limit = min(tokenizer.model_max_length, 512)
        max_length, precision = trained_settings(Path(path))
        return cls(
            model, tokenizer, min(max_length or limit, limit), _usable_precision(precision, model.device)
        )

    @property
    def labels(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @property
    def regression(self) -> bool:
        """A regression model: one output, the predicted number itself (no softmax)."""
        return self.model.config.problem_type == "regression"

    @property
    def multi_label(self) -> bool:
        """A multi-label model: a sigmoid probability per label, each label decided on its own."""
        return self.model.config.problem_type == "multi_label_classification"

    @property
    def thresholds(self) -> dict[str, float] | None:
        """A multi-label model's decision threshold per label: those saved with it (tuned on validation,
        or the run's threshold), else 0.5; None for other models."""
        if not self.multi_label:
            return None
        saved = getattr(self.model.config, "thresholds", None) or {}
        return {label: float(saved.get(label, 0.5)) for label in self.labels}

    def chosen(self, probabilities: dict[str, float]) -> list[str]:
        """A multi-label model's labels for one prediction: those at or above their threshold, most
        probable first."""
        cut = self.thresholds or {}
        return sorted(
            (k for k, p in probabilities.items() if p >= cut.get(k, 0.5)), key=lambda k: -probabilities[k]
        )

    def predict(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, float]]:
        """One {label: probability} dict per text (and its pair, for sentence-pair models), labels in id
        order, in the order given; a regression model's is {target: predicted number}; a multi-label
        model's probabilities are each label's own (a sigmoid: they need not add up to 1).
        ``progress(done, total)`` is called after each batch."""
        from transformers import DataCollatorWithPadding

        texts = [str(t) for t in texts]
        columns = (texts,) if pairs is None else (texts, [str(p) for p in pairs])
        encoded = self.tokenizer(*columns, truncation=True, max_length=self.max_length)
        features = [
            dict(zip(encoded.keys(), row, strict=True)) for row in zip(*encoded.values(), strict=True)
        ]
        order = sorted(range(len(texts)), key=lambda i: -len(features[i]["input_ids"]))
        device = self.model.device
        collate = DataCollatorWithPadding(
            self.tokenizer, pad_to_multiple_of=8 if device.type == "cuda" else None
        )
        autocast = torch.autocast(
            device.type,
            dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16,
            enabled=self.precision in ("bf16", "fp16"),
        )
        out: list[dict[str, float]] = [{} for _ in texts]
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                inputs = collate([features[i] for i in batch]).to(device)
                logits = self.model(**inputs).logits.float()
                if self.multi_label:
                    logits = logits.sigmoid()
                probs = (logits if self.regression or self.multi_label else logits.softmax(-1)).cpu().tolist()
                for i, row in zip(batch, probs, strict=True):
                    out[i] = dict(zip(self.labels, row, strict=True))
                if progress is not None:
                    progress(start + len(batch), len(order))
        return out


@dataclass
class Generator:
    """A causal LM with its tokenizer; ``stream`` yields text as it is generated."""

    model: Any
    tokenizer: Any

    @classmethod
    def load(cls, model_or_run: str | Path, runs_dir: Path | None = None) -> Generator:
        from transformers import AutoModelForCausalLM

        path = resolve_model(model_or_run, runs_dir)
        return cls(*_load(AutoModelForCausalLM, path, "a language model"))

    def chat_prompt(self, history: list[dict[str, str]], message: str) -> str:
        """The prompt for the reply to ``message`` after ``history``: formatted by the model's chat
        template (a chat fine-tuned model's, whose reply then ends at its end-of-turn token), else a
        plain-text transcript for a base model."""
        if not self.tokenizer.chat_template:
            return chat_prompt(history, message)
        messages = [*history, {"role": "user", "content": message}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @property
    def context(self) -> int:
        """The most tokens the model attends to (prompt and reply together)."""
        config = self.model.config
        return (
            getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024
        )

    def _inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        """The prompt's tokens; a long prompt keeps its last half-context, leaving room for the reply."""
        enc = self.tokenizer(prompt, return_tensors="pt")
        if enc["input_ids"].shape[1] == 0:  # an empty prompt starts from end-of-text
            bos = self.tokenizer.bos_token_id or self.tokenizer.eos_token_id
            enc = {"input_ids": torch.tensor([[bos]]), "attention_mask": torch.tensor([[1]])}
        return {k: v[:, -self.context // 2 :].to(self.model.device) for k, v in enc.items()}

    def _room(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> tuple[int, str]:
        """(new tokens that fit the context, the note a cut reply ends with, or "")."""
        room = self.context - inputs["input_ids"].shape[1]
        if max_new_tokens <= room:
            return max_new_tokens, ""
        return room, f"[reply cut at the model's context of {self.context} tokens]"

    def _kwargs(
        self,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        seed: int | None,
    ) -> dict[str, Any]:
        if seed is not None:
            torch.manual_seed(seed)
        sample = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": sample,
            "repetition_penalty": repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        return kwargs

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 50,
        repetition_penalty: float = 1.1,
        seed: int | None = None,
    ) -> str:
        """The continuation of ``prompt`` (without the prompt), never past the model's context."""
        inputs = self._inputs(prompt)
        max_new_tokens, _ = self._room(inputs, max_new_tokens)
        out = self.model.generate(
            **inputs, **self._kwargs(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        )
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 50,
        repetition_penalty: float = 1.1,
        seed: int | None = None,
        stop_event: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield pieces of the continuation as they are generated (TextIteratorStreamer). It never runs
        past the model's context (a cut reply ends with a note saying so); ``stop_event``, or the caller
        dropping the iterator (a client that went away), ends it; an error in the generating thread is
        raised here at once as a GenerationError."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        done = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return done.is_set() or bool(stop_event and stop_event.is_set())

        inputs = self._inputs(prompt)
        max_new_tokens, note = self._room(inputs, max_new_tokens)
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120
        )
        kwargs = self._kwargs(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        kwargs.update(inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop()]))
        failed: list[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except Exception as e:  # noqa: BLE001 - said by the reader, in one line
                failed.append(e)
                streamer.end()  # the reader stops waiting now, not after the streamer's timeout

        thread = threading.Thread(target=run, name="tunelab-generate", daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            done.set()  # the caller stopped reading (or the reply is complete): generation ends too
            thread.join(timeout=30)  # at the next token
        if failed:
            raise GenerationError(f"generation failed: {type(failed[0]).__name__}: {failed[0]}") from failed[
                0
            ]
        if note and not (stop_event and stop_event.is_set()):
            yield "\n" + note


class GenerationError(TuneLabError):
    """The model could not generate (said in one line)."""


def chat_prompt(history: list[dict[str, str]], message: str) -> str:
    """A plain-text transcript for a base (non-chat) GPT-2: earlier turns, then the new message."""
    lines = []
    for turn in history:
        who = "User" if turn.get("role") == "user" else "Assistant"
        lines.append(f"{who}: {turn.get('content', '')}")
    lines.append(f"User: {message}")
    lines.append("Assistant:")
    return "\n".join(lines)
