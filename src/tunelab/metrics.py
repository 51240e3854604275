"""Evaluation metrics as ``evaluate`` modules that run offline (``evaluate.load`` needs the Hub)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


class ClassificationMetrics(evaluate.Metric):
    """Accuracy and macro precision/recall/F1; with ``labels`` also a per-class report and confusion matrix."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy, macro F1/precision/recall, per-class report and confusion matrix.",
            citation="",
            inputs_description="predictions and references: class ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels: list[str] | None = None, detailed: bool = False):
        predictions, references = np.asarray(predictions), np.asarray(references)
        ids = list(range(len(labels))) if labels else sorted(set(references) | set(predictions))
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, labels=ids, average="macro", zero_division=0
        )
        out = {
            "accuracy": float(accuracy_score(references, predictions)),
            "f1": float(f1),
            "precision": float(precision),
            "recall": float(recall),
        }
        if detailed:
            names = labels or [str(i) for i in ids]
            p, r, f, support = precision_recall_fscore_support(
                references, predictions, labels=ids, average=None, zero_division=0
            )
            out["per_class"] = {
                names[i]: {
                    "precision": float(p[i]),
                    "recall": float(r[i]),
                    "f1": float(f[i]),
                    "support": int(support[i]),
                }
                for i in range(len(ids))
            }
            out["confusion_matrix"] = confusion_matrix(references, predictions, labels=ids).tolist()
        return out


def classification_metrics(experiment_id: str = "tunelab") -> ClassificationMetrics:
    return ClassificationMetrics(experiment_id=experiment_id)


def classifier_outputs(accelerator, model, dataloader, problem_type: str = "single_label"):
    """(logits as float32, labels, mean loss) of every example of a (prepared) dataloader, in its order,
    on every process; the loss is the cross-entropy, a multi_label's binary cross-entropy (the mean
    over labels), or a regression's squared error."""
    import torch

    loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    logits_all, references = [], []
    with torch.no_grad():
        for batch in dataloader:
            out = model(**batch)
            # gather_for_metrics drops the duplicates DDP adds to fill the last batch.
            logits, refs = accelerator.gather_for_metrics((out.logits.float(), batch["labels"]))
            if problem_type == "regression":
                errors = torch.nn.functional.mse_loss(logits.squeeze(-1), refs.float(), reduction="sum")
            elif problem_type == "multi_label":
                errors = (
                    torch.nn.functional.binary_cross_entropy_with_logits(
                        logits, refs.float(), reduction="none"
                    )
                    .mean(-1)
                    .sum()
                )
            else:
                errors = torch.nn.functional.cross_entropy(logits, refs, reduction="sum")
            loss_sum += errors.double()
            logits_all.append(logits.cpu())
            references.append(refs.cpu())
    logits, refs = torch.cat(logits_all), torch.cat(references)
    return logits, refs, float(loss_sum / max(len(refs), 1))


def classification_scores(
    logits, refs, loss: float, labels: list[str], detailed: bool, split: str, process: int = 0
) -> dict:
    """Loss, accuracy and macro precision/recall/F1 under ``split/`` keys (eval/accuracy, test/f1, ...);
    with ``detailed`` the per-class report and confusion matrix too (per_class, confusion_matrix for
    the validation split, test/per_class, test/confusion_matrix for the test split)."""
    # evaluate keeps a cache file per experiment: one per process, or DDP ranks would share it
    metric = classification_metrics(experiment_id=f"tunelab-{split}-{process}")
    scores = metric.compute(
        predictions=logits.argmax(-1).tolist(), references=refs.tolist(), labels=labels, detailed=detailed
    )
    out = {f"{split}/loss": loss}
    for key, value in scores.items():
        detail = key in ("per_class", "confusion_matrix")
        out[key if detail and split == "eval" else f"{split}/{key}"] = value
    return out


def tune_thresholds(probabilities, targets) -> list[float]:
    """Each label's decision threshold: of 0.01, 0.02, ..., 0.99 the one with the best F1 of that label
    on these (validation) examples; ties go to the one nearest 0.5, a label never present keeps 0.5."""
    grid = np.round(np.arange(1, 100) / 100, 2)
    chosen = []
    for j in range(probabilities.shape[1]):
        gold = targets[:, j] > 0.5
        predicted = probabilities[:, j][:, None] >= grid[None, :]  # examples x thresholds
        hits = (predicted & gold[:, None]).sum(0)
        f1 = 2 * hits / np.maximum(predicted.sum(0) + gold.sum(), 1)
        best = np.flatnonzero(f1 == f1.max()) if gold.any() else np.flatnonzero(grid == 0.5)
        chosen.append(float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]]))
    return chosen


def multi_label_scores(
    logits, refs, loss: float, labels: list[str], thresholds: list[float], detailed: bool, split: str
) -> dict:
    """Micro/macro F1, micro precision/recall and subset accuracy (every label of a text right) of the
    labels whose sigmoid reaches their threshold; with ``detailed`` each label's precision, recall, F1,
    support and threshold (``per_class``, ``test/per_class``)."""
    probabilities = logits.sigmoid().numpy()
    gold = refs.numpy() > 0.5
    predicted = probabilities >= np.asarray(thresholds)[None, :]
    out = {f"{split}/loss": loss}
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(gold, predicted, average=average, zero_division=0)
        out[f"{split}/f1_{average}"] = float(f)
        if average == "micro":
            out[f"{split}/precision_micro"], out[f"{split}/recall_micro"] = float(p), float(r)
    out[f"{split}/subset_accuracy"] = float((predicted == gold).all(1).mean()) if len(gold) else 0.0
    if detailed:
        p, r, f, support = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
        out["per_class" if split == "eval" else f"{split}/per_class"] = {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
                "threshold": thresholds[i],
            }
            for i, name in enumerate(labels)
        }
    return out


