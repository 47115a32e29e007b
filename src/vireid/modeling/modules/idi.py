"""Inter-detail interaction (IDI), PDFENet §3.3, eqs. 6-8.

The pooled detail features ``f_d = [f_top; f_mid; f_low]`` (``[B, 3, C]``) attend to each other:

* eq. 6: ``f̂_d = softmax(Q(f_d) K(f_d)^T / sqrt(C)) V(f_d)`` (three linear layers, attention over
  the three details, softmax over the keys);
* eq. 7: an adaptive weight per detail ``W_d = ReLU(f̂_d W_2 + b_2) W_3 + b_3`` (C -> C/4 -> 1);
* eq. 8: ``f̃_d = W_d ⊙ f̂_d``.

The final representation is ``[f_g; f̃_d]`` (4C): the paper's "f̃_d ∈ R^{C×1}" can only mean the three
enhanced details side by side (3C), since the concatenation with f_g is 4C.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES


@MODULES.register("idi")
class InterDetailInteraction(nn.Module):
    """Self-attention over detail vectors plus an adaptive per-detail weight (eqs. 6-8).

    Args:
        channels: C, the size of each detail vector.
        reduction: hidden size of the weight branch is ``C // reduction`` (paper: 4).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ConfigError(f"IDI needs channels >= 1 and reduction >= 1, got {channels} and {reduction}")
        self.channels = int(channels)
        self.query = nn.Linear(self.channels, self.channels)
        self.key = nn.Linear(self.channels, self.channels)
        self.value = nn.Linear(self.channels, self.channels)
        hidden = max(self.channels // int(reduction), 1)
        self.weight = nn.Sequential(nn.Linear(self.channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def attention(self, details: torch.Tensor) -> torch.Tensor:
        """Eq. 6's attention matrix ``[B, N, N]`` over the ``N`` details (rows sum to 1)."""
        scores = self.query(details) @ self.key(details).transpose(1, 2) / math.sqrt(self.channels)
        return scores.softmax(dim=-1)

    def forward(self, details: torch.Tensor) -> torch.Tensor:
        """Detail vectors ``[B, N, C]`` -> enhanced detail vectors ``[B, N, C]`` (eqs. 6-8)."""
        if details.dim() != 3 or details.shape[-1] != self.channels:
            raise ValueError(f"IDI expects details [B, N, {self.channels}], got {tuple(details.shape)}")
        purified = self.attention(details) @ self.value(details)  # eq. 6
        return self.weight(purified) * purified  # eqs. 7-8

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


__all__ = ["InterDetailInteraction"]
