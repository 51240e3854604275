"""Compression for CPU inference: int8 export with ONNX Runtime, structured pruning, and a before/after report.

An export folder holds ``model.onnx`` (the graph ONNX Runtime runs), ``config.json`` and the tokenizer files,
``export.json`` (the marker that says how to load it: ``tunelab.infer`` reads it), and ``report.json`` /
``report.md``. ``tunelab classify``, ``tunelab generate`` and the app load it like any model folder.

Why ONNX Runtime (``onnxruntime.quantization.quantize_dynamic``) and not torchao. Measured on the machine
this project runs on (2-core AMD EPYC, AVX2, no AVX-512 / VNNI), embedded MiniLM-L6 classifier, SST-2
sentences, per example, other jobs running (ratios, not absolute values, are what count):

    torch fp32 eager                      batch 1  496 ms   batch 32  110 ms
    torchao Int8DynamicActivationInt8     batch 1 1393 ms   batch 32 1295 ms   (eager; 3-12x slower)
    torch.ao quantize_dynamic (legacy)    batch 1  832 ms   batch 32  112 ms   (deprecated in torch)
    ONNX Runtime fp32                     batch 1   91 ms   batch 32   95 ms
    ONNX Runtime int8 (dynamic, QInt8)    batch 1   83 ms   batch 32  103 ms   file 23 MB vs 91 MB

torchao's int8 path has no fast CPU kernel without VNNI (and torch.compile, its way to speed, costs a
compile per input shape: a poor fit for a CLI or an app that loads a model per request); installed, it is
also imported by every ``import transformers``/``peft`` of the project (noise and start-up time). ONNX
Runtime has AVX2 int8 kernels (u8s8), a 4x smaller file, and a lean runtime whose batch-1 overhead is far
below eager PyTorch's. benchmarks/export_int8.py separates the two effects on the fine-tuned SST-2 MiniLM:
ONNX Runtime fp32 is ~2x faster than PyTorch at batch 1 and about as fast at batch 32; int8 adds little on
top on a first-generation Zen (no VNNI: 2.21x vs 2.19x at batch 1, 1.00x vs 1.03x at batch 32, quiet run)
and more on CPUs with VNNI; its 4x smaller file holds everywhere.
optimum's ONNX exporter (``optimum-onnx``) needs transformers < 4.58, so the graph comes from
``torch.onnx.export`` (its TorchScript exporter: see ``export_onnx``) and is quantized by ONNX Runtime.
The first table also ran while other jobs shared the 2 cores: its absolute times are inflated.

Pruning. ``layers=N`` keeps the lowest N encoder layers (the top layers matter least for fine-tuned
classifiers: Sajjad et al., "On the effect of dropping layers of pre-trained transformer models");
``ffn=F`` keeps the fraction F of each feed-forward block's neurons with the largest weight norms. Both give
a smaller dense model that any runtime runs faster; a short recovery fine-tune (``recipes/bert_cls.py`` run
as a subprocess on the pruned model folder) wins back accuracy. Attention heads are not offered: transformers
5 dropped ``prune_heads`` and a config cannot describe layers with different head counts. ``magnitude=F``
zeroes the fraction F of the smallest Linear weights: it saves no time and no disk (the matrices stay dense).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError
from .measure import compare_latency, weights_size
from .ort import EXPORT_FILE, EXPORT_FORMAT, TASKS, OrtModel, ort_session
from .runs import Run
from .tasks import get_task

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
QUANTIZE_CHOICES = ("int8", "none")
PRUNE_KEYS = ("layers", "ffn", "magnitude")
# Files of a model folder that are not the weights: copied into the export beside model.onnx.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
)


# ---- options -------------------------------------------------------------------------------------


@dataclass
class PruneSpec:
    """What to prune: ``layers`` (encoder layers kept), ``ffn`` (share of FFN width kept), ``magnitude``."""

    layers: int | None = None
    ffn: float | None = None
    magnitude: float | None = None

    @property
    def structured(self) -> bool:
        return self.layers is not None or self.ffn is not None

    def __bool__(self) -> bool:
        return self.structured or self.magnitude is not None


def parse_prune(text: str | None) -> PruneSpec:
    """``"layers=4,ffn=0.5"`` -> PruneSpec; a clear error names the wrong part."""
    spec = PruneSpec()
    if not text:
        return spec
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in PRUNE_KEYS:
            raise ConfigError(
                f"--prune {text!r}: expected key=value pairs with keys {', '.join(PRUNE_KEYS)} "
                "(e.g. layers=4,ffn=0.5 or magnitude=0.3)"
            )
        try:
            number = int(value) if key == "layers" else float(value)
        except ValueError:
            kind = "a whole number of layers to keep" if key == "layers" else "a fraction"
            raise ConfigError(f"--prune {key}={value}: expected {kind}") from None
        if key == "layers" and number < 1:
            raise ConfigError(f"--prune layers={value}: keep at least 1 layer")
        if key == "ffn" and not 0 < number < 1:
            raise ConfigError(f"--prune ffn={value}: the share of FFN width kept must be in (0, 1)")
        if key == "magnitude" and not 0 < number < 1:
            raise ConfigError(f"--prune magnitude={value}: the share of weights zeroed must be in (0, 1)")
        setattr(spec, key, number)
    if spec.magnitude is not None and spec.structured:
        raise ConfigError("--prune: magnitude pruning cannot be combined with layers/ffn in one export")
    return spec


@dataclass
class ExportOptions:
    quantize: str = "int8"
    prune: PruneSpec = field(default_factory=PruneSpec)
    recovery_steps: int = 200
    validation_file: str | None = None
    max_eval_samples: int | None = None
    latency_examples: int = 64  # batch-1 calls per measurement; batch 32 uses 4 batches
    repeats: int = 3  # measurements alternate fp32 / export; the median of each is reported

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_CHOICES:
            raise ConfigError(
                f"--quantize {self.quantize!r} is not supported; choose one of {', '.join(QUANTIZE_CHOICES)}"
            )
        if self.recovery_steps < 0:
            raise ConfigError("--recovery-steps must be 0 (no recovery fine-tune) or more")


# ---- the source run --------------------------------------------------------------------------------


def source_run(path: str | Path) -> tuple[Run, str]:
    """The finished run to export and its task (cls or clm); a clear error for anything else."""
    run = Run(Path(path))
    if not (run.path / "status.json").is_file():
        raise ConfigError(
            f"{path}: not a run folder (no status.json); export works on a finished run of "
            f"recipes/{get_task('cls').recipe} or recipes/{get_task('clm').recipe}"
        )
    if not run.has_model():
        raise ConfigError(f"run {run.id} has no final model yet (it is {run.state}); wait for it to finish")
    task = run.status().get("task")
    if task not in TASKS:
        architectures = json.loads((run.path / "config.json").read_text()).get("architectures") or [""]
        task = "clm" if architectures[0].endswith("LMHeadModel") else "cls"
    return run, task


def default_output_dir(run: Run, options: ExportOptions) -> Path:
    name = "export-" + options.quantize
    if options.prune:
        name += "-pruned"
    return run.path / name


def resolve_data_path(value: str | None) -> str | None:
    """A run's config holds paths as given at launch (relative to where it was started): find them."""
    if not value or Path(value).is_absolute():
        return value
    from .tasks import project_root

    for base in (Path.cwd(), Path(os.environ.get("TUNELAB_ROOT", ".")), project_root()):
        if (base / value).exists():
            return str((base / value).resolve())
    return value  # a Hub id, or a file that is gone (loading says so)


