"""Knowledge distillation of a sequence classifier: a finished teacher, a smaller student.

The student is by default the teacher's own architecture with every other layer kept, initialised from
the teacher's kept layers (layer dropping, as DistilBERT and "Poor Man's BERT" do); or any model with
the teacher's label set. It learns from

    alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(Hinton et al. 2015; T^2 keeps the soft term's gradients on the scale of the hard term's as T grows).
The data is fixed (no augmentation), so the teacher runs once over the training set before training: its
logits ride in the batches as a column, the teacher leaves memory, and a resumed run reads them back from
``teacher_logits.pt`` in the run folder. Extra unlabeled text (``unlabeled_file``) is labeled by the
teacher: those examples have no CE term (label -100) and learn from the soft term only.

The recipe is ``recipes/distill_cls.py``; the shared loop, data and model code stay in their modules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .args import check_positive
from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IGNORE_LABEL = -100  # the label of unlabeled (teacher-only) examples; cross-entropy skips it
TEACHER_LOGITS_FILE = "teacher_logits.pt"  # not *.safetensors: a Hub push must not upload it
LATENCY_BATCH_SIZES = (1, 32)


@dataclass
class DistillationArguments:
    """Teacher, student and loss of ``recipes/distill_cls.py`` (data and training: the usual arguments)."""

    teacher_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The fine-tuned classifier to distill: a finished run folder or id, a model folder."
        },
    )
    student_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A different student (its label set must be the teacher's, or it has no head yet); "
            "default: the teacher with layers dropped (student_layers / student_num_layers)."
        },
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Teacher layers (0-based) the student keeps, e.g. 0 2 4."}
    )
    student_num_layers: int | None = field(
        default=None,
        metadata={"help": "Keep this many evenly spaced teacher layers; default: every other layer."},
    )
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature T of the KD term."})
    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the hard-label CE term; 1 - alpha weighs the soft KD term."},
    )
    unlabeled_file: str | None = field(
        default=None,
        metadata={
            "help": "Extra text the teacher labels (soft labels, KD term only): a txt file (one text a "
            "line) or a csv/tsv/json/jsonl/parquet file with train_file's text column."
        },
    )
    max_unlabeled_samples: int | None = None
    latency_samples: int = field(
        default=128,
        metadata={"help": "Validation texts timed per batch size for the CPU latency report; 0 skips it."},
    )

    def __post_init__(self) -> None:
        if not self.teacher_name_or_path:
            raise ConfigError(
                "teacher_name_or_path is required: a finished classification run (folder or id) or a "
                "fine-tuned classifier's folder."
            )
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.alpha == 1 and self.unlabeled_file:
            raise ConfigError(
                "alpha=1 leaves no KD term, so unlabeled_file would teach nothing; lower alpha."
            )
        if self.student_layers is not None and self.student_num_layers is not None:
            raise ConfigError("give student_layers or student_num_layers, not both.")
        if self.student_name_or_path and (self.student_layers is not None or self.student_num_layers):
            raise ConfigError(
                "student_layers / student_num_layers choose the teacher's layers for a layer-dropped "
                "student; they do not apply with student_name_or_path."
            )
        check_positive("student_num_layers", self.student_num_layers)
        check_positive("max_unlabeled_samples", self.max_unlabeled_samples)
        check_positive("latency_samples", self.latency_samples, allow_zero=True)


# ---------------------------------------------------------------------------------------------------
# Teacher, labels, student
# ---------------------------------------------------------------------------------------------------
def load_teacher(name_or_path: str, runs_dir: Path | None = None):
    """The teacher classifier (eval mode, frozen) and its labels in id order."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .infer import resolve_model
    from .models import load_pretrained

    path = resolve_model(name_or_path, runs_dir)
    config = load_pretrained(AutoConfig, path)
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"teacher_name_or_path={name_or_path}: not a fine-tuned sequence classifier (its architecture "
            f"is {', '.join(architectures) or 'unknown'}); give a finished classification run or model."
        )
    teacher = load_pretrained(AutoModelForSequenceClassification, path).eval().requires_grad_(False)
    return teacher, path, model_labels(teacher.config)


