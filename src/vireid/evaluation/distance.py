"""Pairwise distances between query and gallery features (smaller = more similar), and a
certified low-precision (bf16) screen of the same distances.

The screen (:func:`bf16_screen`) computes the similarity of the L2-normalised features with one
bf16 matrix product and returns, per pair, a rigorous bound on how far it can be from the dot
product the fp32 path (:func:`pairwise_distance`) computes. The protocol runners use it to rank
without the fp32 product when every comparison that matters is decided by the bound (see
:mod:`vireid.evaluation.protocols`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("euclidean", "cosine")
#: Smallest positive normal float32/bfloat16 (same exponent range): AMX/AVX512-BF16 treat smaller inputs as zero.
_MIN_NORMAL = 2.0**-126
#: Unit roundoff of float32.
_U32 = 2.0**-24
#: Relative error of rounding a float32 accumulator to the bf16 output (2^-7 also covers truncation).
_BF16_OUTPUT_REL = 2.0**-7
#: Extra per-item half-width (in half-squared-distance units) that absorbs the float32 roundings of
#: the fp32 path after the dot product (q.q + g.g, the subtraction, sqrt) and of the screen itself.
SCREEN_MARGIN = 2.0**-18


def _as_float_tensor(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"features must be 2-D [num_images, dim], got shape {tuple(t.shape)}")
    return t.float()


def _prepare(qf: Any, gf: Any, metric: str, normalize: bool, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float32 query/gallery features as the distance formulas see them."""
    if metric not in METRICS:
        raise ValueError(f"unknown distance metric {metric!r}; use 'euclidean' or 'cosine'")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    q, g = _as_float_tensor(qf), _as_float_tensor(gf)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dims but gallery features have {g.shape[1]}")
    g = g.to(q.device)
    if normalize or metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    return q, g


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def pairwise_distance(
    qf: Any,
    gf: Any,
    metric: str = "euclidean",
    normalize: bool = True,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Distance matrix ``[Nq, Ng]`` (torch float32, on the features' device).

    ``euclidean``: ``sqrt(clamp(|q|^2 + |g|^2 - 2 q.g, 0))``; ``cosine``: ``1 - cos(q, g)``.
    ``normalize=True`` L2-normalises both sets first (the usual choice for BNNeck features; the
    Euclidean distance is then a monotone function of the cosine one). The product is computed in
    chunks of ``chunk_size`` queries so the temporaries stay bounded.
    """
    q, g = _prepare(qf, gf, metric, normalize, chunk_size)
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32, device=q.device)
    g_sq = _squared_norms(g)
    for start in range(0, q.shape[0], chunk_size):
        block = q[start : start + chunk_size]
        dots = block @ g.T
        if metric == "cosine":
            torch.sub(1.0, dots, out=out[start : start + chunk_size])
        else:
            sq = _squared_norms(block)[:, None] + g_sq[None, :] - 2.0 * dots
            torch.sqrt(sq.clamp_(min=0.0), out=out[start : start + chunk_size])
    return out


# --------------------------------------------------------------------------------------------
# Certified bf16 screen
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16_units() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16; one detection with
    training's ``train.amp=auto``, :func:`vireid._compat.cpu_bf16_flags`)."""
    from vireid._compat import cpu_bf16_flags

    return bool(cpu_bf16_flags())


def bf16_matmul_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether a bf16 product is several times faster than fp32 on ``device``.

    Only CPUs with AMX-BF16 / AVX512-BF16 units qualify (about 4x on a Sapphire Rapids core).
    CUDA does not: its fp32 product is already far below the ranking's cost, and cuBLAS may reduce
    bf16 products in reduced precision, which would void the bound of :func:`bf16_screen`.
    """
    return torch.device(device).type == "cpu" and _cpu_has_bf16_units()


def accumulation_factor(n: int) -> float:
    """gamma_n = n u / (1 - n u) with u = 2^-24: |fl(sum of n terms) - sum| <= gamma_n * sum |terms|
    for any summation order (Higham, Accuracy and Stability of Numerical Algorithms, Eq. 3.4)."""
    nu = n * _U32
    if nu >= 0.5:
        raise ValueError(f"dimension {n} is too large for the float32 accumulation bound")
    return nu / (1.0 - nu)


@dataclass
class ScreenFeatures:
    """Both feature sets prepared once for :func:`bf16_screen`.

    ``q``/``g`` are the float32 (normalised) features exactly as :func:`pairwise_distance` uses them,
    ``qh``/``gh`` their bf16 roundings (with sub-normal values set to zero, as the bf16 units do),
    and the norms feed the error bound.
    """

    q: torch.Tensor
    g: torch.Tensor
    qh: torch.Tensor
    gh: torch.Tensor
    g_sq: torch.Tensor  # float32 |g|^2 exactly as pairwise_distance computes it
    row_bound: torch.Tensor  # [Nq] R_i of the bound
    col_bound: torch.Tensor  # [Ng] C_j of the bound
    metric: str


def prepare_screen(qf: Any, gf: Any, metric: str = "euclidean", normalize: bool = True) -> ScreenFeatures:
    """Normalise as the fp32 path does, round to bf16 and precompute the per-row/column bound terms.

    Raises ``ValueError`` for ``metric="euclidean", normalize=False`` (the distance is then not a
    function of the dot product of the inputs alone at the bound's scale; use the fp32 path).
    """
    if metric == "euclidean" and not normalize:
        raise ValueError("the bf16 screen needs normalised features (normalize=True or metric='cosine')")
    q, g = _prepare(qf, gf, metric, normalize, 1)

    def rounded(x: torch.Tensor) -> torch.Tensor:
        xh = x.to(torch.bfloat16)
        return xh.masked_fill(xh.float().abs() < _MIN_NORMAL, 0)

    qh, gh = rounded(q), rounded(g)
    # Residuals are exact in float32 (Sterbenz: x and its bf16 rounding are within a factor 2).
    q_res, g_res = (qh.float() - q).norm(dim=1), (gh.float() - g).norm(dim=1)
    q_norm, g_norm = q.norm(dim=1), g.norm(dim=1)
    qh_norm, gh_norm = qh.float().norm(dim=1), gh.float().norm(dim=1)
    gamma = accumulation_factor(q.shape[1])
    max_gh, max_g, max_q = (float(t.max()) if t.numel() else 0.0 for t in (gh_norm, g_norm, q_norm))
    row_bound = q_res * max_gh + gamma * (qh_norm * max_gh + q_norm * max_g)
    col_bound = max_q * g_res
    return ScreenFeatures(q, g, qh, gh, _squared_norms(g), row_bound, col_bound, metric)


def bf16_screen(screen: ScreenFeatures, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate ranking scores ``z`` and their certified half-widths ``w`` for query rows ``start:stop``.

    ``z`` is half the squared Euclidean distance (``(|q|^2 + |g|^2)/2 - s'``) or minus the cosine
    similarity (``-s'``), with ``s'`` the bf16 product (float32 accumulation) of the normalised
    features. For every pair, the dot product ``d`` computed by the fp32 path satisfies
    ``|s' - d| <= eps``, derived as follows (x, y the float32 normalised features, xh, yh their bf16
    roundings, u32 = 2^-24, gamma_n = n u32 / (1 - n u32), n the dimension):

    * inputs: ``xh.yh - x.y = (xh - x).yh + x.(yh - y)``, so by Cauchy-Schwarz
      ``|xh.yh - x.y| <= |xh - x| |yh| + |x| |yh - y|`` (the residual norms are computed exactly,
      no assumption on their distribution; for unit vectors this is at most about 2 * 2^-8);
    * bf16 products are exact in float32; their float32 accumulation, in any order, is within
      ``gamma_n sum|xh_i yh_i| <= gamma_n |xh| |yh|`` of ``xh.yh``;
    * rounding the accumulator to the bf16 output moves it by at most ``2^-7 |s'| / (1 - 2^-7)``
      (round to nearest gives 2^-8; 2^-7 also covers truncation);
    * the fp32 path's own product ``d`` is within ``gamma_n |x| |y|`` of ``x.y``.

    Summed: ``eps_ij = R_i + C_j + 2^-7/(1-2^-7) |s'_ij|`` with ``R_i = |xh_i - x_i| max|yh| +
    gamma_n (|xh_i| max|yh| + |x_i| max|y|)`` and ``C_j = max|x| |yh_j - y_j|``, inflated by
    ``1 + 2 gamma_n + 2^-16`` for the float32 evaluation of the bound itself. ``w = eps +``
    :data:`SCREEN_MARGIN`, which absorbs the later float32 roundings (``|q|^2 + |g|^2``, the
    subtraction and the square root of the fp32 path, and the evaluation of ``z``): when
    ``z_j - z_k > w_j + w_k``, the fp32 path's distance of ``k`` is strictly smaller than that of
    ``j``, whatever its rounding -- so ties cannot occur and the gallery order does not matter.
    """
    stop = screen.q.shape[0] if stop is None else stop
    s_hat = (screen.qh[start:stop] @ screen.gh.T).float()
    gamma = accumulation_factor(screen.q.shape[1])
    safety = 1.0 + 2.0 * gamma + 2.0**-16
    out_rel = _BF16_OUTPUT_REL / (1.0 - _BF16_OUTPUT_REL)
    w = s_hat.abs().mul_(out_rel)
    w.add_(screen.row_bound[start:stop, None]).add_(screen.col_bound[None, :]).mul_(safety).add_(SCREEN_MARGIN)
    if screen.metric == "cosine":
        z = s_hat.neg_()
    else:
        block = screen.q[start:stop]
        # |q|^2 + |g|^2 exactly as the fp32 path computes it (same float32 operations).
        z = (_squared_norms(block)[:, None] + screen.g_sq[None, :]).mul_(0.5).sub_(s_hat)
    return z, w