# ---- pruning -------------------------------------------------------------------------------------


def encoder_layers(model) -> torch.nn.ModuleList:
    """The layer list of a BERT-style encoder (BERT, RoBERTa, MiniLM, ELECTRA, XLM-R)."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(layers[0], "intermediate"):
        raise ConfigError(
            f"structured pruning supports BERT-style encoders (encoder.layer[i].intermediate); "
            f"this is a {model.config.model_type} model"
        )
    return layers


def drop_layers(model, keep: int) -> None:
    """Keep the lowest ``keep`` encoder layers."""
    layers = encoder_layers(model)
    if keep >= len(layers):
        raise ConfigError(f"--prune layers={keep}: the model has only {len(layers)} layers")
    del layers[keep:]
    model.config.num_hidden_layers = keep


def _shrink_linear(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    """A Linear keeping the rows (dim 0: output features) or columns (dim 1: inputs) in ``index``."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    out_features, in_features = weight.shape
    new = torch.nn.Linear(in_features, out_features, bias=linear.bias is not None)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[index])
    return new


def prune_ffn(model, keep_share: float) -> int:
    """Keep, in every layer, the FFN neurons whose in- and out-weights have the largest norm product."""
    layers = encoder_layers(model)
    width = layers[0].intermediate.dense.out_features
    keep = max(1, round(width * keep_share))
    for layer in layers:
        up, down = layer.intermediate.dense, layer.output.dense
        score = up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0)
        index = score.topk(keep).indices.sort().values
        layer.intermediate.dense = _shrink_linear(up, index, 0)
        layer.output.dense = _shrink_linear(down, index, 1)
    model.config.intermediate_size = keep  # one width for every layer, so the config describes it
    return keep