def model_labels(config) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def align_labels(data, teacher_labels: list[str], train_file: str):
    """Re-number the data's labels in the teacher's order; a label the teacher never saw is a DataError."""
    from datasets import ClassLabel, Value

    unknown = [name for name in data.labels if name not in teacher_labels]
    if unknown:
        raise DataError(
            f"{train_file}: labels {', '.join(map(repr, unknown))} are not labels of the teacher (its "
            f"labels: {', '.join(map(repr, teacher_labels))}); distill on data with the teacher's label set."
        )
    if data.labels == teacher_labels:
        return data
    if len(data.labels) < len(teacher_labels):
        missing = [name for name in teacher_labels if name not in data.labels]
        logger.warning("The training data has no examples of the teacher's labels %s.", missing)
    to_teacher = [teacher_labels.index(name) for name in data.labels]

    def renumber(dataset):
        if dataset is None:
            return None
        dataset = dataset.cast_column("label", Value("int64"))
        dataset = dataset.map(
            lambda b: {"label": [to_teacher[x] for x in b["label"]]}, batched=True, desc="Teacher label ids"
        )
        return dataset.cast_column("label", ClassLabel(names=teacher_labels))

    return replace(
        data,
        labels=list(teacher_labels),
        train=renumber(data.train),
        validation=renumber(data.validation),
        test=renumber(data.test),
    )


def layers_to_keep(num_layers: int, layers: list[int] | None, count: int | None) -> list[int]:
    """The teacher layers a layer-dropped student keeps: as given, ``count`` evenly spaced, or every other."""
    if layers is not None:
        if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0 or layers[-1] >= num_layers:
            raise ConfigError(
                f"student_layers={layers}: give increasing, distinct layer indices in 0..{num_layers - 1} "
                f"(the teacher has {num_layers} layers)."
            )
        return list(layers)
    if count is None:
        return list(range(0, num_layers, 2))
    if count > num_layers:
        raise ConfigError(f"student_num_layers={count}, but the teacher has only {num_layers} layers.")
    return [i * num_layers // count for i in range(count)]


def encoder_layers_name(model) -> str:
    """The qualified name of the model's list of transformer layers (bert.encoder.layer, ...)."""
    num = model.config.num_hidden_layers
    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == num and name
    ]
    if len(found) != 1:
        raise ConfigError(
            f"cannot drop layers of a {model.config.model_type} model (no single list of {num} layers "
            "found); give a student with student_name_or_path."
        )
    return found[0]


def layer_dropped_student(teacher, keep: list[int], dropout: dict[str, float] | None = None):
    """A copy of the teacher with only the layers ``keep``: embeddings, kept layers, pooler and head are
    the teacher's weights; the config says ``num_hidden_layers=len(keep)``, so it saves and loads as is.
    ``dropout`` ({"hidden_dropout": 0.1, ...}) overrides the teacher's rates."""
    from transformers import AutoModelForSequenceClassification

    from .models import dropout_config

    prefix = encoder_layers_name(teacher) + "."
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(keep)
    for name, value in dropout_config(config, dropout or {}).items():
        setattr(config, name, value)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (newer encoders) follow the layers
        config.layer_types = [config.layer_types[i] for i in keep]
    student = AutoModelForSequenceClassification.from_config(config)
    renumber = {old: new for new, old in enumerate(keep)}
    state: dict[str, torch.Tensor] = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in renumber:
                continue
            key = f"{prefix}{renumber[int(index)]}.{rest}"
        state[key] = value.clone()
    student.load_state_dict(state, strict=True)  # every student weight comes from the teacher
    return student


def load_student(name_or_path: str, teacher_labels: list[str], dropout: dict[str, float]):
    """A student from its own folder or id; a classification head with other labels is an error."""
    from transformers import AutoConfig

    from .models import load_classifier, load_pretrained, resolve_model_path

    config = load_pretrained(AutoConfig, resolve_model_path(name_or_path))
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = model_labels(config)
        if set(labels) != set(teacher_labels):
            raise ConfigError(
                f"student_name_or_path={name_or_path} classifies labels {', '.join(map(repr, labels))} but "
                f"the teacher's are {', '.join(map(repr, teacher_labels))}: the student must predict the "
                "teacher's label set (or be a model without a classification head)."
            )
    else:
        logger.info("The student %s has no classification head: a new one is trained.", name_or_path)
    return load_classifier(name_or_path, teacher_labels, dropout)


