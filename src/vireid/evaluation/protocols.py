"""Official evaluation protocols of visible-infrared re-identification (SYSU-MM01, RegDB, LLCM).

Every runner works on a *pool* of test records (``list[ImageRecord]``) and their features
(torch ``[N, D]``, same order), computed once. A runner picks the query and, per trial, the
gallery of the protocol as indices into the pool, computes the query x (union of all trials'
galleries) distances in one product, and per trial only gathers columns and ranks them. The
identities compared are the records' ``orig_pid`` (the dataset's own numbers).

Results are :class:`ProtocolResult` objects with per-trial figures and their mean and standard
deviation (``numpy.std``, ``ddof=0``) in percent, as papers print them. Which convention drew the
gallery is recorded in ``settings``.

Gallery draws (``trial`` is 0-based everywhere):

* SYSU-MM01, ``draw="official"``: the permutation file ``rand_perm_cam.mat`` of the SYSU-MM01
  evaluation code. Its ``rand_perm_cam{cam}{id}`` (MATLAB, 1-based) is indexed by the camera
  number and by the identity *number* (the evaluation code sets ``Y{cam} = 1:length(feature)``,
  so cell ``i`` is identity ``i``; cameras 1, 2 and 6 have 333 cells because no identity above 333
  appears in them, cameras 3-5 have 533). Each cell is a ``10 x n_images`` matrix of 1-based
  image numbers; evaluation run ``run_time = trial + 1`` takes the first 1 (single-shot) or 10
  (multi-shot) entries of that row, and image ``k`` is the k-th file of the ``camC/PPPP`` folder in
  file-name order. Gallery order follows the MATLAB code: camera by camera, identities ascending.
  Empty cells are skipped, as the MATLAB code does.
* SYSU-MM01, ``draw="seeded"``: AGW / CAJ ``process_gallery_sysu(mode, trial)``: the Python
  random generator seeded with ``trial`` (``random.seed(trial)``; trials 0..9 in their test
  loops), identities ascending, for each the mode's visible cameras in order, skipping
  (identity, camera) folders that do not exist, and ``random.choice`` among the sorted files
  (single-shot). Multi-shot takes ``random.sample(files, min(10, len(files)))`` (the form used by
  published multi-shot variants of that function; a folder with fewer than 10 images gives all
  of them). Gallery order: identity, camera, then the drawn order.
* LLCM: the LLCM authors' ``process_gallery_llcm(mode, trial)``: ``random.seed(trial)`` (trials
  0..9 in their test loop), identities ascending, the gallery modality's cameras ascending,
  ``random.choice`` among the sorted files of each existing (identity, camera) folder.

A private ``random.Random(trial)`` is used, which gives the same sequence as ``random.seed``
without touching the global generator.

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

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE, ImageRecord
from vireid.errors import VireidError
from vireid.evaluation.distance import (
    SCREEN_MARGIN,
    bf16_screen,
    pairwise_distance,
    prepare_screen,
)
from vireid.evaluation.metrics import TrialTable, finish_trials, rank_trials, undecided_comparisons
from vireid.registry import Registry

#: Keys of every per-trial, mean and std dict (percent).
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
SYSU_GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_QUERY_CAMERAS = (3, 6)
SYSU_MULTI_SHOT = 10
DRAWS = ("official", "seeded")
DEFAULT_RERANK = {"k1": 20, "k2": 6, "lambda_value": 0.3}
PRECISIONS = ("auto", "fp32", "certified")
# Query rows screened first (a cheap probe: hard data fails it and goes to fp32 at once), then per block.
_PROBE_ROWS = 256
_SCREEN_BLOCK_ROWS = 1024


class ProtocolError(VireidError, ValueError):
    """A protocol option or a pool that does not fit the protocol (printed by the CLI as one line)."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class ProtocolResult:
    """Figures of one protocol setting: per trial, mean and std, in percent (0..100).

    ``trials[i]`` holds :data:`METRIC_KEYS` plus ``trial``, ``num_query``, ``num_gallery`` and
    ``num_valid_queries``; ``cmc`` is the mean CMC curve (percent, length ``max_rank``).
    """

    name: str
    settings: dict
    trials: list[dict]
    mean: dict
    std: dict
    cmc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Per (query, trial) figures for paired comparisons (:mod:`vireid.evaluation.significance`):
    #: ``query_index`` [Nq] pool indices and ``num_rel``, ``first``, ``ap``, ``inp`` [Nq, T] arrays.
    #: Not written by :meth:`to_dict`.
    per_query: dict | None = field(default=None, repr=False, compare=False)

    def summary(self) -> str:
        """One line: name, then mean ± std of each metric."""
        parts = [f"{key} {self.mean[key]:.2f} ± {self.std[key]:.2f}" for key in METRIC_KEYS]
        return f"{self.name} ({len(self.trials)} trials): " + ", ".join(parts)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        per_query, self.per_query = self.per_query, None
        try:
            out = asdict(self)
        finally:
            self.per_query = per_query
        out.pop("per_query", None)
        out["cmc"] = [float(v) for v in np.asarray(self.cmc)]
        return out

    def __str__(self) -> str:
        return self.summary()


