"""Global pooling of a feature map ``[B,C,H,W]`` to a vector ``[B,C]``.

Generalized-mean (GeM) pooling (Radenović et al., "Fine-tuning CNN image retrieval with no
human annotation", TPAMI 2019, eq. 1): ``f_c = (mean_{h,w} x_{c,h,w}^p)^(1/p)``. p = 1 is
average pooling, p -> inf approaches max pooling; AGW uses p = 3 (fixed). Two placements of the
small constant:

``gem`` (``form="clamp"``)
    ``(mean_{h,w} max(x, eps)^p)^(1/p)``, eps = 1e-6: inputs are clamped first, as in
    Radenović et al.'s code, so a map with stray negative values still gives a finite result.
``gem_agw`` (``form="agw"``)
    ``(mean_{h,w} x^p + 1e-12)^(1/p)``: exactly the ``gm_pool`` branch of ``embed_net.forward`` in
    AGW's ``model.py`` (mangye16/Cross-Modal-Re-ID-baseline; the same in ``ICCV21_CAJ/model.py``).
    No clamp: meant for ReLU maps (ResNet's layer4 output). Used by the AGW / CAJ recipes and by
    checkpoints imported from that code (:mod:`vireid.workflows.import_agw`), so their features
    match the reference's to float precision even for all-zero channels.

GeM expects non-negative maps (ReLU CNN outputs); for Swin (LayerNorm'd, signed features) use ``avg``.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES


@MODULES.register("gem")
class GeneralizedMeanPooling(nn.Module):
    """GeM pooling with exponent ``p`` (fixed, or learnable when ``learnable=True``).

    ``form="clamp"`` clamps the inputs to ``eps``; ``form="agw"`` adds ``eps`` to the mean instead
    (AGW's ``model.py``; use eps = 1e-12 as it does), see the module docstring.
    """

    FORMS = ("clamp", "agw")

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False, form: str = "clamp") -> None:
        super().__init__()
        if p <= 0:
            raise ConfigError(f"gem_p must be positive, got {p!r}")
        if form not in self.FORMS:
            raise ConfigError(f"GeM form must be one of {', '.join(self.FORMS)}, got {form!r}")
        self.form = form
        self.eps = float(eps)
        self.learnable = bool(learnable)
        if self.learnable:
            self.p = nn.Parameter(torch.tensor(float(p)))
        else:
            self.register_buffer("p", torch.tensor(float(p)), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(dtype=x.dtype)
        if self.form == "agw":
            return (x.pow(p).mean(dim=(2, 3)) + self.eps).pow(1.0 / p)
        pooled = x.clamp(min=self.eps).pow(p).mean(dim=(2, 3))
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4g}, eps={self.eps}, learnable={self.learnable}, form={self.form!r}"


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


POOLINGS = ("gem", "gem_agw", "avg", "max")
#: The constant AGW's ``model.py`` adds to the GeM mean before the 1/p power.
AGW_GEM_EPS = 1e-12


def build_pooling(kind: str = "gem", p: float = 3.0, learnable: bool = False, eps: float = 1e-6) -> nn.Module:
    """Pooling by config name: ``"gem"`` / ``"gem_agw"`` (with ``p``, ``learnable``), ``"avg"`` or ``"max"``."""
    if kind == "gem":
        return GeneralizedMeanPooling(p=p, eps=eps, learnable=learnable)
    if kind == "gem_agw":
        return GeneralizedMeanPooling(p=p, eps=AGW_GEM_EPS, learnable=learnable, form="agw")
    if kind == "avg":
        return GlobalAvgPooling()
    if kind == "max":
        return GlobalMaxPooling()
    raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {kind!r}")


__all__ = ["AGW_GEM_EPS", "POOLINGS", "GeneralizedMeanPooling", "GlobalAvgPooling", "GlobalMaxPooling", "build_pooling"]
