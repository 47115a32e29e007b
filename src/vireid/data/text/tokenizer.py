"""The word-level tokenizer vireid ships (no download): lower-case, punctuation split, a fixed vocabulary.

The survey's text modality (§4.1-4.2: "textual information describing pedestrians", encoded by an
LSTM or GRU) needs sentences as id sequences. :class:`WordTokenizer` turns a sentence into ids:

1. lower-case; every run of letters/digits (with inner hyphens or apostrophes, "t-shirt", "man's") is a
   word, every other non-space character (",", ".", "!", ...) a token of its own;
2. each token becomes its id in the vocabulary, a word not in it :data:`UNK` (id 1);
3. the ids are cut to ``max_length`` and padded with :data:`PAD` (id 0) to exactly ``max_length``.

The vocabulary (``vocab.txt`` beside this module, in the package data) is one token per line, line
``i`` holding id ``i``: ``<pad>``, ``<unk>``, then the words of the synthetic descriptions
(:mod:`vireid.data.synth.descriptions`) and common words of pedestrian descriptions (clothing, colours,
accessories, body, gait; the vocabulary of person-description datasets such as CUHK-PEDES is of this
kind). A user's own vocabulary file of the same format can be given instead (``vocab=PATH``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from vireid.errors import ConfigError

PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
#: Default fixed length of a token sequence (the synthetic sentences hold 15-51 tokens).
DEFAULT_MAX_LENGTH = 64
#: The vocabulary shipped in the package.
SHIPPED_VOCAB = Path(__file__).with_name("vocab.txt")

_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text`` (rule 1 of the module doc)."""
    return _TOKEN.findall(str(text).lower())


@lru_cache(maxsize=8)
def _read_vocab(path: str) -> tuple[str, ...]:
    try:
        words = tuple(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as err:
        raise ConfigError(f"vocabulary file {path} cannot be read ({err.strerror or err}); give a text file with one "
                          "token per line") from None
    if len(words) < 2 or words[PAD] != PAD_TOKEN or words[UNK] != UNK_TOKEN:
        raise ConfigError(f"vocabulary file {path} must start with the lines {PAD_TOKEN} and {UNK_TOKEN}; fix its first "
                          "two lines")
    if len(set(words)) != len(words):
        raise ConfigError(f"vocabulary file {path} lists a token twice; keep one line per token")
    return words


class WordTokenizer:
    """Sentences -> fixed-length int64 id rows (see the module doc).

    Args:
        max_length: tokens per row; longer sentences are cut, shorter ones padded with :data:`PAD`.
        vocab: a vocabulary file (default: the shipped :data:`SHIPPED_VOCAB`).
    """

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH, vocab: str | Path | None = None) -> None:
        if int(max_length) < 1:
            raise ConfigError(f"the tokenizer's max_length must be at least 1, got {max_length}")
        self.max_length = int(max_length)
        self.vocab_path = Path(vocab) if vocab else SHIPPED_VOCAB
        self.words = _read_vocab(str(self.vocab_path))
        self.index = {word: i for i, word in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def ids(self, text: str) -> list[int]:
        """The ids of ``text``'s tokens, neither cut nor padded."""
        return [self.index.get(token, UNK) for token in split_words(text)]

    def encode(self, text: str) -> torch.Tensor:
        """int64 ``[max_length]``: the ids of ``text``, cut and padded."""
        ids = self.ids(text)[: self.max_length]
        return torch.tensor(ids + [PAD] * (self.max_length - len(ids)), dtype=torch.int64)

    def encode_batch(self, texts: Sequence[str]) -> torch.Tensor:
        """int64 ``[N, max_length]`` for ``N`` sentences."""
        if not texts:
            return torch.zeros(0, self.max_length, dtype=torch.int64)
        return torch.stack([self.encode(t) for t in texts])

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The tokens of ``ids`` joined by spaces, padding left out (for inspection)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join(self.words[i] if 0 <= i < len(self.words) else UNK_TOKEN for i in values if i != PAD)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the vocabulary does not hold (they become :data:`UNK`)."""
        return [token for token in split_words(text) if token not in self.index]


class ClipTokenizer:
    """CLIP's byte-pair tokenizer (the BPE vocabulary bundled in the open_clip wheel: no download) with the
    interface of :class:`WordTokenizer`, for the CLIP text encoder (``model.params.text_encoder: clip``).
    Rows are ``<start> tokens <end>`` padded with 0 to ``max_length`` (CLIP's context length); a longer
    sentence is cut, keeping the end token. Every word has sub-word tokens, so none is unknown.
    """

    def __init__(self, clip_model: str, max_length: int) -> None:
        from vireid.modeling.backbones.clip import clip_tokenizer

        if int(max_length) < 3:
            raise ConfigError(f"the CLIP tokenizer's max_length must be at least 3 (start, a word, end), got {max_length}")
        self.clip_model = clip_model
        self.max_length = int(max_length)
        self.tokenizer = clip_tokenizer(clip_model, self.max_length)
        self.vocab_size = len(self.tokenizer.encoder)

    def encode_batch(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.max_length, dtype=torch.int64)
        return self.tokenizer(list(texts), context_length=self.max_length).to(torch.int64)

    def encode(self, text: str) -> torch.Tensor:
        return self.encode_batch([text])[0]

    def unknown_words(self, text: str) -> list[str]:
        return []


def make_tokenizer(name: str = "word", max_length: int = DEFAULT_MAX_LENGTH,
                   vocab: str | Path | None = None) -> WordTokenizer | ClipTokenizer:
    """``"word"``: the shipped :class:`WordTokenizer` (``vocab``: another vocabulary file); ``"clip:<model>"``:
    :class:`ClipTokenizer` of that open_clip model (e.g. ``clip:ViT-B-16``, ``clip:tiny-vit``)."""
    if name in (None, "", "word"):
        return WordTokenizer(max_length, vocab)
    if isinstance(name, str) and name.startswith("clip:") and len(name) > 5:
        return ClipTokenizer(name[5:], max_length)
    raise ConfigError(f"tokenizer {name!r} is unknown; use word (the shipped vocabulary) or clip:<open_clip model>, "
                      "e.g. clip:ViT-B-16")


__all__ = ["DEFAULT_MAX_LENGTH", "PAD", "PAD_TOKEN", "SHIPPED_VOCAB", "UNK", "UNK_TOKEN", "ClipTokenizer",
           "WordTokenizer", "make_tokenizer", "split_words"]
