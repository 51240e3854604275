"""Optimizers, schedules and regularization of the shared loop: each option changes training the way a
user expects. The loop runs in-process here (the recipes' own launches are tested in test_bert_cls.py and
test_gpt2_clm.py) on a 2-layer BERT and a separable sentiment set, so each run takes a second or two."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import run_recipe, sentiment_rows

from tunelab.args import ClassificationArguments, TrainingArguments, parse_args
from tunelab.data.batching import classification_dataloaders, tokenize_classification
from tunelab.data.classification import (
    load_classification_data,
)
from tunelab.errors import ConfigError
from tunelab.metrics import evaluate_classifier
from tunelab.models import load_classifier, load_tokenizer
from tunelab.runs import EventWriter, Run
from tunelab.train import Task, build_accelerator, classification_loss, train, weight_matrices


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentiment_rows(192, seed=3))
    return path


def fit(out: Path, model_path: Path, data_file: Path, dropout: dict | None = None, **overrides):
    """The classification recipe's sequence, in-process: returns (result, train events, lr per step)."""
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=16,
        learning_rate=overrides.pop("learning_rate", 3e-3),
        max_train_steps=overrides.pop("max_train_steps", 40),
        logging_steps=1,
        seed=0,
        **overrides,
    )
    accelerator = build_accelerator(args, out)
    data = load_classification_data(str(data_file), None, None, None, None, None, 20.0, None, None, 0)
    tokenizer = load_tokenizer(str(model_path))
    train_set, _ = tokenize_classification(data.train, tokenizer, 32)
    eval_set, _ = tokenize_classification(data.validation, tokenizer, 32)
    train_dl, eval_dl = classification_dataloaders(
        train_set, eval_set, tokenizer, 16, 64, False, 0, on_gpu=False, num_workers=0
    )
    model = load_classifier(str(model_path), data.labels, dropout)
    task = Task(
        evaluate=lambda m, dl, final: evaluate_classifier(accelerator, m, dl, data.labels),
        main_metric="accuracy",
        count_tokens=lambda batch: batch["attention_mask"].sum(),
        loss=classification_loss(args.label_smoothing),
    )
    args.load_best_model_at_end = False
    result = train(accelerator, args, model, train_dl, eval_dl, task, out, EventWriter(out))
    return result, Run(out).events("train")


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


@pytest.mark.parametrize(
    ("optimizer", "learning_rate", "extra"),
    [
        ("adamw", 3e-3, {}),
        # Classic Adam adds weight decay to the gradient (L2), which Adam then rescales: on this tiny
        # model even 0.01 keeps it on the plateau, so it runs without decay (as users of adam should).
        ("adam", 3e-3, {"weight_decay": 0.0}),
        ("adafactor", 3e-3, {}),
        # Plain SGD does not get a randomly initialised transformer going in a few dozen steps (the
        # reason adaptive optimizers are the default); it fine-tunes a pretrained one well.
        ("sgd", 0.05, {"sgd_momentum": 0.9, "sgd_nesterov": True, "max_train_steps": 20}),
    ],
)
def test_every_optimizer_learns(
    tmp_path, tiny_bert, embedded_encoder_path, reviews, optimizer, learning_rate, extra
):
    model = embedded_encoder_path if optimizer == "sgd" else tiny_bert
    result, events = fit(
        tmp_path / "run", model, reviews, optimizer=optimizer, learning_rate=learning_rate, **extra
    )
    losses = [e["train/loss"] for e in events]
    assert mean(losses[-5:]) < 0.7 * mean(losses[:5]), (optimizer, losses)
    assert result.metrics["eval/accuracy"] >= 0.8, (optimizer, result.metrics)
    log = (tmp_path / "run" / "events.jsonl").read_text()
    assert "train/l1" not in log  # only logged when the penalty is on


