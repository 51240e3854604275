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


def evaluate_classifier(accelerator, model, dataloader, labels: list[str], detailed: bool = False) -> dict:
    """Loss and classification metrics over a (prepared) dataloader; every process gets the result."""
    import torch

    metric = classification_metrics(experiment_id=f"tunelab-{accelerator.process_index}")
    loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    count = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    predictions, references = [], []
    with torch.no_grad():
        for batch in dataloader:
            out = model(**batch)
            # gather_for_metrics drops the duplicates DDP adds to fill the last batch.
            logits, refs = accelerator.gather_for_metrics((out.logits, batch["labels"]))
            loss_sum += torch.nn.functional.cross_entropy(logits.float(), refs, reduction="sum").double()
            count += len(refs)
            predictions.append(logits.argmax(-1).cpu())
            references.append(refs.cpu())
    preds = torch.cat(predictions).tolist()
    refs = torch.cat(references).tolist()
    scores = metric.compute(predictions=preds, references=refs, labels=labels, detailed=detailed)
    out = {"eval/loss": float(loss_sum / count)}
    for key, value in scores.items():
        out[key if key in ("per_class", "confusion_matrix") else f"eval/{key}"] = value
    return out