def prune_magnitude(model, share: float) -> int:
    """Zero the ``share`` of smallest-magnitude weights of the encoder's Linear layers (global threshold)."""
    import torch.nn.utils.prune as torch_prune

    linears = [(m, "weight") for m in encoder_layers(model).modules() if isinstance(m, torch.nn.Linear)]
    torch_prune.global_unstructured(linears, pruning_method=torch_prune.L1Unstructured, amount=share)
    for module, name in linears:
        torch_prune.remove(module, name)
    return sum(int((m.weight == 0).sum()) for m, _ in linears)


def prune_model(model, spec: PruneSpec) -> dict[str, Any]:
    """Apply ``spec`` in place; returns what was done (for the report)."""
    before = sum(p.numel() for p in model.parameters())
    done: dict[str, Any] = {"parameters_before": before}
    if spec.layers is not None:
        drop_layers(model, spec.layers)
        done["layers_kept"] = spec.layers
    if spec.ffn is not None:
        done["ffn_width_kept"] = prune_ffn(model, spec.ffn)
    if spec.magnitude is not None:
        done["weights_zeroed"] = prune_magnitude(model, spec.magnitude)
        done["note"] = "unstructured: the matrices stay dense, so this saves no time and no disk"
    done["parameters_after"] = sum(p.numel() for p in model.parameters())
    return done


def recovery_config(run: Run, model_dir: Path, output_dir: Path, steps: int) -> dict[str, Any]:
    """The run's own recipe arguments, on the pruned model, for ``steps`` optimizer steps."""
    config = dict(run.config())
    if run.status().get("task") == "distill":  # a student: fine-tuned as the plain classifier it is
        from .distill import DistillationArguments

        for spec in fields(DistillationArguments):
            config.pop(spec.name, None)
    for key in ("train_file", "validation_file", "test_file"):
        config[key] = resolve_data_path(config.get(key))
    config.update(
        model_name_or_path=str(model_dir),
        tokenizer_name=None,
        output_dir=str(output_dir),
        max_train_steps=steps,
        warmup_ratio=0.1,
        num_warmup_steps=0,
        resume_from_checkpoint=None,
        use_peft=False,  # the pruned model is a plain one (LoRA was merged when the run saved it)
        report_to="none",
        eval_steps=None,
        early_stopping_patience=None,
        checkpointing_steps=None,
        save_total_limit=1,
        run_name=None,
    )
    return {k: v for k, v in config.items() if v is not None}


def recovery_fine_tune(run: Run, model_dir: Path, work_dir: Path, steps: int, quiet: bool) -> Path:
    """Fine-tune the pruned model with the run's recipe (recipes/bert_cls.py), one process, launched by
    tunelab.launch like any run; its run folder."""
    from .launch import LaunchError, Resources, prepare_run, start, wait

    out = work_dir / "recovery"
    config = recovery_config(run, model_dir, out, steps)
    recovery = prepare_run(
        "cls", config, Resources(num_processes=1), run_dir=out, status={"source": "export"}
    )
    logger.info("Recovery fine-tune (%d steps): %s", steps, recovery.command())
    proc = start(recovery)
    if proc is None:
        raise LaunchError(f"the recovery fine-tune could not start: {recovery.status().get('reason')}")
    status = wait(recovery, proc)
    if status.get("state") != "finished" or not recovery.has_model():
        why = status.get("reason") or "no model was saved"
        raise ConfigError(
            f"the recovery fine-tune failed: {why} (see {out / 'train.log'} and {out / 'process.log'})"
        )
    if not quiet:
        logger.info("Recovery fine-tune finished: %s", out)
    return out


# ---- ONNX export and int8 quantization ---------------------------------------------------------------


