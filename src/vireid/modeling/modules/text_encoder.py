"""A recurrent sentence encoder (the survey §4.1-4.2: "textual information describing pedestrians",
encoded by an LSTM or GRU).

:class:`TextEncoder`: token ids ``[B, L]`` (0 = padding, :mod:`vireid.data.text.tokenizer`) ->
word embeddings -> a bidirectional LSTM or GRU (``rnn``) over the valid tokens only (packed sequences,
so padding never enters the recurrence) -> pooling -> a linear map to ``out_dim`` (the image
embedding's dimension, so text and images can share one space):

* ``pooling="mean"``: the mean of the hidden states of the valid tokens (masked mean);
* ``pooling="last"``: the last hidden state of each direction (forward: after the last valid token,
  backward: after the first token), concatenated.

Padding does not change the output: a sentence padded to 20 or to 60 tokens encodes the same. An
all-padding row (no description) encodes as the empty sentence (the recurrence over one padding
step; its mean pooling is zero).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES

RNNS = ("gru", "lstm")
TEXT_POOLINGS = ("mean", "last")
PAD_ID = 0


@MODULES.register("text_encoder")
class TextEncoder(nn.Module):
    """Embedding + bidirectional LSTM/GRU + masked pooling + linear (see the module doc).

    Args:
        vocab_size: number of token ids (the tokenizer's vocabulary size).
        out_dim: output dimension (the image embedding's).
        embed_dim: word embedding size. hidden: hidden size per direction. layers: recurrent layers.
        rnn: ``"gru"`` or ``"lstm"``. pooling: ``"mean"`` or ``"last"``. bidirectional: both directions.
        dropout: dropout on the word embeddings (training only).
    """

    def __init__(self, vocab_size: int, out_dim: int, embed_dim: int = 128, hidden: int = 128, layers: int = 1,
                 rnn: str = "gru", pooling: str = "mean", bidirectional: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if rnn not in RNNS:
            raise ConfigError(f"text encoder rnn {rnn!r} is unknown; use one of {', '.join(RNNS)}")
        if pooling not in TEXT_POOLINGS:
            raise ConfigError(f"text encoder pooling {pooling!r} is unknown; use one of {', '.join(TEXT_POOLINGS)}")
        if int(vocab_size) < 2 or int(out_dim) < 1 or int(embed_dim) < 1 or int(hidden) < 1 or int(layers) < 1:
            raise ConfigError(f"text encoder sizes must be positive (vocab_size {vocab_size} >= 2, out_dim {out_dim}, "
                              f"embed_dim {embed_dim}, hidden {hidden}, layers {layers})")
        self.vocab_size = int(vocab_size)
        self.out_dim = int(out_dim)
        self.rnn_kind = rnn
        self.pooling = pooling
        self.directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(self.vocab_size, int(embed_dim), padding_idx=PAD_ID)
        self.dropout = nn.Dropout(float(dropout))
        cls = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = cls(int(embed_dim), int(hidden), num_layers=int(layers), batch_first=True,
                       bidirectional=bool(bidirectional))
        self.proj = nn.Linear(int(hidden) * self.directions, self.out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` int64 ``[B, L]`` -> ``[B, out_dim]``."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [B, L], got {tuple(tokens.shape)}")
        tokens = tokens.long()
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}; tokenize with the model's vocabulary")
        batch, length = tokens.shape
        mask = tokens != PAD_ID
        lengths = mask.sum(dim=1)
        # packed sequences: the recurrence reads the valid tokens only (a leading-valid layout is assumed,
        # as the tokenizer pads at the end); an empty row runs over one padding step
        x = self.dropout(self.embedding(tokens))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.pooling == "mean":
            hidden, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
            valid = mask.unsqueeze(2).to(hidden.dtype)
            pooled = (hidden * valid).sum(dim=1) / lengths.clamp(min=1).unsqueeze(1).to(hidden.dtype)
        else:
            h_n = state[0] if isinstance(state, tuple) else state  # [layers * directions, B, H]
            last = h_n.view(-1, self.directions, batch, h_n.shape[-1])[-1]  # the top layer's directions
            pooled = last.transpose(0, 1).reshape(batch, -1)
        return self.proj(pooled)

    def empty_tokens(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Token rows of the empty sentence (all padding)."""
        return torch.zeros(batch, 1, dtype=torch.long, device=device)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, out_dim={self.out_dim}, rnn={self.rnn_kind!r}, "
                f"pooling={self.pooling!r}, directions={self.directions}")


@MODULES.register("clip_text_encoder")
class ClipSentenceEncoder(nn.Module):
    """CLIP's text tower (Radford et al., ICML 2021; open_clip) over CLIP BPE token ids, then a linear map to
    ``out_dim``: token embedding, causal transformer, the feature at the end-of-text token, CLIP's text
    projection (:class:`~vireid.modeling.backbones.clip.ClipTextEncoder`, as CLIP-ReID's text encoder).

    Args:
        out_dim: output dimension (the image embedding's).
        clip_model: an open_clip model name (``ViT-B-16``, ``RN50``, ...; ``tiny-vit`` / ``tiny-rn``: vireid's
            tiny random ones, 16-token context).
        pretrained: weights as for the CLIP backbone (``null``, ``openclip:<model>/<tag>``, a local file;
            :mod:`vireid.modeling.backbones.clip`). quick_gelu: as there.

    Token rows must come from CLIP's tokenizer at the model's context length
    (``data.extras.tokens: {tokenizer: clip:<model>, max_length: <context length>}``); other rows are one
    sentence saying so.
    """

    def __init__(self, out_dim: int, clip_model: str = "tiny-vit", pretrained: object = None,
                 quick_gelu: bool | None = None) -> None:
        super().__init__()
        from vireid.modeling.backbones.clip import ClipTextEncoder, build_clip

        clip = build_clip(clip_model, pretrained, (224, 224), quick_gelu)  # 224: divisible by every patch size
        self.clip_model = clip_model
        self.encoder = ClipTextEncoder(clip)  # the visual tower is not kept
        self.vocab_size = int(self.encoder.token_embedding.weight.shape[0])
        self.start_id, self.end_id = self.vocab_size - 2, self.vocab_size - 1  # CLIP's <start>, <end> tokens
        projection = self.encoder.text_projection
        width = projection.out_features if isinstance(projection, nn.Linear) else int(projection.shape[1])
        self.out_dim = int(out_dim)
        self.proj = nn.Linear(width, self.out_dim)

    @property
    def context_length(self) -> int:
        return self.encoder.context_length

    def empty_tokens(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Token rows of the empty sentence: ``<start> <end>`` then padding."""
        rows = torch.zeros(batch, self.context_length, dtype=torch.long, device=device)
        rows[:, 0], rows[:, 1] = self.start_id, self.end_id
        return rows

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` int64 ``[B, context_length]`` -> ``[B, out_dim]``."""
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"the CLIP text encoder reads rows of {self.context_length} tokens (its context length), "
                             f"got shape {tuple(tokens.shape)}; set data.extras.tokens.max_length: {self.context_length}")
        tokens = tokens.long()
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size
                               or not bool((tokens[:, 0] == self.start_id).all())):
            raise ValueError(f"these token ids are not CLIP BPE tokens of {self.clip_model}; set "
                             f"data.extras.tokens.tokenizer: clip:{self.clip_model}")
        embeddings = self.encoder.token_embedding(tokens)
        return self.proj(self.encoder(embeddings, tokens.argmax(dim=-1)))  # <end> has the largest id

    def extra_repr(self) -> str:
        return f"clip_model={self.clip_model!r}, context_length={self.context_length}, out_dim={self.out_dim}"


__all__ = ["RNNS", "TEXT_POOLINGS", "ClipSentenceEncoder", "TextEncoder"]
