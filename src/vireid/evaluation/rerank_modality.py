"""Modality-aware k-reciprocal re-ranking for visible-infrared re-identification.

Zhong et al.'s k-reciprocal encoding (CVPR 2017, :mod:`vireid.evaluation.rerank`) takes the k
nearest neighbours of an image over all images. In visible-infrared data those lists are filled
with images of the image's own modality (the modality gap is larger than most identity gaps), so
the reciprocal sets of a query hold few or no images of the other modality -- the very ones the
gallery is made of -- and the Jaccard overlap with the right gallery images stays small.

CA-Jaccard (Chen, Fan, Chen and Zhu, "CA-Jaccard: Camera-aware Jaccard Distance for Person
Re-identification", CVPR 2024) met the same problem with cameras: its camera-aware k-reciprocal
nearest neighbours (CKRNNs) are found on the intra-camera and inter-camera ranking lists
separately, each with its own k, so inter-camera samples are guaranteed a place in the overlap.
:func:`modality_rerank` applies that construction with *modality* in place of camera:

1. ``O`` as in Zhong et al. (squared distances, each column divided by its maximum, transposed).
2. Two ranking lists per image ``i``: its same-modality images (``i`` itself first) and its
   other-modality images, each by ascending ``O[i]`` (stable: ties by index).
3. ``R(i) = R_intra(i, k_intra) ∪ R_cross(i, k_cross)`` with
   ``R_intra(i, k)`` = the first ``k + 1`` same-modality neighbours ``j`` whose own first ``k + 1``
   same-modality neighbours contain ``i``, and ``R_cross(i, k)`` = the first ``k`` other-modality
   neighbours ``j`` whose own first ``k`` other-modality neighbours contain ``i`` (the query itself is
   not an other-modality neighbour, hence ``k`` and not ``k + 1``).
4. Expansion (Zhong's Eq. 6) with the half sets ``R_intra(c, round(k_intra/2)) ∪ R_cross(c,
   round(k_cross/2))``: a candidate ``c`` of ``R(i)`` adds its half set when more than 2/3 of it lies
   in ``R(i)``.
5. ``V`` (Eq. 7), local query expansion (Eq. 11) over the ``k2`` nearest *same-modality* neighbours
   (the reliable ones; CA-Jaccard likewise restricts its query expansion, its CLQE differs in
   detail), Jaccard distance and ``(1 - lambda) * jaccard + lambda * O`` (Eq. 10, 12).

With a single modality, ``R_cross`` is empty and the method is Zhong et al.'s with ``k1 = k_intra``.
Defaults ``k_intra=20, k_cross=10, k2=6, lambda=0.3``: Zhong's k1, k2 and lambda for the
same-modality lists; ``k_cross`` half of it, because a VI gallery holds few images per identity and
modality (one per camera in single-shot SYSU-MM01). They are this module's choice, not a paper's.

:func:`modality_rerank` is vectorised on the inputs' device with the machinery of
:func:`~vireid.evaluation.rerank.k_reciprocal_rerank` (chunked top-k, sparse ``V``, chunked
Jaccard pairs): memory stays bounded by the inputs plus chunks. :func:`modality_rerank_loop` is the
literal per-image numpy twin the tests hold it against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vireid.errors import VireidError
from vireid.evaluation.rerank import (
    _check_inputs,
    _expand_candidate_sets,
    _jaccard_final,
    _loop_encode_and_rank,
    _loop_inputs,
    _loop_original,
    _nearest,
    _Original,
    _query_expansion,
    _reciprocal,
    _to_tensor,
    _weights,
    k_reciprocal_rerank,
)

#: Zhong et al.'s defaults (also ``DEFAULT_RERANK`` of the protocols).
K_RECIPROCAL_DEFAULTS = {"k1": 20, "k2": 6, "lambda_value": 0.3}
MODALITY_DEFAULTS = {"k_intra": 20, "k_cross": 10, "k2": 6, "lambda_value": 0.3}
#: Names accepted by the protocols' ``rerank=`` (``True`` means ``"k-reciprocal"``).
RERANK_METHODS = ("k-reciprocal", "modality")


class RerankError(VireidError, ValueError):
    """An unknown re-ranking method or parameter (printed by the CLI as one line)."""


def _method(rerank: bool | str) -> str:
    method = "k-reciprocal" if rerank is True else rerank
    if method not in RERANK_METHODS:
        raise RerankError(f"unknown re-ranking {rerank!r}; use 'k-reciprocal' (Zhong et al. 2017) or 'modality'")
    return method


def rerank_settings(rerank: bool | str, params: dict | None = None) -> dict:
    """The parameters a protocol run records for ``rerank`` (``True`` / ``"k-reciprocal"`` keep the
    historical form ``{k1, k2, lambda_value}``; ``"modality"`` adds ``method``)."""
    method = _method(rerank)
    defaults = K_RECIPROCAL_DEFAULTS if method == "k-reciprocal" else MODALITY_DEFAULTS
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise RerankError(f"re-ranking {method} has no parameter {unknown[0]!r}; use {', '.join(defaults)}")
    merged = {**defaults, **(params or {})}
    return merged if method == "k-reciprocal" else {"method": method, **merged}


def rerank_distances(rerank: bool | str, q_g: Any, q_q: Any, g_g: Any, q_modalities: Any, g_modalities: Any,
                     params: dict | None = None) -> np.ndarray:
    """Re-ranked ``[Nq, Ng]`` distances by ``rerank`` (``True``/``"k-reciprocal"`` or ``"modality"``);
    modality codes (0 visible, 1 infrared) are used by the modality-aware method only."""
    settings = rerank_settings(rerank, params)
    if settings.pop("method", "k-reciprocal") == "modality":
        return modality_rerank(q_g, q_q, g_g, q_modalities, g_modalities, **settings)
    return k_reciprocal_rerank(q_g, q_q, g_g, **settings)


def _check_modality_inputs(q_g, q_q, g_g, q_mod, g_mod, k_intra, k_cross, k2, lambda_value):
    nq, ng = _check_inputs(q_g, q_q, g_g, max(k_intra, 1), k2, lambda_value)
    if k_intra < 1 or k_cross < 1:
        raise RerankError(f"modality re-ranking needs k_intra >= 1 and k_cross >= 1, got {k_intra} and {k_cross}")
    q_mod = np.asarray(q_mod.cpu() if isinstance(q_mod, torch.Tensor) else q_mod).reshape(-1)
    g_mod = np.asarray(g_mod.cpu() if isinstance(g_mod, torch.Tensor) else g_mod).reshape(-1)
    if q_mod.shape[0] != nq or g_mod.shape[0] != ng:
        raise RerankError(f"modality re-ranking needs one modality code per query ({nq}) and gallery image ({ng}), "
                          f"got {q_mod.shape[0]} and {g_mod.shape[0]}")
    return nq, ng, np.concatenate([q_mod, g_mod]).astype(np.int64)


def _group_lists(original: _Original, group: torch.Tensor, k: int, same: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, k] neighbour lists within (``same``) or across groups, and which slots are real."""
    neigh = _nearest(original, k, group, same)
    sizes = torch.bincount(group, minlength=int(group.max()) + 1)
    count = sizes[group] if same else original.n - sizes[group]
    return neigh, torch.arange(neigh.shape[1], device=neigh.device)[None, :] < count[:, None]