def test_optimizer_kind_and_sgd_settings_are_the_ones_asked_for(tmp_path, tiny_bert):
    from transformers.optimization import Adafactor

    from tunelab.train import build_optimizer

    model = load_classifier(str(tiny_bert), ["neg", "pos"])
    sgd = build_optimizer(
        model,
        TrainingArguments(optimizer="sgd", sgd_momentum=0.8, sgd_nesterov=True, weight_decay=0.1),
        "cpu",
    )
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["nesterov"]
    # weight decay on matrices only, never on biases and LayerNorm weights
    assert (
        all(p.dim() >= 2 for p in sgd.param_groups[0]["params"])
        and sgd.param_groups[0]["weight_decay"] == 0.1
    )
    assert (
        all(p.dim() < 2 for p in sgd.param_groups[1]["params"]) and sgd.param_groups[1]["weight_decay"] == 0.0
    )
    assert isinstance(build_optimizer(model, TrainingArguments(optimizer="adafactor"), "cpu"), Adafactor)
    assert type(build_optimizer(model, TrainingArguments(optimizer="adam"), "cpu")) is torch.optim.Adam


def test_l1_penalty_shrinks_weights_and_is_logged_apart_from_the_task_loss(tmp_path, tiny_bert, reviews):
    plain, plain_events = fit(tmp_path / "plain", tiny_bert, reviews, weight_decay=0.0)
    l1, l1_events = fit(tmp_path / "l1", tiny_bert, reviews, weight_decay=0.0, l1_lambda=1e-6)

    def l1_norm(model) -> float:
        return sum(float(p.detach().abs().sum()) for p in weight_matrices(model))

    assert l1_norm(l1.model) < 0.97 * l1_norm(plain.model)
    penalties = [e["train/l1"] for e in l1_events]
    assert all(p > 0 for p in penalties)
    assert penalties[-1] < penalties[0]  # the penalty term falls as the weights shrink
    # train/loss stays the task's cross-entropy: the first step (same weights, same batch) equals the plain run's
    assert l1_events[0]["train/loss"] == pytest.approx(plain_events[0]["train/loss"], rel=1e-5)
    assert l1.metrics["eval/accuracy"] >= 0.8


def test_dropout_overrides_reach_the_model_and_change_training(tmp_path, tiny_bert, reviews):
    base, base_events = fit(tmp_path / "base", tiny_bert, reviews, max_train_steps=10)
    heavy, heavy_events = fit(
        tmp_path / "heavy",
        tiny_bert,
        reviews,
        dropout={"hidden_dropout": 0.5, "attention_dropout": 0.3, "classifier_dropout": 0.4},
        max_train_steps=10,
    )
    config = heavy.model.config
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.classifier_dropout) == (
        0.5,
        0.3,
        0.4,
    )
    assert heavy.model.dropout.p == 0.4
    assert heavy.model.bert.encoder.layer[0].output.dropout.p == 0.5
    # Same seed, same batches: the only difference is dropout, and it shows in the training loss.
    assert heavy_events[0]["train/loss"] != pytest.approx(base_events[0]["train/loss"], rel=1e-3)
    with pytest.raises(ConfigError, match="hidden_dropout must be in"):
        ClassificationArguments(train_file="x.csv", hidden_dropout=1.5)


