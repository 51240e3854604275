"""`sparse_embeddings`: the word-embedding rows of a batch's tokens get sparse gradients and SparseAdam
updates, every other weight the dense optimizer; clipping, checkpoints and exact resume still hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_recipe, sentiment_rows

from tunelab.args import TrainingArguments
from tunelab.runs import Run
from tunelab.sparse_embeddings import clip_grad_norm, enable_sparse_embeddings

ARGS = [
    "--per_device_train_batch_size", "8",
    "--learning_rate", "1e-3",
    "--num_train_epochs", "3",
    "--logging_steps", "1",
    "--eval_steps", "18",
    "--seed", "7",
    "--sparse_embeddings", "true",
]  # fmt: skip


def word_embeddings(folder: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    weights = load_file(folder / "model.safetensors")
    (name,) = [k for k in weights if k.endswith("word_embeddings.weight")]
    return weights[name]


def test_only_the_rows_of_tokens_in_the_data_move_and_the_model_learns(tmp_path, tiny_bert, sentiment_csv):
    out = tmp_path / "run"
    run_recipe(
        "bert_cls.py",
        *("--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_csv)),
        *("--output_dir", str(out), *ARGS),
    )
    assert "Word embeddings: sparse gradients" in (out / "train.log").read_text()
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval/accuracy"] >= 0.9, metrics  # separable phrases: the majority baseline is 0.5
    grad_norms = [e["train/grad_norm"] for e in Run(out).events("train")]
    assert grad_norms and all(g > 0 for g in grad_norms)  # clipping saw the gradients, sparse ones too

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    seen = {i for text, _ in sentiment_rows(160) for i in tokenizer(text)["input_ids"]}
    before, after = word_embeddings(tiny_bert), word_embeddings(out)
    moved = {int(i) for i in torch.nonzero((after - before).abs().amax(dim=1) > 0).flatten()}
    assert moved and moved <= seen  # a dense AdamW step (weight decay) would move every row of the vocabulary
    assert len(moved) >= 0.9 * len(seen)


def test_a_run_resumed_from_a_checkpoint_ends_as_the_uninterrupted_one(tmp_path, tiny_bert, sentiment_csv):
    """The SparseAdam moments are in the checkpoint: resumed at step 18, the losses and the final model are
    the uninterrupted run's (fresh moments would give other updates)."""
    common = [
        *("--model_name_or_path", str(tiny_bert), "--train_file", str(sentiment_csv)),
        *("--checkpointing_steps", "18", "--save_total_limit", "5", *ARGS),
    ]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_recipe("bert_cls.py", *common, "--output_dir", str(reference))
    checkpoint = reference / "checkpoints" / "step-18"
    assert (checkpoint / "trainer_state.json").exists()
    run_recipe(
        "bert_cls.py", *common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(checkpoint)
    )
    assert "Resumed from" in (resumed / "train.log").read_text()
    ref = {e["step"]: e["train/loss"] for e in Run(reference).events("train")}
    got = {e["step"]: e["train/loss"] for e in Run(resumed).events("train")}
    assert set(got) == {s for s in ref if s > 18}
    for step, loss in got.items():
        assert loss == pytest.approx(ref[step], rel=1e-4, abs=1e-6), step
    assert torch.allclose(word_embeddings(resumed), word_embeddings(reference), atol=1e-6)


def test_clipping_scales_sparse_and_dense_gradients_by_the_norm_over_both():
    from accelerate import Accelerator

    torch.manual_seed(0)
    embedding, linear = torch.nn.Embedding(50, 8, sparse=True), torch.nn.Linear(8, 1)
    (linear(embedding(torch.tensor([[1, 2, 2, 7]]))).sum() * 100).backward()
    dense_grads = [embedding.weight.grad.to_dense(), linear.weight.grad.clone(), linear.bias.grad.clone()]
    expected_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in dense_grads]))
    assert expected_norm > 1.0

    norm = clip_grad_norm(Accelerator(cpu=True), [embedding.weight, *linear.parameters()], 1.0)
    assert norm == pytest.approx(float(expected_norm), rel=1e-5)
    scale = 1.0 / float(expected_norm)
    clipped = [embedding.weight.grad.to_dense(), linear.weight.grad, linear.bias.grad]
    for got, before in zip(clipped, dense_grads, strict=True):
        assert torch.allclose(got, before * scale, rtol=1e-4, atol=1e-7)


def test_where_sparse_updates_cannot_work_the_embeddings_stay_dense_and_the_log_says_why(caplog):
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    def sparse_after(model, processes=1, **args):
        caplog.clear()
        with caplog.at_level("INFO", logger="tunelab.sparse_embeddings"):
            enabled = enable_sparse_embeddings(model, TrainingArguments(**args), processes)
        assert enabled == model.get_input_embeddings().sparse
        return enabled, caplog.text

    def bert():
        return BertForSequenceClassification(
            BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1)
        )

    enabled, log = sparse_after(bert())
    assert enabled and "sparse gradients" in log
    assert "densely: several processes" in sparse_after(bert(), processes=2)[1]
    assert "densely: torch_compile" in sparse_after(bert(), torch_compile=True)[1]
    assert "densely: optimizer sgd" in sparse_after(bert(), optimizer="sgd")[1]
    frozen = bert()
    frozen.get_input_embeddings().requires_grad_(False)
    assert "frozen" in sparse_after(frozen)[1]
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=1))
    assert "tied to the output layer" in sparse_after(gpt2)[1]