def _trial_figures(metrics: dict, **extra: Any) -> dict:
    cmc = metrics["cmc"]

    def at(rank: int) -> float:
        return float(cmc[min(rank, len(cmc)) - 1] * 100.0)

    figures = {
        "rank1": at(1),
        "rank5": at(5),
        "rank10": at(10),
        "rank20": at(20),
        "mAP": metrics["mAP"] * 100.0,
        "mINP": metrics["mINP"] * 100.0,
        "num_valid_queries": metrics["num_valid_queries"],
    }
    figures.update(extra)
    return figures


def _summarise(name: str, settings: dict, trials: list[dict], cmcs: list[np.ndarray]) -> ProtocolResult:
    table = np.array([[t[key] for key in METRIC_KEYS] for t in trials], dtype=np.float64)
    mean = dict(zip(METRIC_KEYS, table.mean(axis=0).tolist()))
    std = dict(zip(METRIC_KEYS, table.std(axis=0).tolist()))
    return ProtocolResult(name, settings, trials, mean, std, np.mean(np.stack(cmcs), axis=0))


def aggregate_results(results: Sequence[ProtocolResult]) -> ProtocolResult:
    """Pool the trials of several results of the same setting (e.g. the 10 RegDB splits, one
    model each) into one result with mean ± std over all of them."""
    if not results:
        raise ProtocolError("aggregate_results needs at least one result")
    names = {r.name for r in results}
    if len(names) != 1:
        raise ProtocolError(f"aggregate_results got results of different settings {sorted(names)}; pass one setting")
    trials = [dict(t) for r in results for t in r.trials]
    cmcs = [np.asarray(r.cmc) for r in results for _ in r.trials]
    settings = dict(results[0].settings)
    settings["aggregated_from"] = len(results)
    return _summarise(results[0].name, settings, trials, cmcs)