def regression_scores(outputs, refs, loss: float, split: str) -> dict:
    """MSE (the loss), RMSE, MAE, Pearson and Spearman correlation of one-output predictions."""
    import pandas as pd

    predicted, gold = outputs.squeeze(-1).double().numpy(), refs.double().numpy()
    errors = predicted - gold

    def correlation(a, b) -> float:  # 0 where a side is constant (undefined)
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else 0.0

    ranks = [pd.Series(x).rank().to_numpy() for x in (predicted, gold)]  # Spearman: Pearson of the ranks
    return {
        f"{split}/loss": loss,
        f"{split}/rmse": float(np.sqrt(np.mean(errors**2))),
        f"{split}/mae": float(np.mean(np.abs(errors))),
        f"{split}/pearson": correlation(predicted, gold),
        f"{split}/spearman": correlation(*ranks),
    }


def evaluate_classifier(
    accelerator,
    model,
    dataloader,
    labels: list[str],
    detailed: bool = False,
    problem_type: str = "single_label",
    threshold: float = 0.5,
    tune: bool = False,
) -> dict:
    """Loss and classification (or regression) metrics over a (prepared) dataloader; every process gets
    the result. A multi_label model's labels are decided at ``threshold``, or with ``tune`` at each
    label's best threshold on these examples; a detailed report then holds the thresholds used
    ({label: threshold} under ``thresholds``: what the saved model decides with)."""
    logits, refs, loss = classifier_outputs(accelerator, model, dataloader, problem_type)
    if problem_type == "regression":
        return regression_scores(logits, refs, loss, "eval")
    if problem_type == "multi_label":
        chosen = (
            tune_thresholds(logits.sigmoid().numpy(), refs.numpy()) if tune else [threshold] * len(labels)
        )
        scores = multi_label_scores(logits, refs, loss, labels, chosen, detailed, "eval")
        return scores | ({"thresholds": dict(zip(labels, chosen, strict=True))} if detailed else {})
    return classification_scores(logits, refs, loss, labels, detailed, "eval", accelerator.process_index)


def evaluate_test_set(
    accelerator,
    model,
    tokenizer,
    data,
    max_length: int,
    batch_size: int,
    output_dir,
    thresholds: dict[str, float] | None = None,
) -> dict:
    """The final model's scores on ``data.test`` (test/accuracy, test/f1, test/per_class, ...), and from
    the main process ``test_predictions.csv``: each test text with its gold label, the predicted one and
    every label's probability, in the file's order. A multi_label model decides at ``thresholds`` (its
    own), and the gold and predicted labels are written joined by the data's label separator."""
    from pathlib import Path

    from .data.batching import eval_dataloader, tokenize_classification
    from .predictions import write_predictions
    from .runs import TEST_PREDICTIONS

    encoded, _ = tokenize_classification(data.test, tokenizer, max_length, desc="Tokenizing test")
    loader, order = eval_dataloader(encoded, tokenizer, batch_size, accelerator.device.type == "cuda")
    model.eval()
    regression = data.problem_type == "regression"
    logits, refs, loss = classifier_outputs(
        accelerator, model, accelerator.prepare(loader), data.problem_type
    )
    if len(refs) != len(order):
        raise RuntimeError(f"test set: {len(refs)} answers for {len(order)} examples")
    cut = [(thresholds or {}).get(name, 0.5) for name in data.labels]
    if regression:
        scores = regression_scores(logits, refs, loss, "test")
    elif data.multi_label:
        scores = multi_label_scores(logits, refs, loss, data.labels, cut, True, "test")
    else:
        scores = classification_scores(
            logits, refs, loss, data.labels, True, "test", accelerator.process_index
        )
    if accelerator.is_main_process:
        outputs = np.empty((len(order), logits.shape[-1]))
        outputs[order] = (
            logits.numpy()
            if regression
            else (logits.sigmoid() if data.multi_label else logits.softmax(-1)).numpy()
        )
        texts = data.test["text"]
        pairs = data.test["text_pair"] if "text_pair" in data.test.column_names else None
        rows = []
        for i, (gold, out) in enumerate(zip(data.test["label"], outputs, strict=True)):
            row = {"text": texts[i], **({"text_pair": pairs[i]} if pairs else {})}
            if regression:
                rows.append(row | {"gold": gold, "predicted": round(float(out[0]), 6)})
                continue
            if data.multi_label:
                join = data.label_separator.join
                chosen = [name for name, p, t in zip(data.labels, out, cut, strict=True) if p >= t]
                row |= {"gold": join(data.labels[i] for i in gold), "predicted": join(chosen)}
            else:
                row |= {"gold": data.labels[gold], "predicted": data.labels[int(out.argmax())]}
            rows.append(
                row | {f"prob_{k}": round(float(p), 6) for k, p in zip(data.labels, out, strict=True)}
            )
        write_predictions(Path(output_dir) / TEST_PREDICTIONS, rows, list(rows[0]) if rows else ["text"])
    return scores
