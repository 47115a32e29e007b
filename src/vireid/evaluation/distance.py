"""Pairwise distances between query and gallery features (smaller = more similar)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("euclidean", "cosine")


def _as_float_tensor(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"features must be 2-D [num_images, dim], got shape {tuple(t.shape)}")
    return t.float()


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
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32, device=q.device)
    g_sq = (g * g).sum(dim=1)
    for start in range(0, q.shape[0], chunk_size):
        block = q[start : start + chunk_size]
        dots = block @ g.T
        if metric == "cosine":
            torch.sub(1.0, dots, out=out[start : start + chunk_size])
        else:
            sq = (block * block).sum(dim=1, keepdim=True) + g_sq[None, :] - 2.0 * dots
            torch.sqrt(sq.clamp_(min=0.0), out=out[start : start + chunk_size])
    return out
