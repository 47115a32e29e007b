"""The protocol runner: the queries' and every trial's gallery indices -> ranked figures.

Every runner works on a *pool* of test records (``list[ImageRecord]``) and their features
(torch ``[N, D]``, same order), computed once. The runner takes the query and, per trial, the
gallery of the protocol as indices into the pool, computes the query x (union of all trials'
galleries) distances in one product, and per trial only gathers columns and ranks them. The
identities compared are the records' ``orig_pid`` (the dataset's own numbers).

Precision (``precision=`` of every runner; what ran is recorded in ``settings["precision"]``):

* ``"fp32"``: the query x union float32 distances (:func:`pairwise_distance`), all trials ranked
  in one batched pass (:func:`~vireid.evaluation.metrics.evaluate_ranking_trials` machinery).
* ``"certified"``: a bf16 screen (:func:`~vireid.evaluation.distance.bf16_screen`: one bf16
  product with a rigorous per-pair error bound) ranks the queries when, for every query, every
  comparison the metrics use (each kept gallery entry against each correct match of the trial) is
  decided by the bound; the result is then exactly the fp32 path's. If any comparison is
  undecided, the fp32 distances are computed with the very call the fp32 path makes, so the
  result is still the fp32 path's, bit for bit. Rows are screened in blocks, a probe block first,
  and the first undecided row ends the screen (at most one block of bf16 work is wasted).
  The fp32 results cannot be reproduced pair by pair: a float32 product of other shapes (a row,
  a few columns) rounds differently from the full one, and on real-size data the fp32 path's own
  rounding already decides some near-ties; hence the all-or-nothing rule.
* ``"auto"`` (default): ``"certified"`` where a bf16 product is fast (CPUs with AMX-BF16 /
  AVX512-BF16) and the ranking is a monotone function of the dot product of normalised features
  (``metric="cosine"``, or ``"euclidean"`` with ``normalize=True``) and there is no re-ranking;
  ``"fp32"`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vireid.data.records import ImageRecord
from vireid.evaluation.distance import SCREEN_MARGIN, bf16_screen, pairwise_distance, prepare_screen
from vireid.evaluation.metrics import TrialTable, finish_trials, rank_trials, undecided_comparisons
from vireid.evaluation.protocols.draws import _pool_columns
from vireid.evaluation.protocols.options import PRECISIONS, ProtocolOptions
from vireid.evaluation.protocols.results import ProtocolError, ProtocolResult, _summarise, _trial_figures
from vireid.evaluation.rerank_modality import rerank_distances, rerank_settings

# Query rows screened first (a cheap probe: hard data fails it and goes to fp32 at once), then per block.
_PROBE_ROWS = 256
_SCREEN_BLOCK_ROWS = 1024


def _check_features(features: Any, pool: Sequence[ImageRecord]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``[N, D]`` features of the pool, or a pair ``(query_side, gallery_side)`` of them: each image is
    then a query with its first and a gallery item with its second row (e.g. corrupted queries
    against a clean gallery, :mod:`vireid.evaluation.robustness`)."""
    if isinstance(features, tuple):
        if len(features) != 2:
            raise ProtocolError(f"a feature pair must be (query_side, gallery_side), got {len(features)} tensors")
        query_side, gallery_side = (_check_features(f, pool) for f in features)
        if query_side.shape != gallery_side.shape:
            raise ProtocolError(f"query-side features {tuple(query_side.shape)} and gallery-side features "
                                f"{tuple(gallery_side.shape)} differ in shape; compute both with one model")
        return query_side, gallery_side.to(query_side.device)
    feats = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if feats.dim() != 2 or feats.shape[0] != len(pool):
        raise ProtocolError(
            f"features have shape {tuple(feats.shape)} but the pool has {len(pool)} records; "
            "pass one feature row per record, in the pool's order"
        )
    return feats.detach()


def _choose_precision(precision: str, metric: str, normalize: bool, rerank: bool, device: torch.device):
    """(path, reason): ``"certified"`` or ``"fp32"`` for the requested ``precision``."""
    if precision not in PRECISIONS:
        raise ProtocolError(f"unknown precision {precision!r}; use 'auto', 'fp32' or 'certified'")
    if precision == "fp32":
        return "fp32", "requested"
    if precision == "auto":
        # measured: at SYSU-MM01 gallery sizes the rigorous bf16 bound leaves nearly every query row
        # with an undecided comparison, so the screen costs time and the fp32 product runs anyway
        return "fp32", "auto uses fp32 (the bf16 screen rarely certifies realistic data; ask for 'certified')"
    if rerank:
        return "fp32", "re-ranking needs the full fp32 distances"
    if metric == "euclidean" and not normalize:
        return "fp32", "un-normalised euclidean distances are not a function of the dot product"
    return "certified", "requested"


