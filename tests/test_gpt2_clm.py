"""The GPT-2 pretraining recipe end to end, through real ``accelerate launch`` runs of a tiny GPT-2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, kill_when, launch, run_recipe, start

from tunelab.runs import Run

# A 2-layer, 64-wide GPT-2 with a 512-token BPE: learns Shakespeare's character in a few dozen steps.
TINY = [
    "--config_overrides", "n_layer=2,n_embd=64,n_head=2",
    "--tokenizer_vocab_size", "512",
    "--block_size", "64",
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "32",
    "--learning_rate", "3e-3",
    "--lr_scheduler_type", "constant",
    "--max_eval_samples", "16",
    "--logging_steps", "5",
    "--seed", "7",
]  # fmt: skip


@pytest.fixture(scope="module")
def shakespeare_small(tmp_path_factory, shakespeare_file) -> Path:
    """The first 200k characters of Tiny Shakespeare (one document, as the whole file is)."""
    path = tmp_path_factory.mktemp("data") / "shakespeare.txt"
    path.write_text(shakespeare_file.read_text()[:200_000])
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tunelab-cache")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shakespeare_small, cache_dir) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs") / "clm"
    proc = run_recipe(
        "gpt2_clm.py", "--train_file", str(shakespeare_small), *TINY, "--max_train_steps", "60",
        "--eval_steps", "30", "--sample_prompts", "ROMEO:", "--sample_max_new_tokens", "8",
        "--cache_dir", str(cache_dir), "--output_dir", str(out),
    )  # fmt: skip
    return out, proc


def held_out_loss(model_dir: Path, text: str, untrained: bool = False) -> float:
    """Mean next-token loss of the saved model (or a freshly initialised one of its config) on ``text``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if untrained:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, : 64 * 8].view(8, 64)
    with torch.no_grad():
        return model.eval()(input_ids=ids, labels=ids).loss.item()


def train_losses(run_dir: Path) -> dict[int, float]:
    """train/loss per step; a resumed run logs some steps twice, the later line is the one that counts."""
    return {e["step"]: e["train/loss"] for e in Run(run_dir).events("train")}


def test_tiny_run_learns_shakespeare_and_saves_a_generating_model(trained_run, shakespeare_file):
    out, proc = trained_run
    # Held-out text the run never saw (the file beyond the 200k characters it trained on).
    held_out = shakespeare_file.read_text()[300_000:310_000]
    trained, untrained = held_out_loss(out, held_out), held_out_loss(out, held_out, untrained=True)
    assert trained < untrained - 0.8, (trained, untrained)  # ~5.0 vs ln(512) ~ 6.2

    from transformers import pipeline

    generated = pipeline("text-generation", model=str(out))("ROMEO:", max_new_tokens=12)[0]["generated_text"]
    assert generated.startswith("ROMEO:") and len(generated) > len("ROMEO:")
    from tunelab.infer import Generator

    assert isinstance(Generator.load(out).generate("JULIET:", max_new_tokens=5, seed=0), str)

    run = Run(out)
    kinds = {e["kind"] for e in run.events()}
    assert {"train", "eval", "sample"} <= kinds
    sample = run.events("sample")[-1]["samples"][0]
    assert sample["prompt"] == "ROMEO:" and sample["text"]
    evals = run.events("eval")
    assert [e["step"] for e in evals] == [30, 60]
    assert evals[-1]["eval/perplexity"] == pytest.approx(2.718281828 ** evals[-1]["eval/loss"], rel=1e-4)
    assert all(e["train/tokens_per_s"] > 0 for e in run.events("train"))
    assert run.status()["state"] == "finished"

    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["do_sample"] is True and generation["temperature"] == 0.8 and generation["top_k"] == 50
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] % 64 == 0 and config["tie_word_embeddings"] is True
    card = (out / "README.md").read_text()
    assert "text-generation" in card and "perplexity" in card and "tokens seen" in card
    assert "train" in proc.stderr and "validation" in proc.stderr  # token counts reported