def example_inputs(model, tokenizer, task: str) -> dict[str, torch.Tensor]:
    """A padded batch of two, in the order of the model's forward signature (ONNX inputs are positional)."""
    import inspect

    texts = ["an example sentence for the export", "short"]
    if task == "clm":
        enc = tokenizer(texts[:1], return_tensors="pt")
        enc = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    else:
        enc = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    order = list(inspect.signature(model.forward).parameters)
    return {k: enc[k] for k in sorted(enc, key=order.index)}


def export_onnx(model, inputs: dict[str, torch.Tensor], path: Path) -> None:
    """torch.onnx.export with batch and sequence length dynamic.

    The TorchScript-based exporter (``dynamo=False``, deprecated in torch 2.9 but kept): the torch.export-
    based one took 133 s for a 2-layer, 64-wide GPT-2 on this 2-core CPU, the TorchScript one seconds.
    ``check_export`` compares the graph with the model, so a trace that went wrong cannot pass unseen.
    """
    # Wrapped so the graph's inputs are exactly ``inputs`` (by name) and its one output is the logits.
    torch.onnx.export(
        # eval(): the exporter gives the wrapper back its own mode afterwards, recursively (a new module
        # is in training mode: the model would come back with dropout on).
        _LogitsOnly(model, list(inputs)).eval(),
        tuple(inputs.values()),
        str(path),
        input_names=list(inputs),
        output_names=["logits"],
        dynamic_axes={name: {0: "batch", 1: "sequence"} for name in inputs},
        opset_version=17,
        dynamo=False,
    )


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, args, strict=True)), use_cache=False).logits


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantization of the MatMul/Gather weights (activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # QInt8 weights (u8s8 kernels on AVX2), one scale per output channel. Measured on the SST-2 MiniLM
    # teacher of benchmarks/distill_cls.py (fp32 0.8383 on the 872 validation sentences): per-tensor scales
    # 0.8280 (-1.0 pt), per-channel 0.8383 (+0.0, 97.5% identical predictions), same size. reduce_range
    # (7-bit, advised for CPUs without VNNI) cost 3.4 points alone and 0.2 with per-channel: not used.
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)


def write_export(
    source_dir: Path, model, tokenizer, task: str, options: ExportOptions, out: Path, extra: dict[str, Any]
) -> None:
    """model.onnx, config.json, tokenizer files and export.json in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(model, tokenizer, task)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model-fp32.onnx"
        with torch.no_grad(), _quiet_export():
            export_onnx(model, inputs, fp32)
        check_export(model, tokenizer, task, fp32)
        if options.quantize == "int8":
            with _quiet_export():
                quantize_int8(fp32, out / MODEL_FILE)
        else:
            shutil.copyfile(fp32, out / MODEL_FILE)
    model.config.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, out / name)
    marker = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "task": TASKS[task],
        "runtime": "onnxruntime",
        "model_file": MODEL_FILE,
        "quantize": options.quantize,
        "inputs": list(inputs),
        **extra,
    }
    (out / EXPORT_FILE).write_text(json.dumps(marker, indent=2))


def check_export(model, tokenizer, task: str, path: Path) -> None:
    """The fp32 graph must give the model's logits on inputs of another shape than the traced ones."""
    texts = ["a longer sentence than the one the graph was traced with, to check", "two", "three words here"]
    if task == "clm":
        enc = {"input_ids": tokenizer(texts[0], return_tensors="pt")["input_ids"]}
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
    else:
        enc = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    graph = OrtModel(ort_session(path), model.config)
    with torch.no_grad():
        expected = model(**enc).logits.float()
    got = graph.logits(**enc)
    error = (got - expected).abs().max().item()
    if error > 1e-3 * max(1.0, expected.abs().max().item()):
        raise RuntimeError(f"the exported graph does not reproduce the model (max logit error {error:.3g})")


class _quiet_export:
    """The exporter and the quantizer print progress and advice on stdout / the root logger."""

    def __enter__(self):
        import contextlib
        import io

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        # TracerWarnings on transformers' shape checks: check_export verifies the graph on other shapes.
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)
        self._stack.close()
        return False


# ---- loading an export ---------------------------------------------------------------------------


# ---- the before/after report -------------------------------------------------------------------------


