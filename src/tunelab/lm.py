"""GPT-2 causal language models: presets, building or continuing a model, a byte-level BPE tokenizer,
the attention used for CPU training, the chunked cross-entropy loss, generation defaults and the FLOPs
estimate for MFU.

Kept apart from ``models.py`` (encoders and classifiers) because pretraining needs its own pieces:
a tokenizer trained on the data, a model built from a config, and a loss that never holds the full
``batch x sequence x vocab`` logits.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .models import load_pretrained, resolve_model_path

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
# Rows of the embedding matrix are padded to a multiple of this (nanoGPT's 50257 -> 50304): matmuls
# with round shapes are faster on GPU tensor cores and CPU AMX/AVX-512 kernels alike.
VOCAB_MULTIPLE = 64
# From-scratch presets. Dropout is 0: a pretraining run sees each token about once, so dropout only
# slows learning (nanoGPT, Chinchilla-style runs do the same).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 4, "n_embd": 128, "n_head": 4},  # ~1.8M parameters with an 8k vocab
    "mini": {"n_layer": 6, "n_embd": 384, "n_head": 6},  # ~14M
    "small": {"n_layer": 12, "n_embd": 768, "n_head": 12},  # GPT-2 124M
    "medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},  # GPT-2 350M
}
# Sampling defaults saved in generation_config.json (what pipeline("text-generation") and the app use).
GENERATION_DEFAULTS = {
    "do_sample": True,
    "temperature": 0.8,
    "top_p": 0.95,
    "top_k": 50,
    "max_new_tokens": 100,
    "repetition_penalty": 1.1,
}
IGNORE_INDEX = -100  # a target that is not learned (chat: the prompt and user turns, the padding)
LOSS_CHUNK_TOKENS = 512  # rows of logits at once in the chunked loss (fastest on CPU at 8k and 50k vocab)


# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------
def train_bpe_tokenizer(texts, vocab_size: int):
    """A GPT-2 style byte-level BPE trained on ``texts`` (an iterable of strings), as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=1024,
    )


def load_lm_tokenizer(name_or_path: str):
    """A tokenizer from a folder/run/Hub id; GPT-2 tokenizers have no pad token, so eos doubles as pad."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, resolve_model_path(name_or_path, tokenizer_only=True))
    if tokenizer.eos_token is None:
        raise ConfigError(
            f"{name_or_path}: the tokenizer has no end-of-text (eos) token to separate documents."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the token ids (vocabulary, merges, normalizer, special tokens)."""
    import hashlib

    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------
def padded_vocab_size(n: int) -> int:
    return math.ceil(n / VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def parse_config_overrides(text: str | None) -> dict[str, Any]:
    """'n_layer=4,n_embd=256' -> {'n_layer': 4, 'n_embd': 256}; keys must be GPT2Config attributes."""
    from transformers import GPT2Config

    if not text:
        return {}
    known = GPT2Config()
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"config_overrides: {part!r} is not key=value (e.g. n_layer=4,n_embd=256).")
        if not hasattr(known, key):
            raise ConfigError(f"config_overrides: GPT2Config has no attribute {key!r}.")
        default = getattr(known, key)
        try:
            if isinstance(default, bool):
                out[key] = value.strip().lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                out[key] = int(value)
            elif isinstance(default, float):
                out[key] = float(value)
            else:
                out[key] = value.strip()
        except ValueError:
            raise ConfigError(
                f"config_overrides: {key}={value!r} is not a {type(default).__name__}."
            ) from None
    return out


def gpt2_config(
    model_size: str,
    overrides: str | None,
    vocab_size: int,
    block_size: int,
    eos_id: int,
    dropout: dict[str, float] | None = None,
):
    """The from-scratch GPT2Config: a preset, then overrides; vocab padded, dropout 0 unless given."""
    from transformers import GPT2Config

    values: dict[str, Any] = dict(MODEL_PRESETS[model_size])
    # Room for generating past one block (pipeline's 100 new tokens after a prompt), at tiny cost.
    values["n_positions"] = max(block_size, 1024 if model_size in ("small", "medium") else 256)
    values.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    # The exact (erf) GELU, as nanoGPT's nn.GELU() and BERT: GPT-2's tanh approximation ("gelu_new",
    # seven element-wise ops; even torch's one-kernel version) costs 3x more forward and backward on a
    # CPU, ~10% of a training step at 4x256. Both are the same curve to within 1e-3.
    values["activation_function"] = "gelu"
    values.update(dropout or {})
    values.update(parse_config_overrides(overrides))
    if values["n_embd"] % values["n_head"]:
        raise ConfigError(f"n_embd={values['n_embd']} must be a multiple of n_head={values['n_head']}.")
    if values["n_positions"] < block_size:
        raise ConfigError(f"n_positions={values['n_positions']} is smaller than block_size={block_size}.")
    # The saved config carries the padded size: the model loads as a plain GPT-2 whose extra rows are
    # never produced by the tokenizer (generation_config suppresses them when sampling).
    return GPT2Config(
        vocab_size=padded_vocab_size(vocab_size),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
        **values,
    )


