"""The ``tokens`` side input: each image's description as token ids ``[N, L]`` (int64), for text methods.

``data.extras.tokens`` takes ``dataset`` (short form) or a dict of :class:`TokensExtra` parameters::

    data:
      extras:
        tokens: {descriptions: dataset, max_length: 64}   # or descriptions: path/to/descriptions.json

The descriptions come from :func:`vireid.data.text.descriptions.record_descriptions` and are tokenized by
the shipped :class:`~vireid.data.text.tokenizer.WordTokenizer` (``tokenizer: word``, the default) or, for
the CLIP text encoder, by CLIP's BPE tokenizer (``tokenizer: clip:<open_clip model>``, ``max_length``
then being the context length, 77 for the published models). Token ids do not move with the image:
the kind is geometry-free (mirroring a person does not change what the sentence says, and
"left"/"right" in a description refers to the person's side).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vireid.data.extras import EXTRAS, ExtraKind
from vireid.data.text.descriptions import DATASET, record_descriptions
from vireid.data.text.tokenizer import DEFAULT_MAX_LENGTH, make_tokenizer
from vireid.errors import ConfigError


@EXTRAS.register("tokens")
class TokensExtra(ExtraKind):
    """Each image's text description as ``max_length`` token ids ``[N, L]`` (int64, 0 = padding), from
    ``descriptions`` (``dataset``: the records' own or ``<root>/Text/descriptions.json``; else a file path)."""

    name = "tokens"

    def __init__(self, source: Any = DATASET, descriptions: Any = None, max_length: int = DEFAULT_MAX_LENGTH,
                 vocab: str | None = None, tokenizer: str = "word") -> None:
        descriptions = descriptions if descriptions is not None else source
        if descriptions in (None, True):
            descriptions = DATASET
        if not isinstance(descriptions, str):
            raise ConfigError(f"config key 'data.extras.tokens.descriptions' is {descriptions!r}; write dataset or the "
                              "path of a description file")
        super().__init__(descriptions)
        self.tokenizer = make_tokenizer(tokenizer, max_length, vocab)

    def load(self, records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
        texts = record_descriptions(records, self.source, getattr(data_cfg, "root", None))
        return self.tokenizer.encode_batch(texts)

    @classmethod
    def check(cls, name: str, value: Any, length: int) -> torch.Tensor:
        tensor = super().check(name, value, length)
        if tensor.dim() != 2 or tensor.dtype != torch.int64:
            raise ConfigError(f"side input {name!r} must be int64 token ids [N, L], got {tensor.dtype} of shape "
                              f"{tuple(tensor.shape)}; use vireid.data.text.WordTokenizer")
        return tensor

    @classmethod
    def source_for_other_data(cls, source: Any) -> Any:
        """Another dataset brings its own descriptions (``dataset``); a named file belongs to the run's data."""
        if isinstance(source, dict):
            return {**source, "descriptions": DATASET}
        return DATASET


def tokens_settings(data_cfg: Any) -> dict | None:
    """``{max_length, vocab}`` of a config's ``data.extras.tokens`` (None when it has none): how a query
    sentence must be tokenized for a model trained with it."""
    source = (getattr(data_cfg, "extras", None) or {}).get("tokens")
    if source in (None, False, ""):
        return None
    params = source if isinstance(source, dict) else {}
    return {"max_length": int(params.get("max_length", DEFAULT_MAX_LENGTH)), "vocab": params.get("vocab"),
            "tokenizer": params.get("tokenizer", "word")}


__all__ = ["TokensExtra", "tokens_settings"]