def format_results_table(results: Sequence[ProtocolResult]) -> str:
    """Markdown table: one row per result, mean ± std (percent) of each metric.

    A ``method`` column is added when any result names one in ``settings["method"]``, a
    ``re-rank`` column when any result was re-ranked, and a ``flip`` column when any used
    test-time flip.
    """
    with_method = any(r.settings.get("method") for r in results)
    with_rerank = any(r.settings.get("rerank") for r in results)
    with_flip = any(r.settings.get("flip") for r in results)
    head = (["method"] if with_method else []) + ["protocol"] + (["re-rank"] if with_rerank else [])
    head += ["flip"] if with_flip else []
    head += ["draw", "trials", "Rank-1", "Rank-5", "Rank-10", "Rank-20", "mAP", "mINP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [str(r.settings.get("method", "")) or "-"] if with_method else []
        cells.append(r.name)
        if with_rerank:
            cells.append(str(r.settings["rerank"].get("method", "yes")) if r.settings.get("rerank") else "no")
        if with_flip:
            cells.append("yes" if r.settings.get("flip") else "no")
        cells += [str(r.settings.get("draw", "-")), str(len(r.trials))]
        cells += [f"{r.mean[k]:.2f} ± {r.std[k]:.2f}" for k in METRIC_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Pools and gallery draws
# --------------------------------------------------------------------------------------------


def _pool_columns(pool: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pids = np.fromiter((r.orig_pid for r in pool), dtype=np.int64, count=len(pool))
    cams = np.fromiter((r.camid for r in pool), dtype=np.int64, count=len(pool))
    mods = np.fromiter((MODALITY_CODE[r.modality] for r in pool), dtype=np.int64, count=len(pool))
    return pids, cams, mods


def _groups(pool: Sequence[ImageRecord], indices: np.ndarray) -> dict[tuple[int, int], list[int]]:
    """Pool indices per (identity, camera), each list in file-name order (the folder's sorted order)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i in indices.tolist():
        r = pool[i]
        groups.setdefault((r.orig_pid, r.camid), []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: (os.path.basename(pool[i].path), pool[i].path))
    return groups


def _seeded_draw(
    groups: dict[tuple[int, int], list[int]], cameras: Sequence[int], trial: int, shots: int
) -> np.ndarray:
    """AGW/CAJ/LLCM draw: ``random.seed(trial)``, identities ascending, cameras in order."""
    rng = random.Random(trial)
    chosen: list[int] = []
    for pid in sorted({pid for pid, _ in groups}):
        for cam in cameras:
            files = groups.get((pid, cam))
            if not files:  # the reference code skips folders that do not exist
                continue
            if shots == 1:
                chosen.append(rng.choice(files))
            else:
                chosen.extend(rng.sample(files, min(shots, len(files))))
    return np.asarray(chosen, dtype=np.int64)


RandPermCam = dict[int, list[np.ndarray | None]]


def load_rand_perm_cam(path: str | os.PathLike) -> RandPermCam:
    """Read the official ``rand_perm_cam.mat``: ``{camera: [perm of identity 1, 2, ...]}``, each a
    ``[trials, n_images]`` int64 array of 1-based image numbers, or ``None`` for an empty cell."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise ProtocolError(
            f"rand_perm_cam file {path} does not exist; pass the rand_perm_cam.mat of the SYSU-MM01 "
            "evaluation code (data_split/rand_perm_cam.mat) or use draw='seeded'"
        )
    try:
        cells = loadmat(str(path))["rand_perm_cam"]
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user mistake
        raise ProtocolError(f"{path} is not a readable rand_perm_cam.mat ({exc}); use the official file") from exc
    out: RandPermCam = {}
    for cam_index in range(cells.shape[0]):
        per_id = cells[cam_index, 0]
        out[cam_index + 1] = [
            np.asarray(per_id[i, 0], dtype=np.int64) if per_id[i, 0].size else None for i in range(per_id.shape[0])
        ]
    return out


def _official_sysu_draw(
    groups: dict[tuple[int, int], list[int]],
    cameras: Sequence[int],
    trial: int,
    shots: int,
    perms: RandPermCam,
    pool: Sequence[ImageRecord],
) -> np.ndarray:
    """Gallery of evaluation run ``trial + 1`` of the official MATLAB code (see module docstring)."""
    chosen: list[int] = []
    pids = sorted({pid for pid, _ in groups})
    for cam in cameras:
        per_id = perms.get(cam, [])
        for pid in pids:
            files = groups.get((pid, cam), [])
            perm = per_id[pid - 1] if 1 <= pid <= len(per_id) else None
            expected = 0 if perm is None else perm.shape[1]
            if len(files) != expected:
                example = pool[files[0]].path if files else f"cam{cam}/{pid:04d}"
                raise ProtocolError(
                    f"the pool has {len(files)} images of identity {pid} in camera {cam} (e.g. {example}) but "
                    f"rand_perm_cam.mat expects {expected}; the official draw fits only the real SYSU-MM01 "
                    "test set, use draw='seeded'"
                )
            if perm is None:
                continue
            if trial >= perm.shape[0]:
                raise ProtocolError(
                    f"rand_perm_cam.mat holds {perm.shape[0]} trials, trial {trial} was asked; use fewer trials"
                )
            chosen.extend(files[k - 1] for k in perm[trial, :shots].tolist())
    return np.asarray(chosen, dtype=np.int64)


def sysu_gallery_indices(
    pool: Sequence[ImageRecord],
    mode: str = "all",
    shots: int = 1,
    trial: int = 0,
    draw: str = "seeded",
    rand_perm_cam: str | os.PathLike | RandPermCam | None = None,
) -> np.ndarray:
    """Pool indices of the SYSU-MM01 gallery of one trial (0-based), in the draw's own order."""
    return _sysu_gallery_draws(pool, mode, shots, [trial], draw, rand_perm_cam)[0]


def _sysu_gallery_draws(
    pool: Sequence[ImageRecord],
    mode: str,
    shots: int,
    trials: Sequence[int],
    draw: str,
    rand_perm_cam: str | os.PathLike | RandPermCam | None,
) -> list[np.ndarray]:
    """Galleries of several trials; the pool is grouped by (identity, camera) once."""
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ProtocolError(f"unknown SYSU-MM01 mode {mode!r}; use 'all' or 'indoor'")
    if draw not in DRAWS:
        raise ProtocolError(f"unknown gallery draw {draw!r}; use 'official' or 'seeded'")
    if shots < 1:
        raise ProtocolError(f"shots must be 1 (single-shot) or 10 (multi-shot), got {shots}")
    cameras = SYSU_GALLERY_CAMERAS[mode]
    _, cams, mods = _pool_columns(pool)
    candidates = np.flatnonzero((mods == MODALITY_CODE[VISIBLE]) & np.isin(cams, cameras))
    groups = _groups(pool, candidates)
    if draw == "seeded":
        return [_seeded_draw(groups, cameras, t, shots) for t in trials]
    if rand_perm_cam is None:
        raise ProtocolError(
            "draw='official' needs rand_perm_cam: the path of rand_perm_cam.mat from the SYSU-MM01 "
            "evaluation code (data_split/rand_perm_cam.mat)"
        )
    perms = rand_perm_cam if isinstance(rand_perm_cam, dict) else load_rand_perm_cam(rand_perm_cam)
    # Identities of the whole pool (also those without visible images), as the MATLAB loop over test ids.
    for pid in {r.orig_pid for r in pool}:
        for cam in cameras:
            groups.setdefault((pid, cam), [])
    return [_official_sysu_draw(groups, cameras, t, shots, perms, pool) for t in trials]


def llcm_gallery_indices(pool: Sequence[ImageRecord], gallery_modality: str, trial: int = 0) -> np.ndarray:
    """Pool indices of the LLCM gallery of one trial: one image per (identity, camera) of
    ``gallery_modality``, drawn as the LLCM authors' test code does (see module docstring)."""
    return _llcm_gallery_draws(pool, gallery_modality, [trial])[0]


def _llcm_gallery_draws(pool: Sequence[ImageRecord], gallery_modality: str, trials: Sequence[int]) -> list[np.ndarray]:
    _, cams, mods = _pool_columns(pool)
    candidates = np.flatnonzero(mods == MODALITY_CODE[gallery_modality])
    cameras = sorted(set(cams[candidates].tolist()))
    groups = _groups(pool, candidates)
    return [_seeded_draw(groups, cameras, t, 1) for t in trials]


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------


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


def _run_trials(
    name: str,
    settings: dict,
    features: torch.Tensor,
    pool: Sequence[ImageRecord],
    query_idx: np.ndarray,
    gallery_draws: list[np.ndarray],
    *,
    cam_rule: str | None,
    dedup_cmc: bool,
    metric: str,
    normalize: bool,
    rerank: bool,
    rerank_params: dict | None,
    max_rank: int,
    precision: str = "auto",
) -> ProtocolResult:
    """Rank every trial: one query x union-of-galleries product, then all trials in one batched pass."""
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
        from vireid.evaluation.rerank_modality import rerank_distances, rerank_settings

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


def sysu_protocol(
    features: Any,
    pool: Sequence[ImageRecord],
    mode: str = "all",
    shots: int = 1,
    trials: int = 10,
    draw: str = "seeded",
    rand_perm_cam: str | os.PathLike | RandPermCam | None = None,
    rerank: bool = False,
    rerank_params: dict | None = None,
    metric: str = "euclidean",
    normalize: bool = True,
    max_rank: int = 20,
    precision: str = "auto",
) -> ProtocolResult:
    """SYSU-MM01 all-search / indoor-search, single-shot (``shots=1``) or multi-shot (``shots=10``).

    Query: every infrared image (cameras 3 and 6) of the pool, in both modes. Gallery per trial
    (0..trials-1): ``shots`` visible images per identity and camera of the mode (all: 1, 2, 4, 5;
    indoor: 1, 2), drawn by ``draw`` (module docstring). Camera rule ``"sysu"`` (cam-3 queries ignore
    cam 2) and the identity-de-duplicated CMC of the reference evaluation. ``precision``: ``"auto"``,
    ``"fp32"`` or ``"certified"`` (module docstring); results are the fp32 path's in every case.
    """
    if trials < 1:
        raise ProtocolError(f"trials must be at least 1, got {trials}")
    feats = _check_features(features, pool)
    draws = _sysu_gallery_draws(pool, mode, shots, range(trials), draw, rand_perm_cam)
    _, cams, mods = _pool_columns(pool)
    query_idx = np.flatnonzero((mods == MODALITY_CODE[INFRARED]) & np.isin(cams, SYSU_QUERY_CAMERAS))
    name = f"sysu-{mode}-{'single' if shots == 1 else 'multi'}"
    settings = {"dataset": "sysu-mm01", "mode": mode, "shots": shots, "trials": trials, "draw": draw}
    return _run_trials(
        name, settings, feats, pool, query_idx, draws, cam_rule="sysu", dedup_cmc=True, metric=metric,
        normalize=normalize, rerank=rerank, rerank_params=rerank_params, max_rank=max_rank, precision=precision,
    )  # fmt: skip


_REGDB_DIRECTIONS = {"visible-to-thermal": ("v2t", VISIBLE, INFRARED), "thermal-to-visible": ("t2v", INFRARED, VISIBLE)}


def regdb_protocol(
    features: Any,
    pool: Sequence[ImageRecord],
    direction: str = "visible-to-thermal",
    split: int | None = None,
    rerank: bool = False,
    rerank_params: dict | None = None,
    metric: str = "euclidean",
    normalize: bool = True,
    max_rank: int = 20,
    precision: str = "auto",
) -> ProtocolResult:
    """RegDB, one split (one trained model): query = every test image of one modality, gallery =
    every test image of the other (thermal records have modality ``"infrared"``). No camera rule,
    plain CMC. Average the 10 splits with :func:`aggregate_results`; ``split`` is only recorded."""
    if direction not in _REGDB_DIRECTIONS:
        raise ProtocolError(f"unknown RegDB direction {direction!r}; use 'visible-to-thermal' or 'thermal-to-visible'")
    short, query_mod, gallery_mod = _REGDB_DIRECTIONS[direction]
    feats = _check_features(features, pool)
    _, _, mods = _pool_columns(pool)
    query_idx = np.flatnonzero(mods == MODALITY_CODE[query_mod])
    gallery_idx = np.flatnonzero(mods == MODALITY_CODE[gallery_mod])
    settings = {"dataset": "regdb", "direction": direction, "split": split, "draw": "all"}
    return _run_trials(
        f"regdb-{short}", settings, feats, pool, query_idx, [gallery_idx], cam_rule=None, dedup_cmc=False,
        metric=metric, normalize=normalize, rerank=rerank, rerank_params=rerank_params, max_rank=max_rank,
        precision=precision,
    )  # fmt: skip


_LLCM_DIRECTIONS = {"visible-to-infrared": ("v2i", VISIBLE, INFRARED), "infrared-to-visible": ("i2v", INFRARED, VISIBLE)}


def llcm_protocol(
    features: Any,
    pool: Sequence[ImageRecord],
    direction: str = "visible-to-infrared",
    trials: int = 10,
    rerank: bool = False,
    rerank_params: dict | None = None,
    metric: str = "euclidean",
    normalize: bool = True,
    max_rank: int = 20,
    precision: str = "auto",
) -> ProtocolResult:
    """LLCM: query = every test image of one modality; gallery per trial = one image per
    (identity, camera) of the other, drawn as the LLCM test code does (seed = trial, 0-based).
    Camera rule ``"same-camera"``, identity-de-duplicated CMC."""
    if direction not in _LLCM_DIRECTIONS:
        raise ProtocolError(f"unknown LLCM direction {direction!r}; use 'visible-to-infrared' or 'infrared-to-visible'")
    if trials < 1:
        raise ProtocolError(f"trials must be at least 1, got {trials}")
    short, query_mod, gallery_mod = _LLCM_DIRECTIONS[direction]
    feats = _check_features(features, pool)
    _, _, mods = _pool_columns(pool)
    query_idx = np.flatnonzero(mods == MODALITY_CODE[query_mod])
    draws = _llcm_gallery_draws(pool, gallery_mod, range(trials))
    settings = {"dataset": "llcm", "direction": direction, "trials": trials, "draw": "seeded"}
    return _run_trials(
        f"llcm-{short}", settings, feats, pool, query_idx, draws, cam_rule="same-camera", dedup_cmc=True,
        metric=metric, normalize=normalize, rerank=rerank, rerank_params=rerank_params, max_rank=max_rank,
        precision=precision,
    )  # fmt: skip


def given_protocol(
    qf: Any,
    gf: Any,
    q_records: Sequence[ImageRecord],
    g_records: Sequence[ImageRecord],
    cam_rule: str | None = None,
    dedup_cmc: bool = False,
    rerank: bool = False,
    rerank_params: dict | None = None,
    metric: str = "euclidean",
    normalize: bool = True,
    max_rank: int = 20,
    precision: str = "auto",
) -> ProtocolResult:
    """User data with an explicit query and gallery (one trial)."""
    if isinstance(qf, tuple) or isinstance(gf, tuple):
        raise ProtocolError("protocol 'given' takes one feature tensor for the query and one for the gallery, not pairs")
    q = _check_features(qf, q_records)
    g = _check_features(gf, g_records).to(q.device)
    if cam_rule not in (None, "sysu", "same-camera"):
        raise ProtocolError(f"unknown cam_rule {cam_rule!r}; use none, 'sysu' or 'same-camera'")
    pool = list(q_records) + list(g_records)
    feats = torch.cat([q, g.to(q.dtype)])
    nq = len(q_records)
    settings = {"dataset": "given", "draw": "given"}
    return _run_trials(
        "given", settings, feats, pool, np.arange(nq), [np.arange(nq, len(pool))], cam_rule=cam_rule,
        dedup_cmc=dedup_cmc, metric=metric, normalize=normalize, rerank=rerank, rerank_params=rerank_params,
        max_rank=max_rank, precision=precision,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolSetting:
    """A named setting: a runner with some options fixed (the name a CLI asks for)."""

    name: str
    runner: Callable[..., ProtocolResult]
    fixed: dict
    description: str

    def __call__(self, features: Any, pool: Sequence[ImageRecord], **options: Any) -> ProtocolResult:
        clash = sorted(set(options) & set(self.fixed))
        if clash:
            raise ProtocolError(f"protocol {self.name} fixes {', '.join(clash)}; pick another protocol name instead")
        return self.runner(features, pool, **self.fixed, **options)


def _given_from_pool(
    features: Any,
    pool: Sequence[ImageRecord],
    *,
    gallery_features: Any = None,
    gallery_records: Sequence[ImageRecord] | None = None,
    **options: Any,
) -> ProtocolResult:
    if gallery_features is None or gallery_records is None:
        raise ProtocolError("protocol 'given' needs gallery_features and gallery_records (features/pool are the query)")
    return given_protocol(features, gallery_features, pool, gallery_records, **options)


PROTOCOLS: Registry[ProtocolSetting] = Registry("protocol")

_SETTINGS = [
    ("sysu-all-single", sysu_protocol, {"mode": "all", "shots": 1}, "SYSU-MM01 all-search, single-shot"),
    ("sysu-all-multi", sysu_protocol, {"mode": "all", "shots": SYSU_MULTI_SHOT}, "SYSU-MM01 all-search, multi-shot"),
    ("sysu-indoor-single", sysu_protocol, {"mode": "indoor", "shots": 1}, "SYSU-MM01 indoor-search, single-shot"),
    (
        "sysu-indoor-multi",
        sysu_protocol,
        {"mode": "indoor", "shots": SYSU_MULTI_SHOT},
        "SYSU-MM01 indoor-search, multi-shot",
    ),
    ("regdb-v2t", regdb_protocol, {"direction": "visible-to-thermal"}, "RegDB visible -> thermal (one split)"),
    ("regdb-t2v", regdb_protocol, {"direction": "thermal-to-visible"}, "RegDB thermal -> visible (one split)"),
    ("llcm-v2i", llcm_protocol, {"direction": "visible-to-infrared"}, "LLCM visible -> infrared"),
    ("llcm-i2v", llcm_protocol, {"direction": "infrared-to-visible"}, "LLCM infrared -> visible"),
    ("given", _given_from_pool, {}, "explicit query (features/pool) and gallery (gallery_features/gallery_records)"),
]
for _name, _runner, _fixed, _description in _SETTINGS:
    PROTOCOLS.register(_name)(ProtocolSetting(_name, _runner, _fixed, _description))


def run_protocol(name: str, features: Any, pool: Sequence[ImageRecord], **options: Any) -> ProtocolResult:
    """Run the registered setting ``name`` (see ``PROTOCOLS.names()``) on a pool and its features.

    For ``"given"``, ``features``/``pool`` are the query side and ``gallery_features`` /
    ``gallery_records`` must be passed as options.
    """
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS.names())}")
    return PROTOCOLS.get(name)(features, pool, **options)
