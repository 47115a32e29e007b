"""Retrieval with fused multi-modal queries (the survey §3 matching, §4.1/§4.2 fusion).

The test identities' registered pairs (one visible + one infrared image of one moment) are split,
per trial and per identity, into query moments and gallery moments (alternate moments of a random
order: each identity has about half of its moments on each side, and a moment is never matched with
itself). A query or gallery entry is then one of:

* ``"fused"`` -- the pair, embedded by the fusion model as one set (or, for score-level fusion,
  its two single-modality embeddings);
* ``"visible"`` / ``"infrared"`` -- one image of the pair only (a single-modality query or gallery).

So the same moments give the fused->fused, fused->visible, fused->infrared, visible->visible,
infrared->visible, ... rankings, and CMC/mAP/mINP (:func:`~vireid.evaluation.evaluate_ranking`, plain
CMC, no camera rule -- one co-located camera pair as in RegDB) compare like with like.

**Fusion level.** ``fusion="embedding"`` ranks by the distance between query and gallery embeddings
(fused embeddings come from the model, see :func:`vireid.workflows.evaluate_fusion.extract_fusion_features`).
``fusion="average"`` / ``"vote"`` is decision-level late fusion (the survey: "weighted average or voting
mechanism"): every modality of the query is compared with the gallery entry (with the same modality
of a fused gallery entry, with its only image otherwise), giving one distance matrix per query
modality, and those are fused by :meth:`~vireid.modeling.modules.fusion_layers.LateFusion.fuse_scores`
(weighted average of distances, or weighted rank voting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE
from vireid.errors import ConfigError
from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.metrics import evaluate_ranking

FUSED = "fused"
ENTRY_KINDS = (FUSED, VISIBLE, INFRARED)
FUSION_LEVELS = ("embedding", "average", "vote")
METRIC_NAMES = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def split_moments(pair_pids: np.ndarray, trials: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per trial, ``(query rows, gallery rows)`` of the pairs: each identity's moments in a random order
    (seeded by ``(seed, trial)``), even positions to the query side, odd ones to the gallery."""
    pair_pids = np.asarray(pair_pids).reshape(-1)
    if trials < 1:
        raise ConfigError(f"fused evaluation needs at least 1 trial, got {trials}")
    out = []
    for t in range(trials):
        order = np.random.default_rng([int(seed), 0xF5, t]).permutation(pair_pids.shape[0])
        order = order[np.argsort(pair_pids[order], kind="stable")]  # identity-major, random within
        sorted_pids = pair_pids[order]
        starts = np.flatnonzero(np.r_[True, sorted_pids[1:] != sorted_pids[:-1]])
        position = np.arange(order.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, order.shape[0]]))
        out.append((np.sort(order[position % 2 == 0]), np.sort(order[position % 2 == 1])))
    return out


def _modalities_of(kind: str) -> list[int]:
    if kind == FUSED:
        return [MODALITY_CODE[VISIBLE], MODALITY_CODE[INFRARED]]
    return [MODALITY_CODE[kind]]


def _entry_features(kind: str, rows: np.ndarray, features: torch.Tensor, pairs: np.ndarray,
                    fused: torch.Tensor | None) -> torch.Tensor:
    if kind == FUSED:
        if fused is None:
            raise ConfigError("fused embeddings are missing; pass fused= or use fusion='average'/'vote'")
        return fused[torch.as_tensor(rows)]
    return features[torch.as_tensor(pairs[rows, MODALITY_CODE[kind]])]


def fusion_distance(query: str, gallery: str, q_rows: np.ndarray, g_rows: np.ndarray, features: torch.Tensor,
                    pairs: np.ndarray, fused: torch.Tensor | None = None, fusion: str = "embedding",
                    weights: Sequence[float] = (0.5, 0.5), metric: str = "euclidean") -> torch.Tensor:
    """Distance matrix ``[len(q_rows), len(g_rows)]`` between query and gallery entries (see the module doc).

    ``features``: single-image embeddings ``[N, D]``; ``pairs``: ``[P, 2]`` rows (visible, infrared) into
    ``features``; ``fused``: fused embeddings ``[P, D]`` (needed for ``fusion="embedding"`` with a
    fused side). Score-level fusion of two single-modality sides is the plain distance.
    """
    if query not in ENTRY_KINDS or gallery not in ENTRY_KINDS:
        raise ConfigError(f"query/gallery kinds must be among {', '.join(ENTRY_KINDS)}, got {query!r}/{gallery!r}")
    if fusion not in FUSION_LEVELS:
        raise ConfigError(f"fusion level {fusion!r} is unknown; use one of {', '.join(FUSION_LEVELS)}")
    if fusion == "embedding" or FUSED not in (query, gallery):
        qf = _entry_features(query, q_rows, features, pairs, fused)
        gf = _entry_features(gallery, g_rows, features, pairs, fused)
        return pairwise_distance(qf, gf, metric=metric)
    from vireid.modeling.modules.fusion_layers import LateFusion

    q_mods = _modalities_of(query)
    g_mods = _modalities_of(gallery)
    # one ballot per modality of the fused side: a fused query's modality meets the same modality of a
    # fused gallery entry (or the gallery's only image); a single query meets each gallery modality
    if query == FUSED:
        meetings = [(m, m if m in g_mods else g_mods[0]) for m in q_mods]
    else:
        meetings = [(q_mods[0], g_m) for g_m in g_mods]
    ballots = [
        pairwise_distance(features[torch.as_tensor(pairs[q_rows, q_m])], features[torch.as_tensor(pairs[g_rows, g_m])],
                          metric=metric)
        for q_m, g_m in meetings
    ]
    scores = -torch.stack(ballots, dim=1)  # [Q, M, G], higher = better
    late = LateFusion(len(ballots), weights=list(weights), mode=fusion, normalize=False)
    return -late.fuse_scores(scores, torch.ones(scores.shape[0], scores.shape[1], dtype=torch.bool))