def _certified_figures(q_feat, u_feat, table: TrialTable, metric: str, normalize: bool, dedup_cmc: bool):
    """Per (query, trial) figures from the bf16 screen, or ``None`` at the first undecided row."""
    screen = prepare_screen(q_feat, u_feat, metric=metric, normalize=normalize)
    near_zero = SCREEN_MARGIN if metric == "euclidean" else None
    num_q = q_feat.shape[0]
    probe = min(_PROBE_ROWS, num_q)
    bounds = sorted({0, probe, *range(probe + _SCREEN_BLOCK_ROWS, num_q, _SCREEN_BLOCK_ROWS), num_q})
    parts, screened = [], 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        z, w = bf16_screen(screen, start, stop)
        undecided = undecided_comparisons(z, w, table, row_offset=start, near_zero=near_zero)
        screened = stop
        if bool((undecided > 0).any()):
            return None, {"screened_rows": screened, "uncertified_rows_in_last_block": int((undecided > 0).sum())}
        parts.append(rank_trials(z, table, dedup_cmc, row_offset=start))
    figures = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    return figures, {"screened_rows": screened, "uncertified_rows_in_last_block": 0}


def run_trials(
    name: str,
    settings: dict,
    features: torch.Tensor,
    pool: Sequence[ImageRecord],
    query_idx: np.ndarray,
    gallery_draws: list[np.ndarray],
    *,
    cam_rule: str | None,
    dedup_cmc: bool,
    options: ProtocolOptions | None = None,
) -> ProtocolResult:
    """Rank every trial: one query x union-of-galleries product, then all trials in one batched pass.

    ``cam_rule`` (None, ``"sysu"`` or ``"same-camera"``) and ``dedup_cmc`` come from the protocol;
    ``options`` say how to rank (:class:`ProtocolOptions`)."""
    options = options if options is not None else ProtocolOptions()
    metric, normalize, max_rank = options.metric, options.normalize, options.max_rank
    rerank, rerank_params, precision = options.rerank, options.rerank_params, options.precision
    if len(query_idx) == 0:
        raise ProtocolError(f"protocol {name}: the pool holds no query image; check the pool's modalities/cameras")
    if any(len(g) == 0 for g in gallery_draws):
        raise ProtocolError(f"protocol {name}: the pool holds no gallery image; check the pool's modalities/cameras")
    pids, cams, mods = _pool_columns(pool)
    q_source, g_source = features if isinstance(features, tuple) else (features, features)
    device = q_source.device
    path, reason = _choose_precision(precision, metric, normalize, rerank, device)
    union = np.unique(np.concatenate(gallery_draws))
    trial_cols = [np.searchsorted(union, g_idx) for g_idx in gallery_draws]
    q_feat = q_source[torch.as_tensor(query_idx, device=device)]
    u_feat = g_source[torch.as_tensor(union, device=device)]
    q_pids, q_cams = pids[query_idx], cams[query_idx]
    table = TrialTable.build(q_pids, pids[union], trial_cols, q_cams, cams[union], cam_rule, device)
    precision_info: dict = {"requested": precision}
    if rerank:
        q_u = pairwise_distance(q_feat, u_feat, metric=metric, normalize=normalize)
        q_q = pairwise_distance(q_feat, q_feat, metric=metric, normalize=normalize)
        u_u = pairwise_distance(u_feat, u_feat, metric=metric, normalize=normalize)
        parts = []
        for cols_np in trial_cols:
            cols = torch.as_tensor(cols_np, device=device)
            g_g = u_u.index_select(0, cols).index_select(1, cols)
            dist = rerank_distances(rerank, q_u.index_select(1, cols), q_q, g_g, mods[query_idx],
                                    mods[union][cols_np], rerank_params)  # fmt: skip
            one = TrialTable.build(q_pids, pids[union][cols_np], [np.arange(len(cols_np))], q_cams,
                                   cams[union][cols_np], cam_rule, device)  # fmt: skip
            parts.append(rank_trials(torch.as_tensor(dist, device=device), one, dedup_cmc))
        figures = [np.concatenate([p[i] for p in parts], axis=1) for i in range(4)]
        metrics_per_trial = finish_trials(*figures, max_rank)
    else:
        figures = None
        if path == "certified":
            figures, screen_info = _certified_figures(q_feat, u_feat, table, metric, normalize, dedup_cmc)
            precision_info.update(screen_info)
            if figures is None:
                path, reason = "fp32", "a comparison was within the bf16 error bound; fp32 distances computed"
        if figures is None:
            q_u = pairwise_distance(q_feat, u_feat, metric=metric, normalize=normalize)
            figures = rank_trials(q_u, table, dedup_cmc)
        metrics_per_trial = finish_trials(*figures, max_rank)
    per_query = dict(zip(("num_rel", "first", "ap", "inp"), figures), query_index=np.asarray(query_idx))
    precision_info.update(path="bf16-certified" if path == "certified" else "fp32", reason=reason)
    trials, cmcs = [], []
    for t, (g_idx, metrics) in enumerate(zip(gallery_draws, metrics_per_trial)):
        trials.append(_trial_figures(metrics, trial=t, num_query=len(query_idx), num_gallery=len(g_idx)))
        cmcs.append(metrics["cmc"] * 100.0)
    settings = {
        **settings,
        "cam_rule": cam_rule,
        "dedup_cmc": dedup_cmc,
        "metric": metric,
        "normalize": normalize,
        "rerank": rerank_settings(rerank, rerank_params) if rerank else False,
        "num_query": int(len(query_idx)),
        "precision": precision_info,
    }
    result = _summarise(name, settings, trials, cmcs)
    result.per_query = per_query
    return result


#: the former private name, kept for callers outside the package
_run_trials = run_trials

__all__ = ["run_trials"]
