"""Dynamic feature weakening (DFW) of the DFW+SLN paper ("Dynamic Feature Weakening for Cross-Modality
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

**Reading of eq. 3 (``reading``).** The text's intent is unambiguous -- "achieve significant region
weakening by applying a weakening factor to the high response", "weaken the model's over-reliance on
high response regions" (§3.2, after Ning et al.'s feature weakening block, ref. [12] there, which
scales the high-response region of the feature map down) -- but eq. 3 as printed yields a one-channel
map that layer4 cannot take. Two readings are implemented:

* ``"scale"`` (default): ``F_out = F_inter ⊙ M_Dx`` -- every channel of a high-response position is
  multiplied by the factor (α for ``d1``, e for ``d2``/``d3``), the rest passes unchanged. The
  dominant region loses exactly that factor *relative to the rest*, which is what "weakening" asks
  for; the sigmoid of eq. 3 is not applied (it would re-gate by the response, see below).
* ``"sigmoid_gate"``: ``F_out = F_inter ⊙ sigmoid(f ⊗ M_Dx)`` (the reading before). The sigmoid is
  monotone in the response, and on a ReLU network's ``f`` (mean + max of non-negative channels,
  mostly well above 0) it saturates towards 1, so the gate is almost uniform: measured after stage 2,
  gates of 0.83 on high- vs 0.81 on low-response cells on the synthetic demo model (the high region
  gated *more*), 0.84 vs 0.90 on a 4-epoch ``dfw_sln_synth`` model -- a relative weakening of 0.93 at
  most where M_D1 asks for α = 0.5 (``docs/dfw_sln.md``). Kept as an ablation row.

Choices where the paper's text leaves room (kept explicit here):

* **GAP/GMP run over channels**, giving a spatial map ``f [B, 1, H, W]``: eq. 2 indexes f by a
  position (i, j) and ``e`` is "the proportion of the area of the feature map", so f is spatial
  (CBAM-style spatial squeeze), not a channel vector.
* **How F_out is "fed into layer4"**: layer4 expects C channels, so DFW returns the shared
  feature ``F_inter`` multiplied position-wise by a one-channel map (``M_Dx`` itself, or the sigmoid
  gate); see the reading above.
* **β is compared with f rescaled to [0, 1] per image** (``(f - min) / (max - min)``): the
  paper gives α, β ∈ [0, 1] while the raw f of a ReLU network is unbounded. The mean
  threshold of ``d1``/``d3`` selects the same region on either scale.
* **No gradient flows through M_Dx** (it is made of comparisons and a count); gradients reach
  ``F_inter`` through the product (and, for ``sigmoid_gate``, through ``f``). DFW has no parameters (eqs. 1-3 define none),
  is deterministic and runs the same in training and evaluation, so the features a model is
  tested with are the ones it learnt from.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES

DFW_MODES = ("d1", "d2", "d3")
DFW_READINGS = ("scale", "sigmoid_gate")


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
    """DFW block (DFW+SLN, eqs. 1-3): ``x -> x ⊙ M_Dx`` (``reading="scale"``) or
    ``x -> x ⊙ sigmoid(f ⊗ M_Dx)`` (``"sigmoid_gate"``), with ``f`` of eq. 1 and ``M_Dx`` of eq. 2.

    Args:
        mode: ``"d1"`` (mean threshold, fixed factor α; the paper's best setting, Fig. 3),
            ``"d2"`` (fixed threshold β, factor e) or ``"d3"`` (mean threshold, factor e).
        alpha: weakening factor of ``d1`` (paper: 0.5 on SYSU-MM01, 0.2 on RegDB).
        beta: threshold of ``d2`` on the per-image [0, 1]-rescaled response.
        reading: how eq. 3 acts on the feature (module docstring): ``"scale"`` (default) or
            ``"sigmoid_gate"``.
    """

    def __init__(self, mode: str = "d1", alpha: float = 0.5, beta: float = 0.5, reading: str = "scale") -> None:
        super().__init__()
        if mode not in DFW_MODES:
            raise ConfigError(f"DFW mode must be one of {', '.join(DFW_MODES)}, got {mode!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"DFW alpha must lie in [0, 1], got {alpha!r}")
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"DFW beta must lie in [0, 1], got {beta!r}")
        if reading not in DFW_READINGS:
            raise ConfigError(f"DFW reading must be one of {', '.join(DFW_READINGS)}, got {reading!r}")
        self.reading = reading
        # the reading travels with the weights: a checkpoint written before readings existed (no such key)
        # was trained with sigmoid_gate and loads as sigmoid_gate whatever the config now defaults to
        self.register_buffer("reading_code", torch.tensor(DFW_READINGS.index(reading)))
        self.mode = mode
        self.alpha = float(alpha)
        self.beta = float(beta)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + "reading_code"
        if key not in state_dict:  # written before DFW had readings: trained with the literal sigmoid gate
            state_dict[key] = torch.tensor(DFW_READINGS.index("sigmoid_gate"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        code = int(state_dict[key])
        if not 0 <= code < len(DFW_READINGS):
            error_msgs.append(f"{key} = {code} is not a DFW reading ({', '.join(DFW_READINGS)})")
            return
        self.reading = DFW_READINGS[code]

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The map ``[B,1,H,W]`` that multiplies ``x``: ``M_Dx`` (``scale``, no gradient) or
        ``sigmoid(f ⊗ M_Dx)`` (``sigmoid_gate``, differentiable through f)."""
        f = dfw_response(x)
        matrix = weakening_matrix(f, self.mode, self.alpha, self.beta).to(f.dtype)
        if self.reading == "scale":
            return matrix
        return torch.sigmoid(f * matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weaken ``x [B,C,H,W]`` position-wise (same shape out)."""
        return x * self.attention(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, alpha={self.alpha}, beta={self.beta}, reading={self.reading!r}"


__all__ = ["DFW_MODES", "DFW_READINGS", "DynamicFeatureWeakening", "dfw_response", "weakening_matrix"]