def same_tokenizer(a, b) -> bool:
    """True when both tokenizers give the same ids (then the teacher reads the student's batches)."""
    return type(a) is type(b) and a.get_vocab() == b.get_vocab()


# ---------------------------------------------------------------------------------------------------
# Transfer set: labeled training data plus unlabeled text
# ---------------------------------------------------------------------------------------------------
def load_unlabeled(spec: str, columns, max_samples: int | None, seed: int, labeled=None):
    """Unlabeled texts as a dataset with text[, text_pair] and label -100, in the training data's columns.
    Texts of ``labeled`` (the training split) are dropped: they are already in the transfer set, labeled
    (so train_file itself can serve as the unlabeled pool)."""
    from datasets import Value

    from .data.files import TABLE_FORMATS, TEXT_FORMATS, load_source, resolve_source

    source = resolve_source(spec, {**TABLE_FORMATS, **TEXT_FORMATS})
    dataset = load_source(source)
    if source.builder == "text":
        if columns.text_pair:
            raise DataError(
                f"{spec}: a text file has one text a line, but the task has text pairs "
                f"({columns.text!r}, {columns.text_pair!r}); give a table with both columns."
            )
        dataset = dataset.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
        wanted = {"text": "text"}
    else:
        wanted = {columns.text: "text"}
        if columns.text_pair:
            wanted[columns.text_pair] = "text_pair"
        missing = [c for c in wanted if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"{spec}: no column {', '.join(map(repr, missing))} (the training data's text column); its "
                f"columns are: {', '.join(dataset.column_names)}."
            )
        for column in wanted:
            for row, value in enumerate(dataset[column], start=1):
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{spec}: row {row}, column {column!r}: the text is empty or missing.")
    dataset = dataset.select_columns(list(wanted)).rename_columns({k: v for k, v in wanted.items() if k != v})
    if labeled is not None:
        keys = [c for c in ("text", "text_pair") if c in dataset.column_names]
        known = set(zip(*(labeled[c] for c in keys), strict=True))
        dataset = dataset.filter(
            lambda b: [row not in known for row in zip(*(b[c] for c in keys), strict=True)], batched=True
        )
    if len(dataset) == 0:
        raise DataError(f"{spec}: no texts (besides those of the labeled training split).")
    if max_samples is not None and max_samples < len(dataset):
        # seed + 1: with train_file as the pool, seed would repeat max_train_samples' permutation.
        dataset = dataset.shuffle(seed=seed + 1).select(range(max_samples))
    labels = [IGNORE_LABEL] * len(dataset)
    return dataset.add_column("label", labels, feature=Value("int64"))


def transfer_set(train, unlabeled):
    """Labeled training examples (their label ids) followed by unlabeled ones (label -100)."""
    from datasets import Value, concatenate_datasets

    train = train.cast_column("label", Value("int64"))
    if unlabeled is None:
        return train
    return concatenate_datasets([train, unlabeled.select_columns(train.column_names)])


# ---------------------------------------------------------------------------------------------------
# Teacher logits: one pass, cached
# ---------------------------------------------------------------------------------------------------
def cache_key(teacher_path: str, dataset) -> str:
    """What the cached logits depend on: the teacher's weights (path, size, time) and the token ids."""
    digest = hashlib.sha256()
    path = Path(teacher_path)
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(str(teacher_path).encode())
    for column in ("input_ids", "token_type_ids"):
        if column in dataset.column_names:
            digest.update(json.dumps(list(dataset[column])).encode())
    return digest.hexdigest()