def validation_texts(run: Run, options: ExportOptions) -> tuple[list[str], list[str], str]:
    """(texts, gold label names, source) of the run's validation data, or of --validation_file."""
    from .data.classification import classification_data

    config = run.config()
    validation_file = resolve_data_path(options.validation_file or config.get("validation_file"))
    data = classification_data(
        config,
        train_file=resolve_data_path(config["train_file"]),
        validation_file=validation_file,
        test_file=None,
        max_train_samples=None,
        max_eval_samples=options.max_eval_samples,
    )
    names = data.validation.features["label"].names
    golds = [names[i] for i in data.validation["label"]]
    return list(data.validation["text"]), golds, data.validation_source


def classifier_metrics(classifier, texts: list[str], golds: list[str]) -> tuple[float, list[str]]:
    predictions = [max(p, key=p.get) for p in classifier.predict(texts, batch_size=32)]
    return sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(golds), predictions


def classification_report(run: Run, export_dir: Path, options: ExportOptions) -> dict[str, Any]:
    from .infer import Classifier

    texts, golds, source = validation_texts(run, options)
    before, after = Classifier.load(run.path), Classifier.load(export_dir)
    accuracy_before, predicted_before = classifier_metrics(before, texts, golds)
    accuracy_after, predicted_after = classifier_metrics(after, texts, golds)
    agree = sum(a == b for a, b in zip(predicted_before, predicted_after, strict=True)) / len(texts)
    latency, _ = compare_latency(
        {
            "before": lambda t, b: before.predict(t, batch_size=b),
            "after": lambda t, b: after.predict(t, batch_size=b),
        },
        texts,
        {"batch_1": (1, options.latency_examples), "batch_32": (32, 4)},
        options.repeats,
    )
    return {
        "validation": f"{len(texts)} examples ({source})",
        "metric": "accuracy",
        "before": {"accuracy": accuracy_before, "latency_ms": latency["before"]},
        "after": {"accuracy": accuracy_after, "latency_ms": latency["after"]},
        "prediction_agreement": agree,
    }


def lm_validation_blocks(run: Run, tokenizer, options: ExportOptions) -> tuple[torch.Tensor, str]:
    """Validation blocks of a causal-LM run as the recipe builds them (same split, same block size)."""
    from .data.lm import build_lm_data, default_cache_dir, load_lm_documents
    from .lm import tokenizer_fingerprint

    config = run.config()
    docs = load_lm_documents(
        resolve_data_path(config["train_file"]),
        resolve_data_path(options.validation_file or config.get("validation_file")),
        config.get("text_column"),
        config.get("dataset_config_name"),
    )
    block = int(config.get("block_size") or 128)
    data = build_lm_data(
        docs,
        tokenizer,
        tokenizer_fingerprint(tokenizer),
        block,
        config.get("validation_split_percentage", 5.0),
        default_cache_dir(),
        options.max_eval_samples or 32,
    )
    blocks = torch.stack([data.validation[i]["input_ids"] for i in range(len(data.validation))])
    return blocks, f"{len(blocks)} blocks of {block} tokens ({data.validation_source})"


def lm_loss(model, blocks: torch.Tensor, batch: int = 8) -> float:
    losses = []
    with torch.no_grad():
        for start in range(0, len(blocks), batch):
            ids = blocks[start : start + batch]
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
            losses.append(
                torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
            )
    return float(torch.stack(losses).mean())


def lm_report(run: Run, export_dir: Path, options: ExportOptions) -> dict[str, Any]:
    from .infer import Generator

    before, after = Generator.load(run.path), Generator.load(export_dir)
    blocks, source = lm_validation_blocks(run, before.tokenizer, options)
    prompts = [before.tokenizer.decode(b[:16]) for b in blocks]

    def generate(generator):
        # Latency "per example" of a language model: one prompt continued by 32 greedy tokens.
        return lambda texts, batch: [generator.generate(t, max_new_tokens=32, temperature=0) for t in texts]

    latency, _ = compare_latency(
        {"before": generate(before), "after": generate(after)},
        prompts,
        {"generate_32_tokens": (1, min(8, options.latency_examples))},
        options.repeats,
    )
    return {
        "validation": source,
        "metric": "loss",
        "before": {"loss": lm_loss(before.model, blocks), "latency_ms": latency["before"]},
        "after": {"loss": lm_loss(after.model, blocks), "latency_ms": latency["after"]},
    }


