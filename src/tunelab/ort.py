"""Export folders run by ONNX Runtime: the loader ``tunelab.infer`` uses for a `tunelab export` folder, and
the model objects it returns (what infer needs of a model: ``config``, ``device``, ``eval()``, a call giving
logits, and ``generate`` for a causal LM). Writing exports is ``tunelab.export``'s."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError

EXPORT_FILE = "export.json"  # the marker of an export folder
EXPORT_FORMAT = "tunelab-export"
TASKS = {"cls": "text-classification", "clm": "text-generation"}  # task id -> the marker's task


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The export.json of an export folder, or None for any other folder."""
    marker = Path(path) / EXPORT_FILE
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    if data.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{marker}: not a TuneLab export marker (format {data.get('format')!r})")
    return data


def load_export(path: str | Path, task: str) -> Any:
    """The model of an export folder, with the interface tunelab.infer uses (``config``, ``device``, call)."""
    marker = read_marker(path)
    if marker is None:
        raise ConfigError(f"{path}: no {EXPORT_FILE} here (not a `tunelab export` folder)")
    if marker["task"] != TASKS[task]:
        raise ConfigError(f"{path} is a {marker['task']} export, not a {TASKS[task]} model")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{path} is an ONNX Runtime export: install onnxruntime (`pip install onnxruntime`)"
        ) from None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    session = ort_session(Path(path) / marker["model_file"])
    if task == "cls":
        return OrtSequenceClassifier(session, config)
    return OrtCausalLM(session, config)


def ort_session(model_file: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


class OrtModel:
    """What tunelab.infer needs of a model: ``config``, ``device``, ``eval()`` and a call giving logits."""

    def __init__(self, session, config):
        self.session, self.config = session, config
        self.input_names = [i.name for i in session.get_inputs()]
        self.device = torch.device("cpu")

    def eval(self):
        return self

    def logits(self, **inputs: torch.Tensor) -> torch.Tensor:
        feeds = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(inputs["input_ids"])
            feeds[name] = value.detach().cpu().numpy()
        return torch.from_numpy(self.session.run(["logits"], feeds)[0])


class OrtSequenceClassifier(OrtModel):
    def __call__(self, **inputs: torch.Tensor):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.logits(**inputs))


class OrtCausalLM(OrtModel):
    """A causal LM in ONNX Runtime with ``generate`` from transformers' GenerationMixin.

    The graph has no KV cache (transformers 5 passes the cache as a Cache object, which the exporter
    cannot flatten into graph inputs), so each new token runs the whole sequence: right for chat-length
    replies of small models, slower than PyTorch with its cache for long generations.
    """

    def __init__(self, session, config):
        super().__init__(session, config)
        self._generator = _generation_model(self)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        from transformers.modeling_outputs import CausalLMOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return CausalLMOutput(logits=self.logits(input_ids=input_ids, attention_mask=attention_mask))

    def generate(self, **kwargs: Any) -> torch.Tensor:
        return self._generator.generate(**kwargs)


def _generation_model(ort_model: OrtCausalLM):
    """A transformers model whose forward is the ONNX Runtime graph, so ``generate`` (sampling, repetition
    penalty, streamers, stopping criteria) is transformers' own rather than a copy of it."""
    from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

    class OrtGenerationModel(PreTrainedModel, GenerationMixin):
        config_class = type(ort_model.config)
        main_input_name = "input_ids"
        base_model_prefix = "ort"
        _supports_sdpa = True  # no attention of its own: whatever the config names is fine

        def __init__(self, config):
            super().__init__(config)
            self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # device and dtype

        def forward(self, input_ids, attention_mask=None, **kwargs):
            return ort_model(input_ids, attention_mask)

        def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
            return {"input_ids": input_ids, "attention_mask": attention_mask}

    config = copy.deepcopy(ort_model.config)
    model = OrtGenerationModel(config).eval()
    model.generation_config = GenerationConfig.from_model_config(config)
    model.generation_config.use_cache = False  # the graph recomputes the sequence (no KV cache)
    return model
