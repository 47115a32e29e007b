"""Dynamic feature weakening (DFW) of DFW+SLN ("Dynamic Feature Weakening for Cross-Modality
Person Re-Identification", Computers and Electrical Engineering, §3.2, eqs. 1-3).

A shared intermediate feature map ``F_inter`` ``[B, C, H, W]`` is squeezed over its channels into
one response map per image (eq. 1)::

    f(i, j) = GAP_c(F_inter)(i, j) + GMP_c(F_inter)(i, j)          # mean + max over channels

The high-response region is where ``f`` reaches a threshold; a weakening matrix ``M_Dx``
(eq. 2) holds a factor < 1 there and 1 elsewhere:

=========  =============================  ==========================================
variant    threshold                      factor on the high-response region
=========  =============================  ==========================================
``d1``     the mean of f over H x W       fixed ``alpha``
``d2``     fixed ``beta``                 ``e`` = share of the map that is high-response
``d3``     the mean of f over H x W       ``e``
=========  =============================  ==========================================

and the weakened map is ``F_out = sigmoid(f ⊗ M_Dx)`` (eq. 3, ⊗ element-wise).

Choices where the paper's text leaves room (kept explicit here):

* **GAP/GMP run over channels**, giving a spatial map ``f [B, 1, H, W]``: eq. 2 indexes f by a
  position (i, j) and ``e`` is "the proportion of the area of the feature map", so f is spatial
  (CBAM-style spatial squeeze), not a channel vector.
* **How F_out is "fed into layer4"**: ``F_out`` is a one-channel map in (0, 1) while layer4
  expects C channels, so DFW returns ``F_inter * F_out`` — the map gates the shared feature
  (a spatial-attention reading of eq. 3). A high-response position is gated by
  ``sigmoid(factor * f)`` instead of ``sigmoid(f)``, so its share of the signal drops relative to
  the low-response positions, which keep their gate.
* **β is compared with f rescaled to [0, 1] per image** (``(f - min) / (max - min)``): the
  paper gives α, β ∈ [0, 1] while the raw f of a ReLU network is unbounded. The mean
  threshold of ``d1``/``d3`` selects the same region on either scale.
* **No gradient flows through M_Dx** (it is made of comparisons and a count); gradients reach
  ``F_inter`` through both ``f`` and the product. DFW has no parameters (eqs. 1-3 define none),
  is deterministic and runs the same in training and evaluation, so the features a model is
  tested with are the ones it learnt from.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES

DFW_MODES = ("d1", "d2", "d3")


def dfw_response(x: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``f = GAP + GMP`` over the channels of ``x [B,C,H,W]`` -> ``[B,1,H,W]``."""
    return x.mean(dim=1, keepdim=True) + x.amax(dim=1, keepdim=True)


def weakening_matrix(
    f: torch.Tensor, mode: str = "d1", alpha: float = 0.5, beta: float = 0.5, eps: float = 1e-12
) -> torch.Tensor:
    """Eq. 2: the weakening matrix ``M_Dx`` ``[B,1,H,W]`` of a response map ``f [B,1,H,W]``.

    High-response positions (``f >= mean`` for ``d1``/``d3``, ``f_rescaled >= beta`` for ``d2``)
    get ``alpha`` (``d1``) or ``e`` (``d2``/``d3``, the share of the map that is high-response, per
    image); the others get 1. The result carries no gradient.
    """
    if mode not in DFW_MODES:
        raise ConfigError(f"DFW mode must be one of {', '.join(DFW_MODES)}, got {mode!r}")
    with torch.no_grad():
        f = f.detach().float()
        if mode == "d2":
            low = f.amin(dim=(2, 3), keepdim=True)
            high = f.amax(dim=(2, 3), keepdim=True)
            scaled = (f - low) / (high - low).clamp(min=eps)
            is_high = scaled >= beta
        else:
            is_high = f >= f.mean(dim=(2, 3), keepdim=True)
        if mode == "d1":
            factor = torch.full_like(f[:, :, :1, :1], float(alpha))
        else:
            factor = is_high.float().mean(dim=(2, 3), keepdim=True)  # e, per image
        return torch.where(is_high, factor, torch.ones_like(f))


@MODULES.register("dfw")
class DynamicFeatureWeakening(nn.Module):
    """DFW block (DFW+SLN, eqs. 1-3): ``x -> x * sigmoid(f ⊗ M_Dx)`` with ``f`` of eq. 1.

    Args:
        mode: ``"d1"`` (mean threshold, fixed factor α; the paper's best setting, Fig. 3),
            ``"d2"`` (fixed threshold β, factor e) or ``"d3"`` (mean threshold, factor e).
        alpha: weakening factor of ``d1`` (paper: 0.5 on SYSU-MM01, 0.2 on RegDB).
        beta: threshold of ``d2`` on the per-image [0, 1]-rescaled response.
    """

    def __init__(self, mode: str = "d1", alpha: float = 0.5, beta: float = 0.5) -> None:
        super().__init__()
        if mode not in DFW_MODES:
            raise ConfigError(f"DFW mode must be one of {', '.join(DFW_MODES)}, got {mode!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"DFW alpha must lie in [0, 1], got {alpha!r}")
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"DFW beta must lie in [0, 1], got {beta!r}")
        self.mode = mode
        self.alpha = float(alpha)
        self.beta = float(beta)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 3: ``F_out = sigmoid(f ⊗ M_Dx)`` ``[B,1,H,W]`` (differentiable through f)."""
        f = dfw_response(x)
        matrix = weakening_matrix(f, self.mode, self.alpha, self.beta).to(f.dtype)
        return torch.sigmoid(f * matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate ``x [B,C,H,W]`` with its weakened response map (same shape out)."""
        return x * self.attention(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, alpha={self.alpha}, beta={self.beta}"


__all__ = ["DFW_MODES", "DynamicFeatureWeakening", "dfw_response", "weakening_matrix"]
