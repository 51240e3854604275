"""Chat and instruction fine-tuning of a causal LM: conversations read and checked, a chat template on the
tokenizer, the replies learned (prompts masked), and a model that answers in its trained format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CHAT_RUN, FIXTURES, greeting_chats, run_recipe, write_jsonl

from tunelab.data.chat import (
    CHAT_TEMPLATE,
    ensure_chat_template,
    read_conversations,
    resolve_data_format,
    tokenize_conversations,
)
from tunelab.data.files import resolve_source
from tunelab.data.lm import LM_FORMATS
from tunelab.errors import DataError
from tunelab.runs import Run


def source(path: Path):
    return resolve_source(str(path), LM_FORMATS)


@pytest.mark.parametrize(
    ("fixture", "fragments"),
    [
        ("chat_unknown_role.jsonl", ["line 2, message 2", "unknown role 'bot'", "system, user, assistant"]),
        ("chat_empty_conversation.jsonl", ["line 2", "column 'messages'", "got an empty list"]),
        ("chat_no_assistant_turn.jsonl", ["line 3", "no assistant turn"]),
        ("chat_empty_response.jsonl", ["line 2", "column 'output'", "the value is empty"]),
    ],
)
def test_a_bad_conversation_is_one_line_naming_file_and_row(fixture, fragments):
    path = FIXTURES / "bad" / fixture
    with pytest.raises(DataError) as error:
        read_conversations(source(path), resolve_data_format(str(path)))
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_the_format_is_detected_from_the_columns_and_instructions_become_one_turn(tmp_path):
    alpaca = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [{"instruction": "Translate to French.", "input": "cat", "output": "chat"}],
    )
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "2+2?", "response": "4", "system": "Be brief."}]
    )
    chats = write_jsonl(tmp_path / "chats.jsonl", greeting_chats(2))
    text = tmp_path / "plain.txt"
    text.write_text("once upon a time")
    assert [resolve_data_format(str(p)) for p in (alpaca, pairs, chats, text)] == [
        "instruction",
        "instruction",
        "chat",
        "text",
    ]
    assert read_conversations(source(alpaca), "instruction") == [
        [{"role": "user", "content": "Translate to French.\n\ncat"}, {"role": "assistant", "content": "chat"}]
    ]
    assert read_conversations(source(pairs), "instruction")[0][0] == {
        "role": "system",
        "content": "Be brief.",
    }
    with pytest.raises(DataError, match="needs a 'messages' column"):
        resolve_data_format(str(pairs), "chat")
    with pytest.raises(DataError, match="not plain text"):
        resolve_data_format(str(text), "instruction")


@pytest.fixture
def chat_tokenizer(tmp_path):
    from tunelab.lm import train_bpe_tokenizer

    texts = [m["content"] for row in greeting_chats(200) for m in row["messages"]]
    tokenizer = train_bpe_tokenizer(texts, 400)
    assert ensure_chat_template(tokenizer) and not ensure_chat_template(tokenizer)  # added once, then kept
    return tokenizer


def test_only_the_replies_and_their_end_of_turn_are_learned(chat_tokenizer):
    """The targets are each assistant turn's tokens and its end-of-turn token: with TuneLab's template
    (its {% generation %} marks), and with a template that has no marks (found by rendering each turn's
    prompt: the turn as rendered, so the template's newline after it too)."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 3?"},
        {"role": "assistant", "content": "2 plus 3 is 5."},
        {"role": "user", "content": "And 4 plus 4?"},
        {"role": "assistant", "content": "4 plus 4 is 8."},
    ]
    examples, cut = tokenize_conversations([messages], chat_tokenizer, block_size=128)
    assert cut == 0
    labels = examples.labels[0]
    learned = chat_tokenizer.decode([t for t in labels if t != -100])
    assert learned == "2 plus 3 is 5.<|end|>4 plus 4 is 8.<|end|>"
    unmarked = CHAT_TEMPLATE.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")
    chat_tokenizer.chat_template = unmarked
    again, _ = tokenize_conversations([messages], chat_tokenizer, block_size=128)
    assert again.ids == examples.ids
    found = chat_tokenizer.decode([t for t in again.labels[0] if t != -100])
    assert found == "2 plus 3 is 5.<|end|>\n4 plus 4 is 8.<|end|>\n"
    everything, _ = tokenize_conversations([messages], chat_tokenizer, block_size=128, train_on_prompt=True)
    assert everything.labels[0] == everything.ids[0]
    # cut at block_size + 1 tokens: a conversation whose reply is cut off entirely is left out
    short, cut = tokenize_conversations([messages], chat_tokenizer, block_size=8)
    assert (len(short), cut) == (0, 1)