def modality_rerank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    q_modalities: Any,
    g_modalities: Any,
    k_intra: int = 20,
    k_cross: int = 10,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Modality-aware re-ranked query x gallery distances (numpy float32 ``[Nq, Ng]``).

    Distances as :func:`~vireid.evaluation.rerank.k_reciprocal_rerank` takes them; ``q_modalities``
    / ``g_modalities`` are modality codes (any integers; 0 visible, 1 infrared). Module docstring:
    the method, CA-Jaccard's intra/inter ranking lists (CVPR 2024) with modality for camera.
    """
    nq, ng, mods = _check_modality_inputs(q_g_dist, q_q_dist, g_g_dist, q_modalities, g_modalities,
                                          k_intra, k_cross, k2, lambda_value)
    device = q_g_dist.device if isinstance(q_g_dist, torch.Tensor) else None
    q_g, q_q, g_g = (_to_tensor(x, device) for x in (q_g_dist, q_q_dist, g_g_dist))
    original = _Original(q_g, q_q, g_g)
    group = torch.as_tensor(np.unique(mods, return_inverse=True)[1].reshape(-1), device=q_g.device)

    intra, intra_real = _group_lists(original, group, max(k_intra + 1, k2), same=True)
    half_intra = int(np.around(k_intra / 2.0))
    half_cross = int(np.around(k_cross / 2.0))
    r_intra, real_intra = intra[:, : k_intra + 1], intra_real[:, : k_intra + 1]
    h_intra, real_h_intra = intra[:, : half_intra + 1], intra_real[:, : half_intra + 1]
    sets, half_sets = [(r_intra, _reciprocal(r_intra) & real_intra)], [(h_intra, _reciprocal(h_intra) & real_h_intra)]
    if int(group.max()) > 0:  # another modality exists
        cross, cross_real = _group_lists(original, group, k_cross, same=False)
        sets.append((cross, _reciprocal(cross) & cross_real))
        if half_cross > 0:
            h_cross, real_h_cross = cross[:, :half_cross], cross_real[:, :half_cross]
            half_sets.append((h_cross, _reciprocal(h_cross) & real_h_cross))
    members, valid = _expand_candidate_sets(
        torch.cat([m for m, _ in sets], dim=1), torch.cat([v for _, v in sets], dim=1),
        torch.cat([m for m, _ in half_sets], dim=1), torch.cat([v for _, v in half_sets], dim=1),
    )  # fmt: skip
    ptr, cols, vals = _weights(original, members, valid)
    if k2 != 1:  # query expansion over the k2 nearest same-modality neighbours
        ptr, cols, vals = _query_expansion(ptr, cols, vals, intra[:, :k2], intra_real[:, :k2])
    return _jaccard_final(original, ptr, cols, vals, lambda_value)


def modality_rerank_loop(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    q_modalities: Any,
    g_modalities: Any,
    k_intra: int = 20,
    k_cross: int = 10,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Literal per-image numpy twin of :func:`modality_rerank` (dense, O(N^2) memory): the per-image loop
    of :func:`~vireid.evaluation.rerank.k_reciprocal_rerank_loop` with the intra/cross-modality sets."""
    q_g, q_q, g_g = _loop_inputs(q_g_dist, q_q_dist, g_g_dist)
    nq, ng, mods = _check_modality_inputs(q_g, q_q, g_g, q_modalities, g_modalities, k_intra, k_cross, k2,
                                          lambda_value)
    original = _loop_original(q_g, q_q, g_g)
    n = original.shape[0]
    intra_rank, cross_rank = [], []
    for i in range(n):
        same = np.flatnonzero(mods == mods[i])
        other = np.flatnonzero(mods != mods[i])
        intra_rank.append(same[np.argsort(original[i, same], kind="stable")])
        cross_rank.append(other[np.argsort(original[i, other], kind="stable")])

    def reciprocal(ranks: list, i: int, length: int) -> np.ndarray:
        forward = ranks[i][:length]
        return np.array([j for j in forward if i in ranks[j][:length]], dtype=np.int64)

    def k_set(i: int, ki: int, kc: int) -> np.ndarray:
        return np.concatenate([reciprocal(intra_rank, i, ki + 1), reciprocal(cross_rank, i, kc)])

    half_intra, half_cross = int(np.around(k_intra / 2.0)), int(np.around(k_cross / 2.0))
    return _loop_encode_and_rank(original, nq, lambda i: k_set(i, k_intra, k_cross),
                                 lambda i: k_set(i, half_intra, half_cross), lambda i: intra_rank[i][:k2], k2,
                                 lambda_value)


__all__ = [
    "MODALITY_DEFAULTS",
    "RERANK_METHODS",
    "RerankError",
    "modality_rerank",
    "modality_rerank_loop",
    "rerank_distances",
    "rerank_settings",
]