def build_gpt2(config):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


# ---------------------------------------------------------------------------------------------------
# Attention for training on CPU
# ---------------------------------------------------------------------------------------------------
CPU_ATTENTION = "tunelab_sdpa"  # the name it is registered under with transformers
# Longest block for which one batched matmul beats the CPU flash kernel (fwd+bwd, bf16, head dim 64,
# 4,096 tokens: 3x faster at 128, 1.5x at 256, even at 512, 1.7x slower at 1,024).
CPU_MATMUL_ATTENTION_MAX_LEN = 256


def cpu_training_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' SDPA attention, except for the blocks of CPU training: causal, no padding mask, no
    dropout, as many keys as queries, at most ``CPU_MATMUL_ATTENTION_MAX_LEN`` long. For those, the
    scores are one batched matmul with the causal bias added (``baddbmm``), then a softmax and a
    matmul: forward and backward together 1.5-3x faster than PyTorch's CPU flash-attention kernel at
    these lengths (its backward is most of an attention layer's cost). Same function as SDPA (the scores
    are rounded to the compute dtype before the softmax, as in eager attention under autocast).
    Everything else (GPU, generation with a cache, padding masks, long blocks) goes to SDPA. Only
    GPT-2 models are switched to it (``use_cpu_training_attention``)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, t, d = query.shape
    short_causal_block = (
        query.device.type == "cpu"
        and attention_mask is None
        and not dropout
        and key.shape == query.shape
        and t <= CPU_MATMUL_ATTENTION_MAX_LEN
        and module.is_causal  # GPT-2's self-attention (its cross-attention is not causal)
    )
    if not short_causal_block:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = d**-0.5 if scaling is None else scaling
    causal = torch.full((t, t), float("-inf"), dtype=query.dtype, device=query.device).triu_(1)
    q, k = query.reshape(b * h, t, d), key.reshape(b * h, t, d)
    scores = torch.baddbmm(causal.expand(b * h, t, t), q, k.transpose(1, 2), alpha=scale)
    out = torch.bmm(torch.softmax(scores, dim=-1), value.reshape(b * h, t, d))
    return out.view(b, h, t, d).transpose(1, 2), None


def use_cpu_training_attention(model) -> None:
    """Switch a GPT-2's SDPA attention to ``cpu_training_attention`` (same masks as SDPA). The choice is
    not saved with the model: a saved model loads with SDPA again."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if model.config.model_type != "gpt2" or model.config._attn_implementation != "sdpa":
        return
    AttentionInterface.register(CPU_ATTENTION, cpu_training_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
    model.set_attn_implementation(CPU_ATTENTION)


def load_causal_lm(name_or_path: str, tokenizer, block_size: int, dropout: dict[str, float] | None = None):
    """Continue from a folder, a finished run or a Hub id; embeddings grow if the tokenizer is larger.
    ``dropout`` ({"resid_pdrop": 0.1, ...}) overrides the saved config's rates."""
    from transformers import AutoModelForCausalLM

    model = load_pretrained(
        AutoModelForCausalLM, resolve_model_path(name_or_path), attn_implementation="sdpa", **(dropout or {})
    )
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=VOCAB_MULTIPLE)
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if limit and block_size > limit:
        raise ConfigError(f"block_size={block_size} exceeds the model's {limit} positions; lower block_size.")
    return model