def markdown_report(report: dict[str, Any]) -> str:
    before, after = report["before"], report["after"]
    metric = report["metric"]
    lines = [
        f"# Export of {report['source']}",
        "",
        f"{report['quantize']} ({report['runtime']}){', pruned: ' + report['prune']['spec'] if report.get('prune') else ''}; "
        f"validation: {report['validation']}.",
        "",
        "| | before (fp32, PyTorch) | after (export) | ratio |",
        "|---|---|---|---|",
        f"| size on disk | {before['size_mb']:.1f} MB | {after['size_mb']:.1f} MB | "
        f"{before['size_mb'] / after['size_mb']:.2f}x smaller |",
        f"| {metric} | {before[metric]:.4f} | {after[metric]:.4f} | {after[metric] - before[metric]:+.4f} |",
    ]
    for setting, value in before["latency_ms"].items():
        new = after["latency_ms"][setting]
        lines.append(
            f"| latency, {setting.replace('_', ' ')} | {value:.2f} ms/example | {new:.2f} ms/example | "
            f"{value / new:.2f}x {'faster' if new < value else 'slower'} |"
        )
    if "prediction_agreement" in report:
        lines += [
            "",
            f"Predictions agree with the fp32 model on {report['prediction_agreement']:.1%} of examples.",
        ]
    if report.get("prune"):
        lines += ["", "Pruning: " + json.dumps(report["prune"])]
    lines += [
        "",
        "Latency: CPU, tokenization included, median of alternating measurements; other work on the "
        "machine makes it noisy.",
    ]
    return "\n".join(lines) + "\n"


# ---- the whole export --------------------------------------------------------------------------------


def export_run(
    run_path: str | Path,
    output_dir: str | Path | None = None,
    options: ExportOptions | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Prune (optionally, with a recovery fine-tune), export and quantize a finished run; measure before/after.

    Returns the report, also written to ``report.json`` and ``report.md`` in the export folder.
    """
    options = options or ExportOptions()
    run, task = source_run(run_path)
    kind = {"regression": "a regression model", "multi_label_classification": "a multi-label classifier"}.get(
        _problem_type(run.path)
    )
    if kind:
        # the report scores one label per text (accuracy, agreement): these models need their own report
        raise ConfigError(
            f"tunelab export handles single-label classifiers and causal LMs; this run is {kind}."
        )
    if options.prune and task != "cls":
        raise ConfigError("--prune supports BERT-family classifiers (runs of recipes/bert_cls.py)")
    out = Path(output_dir) if output_dir else default_output_dir(run, options)
    if out.resolve() == run.path.resolve():
        raise ConfigError("--output must be a new folder, not the run folder itself")
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_FILE).exists():
        raise ConfigError(f"{out} exists and is not an export folder: choose another --output")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model, tokenizer = torch_model(run.path, task)
    source_dir, extra = run.path, {"source": str(run.path)}
    if options.prune:
        done = prune_model(model, options.prune)
        extra["prune"] = {"spec": _prune_text(options.prune), **done}
        if options.prune.structured and options.recovery_steps:
            pruned = out / "pruned"
            model.save_pretrained(pruned)
            tokenizer.save_pretrained(pruned)
            recovered = recovery_fine_tune(run, pruned, out, options.recovery_steps, quiet)
            shutil.rmtree(pruned)
            extra["prune"]["recovery_steps"] = options.recovery_steps
            extra["prune"]["recovery_run"] = str(recovered)
            model, tokenizer = torch_model(recovered, task)
            source_dir = recovered
    write_export(source_dir, model.float().eval(), tokenizer, task, options, out, extra)
    report = classification_report(run, out, options) if task == "cls" else lm_report(run, out, options)
    report = {
        "source": str(run.path),
        "export": str(out),
        "task": TASKS[task],
        "quantize": options.quantize,
        "runtime": "onnxruntime",
        **({"prune": extra["prune"]} if "prune" in extra else {}),
        **report,
    }
    report["before"]["size_mb"] = weights_size(run.path) / 1e6
    report["after"]["size_mb"] = weights_size(out) / 1e6
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2))
    (out / REPORT_MD).write_text(markdown_report(report))
    return report


def _problem_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("problem_type")
    except (OSError, ValueError):
        return None


def torch_model(path: Path, task: str):
    """The fp32 PyTorch model (on the CPU, in eval mode) and tokenizer of a model folder."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    auto = AutoModelForCausalLM if task == "clm" else AutoModelForSequenceClassification
    return auto.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _prune_text(spec: PruneSpec) -> str:
    return ",".join(f"{k}={v}" for k, v in asdict(spec).items() if v is not None)