@torch.no_grad()
def compute_teacher_logits(
    accelerator, teacher, dataset, tokenizer, batch_size: int
) -> tuple[torch.Tensor, int]:
    """Teacher logits (float32, CPU) of every example of ``dataset`` in its order, and how many examples
    this process forwarded. The processes share the work (strided, shortest first) and gather."""
    n = len(dataset)
    lengths = list(dataset["length"])  # a list: a Column looks rows up one by one
    order = sorted(range(n), key=lambda i: lengths[i])
    mine = order[accelerator.process_index :: accelerator.num_processes]
    per_process = -(-n // accelerator.num_processes)
    indices = mine + [-1] * (per_process - len(mine))  # equal sizes for gather; -1 marks padding
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    rows = dataset.select_columns(columns)
    teacher.to(accelerator.device)
    chunks = []
    last_log = time.perf_counter()
    for start in range(0, len(mine), batch_size):
        batch = tokenizer.pad(rows[mine[start : start + batch_size]], return_tensors="pt")
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            chunks.append(teacher(**batch).logits.float())
        if accelerator.is_main_process and time.perf_counter() - last_log > 30:
            logger.info("Teacher logits: %d of %d examples (this process)", start + batch_size, len(mine))
            last_log = time.perf_counter()
    num_labels = teacher.config.num_labels
    logits = torch.cat(chunks) if chunks else torch.zeros(0, num_labels, device=accelerator.device)
    padding = torch.zeros(per_process - len(mine), num_labels, device=accelerator.device)
    logits = accelerator.gather(torch.cat([logits, padding]))
    where = accelerator.gather(torch.tensor(indices, device=accelerator.device))
    out = torch.empty(n, num_labels)
    real = where >= 0
    out[where[real].cpu()] = logits[real].cpu()
    return out, len(mine)


def teacher_logits(
    accelerator, teacher, teacher_path: str, dataset, tokenizer, batch_size: int, output_dir: Path
) -> tuple[torch.Tensor, int]:
    """The teacher's logits of ``dataset``, from ``teacher_logits.pt`` in the run folder when it holds them
    for this teacher and these token ids (a resumed run), else computed once and saved there.
    Returns (logits, examples the teacher forwarded in this call, all processes)."""
    cache = output_dir / TEACHER_LOGITS_FILE
    key = cache_key(teacher_path, dataset)
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key and len(saved["logits"]) == len(dataset):
            logger.info("Teacher logits of %d examples read from %s", len(dataset), cache)
            return saved["logits"], 0
        logger.info("%s is for other data or another teacher: computing the logits again.", cache)
    start = time.perf_counter()
    logits, forwarded = compute_teacher_logits(accelerator, teacher, dataset, tokenizer, batch_size)
    total = int(accelerator.reduce(torch.tensor(forwarded, device=accelerator.device), "sum").item())
    if accelerator.is_main_process:
        tmp = cache.with_name(f".{cache.name}.tmp")
        torch.save({"key": key, "logits": logits, "teacher": str(teacher_path)}, tmp)
        os.replace(tmp, cache)
    accelerator.wait_for_everyone()
    logger.info(
        "Teacher logits of %d examples computed in %.1f s (cached in %s)",
        len(dataset),
        time.perf_counter() - start,
        cache,
    )
    return logits, total


def with_teacher_logits(dataset, logits: torch.Tensor):
    """The dataset with a ``teacher_logits`` column: each example carries its own soft targets."""
    from datasets import Sequence, Value

    return dataset.add_column(
        "teacher_logits", logits.tolist(), feature=Sequence(Value("float32"), length=logits.shape[1])
    )


def distillation_dataloader(
    train, tokenizer, batch_size: int, group_by_length: bool, seed: int, on_gpu: bool, num_workers: int = 0
):
    """Training batches like classification_dataloaders', with the ``teacher_logits`` column kept."""
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    from .data.batching import LengthGroupedSampler

    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if on_gpu else None)
    columns = [
        c
        for c in ("input_ids", "attention_mask", "token_type_ids", "label", "teacher_logits")
        if c in train.column_names
    ]
    sampler = LengthGroupedSampler(list(train["length"]), batch_size, seed) if group_by_length else None
    return DataLoader(
        train.with_format(columns=columns),
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=on_gpu,
    )