def test_a_test_file_is_scored_by_the_final_model(tmp_path, shakespeare_small, shakespeare_file):
    """test/loss is the saved model's mean next-token loss over every full block of the test file,
    computed here independently; test/perplexity is its exponential."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    test_file = tmp_path / "held_out.txt"
    test_file.write_text(shakespeare_file.read_text()[300_000:306_000])  # text the run never saw
    out = tmp_path / "run"
    run_recipe(
        "gpt2_clm.py", "--train_file", str(shakespeare_small), "--test_file", str(test_file), *TINY,
        "--max_train_steps", "20", "--mixed_precision", "no", "--cache_dir", str(tmp_path / "cache"),
        "--output_dir", str(out),
    )  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = AutoTokenizer.from_pretrained(out)(test_file.read_text())["input_ids"]
    blocks = (len(ids) - 1) // 64  # block i: ids[64i : 64i+64] predicting ids[64i+1 : 64i+65]
    chunks = torch.tensor([ids[64 * i : 64 * i + 65] for i in range(blocks)])
    with torch.no_grad():
        logits = model(chunks[:, :-1]).logits
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), chunks[:, 1:], reduction="none")
    assert results["test/loss"] == pytest.approx(losses.mean(1).mean().item(), abs=2e-3)
    assert results["test/perplexity"] == pytest.approx(math.exp(results["test/loss"]))
    assert Run(out).status()["metrics"]["test/loss"] == results["test/loss"]
    assert "| perplexity |" in (out / "README.md").read_text()


def test_second_run_on_the_same_data_hits_the_token_cache(
    trained_run, tmp_path, shakespeare_small, cache_dir
):
    first, _ = trained_run
    cached = sorted((cache_dir / "tokens").glob("*.npy"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    proc = run_recipe(
        "gpt2_clm.py",
        "--train_file",
        str(shakespeare_small),
        *TINY,
        "--max_train_steps",
        "2",
        "--cache_dir",
        str(cache_dir),
        "--output_dir",
        str(tmp_path / "again"),
    )
    assert "Token cache hit" in proc.stderr
    assert "Tokenizing" not in proc.stderr  # no datasets.map ran
    assert sorted((cache_dir / "tokens").glob("*.npy")) == cached and cached[0].stat().st_mtime_ns == before
    # Same tokenizer (from the tokenizer cache), hence the same ids.
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(tmp_path, shakespeare_small):
    out = tmp_path / "ddp"
    launch(
        "gpt2_clm.py",
        "--train_file",
        str(shakespeare_small),
        *TINY,
        "--max_train_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        str(out),
        processes=2,
    )
    state = json.loads((out / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert "processes = 2" in (out / "train.log").read_text()
    assert Run(out).status()["state"] == "finished" and Run(out).has_model()


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, shakespeare_small):
    args = [
        "--train_file",
        str(shakespeare_small),
        *TINY,
        "--max_train_steps",
        "40",
        "--logging_steps",
        "1",
        "--checkpointing_steps",
        "10",
        "--save_total_limit",
        "5",
        "--cache_dir",
        str(tmp_path / "cache"),
    ]
    reference = tmp_path / "reference"
    launch("gpt2_clm.py", *args, "--output_dir", str(reference))

    killed = tmp_path / "killed"
    proc = start("gpt2_clm.py", *args, "--output_dir", str(killed))
    kill_when(proc, lambda: (killed / "checkpoints" / "step-10").exists())
    proc.wait()
    assert Run(killed).status()["state"] == "running" and not Run(killed).has_model()
    resumed_from = max(int(p.name[5:]) for p in (killed / "checkpoints").glob("step-*"))
    assert resumed_from < 40

    launch("gpt2_clm.py", *args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest")
    assert "Resumed from" in (killed / "train.log").read_text()
    ref_losses, resumed_losses = train_losses(reference), train_losses(killed)
    after = [s for s in ref_losses if s > resumed_from]
    assert after and all(s in resumed_losses for s in after)
    for step in after:
        assert resumed_losses[step] == pytest.approx(ref_losses[step], rel=1e-4, abs=1e-5), step
    ref_eval, resumed_eval = Run(reference).events("eval")[-1], Run(killed).events("eval")[-1]
    assert resumed_eval["step"] == ref_eval["step"] == 40
    assert resumed_eval["eval/loss"] == pytest.approx(ref_eval["eval/loss"], rel=1e-4, abs=1e-5)
    assert Run(killed).status()["state"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "extra", "message"),
    [
        ("clm_empty.txt", [], "the file is empty"),
        ("clm_bad_utf8.txt", [], "line 3, column 4: byte 0xe9 is not valid UTF-8"),
        ("clm_no_text_column.jsonl", [], "no text column found; the columns are: id, label"),
        ("clm_validation_too_small.txt", ["--validation_split_percentage", "2"], "the validation split has"),
    ],
)
def test_bad_input_fails_fast_with_a_clear_message(tmp_path, fixture, extra, message):
    path = FIXTURES / "bad" / fixture
    proc = run_recipe(
        "gpt2_clm.py",
        "--train_file",
        str(path),
        *TINY,
        *extra,
        "--max_train_steps",
        "2",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        str(tmp_path / "run"),
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr and fixture in proc.stderr
    assert "Traceback" not in proc.stderr
    assert Run(tmp_path / "run").status()["state"] == "failed"


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("clm_bad_utf8.txt", "line 3, column 4: byte 0xe9 is not valid UTF-8"),
        ("clm_empty.txt", "the file is empty"),
    ],
)
def test_a_bad_test_file_fails_before_training_with_a_clear_message(
    tmp_path, shakespeare_small, fixture, message
):
    proc = run_recipe(
        "gpt2_clm.py", "--train_file", str(shakespeare_small), "--test_file", str(FIXTURES / "bad" / fixture),
        *TINY, "--max_train_steps", "2", "--cache_dir", str(tmp_path / "cache"),
        "--output_dir", str(tmp_path / "run"), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert message in proc.stderr and fixture in proc.stderr and "Traceback" not in proc.stderr
    assert not Run(tmp_path / "run").events("train")  # it failed before the first step


def test_a_pretraining_run_is_chat_fine_tuned_with_a_template_added_to_its_tokenizer(trained_run, tmp_path):
    """Continuing a text-pretrained run on conversations: its BPE gets TuneLab's role and end-of-turn
    tokens (the embeddings grow to hold them), the replies are learned (the held-out reply loss falls
    at every evaluation), and the saved folder formats a conversation by itself."""
    from conftest import greeting_chats, write_jsonl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first, _ = trained_run
    train = write_jsonl(tmp_path / "chats.jsonl", greeting_chats(300))
    out = tmp_path / "chat"
    run_recipe(
        "gpt2_clm.py", "--train_file", str(train), "--model_name_or_path", str(first), "--block_size", "64",
        "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", "--max_train_steps", "30",
        "--eval_steps", "10", "--mixed_precision", "no", "--seed", "0", "--cache_dir", str(tmp_path / "cache"),
        "--output_dir", str(out),
    )  # fmt: skip
    before = AutoTokenizer.from_pretrained(first)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert before.chat_template is None and len(tokenizer) == len(before) + 4
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    losses = [e["eval/loss"] for e in Run(out).events("eval")]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0], losses
    assert json.loads((out / "eval_results.json").read_text())["data_format"] == "chat"


def test_training_continues_from_a_finished_run(trained_run, tmp_path, shakespeare_small):
    first, _ = trained_run
    out = tmp_path / "continued"
    run_recipe(
        "gpt2_clm.py",
        "--train_file",
        str(shakespeare_small),
        *TINY,
        "--model_name_or_path",
        str(first),
        "--max_train_steps",
        "5",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        str(out),
    )
    first_loss = Run(first).events("eval")[-1]["eval/loss"]
    continued = Run(out).events("eval")[-1]["eval/loss"]
    # Starting from random weights, 5 steps would leave the loss near ln(vocab) ~ 6.2.
    assert continued < first_loss + 0.2, (continued, first_loss)
    assert (out / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()


def test_cpu_training_attention_and_loss_compute_gpt2s_function_and_the_saved_model_is_plain(tmp_path):
    """From scratch the GELU is the exact one (nanoGPT's). Training on CPU switches the attention to the
    batched-matmul path (no flash kernel runs) and the loss to the chunked one: in fp32 the loss and
    every gradient equal a plain SDPA GPT-2's with torch's cross-entropy; in bf16 the loss is the
    cross-entropy to bf16 precision. The saved model loads as a plain SDPA GPT-2 with the same logits."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.lm import CPU_ATTENTION, CausalLMForTraining, build_gpt2, gpt2_config

    config = gpt2_config("tiny", "n_layer=2", 1000, 64, 0)
    assert config.activation_function == "gelu"
    torch.manual_seed(0)
    model = build_gpt2(config)
    reference = copy.deepcopy(model)  # SDPA attention, transformers' own forward
    wrapped = CausalLMForTraining(model)
    assert model.config._attn_implementation == CPU_ATTENTION
    ids, targets = torch.randint(0, 1000, (3, 64)), torch.randint(0, 1000, (3, 64))

    with torch.profiler.profile() as prof:
        loss = wrapped(ids, targets)
    ops = {event.name for event in prof.events()}
    assert "aten::baddbmm" in ops and not any("flash" in op for op in ops), sorted(ops)
    loss.backward()
    exact = torch.nn.functional.cross_entropy(reference(ids).logits.flatten(0, 1), targets.flatten())
    exact.backward()
    torch.testing.assert_close(loss, exact)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")

    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = wrapped(ids, targets)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(exact.detach()), abs=0.05)  # bf16 logits
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference.eval()(ids).logits)
