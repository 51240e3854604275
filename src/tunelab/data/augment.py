"""Augmentation of classification training data: copies of each training example with words changed.

Methods (``augment_method``), each word touched with probability ``augment_prob``:

- ``random_deletion``: the word is deleted (at least one word stays) — EDA, Wei & Zou 2019.
- ``random_swap``: the word trades places with another random word of the text — EDA.
- ``embedding_neighbors``: the word is replaced by one of its nearest neighbours (cosine) in the input
  word-embedding matrix of ``augment_model`` (default: the model being fine-tuned, the embedded MiniLM
  unless told otherwise). Offline and cheap. It is *not* masked-LM substitution: the embedded
  all-MiniLM-L6-v2 ships no trained MLM head (``AutoModelForMaskedLM`` reports ``cls.predictions.*``
  missing and predicts noise), so neighbours in its input embeddings are what this model really offers.
  They are related words (film -> movie, great -> terrific) but sometimes opposites (good -> bad, boring
  -> exciting); negations and function words are never replaced or inserted.
- ``masked_lm``: the chosen words are masked and refilled with one of the top predictions of a masked-LM
  ``augment_model`` that has a trained head, such as a run of ``tunelab train mlm`` (recipes/bert_mlm.py)
  or a Hub BERT checkpoint; a model without one (the embedded MiniLM) is refused with a message.

Only the training split is augmented: validation and test are never passed to this module. Every copy is
seeded from (seed, copy, row), so the result does not depend on batching or the number of processes.
Words are whitespace-separated tokens; a text pair's second text is left unchanged.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

logger = logging.getLogger(__name__)

METHODS = ("none", "random_deletion", "random_swap", "embedding_neighbors", "masked_lm")
NEIGHBOURS = 5  # candidates per word: the closest few are usually related; farther ones drift
# Replacing or inserting one of these can flip the label of a sentiment text.
NEGATION_WORDS = (
    "not no never nor none nothing neither nobody nowhere without cannot n't dont didnt doesnt isnt"
)
# Function words: their embedding neighbours are other function words (the -> of), which breaks the
# sentence without adding variety, so substitution leaves them alone (as EDA does with its stopwords).
FUNCTION_WORDS = (
    "a an the and or but if of to in on at by for with from as is am are was were be been being do does did "
    "didn doesn isn wasn have has had it its this that these those he she they we you i me my our your his "
    "her their them us so than then there here what which who whom"
)
NEGATIONS = frozenset(NEGATION_WORDS.split())
KEEP = NEGATIONS | frozenset(FUNCTION_WORDS.split())


@dataclass
class AugmentationArguments:
    """Augmented copies of the training examples (never of validation or test)."""

    augment_method: str = field(default="none", metadata={"help": f"One of {', '.join(METHODS)}."})
    augment_prob: float = field(
        default=0.1, metadata={"help": "Probability that each word of a copy is deleted/swapped/replaced."}
    )
    augment_copies: int = field(
        default=1, metadata={"help": "Augmented copies added per training example (originals kept)."}
    )
    augment_model: str | None = field(
        default=None,
        metadata={
            "help": "Model whose embeddings (embedding_neighbors) or MLM head (masked_lm) is used; "
            "default: model_name_or_path."
        },
    )

    def __post_init__(self) -> None:
        if self.augment_method not in METHODS:
            raise ConfigError(
                f"augment_method={self.augment_method!r} is not allowed; choose one of: {', '.join(METHODS)}"
            )
        if not 0 < self.augment_prob <= 1:
            raise ConfigError(f"augment_prob must be in (0, 1], got {self.augment_prob}")
        if self.augment_copies < 1:
            raise ConfigError(f"augment_copies must be >= 1, got {self.augment_copies}")

    @property
    def enabled(self) -> bool:
        return self.augment_method != "none"


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    kept = [w for w in words if rng.random() >= p]
    if not kept and words:
        kept = [rng.choice(words)]  # never an empty text
    return kept


def random_swap(words: list[str], p: float, rng: random.Random) -> list[str]:
    words = list(words)
    for i in range(len(words)):
        if len(words) > 1 and rng.random() < p:
            j = rng.randrange(len(words) - 1)
            j += j >= i  # another position, uniformly
            words[i], words[j] = words[j], words[i]
    return words


def example_rng(seed: int, copy: int, row: int) -> random.Random:
    # A string seed is hashed with SHA-512: the same stream in every process and Python run.
    return random.Random(f"{seed}/{copy}/{row}")


def input_embedding_matrix(path: str):
    """The word-embedding matrix of a model folder or Hub id (read straight from model.safetensors when
    there is one: a tenth of a second instead of building the whole model)."""
    file = Path(path) / "model.safetensors"
    if file.is_file():
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            keys = [k for k in f.keys() if k.endswith("word_embeddings.weight")]  # noqa: SIM118
            if len(keys) == 1:
                return f.get_tensor(keys[0]).float()
    from transformers import AutoModel

    return AutoModel.from_pretrained(path).get_input_embeddings().weight.detach().float()


class EmbeddingNeighbours:
    """Nearest whole-word vocabulary entries of a word in a model's input embedding matrix (cosine)."""

    def __init__(self, model_name_or_path: str):
        import torch
        from transformers import AutoTokenizer

        from ..models import resolve_model_path

        path = resolve_model_path(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        weight = input_embedding_matrix(path)
        vocab = self.tokenizer.get_vocab()
        # Candidates: whole alphabetic words (no '##' pieces, no [unused] or special tokens).
        self.candidates = sorted(
            i for t, i in vocab.items() if t.isalpha() and len(t) > 1 and t not in KEEP and i < len(weight)
        )
        self.matrix = torch.nn.functional.normalize(weight[self.candidates], dim=-1)
        self.vocab = vocab
        self.tokens = {i: t for t, i in vocab.items()}
        self.cache: dict[str, list[str]] = {}

    def prepare(self, words: set[str]) -> None:
        """Neighbours of many words at once (one matrix product per chunk instead of one per word)."""
        position = {token_id: n for n, token_id in enumerate(self.candidates)}
        todo = sorted({w.lower() for w in words} - set(self.cache))
        known = [w for w in todo if self.vocab.get(w) in position]
        self.cache.update({w: [] for w in todo})
        for start in range(0, len(known), 1024):
            chunk = known[start : start + 1024]
            query = self.matrix[[position[self.vocab[w]] for w in chunk]]
            top = (query @ self.matrix.T).topk(NEIGHBOURS + 1, dim=-1).indices.tolist()
            for word, ids in zip(chunk, top, strict=True):
                names = [self.tokens[self.candidates[k]] for k in ids]
                self.cache[word] = [n for n in names if n != word][:NEIGHBOURS]

    def replace(self, words: list[str], p: float, rng: random.Random) -> list[str]:
        return [_swap_in(w, self.cache.get(w.lower()), rng) if rng.random() < p else w for w in words]


def _swap_in(word: str, options: list[str] | None, rng: random.Random) -> str:
    """One of ``options`` in the case of ``word`` (the word itself when there is none)."""
    if not options:
        return word
    new = rng.choice(options)
    return new.capitalize() if word[:1].isupper() else new


class MaskedLMFiller:
    """Masks the chosen words and refills each with one of the top predictions of a trained MLM head."""

    def __init__(self, model_name_or_path: str, max_length: int = 128):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from ..models import resolve_model_path

        path = resolve_model_path(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.mask_token is None:
            raise ConfigError(f"augment_model {model_name_or_path}: its tokenizer has no mask token.")
        self.model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
        # The decoder is tied to the input embeddings, so only the rest of the head counts as missing.
        missing = sorted(k for k in info.get("missing_keys", []) if not k.endswith("decoder.weight"))
        if missing:
            raise ConfigError(
                f"augment_model {model_name_or_path} has no trained masked-LM head (missing: "
                f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), so its predictions would be "
                "noise. Use augment_method embedding_neighbors, or adapt the model first with "
                "`tunelab train mlm` and pass that run folder as augment_model."
            )
        self.model.eval()
        self.max_length = max_length
        vocab = self.tokenizer.get_vocab()
        self.tokens = {i: t for t, i in vocab.items()}
        self.words = {i for t, i in vocab.items() if t.isalpha() and t not in KEEP}

    def fill(self, texts: list[list[str]], p: float, rngs: list[random.Random], batch_size: int = 64):
        """Each word list with its chosen words replaced (rngs: one per text, used in order)."""
        out = []
        for start in range(0, len(texts), batch_size):
            out += self._fill_batch(texts[start : start + batch_size], p, rngs[start : start + batch_size])
        return out

    def _fill_batch(self, texts: list[list[str]], p: float, rngs: list[random.Random]) -> list[list[str]]:
        import torch

        chosen = [
            {i for i, w in enumerate(ws) if rng.random() < p and w.lower() not in KEEP}
            for ws, rng in zip(texts, rngs, strict=True)
        ]
        masked = [
            " ".join(self.tokenizer.mask_token if i in picks else w for i, w in enumerate(ws))
            for ws, picks in zip(texts, chosen, strict=True)
        ]
        enc = self.tokenizer(
            masked, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.no_grad():
            logits = self.model(**enc).logits
        out = []
        for b, (words, picks, rng) in enumerate(zip(texts, chosen, rngs, strict=True)):
            words = list(words)
            positions = (enc["input_ids"][b] == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
            # Masks cut off by truncation keep their word.
            for word_index, pos in zip(sorted(picks), positions, strict=False):
                top = logits[b, pos].topk(4 * NEIGHBOURS).indices.tolist()
                original = words[word_index].lower()
                options = [self.tokens[t] for t in top if t in self.words and self.tokens[t] != original]
                words[word_index] = _swap_in(words[word_index], options[:NEIGHBOURS], rng)
            out.append(words)
        return out


def augment_training_set(train, args: AugmentationArguments, model_name_or_path: str, seed: int):
    """``train`` followed by ``augment_copies`` changed copies of each example; returns (dataset, report).

    ``train`` has columns text[, text_pair], label; only the text is changed."""
    from datasets import Dataset, concatenate_datasets

    texts = train["text"][:]
    rows = [(copy, row) for copy in range(args.augment_copies) for row in range(len(texts))]
    rngs = [example_rng(seed, copy, row) for copy, row in rows]
    words = [texts[row].split() for _, row in rows]
    method, p = args.augment_method, args.augment_prob
    source = args.augment_model or model_name_or_path
    if method == "random_deletion":
        new = [random_deletion(ws, p, rng) for ws, rng in zip(words, rngs, strict=True)]
    elif method == "random_swap":
        new = [random_swap(ws, p, rng) for ws, rng in zip(words, rngs, strict=True)]
    elif method == "embedding_neighbors":
        neighbours = EmbeddingNeighbours(source)
        neighbours.prepare({w for ws in words[: len(texts)] for w in ws})
        new = [neighbours.replace(ws, p, rng) for ws, rng in zip(words, rngs, strict=True)]
    elif method == "masked_lm":
        new = MaskedLMFiller(source).fill(words, p, rngs)
    else:
        raise ValueError(f"unknown augmentation method {method!r}")
    columns = {"text": [" ".join(ws) for ws in new]}
    for name in train.column_names:
        if name != "text":
            values = train[name][:]
            columns[name] = [values[row] for _, row in rows]
    added = Dataset.from_dict(columns, features=train.features)
    unchanged = sum(" ".join(old) == " ".join(ws) for old, ws in zip(words, new, strict=True))
    report = {
        "method": method,
        "augment_prob": p,
        "augment_copies": args.augment_copies,
        "model": source if method in ("embedding_neighbors", "masked_lm") else None,
        "original_rows": len(texts),
        "added_rows": len(added),
        "unchanged_copies": unchanged,
        "examples": [  # the first few copies that differ from their original
            {"original": texts[row], "augmented": columns["text"][n]}
            for n, (_, row) in enumerate(rows)
            if " ".join(words[n]) != columns["text"][n]
        ][:5],
    }
    return concatenate_datasets([train, added]), report


def describe_augmentation(report: dict) -> str:
    """One line for train.log and the model card."""
    source = f" from {report['model']}" if report.get("model") else ""
    return (
        f"augmentation: {report['method']}{source} (augment_prob {report['augment_prob']}): "
        f"{report['added_rows']} copies added to {report['original_rows']} training examples "
        f"({report['unchanged_copies']} copies came out unchanged)"
    )