# ---------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------
def distillation_loss(temperature: float, alpha: float, label_smoothing: float = 0.0):
    """Task.loss: alpha * CE over the labeled examples of the batch + (1 - alpha) * T^2 * KL over all.

    Unlabeled examples (label -100) only enter the KL term. Computed in float32 (soft targets at a high
    temperature are small differences of large numbers)."""
    import torch.nn.functional as F

    def loss(model, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "teacher_logits")}
        logits = model(**inputs).logits.float()
        labels = batch["labels"]
        soft = F.kl_div(
            F.log_softmax(logits / temperature, dim=-1),
            F.log_softmax(batch["teacher_logits"].float() / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        # Sum over labeled examples / their count: no NaN for a batch of unlabeled ones, and no sync.
        hard = F.cross_entropy(
            logits, labels, ignore_index=IGNORE_LABEL, reduction="sum", label_smoothing=label_smoothing
        ) / (labels != IGNORE_LABEL).sum().clamp(min=1)
        return alpha * hard + (1 - alpha) * temperature**2 * soft

    return loss


# ---------------------------------------------------------------------------------------------------
# Teacher vs student report
# ---------------------------------------------------------------------------------------------------
def cpu_latency(
    models: dict[str, tuple[Any, Any]],
    texts: list,
    max_length: int,
    batch_sizes: tuple[int, ...] = LATENCY_BATCH_SIZES,
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """Milliseconds per example of CPU inference, fp32, for each of ``models`` ({name: (model, tokenizer)}),
    through the predictor `tunelab classify` uses (``tunelab.infer.Classifier``), measured by
    ``tunelab.measure.compare_latency`` (the models take turns, the median repeat counts) over all ``texts``
    at each batch size. texts: strings, or (text, text_pair) tuples.
    Returns {name: {"latency_ms_batch_1": ..., ..., "latency_threads": N}}."""
    from .infer import Classifier
    from .measure import compare_latency

    def predictor(model, tokenizer):
        classifier = Classifier(model.to("cpu").float().eval(), tokenizer, max_length)

        def predict(chunk: list, batch: int):
            firsts = [t[0] if isinstance(t, tuple) else t for t in chunk]
            pairs = [t[1] for t in chunk] if chunk and isinstance(chunk[0], tuple) else None
            return classifier.predict(firsts, pairs, batch_size=batch)

        return predict

    settings = {f"latency_ms_batch_{b}": (b, -(-len(texts) // b)) for b in batch_sizes}
    latency, threads = compare_latency(
        {name: predictor(model, tok) for name, (model, tok) in models.items()}, texts, settings, repeats
    )
    return {name: {**timing, "latency_threads": threads} for name, timing in latency.items()}


def comparison_table(teacher: dict[str, Any], student: dict[str, Any]) -> str:
    """Markdown: teacher vs student, with the teacher/student ratio of each cost."""
    rows = [("validation accuracy", "eval/accuracy", "{:.4f}", None)]
    rows += [
        ("layers", "layers", "{}", None),
        ("parameters", "parameters", "{:,}", "x smaller"),
        ("size on disk (MB)", "size_mb", "{:.1f}", "x smaller"),
    ]
    rows += [
        (f"CPU latency, batch {b} (ms/example)", f"latency_ms_batch_{b}", "{:.2f}", "x faster")
        for b in LATENCY_BATCH_SIZES
    ]
    lines = ["| | teacher | student | teacher / student |", "|---|---|---|---|"]
    for title, key, fmt, ratio in rows:
        if teacher.get(key) is None or student.get(key) is None:
            continue
        if ratio:
            change = f"{teacher[key] / student[key]:.2f}{ratio}"
        else:
            change = f"{student[key] - teacher[key]:+.4f}" if key.startswith("eval/") else ""
        lines.append(f"| {title} | {fmt.format(teacher[key])} | {fmt.format(student[key])} | {change} |")
    return "\n".join(lines)


def ratios(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float]:
    """Teacher/student ratios of the costs (>1: the student is smaller or faster) and the accuracy gap."""
    out = {}
    for key in ("parameters", "size_mb", *(f"latency_ms_batch_{b}" for b in LATENCY_BATCH_SIZES)):
        if teacher.get(key) and student.get(key):
            out[key] = teacher[key] / student[key]
    if "eval/accuracy" in teacher and "eval/accuracy" in student:
        out["accuracy_drop"] = teacher["eval/accuracy"] - student["eval/accuracy"]
    return out
