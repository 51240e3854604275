"""The estimate before a run times real training steps: a few when steps are fast, fewer when a step is
slow (the user waits for each), and the epoch's time follows from the step's."""

from __future__ import annotations

import math
import time

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tunelab.estimate import estimate_classification, measure_step


class TimedStep(torch.nn.Module):
    """A step that takes ``delay`` seconds (its forward waits), counting its calls."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay, self.calls = delay, 0
        self.weight = torch.nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.delay)
        return (self.weight * x).sum()


@pytest.mark.parametrize(("delay", "calls"), [(0.05, 4), (1.2, 3)])
def test_a_step_is_timed_after_a_warm_up_until_three_steps_or_two_seconds(delay, calls):
    model = TimedStep(delay)
    result = measure_step(model, {"x": torch.ones(4)}, "no", steps_per_epoch=10)
    assert model.calls == calls  # the warm-up, then 3 fast steps, or 2 slow ones (2.4 s >= 2 s)
    assert delay <= result.step_seconds < 1.5 * delay + 0.1  # a step's time, not the steps' sum
    assert result.epoch_seconds == pytest.approx(10 * result.step_seconds)
    assert (result.parameters, result.trainable) == (4, 4)


def test_a_classifier_is_measured_on_the_data_and_its_epoch_counts_its_steps(tiny_bert):
    texts = ["a great film", "a dull and clumsy film that goes on and on"] * 8
    result = estimate_classification(
        str(tiny_bert), texts, ["neg", "pos"], rows=100, batch_size=8, max_length=16
    )
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert result.parameters == sum(p.numel() for p in model.parameters())
    assert result.steps_per_epoch == math.ceil(100 / 8)
    assert 0 < result.step_seconds < 5 and result.memory_gb > 0