def flops_per_token(model, block_size: int) -> float:
    """Training FLOPs per token: 6N + 12 L H Q T (PaLM appendix B, as in nanoGPT's estimate_mfu)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - c.n_positions * c.n_embd  # position table: no matmul
    return 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * block_size


def generation_config(model, tokenizer):
    """Sampling defaults, eos/pad ids (a chat template's end-of-turn token ends a reply too), and the
    padded vocabulary rows suppressed."""
    from transformers import GenerationConfig

    from .data.chat import stop_token_ids

    padded = list(range(len(tokenizer), model.config.vocab_size))
    stops = stop_token_ids(tokenizer)
    return GenerationConfig(
        **GENERATION_DEFAULTS,
        eos_token_id=stops if len(stops) > 1 else stops[0],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        suppress_tokens=padded or None,
    )


# ---------------------------------------------------------------------------------------------------
# Loss: cross-entropy in chunks, from the hidden states
# ---------------------------------------------------------------------------------------------------
class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean CE(h @ W.T, targets), computed ``chunk`` rows at a time, gradients computed in the forward.

    Autograd would keep every chunk's logits (and autocast's fp32 copy) alive for the backward, which
    is the full logits tensor again. Computing d(loss)/d(logits) = softmax - target right away, chunk by
    chunk, keeps one chunk alive (the idea of Liger-Kernel's fused linear cross-entropy); the FLOPs are
    the ones autograd would spend. Per chunk the logits are read by one fused softmax (fp32 accumulation,
    output in the compute dtype), which then becomes the gradient in place: a few passes over a buffer
    in bf16 instead of an fp32 copy, a log-sum-exp, and the conversions back (2x faster on a CPU).
    The loss is read off the softmax at the targets (-log p); a token whose p underflows fp32 (a loss
    above 87) counts as 87. Evaluation does not use this path: it reports the exact cross-entropy.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int, dtype: torch.dtype, smoothing: float = 0.0):
        rows, vocab = h.shape[0], weight.shape[0]
        w = weight.to(dtype)
        # fp16 cannot hold small probabilities: its softmax is taken in fp32
        softmax_dtype = torch.float32 if dtype == torch.float16 else None
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        tiny = torch.finfo(torch.float32).tiny
        for start in range(0, rows, chunk):
            x = h[start : start + chunk].to(dtype)
            y = targets[start : start + chunk]
            at_y = (torch.arange(len(y), device=y.device), y)  # (row, target) of each row
            logits = x @ w.T
            grad = torch.softmax(logits, dim=-1, dtype=softmax_dtype)
            p_y = grad[at_y].float()
            loss -= p_y.clamp_min(tiny).log().sum()
            if smoothing:
                # torch's smoothed target (1 - s) onehot + s / vocab adds s * (logit_y - mean logit) per row
                target_logits = logits[at_y].float().sum()
                loss += smoothing * (target_logits - logits.sum(dim=-1, dtype=torch.float32).sum() / vocab)
            # d(loss)/d(logits) = softmax - target, in place; the 1 / rows of the mean comes at the end.
            # (Indexing, not scatter_add_: on CPU that copies a bf16 tensor whole.)
            grad[at_y] = (p_y - (1.0 - smoothing)).to(grad.dtype)
            if smoothing:
                grad.sub_(smoothing / vocab)
            grad = grad.to(dtype)
            grad_h[start : start + chunk] = grad @ w
            grad_w += grad.T @ x
        grad_h.div_(rows)
        ctx.save_for_backward(grad_h, grad_w.div_(rows).to(weight.dtype))
        return loss / rows

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_output, grad_w * grad_output, None, None, None, None


def _compute_dtype(device: torch.device, fallback: torch.dtype) -> torch.dtype:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return fallback


def chunked_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = LOSS_CHUNK_TOKENS,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """CE of ``h @ weight.T`` against ``targets`` without materializing all logits.

    h: (rows, hidden); targets: (rows,). reduction "mean" (differentiable; label_smoothing applies) or
    "none" (per row, no grad, no smoothing: what evaluation reports).
    """
    dtype = _compute_dtype(h.device, h.dtype)
    if reduction == "mean" and torch.is_grad_enabled():
        return _ChunkedLinearCrossEntropy.apply(h, weight, targets, chunk, dtype, label_smoothing)
    w = weight.to(dtype)
    out = []
    for start in range(0, h.shape[0], chunk):
        logits = (h[start : start + chunk].to(dtype) @ w.T).float()
        out.append(nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="none"))
    losses = torch.cat(out)
    return losses if reduction == "none" else losses.mean()


class CausalLMForTraining(nn.Module):
    """A GPT-2 whose forward returns the next-token loss, computed in chunks from the hidden states.

    The loss lives inside ``forward`` so DDP and FSDP see one forward per step (their gradient hooks
    and parameter gathering hang on it) and ``torch.compile`` can trace it. The wrapped model is the
    plain transformers model that gets saved; while wrapped, a GPT-2's attention is
    ``cpu_training_attention`` (SDPA except for short causal blocks on CPU).

    With ``masked_targets`` (chat fine-tuning) targets of -100 are not learned: only the other positions'
    hidden states go through the output layer (the assistant tokens: no logits for the prompt).
    """

    def __init__(self, model, label_smoothing: float = 0.0, masked_targets: bool = False):
        super().__init__()
        self.model = model
        use_cpu_training_attention(model)
        self.label_smoothing, self.masked_targets = label_smoothing, masked_targets

    def forward(
        self, input_ids: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """The mean loss over the learned targets, or with reduction "none" each position's loss (0
        where the target is -100), for evaluation."""
        hidden = self.model.transformer(input_ids=input_ids, use_cache=False).last_hidden_state
        hidden, flat = hidden.flatten(0, 1), targets.flatten()
        learned = flat != IGNORE_INDEX if self.masked_targets else None
        if learned is not None:
            hidden, flat = hidden[learned], flat[learned]
        losses = chunked_cross_entropy(
            hidden, self.model.lm_head.weight, flat, reduction=reduction, label_smoothing=self.label_smoothing
        )
        if reduction != "none":
            return losses
        if learned is None:
            return losses.view(targets.shape)
        every = torch.zeros(targets.numel(), dtype=losses.dtype, device=losses.device)
        every[learned] = losses
        return every.view(targets.shape)


def save_causal_lm(model, tokenizer, output_dir: Path) -> None:
    """save_pretrained (safetensors) of model, tokenizer and sampling defaults."""
    model.generation_config = generation_config(model, tokenizer)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)


def cached_bpe_tokenizer(texts, vocab_size: int, cache_dir: Path, data_key: str):
    """The BPE trained on this data at this vocabulary size, trained once and then read from the cache
    (so the token cache, keyed by the tokenizer, is hit on the next run too); (tokenizer, cache hit)."""
    from transformers import AutoTokenizer

    folder = cache_dir / "tokenizers" / f"{data_key}-bpe{vocab_size}"
    if (folder / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(folder), True
    tokenizer = train_bpe_tokenizer(texts, vocab_size)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    tokenizer.save_pretrained(tmp)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return tokenizer, False


# ---------------------------------------------------------------------------------------------------
# Evaluation and samples
# ---------------------------------------------------------------------------------------------------
def evaluate_causal_lm(accelerator, model, dataloader) -> dict[str, float]:
    """Mean next-token loss over every learned target of the validation batches (all processes; a chat
    run's assistant tokens) and its perplexity."""
    sums, counts = [], []
    with torch.no_grad():
        for batch in dataloader:
            per_token = model(batch["input_ids"], batch["targets"], reduction="none")
            learned = (batch["targets"] != IGNORE_INDEX).sum(dim=1)
            # gather_for_metrics drops the sequences DDP repeats to even out the last batch.
            total, count = accelerator.gather_for_metrics((per_token.double().sum(dim=1), learned))
            sums.append(total)
            counts.append(count)
    loss = (torch.cat(sums).sum() / torch.cat(counts).sum().clamp_min(1)).item()
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0))}