def test_label_smoothing_changes_the_training_loss_but_not_what_evaluation_reports(
    tmp_path, tiny_bert, reviews
):
    plain, plain_events = fit(tmp_path / "plain", tiny_bert, reviews, max_train_steps=15)
    smooth, smooth_events = fit(
        tmp_path / "smooth", tiny_bert, reviews, max_train_steps=15, label_smoothing=0.2
    )
    # A confident model pays a floor with smoothed targets: the late training loss stays higher.
    assert mean(e["train/loss"] for e in smooth_events[-5:]) > mean(
        e["train/loss"] for e in plain_events[-5:]
    )
    # Evaluation reports the plain cross-entropy of the model's predictions.
    model = smooth.model.eval()
    data = load_classification_data(str(reviews), None, None, None, None, None, 20.0, None, None, 0)
    tokenizer = load_tokenizer(str(tiny_bert))
    batch = tokenizer(list(data.validation["text"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    plain_ce = torch.nn.functional.cross_entropy(logits, torch.tensor(list(data.validation["label"])))
    assert smooth.metrics["eval/loss"] == pytest.approx(float(plain_ce), rel=1e-3)


def test_cosine_with_restarts_follows_its_cycles(tmp_path, tiny_bert, reviews):
    _, events = fit(
        tmp_path / "run",
        tiny_bert,
        reviews,
        lr_scheduler_type="cosine_with_restarts",
        lr_scheduler_kwargs="num_cycles=2",
        num_warmup_steps=2,
        max_train_steps=22,
    )
    lr = {e["step"]: e["train/lr"] for e in events}
    peak = 3e-3  # fit()'s learning rate
    assert lr[2] == pytest.approx(peak)  # end of warmup
    assert lr[11] < 0.05 * peak  # end of the first cycle (10 steps after warmup)
    assert lr[13] > 0.9 * peak  # restarted
    expected = 0.5 * peak * (1 + math.cos(math.pi * ((2 * (7 - 2) / 20) % 1.0)))
    assert lr[7] == pytest.approx(expected, rel=1e-6)


def test_schedule_and_optimizer_options_are_checked_before_training():
    with pytest.raises(ConfigError, match="num_cycles"):
        TrainingArguments(lr_scheduler_type="linear", lr_scheduler_kwargs="num_cycles=2")
    with pytest.raises(ConfigError, match="optimizer='lion' is not allowed"):
        TrainingArguments(optimizer="lion")
    with pytest.raises(ConfigError, match="sgd_nesterov needs"):
        TrainingArguments(optimizer="adamw", sgd_nesterov=True)
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainingArguments(label_smoothing=1.0)
    (train_args,) = parse_args(
        (TrainingArguments,),
        ["--optimizer", "sgd", "--lr_scheduler_type", "polynomial", "--lr_scheduler_kwargs", "power=2.0"],
    )
    assert train_args.scheduler_kwargs() == {"power": 2.0}


def test_options_reach_the_run_config_and_model_card_through_the_recipe(tmp_path, tiny_bert, sentiment_csv):
    """One real launch with every option at once: the run records them and the model trained."""
    out = tmp_path / "run"
    run_recipe(
        "bert_cls.py",
        "--model_name_or_path",
        str(tiny_bert),
        "--train_file",
        str(sentiment_csv),
        "--output_dir",
        str(out),
        "--max_train_steps",
        "30",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "1e-3",
        "--optimizer",
        "adam",
        "--lr_scheduler_type",
        "cosine",
        "--l1_lambda",
        "1e-5",
        "--label_smoothing",
        "0.1",
        "--hidden_dropout",
        "0.2",
        "--logging_steps",
        "5",
        "--report_to",
        "tensorboard",
        "--freeze_embeddings",
        "true",
    )
    config = Run(out).config()
    assert (
        config["optimizer"],
        config["l1_lambda"],
        config["label_smoothing"],
        config["hidden_dropout"],
    ) == (
        "adam",
        1e-5,
        0.1,
        0.2,
    )
    card = (out / "README.md").read_text()
    for text in ("optimizer", "adam", "l1_lambda", "label_smoothing", "hidden_dropout"):
        assert text in card, text
    events = Run(out).events("train")
    assert all("train/l1" in e for e in events)
    import json

    assert json.loads((out / "config.json").read_text())["hidden_dropout_prob"] == 0.2
    # --freeze_embeddings: the word embeddings are the base model's, bit for bit; the encoder trained
    from safetensors.torch import load_file

    base, trained = load_file(tiny_bert / "model.safetensors"), load_file(out / "model.safetensors")
    words = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(trained[words], base[words]) and config["freeze_embeddings"] is True
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert (trained[layer] - base[layer]).abs().max() > 1e-3
    # --report_to tensorboard: an event file that TensorBoard reads, holding the logged training loss
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event_file,) = (out / out.name).glob("events.out.tfevents.*")  # the run's (hparams have their own)
    board = EventAccumulator(str(event_file))
    board.Reload()
    logged = [(e["step"], e["train/loss"]) for e in events]
    assert (
        [e.step for e in board.Scalars("train/loss")]
        == [step for step, _ in logged]
        == [5, 10, 15, 20, 25, 30]
    )
    assert [e.value for e in board.Scalars("train/loss")] == pytest.approx(
        [loss for _, loss in logged], rel=1e-5
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gpt2_chunked_loss_with_label_smoothing_equals_torch_cross_entropy(smoothing):
    """The causal-LM loss never holds all logits; with smoothing it must still be torch's loss and grads."""
    from tunelab.lm import chunked_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 40, (50,))
    ours = chunked_cross_entropy(h, w, y, chunk=7, label_smoothing=smoothing)
    grads = torch.autograd.grad(ours, [h, w])
    ref = torch.nn.functional.cross_entropy(h @ w.T, y, label_smoothing=smoothing)
    ref_grads = torch.autograd.grad(ref, [h, w])
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gpt2_dropout_overrides_from_scratch_and_when_continuing(tmp_path):
    from tunelab.args import CausalLMArguments
    from tunelab.lm import build_gpt2, gpt2_config, load_causal_lm

    args = CausalLMArguments(train_file="x.txt", resid_pdrop=0.2, attn_pdrop=0.1)
    config = gpt2_config("tiny", None, 500, 64, 0, args.dropout_overrides())
    assert (config.resid_pdrop, config.attn_pdrop, config.embd_pdrop) == (0.2, 0.1, 0.0)  # embd: default 0
    build_gpt2(config).save_pretrained(tmp_path)

    class Tok:  # the vocabulary size is all load_causal_lm asks of a tokenizer
        def __len__(self) -> int:
            return 500

    model = load_causal_lm(str(tmp_path), Tok(), 64, {"embd_pdrop": 0.3})
    assert model.transformer.drop.p == 0.3 and model.config.resid_pdrop == 0.2


def test_encoders_train_with_eager_attention_on_cpu_and_compute_the_same_thing(tiny_bert, tmp_path):
    """``--attn_implementation auto``: an encoder on CPU switches to eager attention (faster there than
    SDPA with a padding mask) and gives the same logits and gradients on a padded batch; a generating model
    and an explicit choice are left alone; the saved config does not carry the training-time kernel."""
    import json

    from transformers import GPT2Config, GPT2LMHeadModel

    from tunelab.train import choose_attention

    model = load_classifier(str(tiny_bert), ["neg", "pos"])
    tokenizer = load_tokenizer(str(tiny_bert))
    batch = tokenizer(["a fine film", "a long and rather dull film about nothing at all"], padding=True)
    batch = {k: torch.tensor(v) for k, v in batch.items()}
    assert (batch["attention_mask"] == 0).any()  # padded

    def logits_and_grads():
        model.zero_grad()
        logits = model(**batch).logits
        logits.sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.eval()  # no dropout: the two kernels must agree exactly enough
    assert model.config._attn_implementation == "sdpa"
    sdpa_logits, sdpa_grads = logits_and_grads()
    choose_attention(model, "auto", "cuda")  # a GPU keeps SDPA
    assert model.config._attn_implementation == "sdpa"
    choose_attention(model, "auto", "cpu")
    assert model.config._attn_implementation == "eager"
    eager_logits, eager_grads = logits_and_grads()
    torch.testing.assert_close(eager_logits, sdpa_logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(eager_grads, sdpa_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    choose_attention(model, "sdpa", "cpu")  # asked for: kept
    assert model.config._attn_implementation == "sdpa"
    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    choose_attention(lm, "auto", "cpu")  # causal blocks without padding: SDPA's fast path
    assert lm.config._attn_implementation == "sdpa"
    choose_attention(model, "auto", "cpu")
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert not any("attn" in key for key in saved)  # users load it with their own default