def test_a_chat_fine_tuned_model_learns_the_reply_format_and_stops_at_the_end_of_its_turn(
    tmp_path, chat_data, chat_run
):
    """A from-scratch GPT-2 on conversations: the held-out loss on the replies falls far below the
    untrained model's and, for the same 60 steps, below a run on the same text that learns the prompts
    too (learning only the replies learns them sooner; by 150 steps both reach about 0.6); pipeline()
    given a list of messages returns an assistant message in the trained format, ended by the
    end-of-turn token."""
    import re

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from tunelab.data.chat import END_OF_TURN, chat_collator
    from tunelab.lm import CausalLMForTraining

    train, test = chat_data
    unmasked_run = tmp_path / "everything"
    run_recipe(
        "gpt2_clm.py",
        *("--train_file", str(train), "--test_file", str(test), *CHAT_RUN, "--train_on_prompt", "true"),
        *("--cache_dir", str(tmp_path / "cache"), "--output_dir", str(unmasked_run)),
    )
    results = json.loads((chat_run / "eval_results.json").read_text())
    unmasked = json.loads((unmasked_run / "eval_results.json").read_text())["test/loss"]
    assert results["data_format"] == "chat"
    # the untrained model of the same shape, scored on the same test replies
    tokenizer = AutoTokenizer.from_pretrained(chat_run)
    examples, _ = tokenize_conversations(read_conversations(source(test), "chat"), tokenizer, 64)
    torch.manual_seed(0)
    config = AutoModelForCausalLM.from_pretrained(chat_run).config
    untrained = CausalLMForTraining(AutoModelForCausalLM.from_config(config), masked_targets=True)
    batch = chat_collator(tokenizer.pad_token_id)([examples[i] for i in range(len(examples))])
    with torch.no_grad():
        untrained_loss = untrained(batch["input_ids"], batch["targets"]).item()
    trained = results["test/loss"]
    assert trained < 0.3 * untrained_loss, (trained, untrained_loss)
    assert trained < unmasked - 0.1, (trained, unmasked)
    # a conversation through transformers alone: the template, the reply, the end of the turn
    chat = pipeline("text-generation", model=str(chat_run))
    messages = [{"role": "user", "content": "Hi, I am Grace. Today I saw a lamp, a river. Please greet me."}]
    reply = chat(messages, do_sample=False, max_new_tokens=20)[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and re.fullmatch(r"Hello \w+! You saw a \w+\.", reply["content"]), (
        reply
    )
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    generated = chat.model.generate(**prompt, do_sample=False, max_new_tokens=20)[0]
    assert generated[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert Run(chat_run).status()["state"] == "finished"


def test_masked_targets_give_torchs_ignore_index_loss_and_gradients():
    """Only the learned positions go through the output layer; loss and gradients are those of
    cross_entropy(..., ignore_index=-100) on the full logits, and evaluation's per-token losses are 0
    where nothing is learned."""
    import copy

    import torch

    from tunelab.lm import CausalLMForTraining, build_gpt2, gpt2_config

    torch.manual_seed(0)
    model = build_gpt2(gpt2_config("tiny", "n_layer=2", 500, 32, 0))
    reference = copy.deepcopy(model)
    wrapped = CausalLMForTraining(model, masked_targets=True)
    ids, targets = torch.randint(0, 500, (2, 32)), torch.randint(0, 500, (2, 32))
    targets[:, :20] = -100  # the prompt
    targets[1, 28:] = -100  # padding
    loss = wrapped(ids, targets)
    loss.backward()
    logits = reference(ids).logits.flatten(0, 1)
    exact = torch.nn.functional.cross_entropy(logits, targets.flatten(), ignore_index=-100)
    exact.backward()
    torch.testing.assert_close(loss, exact)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        per_token = wrapped(ids, targets, reduction="none")
    assert per_token.shape == targets.shape and (per_token[targets == -100] == 0).all()
    assert per_token[targets != -100].mean().item() == pytest.approx(exact.item(), rel=1e-5)