def evaluate_test_blocks(accelerator, model, blocks, batch_size: int, collate_fn=None) -> dict[str, float]:
    """test/loss and test/perplexity of the final model over every full block (or conversation, with a
    chat run's ``collate_fn``) of the test file."""
    from torch.utils.data import DataLoader

    model.eval()
    loader = DataLoader(blocks, batch_size=batch_size, collate_fn=collate_fn)
    scores = evaluate_causal_lm(accelerator, model, accelerator.prepare(loader))
    return {key.replace("eval/", "test/"): value for key, value in scores.items()}


def generate_samples(
    model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int = 0, chat: bool = False
) -> list[dict[str, str]]:
    """Sampled continuations of ``prompts`` (the model's sampling defaults) from a fixed seed: what a
    user gets, yet comparable from one evaluation to the next. Greedy decoding of a small model loops on
    one phrase. The training RNG is set aside and restored, so samples never change the run (resume
    stays exact). With ``chat`` each prompt is a user's message, formatted by the chat template."""
    out = []
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens, config.pad_token_id = max_new_tokens, tokenizer.pad_token_id
    with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        for prompt in prompts:
            text = prompt
            if chat:
                messages = [{"role": "user", "content": prompt}]
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = (
                tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"] if text else None
            )
            if ids is None or ids.shape[1] == 0:
                ids = torch.tensor([[tokenizer.eos_token_id]])
            ids = ids[:, -model.config.n_positions // 2 :].to(device)
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
            out.append(
                {
                    "prompt": prompt,
                    "text": tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True),
                }
            )
    return out
