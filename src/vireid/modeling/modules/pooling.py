"""Global pooling of a feature map ``[B,C,H,W]`` to a vector ``[B,C]``.

Generalized-mean (GeM) pooling (Radenović et al., "Fine-tuning CNN image retrieval with no
human annotation", TPAMI 2019, eq. 1): ``f_c = (mean_{h,w} x_{c,h,w}^p)^(1/p)``. p = 1 is
average pooling, p -> inf approaches max pooling; AGW uses p = 3 (fixed). Inputs are clamped
to ``eps`` first, so GeM expects non-negative maps (ReLU CNN outputs); for Swin (LayerNorm'd,
signed features) use ``avg``.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES


@MODULES.register("gem")
class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with exponent ``p`` (fixed, or learnable when ``learnable=True``)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise ConfigError(f"gem_p must be positive, got {p!r}")
        self.eps = float(eps)
        self.learnable = bool(learnable)
        if self.learnable:
            self.p = nn.Parameter(torch.tensor(float(p)))
        else:
            self.register_buffer("p", torch.tensor(float(p)), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(dtype=x.dtype)
        pooled = x.clamp(min=self.eps).pow(p).mean(dim=(2, 3))
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4g}, eps={self.eps}, learnable={self.learnable}"


@MODULES.register("avg")
class GlobalAvgPooling(nn.Module):
    """Global average pooling ``[B,C,H,W] -> [B,C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@MODULES.register("max")
class GlobalMaxPooling(nn.Module):
    """Global max pooling ``[B,C,H,W] -> [B,C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


POOLINGS = ("gem", "avg", "max")


def build_pooling(kind: str = "gem", p: float = 3.0, learnable: bool = False, eps: float = 1e-6) -> nn.Module:
    """Pooling by config name: ``"gem"`` (with ``p``, ``learnable``), ``"avg"`` or ``"max"``."""
    if kind == "gem":
        return GeneralizedMeanPooling(p=p, eps=eps, learnable=learnable)
    if kind == "avg":
        return GlobalAvgPooling()
    if kind == "max":
        return GlobalMaxPooling()
    raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {kind!r}")


__all__ = ["POOLINGS", "GeneralizedMeanPooling", "GlobalAvgPooling", "GlobalMaxPooling", "build_pooling"]