def evaluate_fusion(features: torch.Tensor | np.ndarray, pairs: np.ndarray, pair_pids: np.ndarray, *,
                    fused: torch.Tensor | np.ndarray | None = None, queries: Sequence[str] = ENTRY_KINDS,
                    galleries: Sequence[str] = ENTRY_KINDS, fusion: str = "embedding",
                    weights: Sequence[float] = (0.5, 0.5), metric: str = "euclidean", trials: int = 10,
                    seed: int = 0, max_rank: int = 20) -> list[dict[str, Any]]:
    """CMC/mAP/mINP of every (query kind, gallery kind) over ``trials`` moment splits.

    Returns one dict per combination: ``query``, ``gallery``, ``fusion`` (the level used: a
    single->single ranking is always ``"embedding"``), ``trials``, ``num_query``/``num_gallery``
    (first trial), and ``<metric>`` / ``<metric>_std`` for :data:`METRIC_NAMES` (fractions 0..1).
    """
    feats = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).float().cpu()
    fused_t = None
    if fused is not None:
        fused_t = torch.as_tensor(np.asarray(fused) if not isinstance(fused, torch.Tensor) else fused).float().cpu()
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    pair_pids = np.asarray(pair_pids).reshape(-1)
    if pair_pids.shape[0] != pairs.shape[0] or (fused_t is not None and fused_t.shape[0] != pairs.shape[0]):
        raise ConfigError(f"fused evaluation got {pairs.shape[0]} pairs, {pair_pids.shape[0]} identities"
                          + (f" and {fused_t.shape[0]} fused embeddings" if fused_t is not None else "")
                          + "; give one of each per pair")
    if pairs.size == 0 or pairs.max() >= feats.shape[0] or pairs.min() < 0:
        raise ConfigError(f"fused evaluation pairs must index the {feats.shape[0]} single-image embeddings")
    if np.unique(pair_pids, return_counts=True)[1].max() < 2:
        raise ConfigError("fused evaluation needs at least two moments (pairs) of some test identity, one for the "
                          "query and one for the gallery side; the dataset has one per identity")
    splits = split_moments(pair_pids, trials, seed)
    results = []
    for query in queries:
        for gallery in galleries:
            level = fusion if FUSED in (query, gallery) else "embedding"
            per_trial = []
            for q_rows, g_rows in splits:
                dist = fusion_distance(query, gallery, q_rows, g_rows, feats, pairs, fused_t, level, weights, metric)
                res = evaluate_ranking(dist, pair_pids[q_rows], pair_pids[g_rows], max_rank=max_rank)
                cmc = res["cmc"]
                per_trial.append([cmc[0], cmc[min(4, len(cmc) - 1)], cmc[min(9, len(cmc) - 1)],
                                  cmc[min(19, len(cmc) - 1)], res["mAP"], res["mINP"]])
            values = np.asarray(per_trial, dtype=np.float64)
            row: dict[str, Any] = {"query": query, "gallery": gallery, "fusion": level, "trials": len(splits),
                                   "num_query": int(splits[0][0].shape[0]), "num_gallery": int(splits[0][1].shape[0])}
            for i, name in enumerate(METRIC_NAMES):
                row[name] = float(values[:, i].mean())
                row[f"{name}_std"] = float(values[:, i].std())
            results.append(row)
    return results


def format_fusion_table(rows: Sequence[dict[str, Any]], title_column: str | None = None) -> str:
    """Markdown table of :func:`evaluate_fusion` rows (percentages, mean ± std over trials)."""
    head = ([title_column] if title_column else []) + ["query", "gallery", "fusion", "Rank-1", "Rank-10", "mAP", "mINP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([str(r.get(title_column, ""))] if title_column else []) + [r["query"], r["gallery"], r["fusion"]]
        for name in ("rank1", "rank10", "mAP", "mINP"):
            cells.append(f"{100 * r[name]:.2f} ± {100 * r[f'{name}_std']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "ENTRY_KINDS",
    "FUSED",
    "FUSION_LEVELS",
    "METRIC_NAMES",
    "evaluate_fusion",
    "format_fusion_table",
    "fusion_distance",
    "split_moments",
]
