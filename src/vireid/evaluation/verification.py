"""Verification by a similarity threshold: pair scores, ROC curve, equal error rate, TAR at a FAR.

The survey (the survey, §3.1) describes the last step of cross-modality re-identification as
matching: "the similarity is calculated; if the similarity exceeds the set threshold, it is
determined as the same pedestrian". This module chooses that threshold from data.

* A *pair* is one infrared and one visible image (cross-modality only); it is *genuine* when both
  show the same identity and an *impostor* pair otherwise. Its score is the cosine similarity of
  the two L2-normalised embeddings (higher = more alike); the decision is
  ``same person  <=>  score >= threshold``.
* For a threshold t: FAR(t) (false-accept rate) = impostor pairs with score >= t / impostor pairs;
  TAR(t) (true-accept rate) = genuine pairs with score >= t / genuine pairs; FRR = 1 - TAR.
* :func:`roc_curve` sorts all scores once (descending) and reads TAR/FAR at every distinct score
  from cumulative sums; :func:`equal_error_rate` is where FAR = FRR (linear interpolation between
  the two neighbouring ROC points); :func:`tar_at_far` is the best TAR whose FAR does not exceed
  the target, with the (lowest) threshold that achieves it.

Everything is vectorised: similarities come from chunked matrix products, the genuine/impostor
split from one identity comparison per chunk, and impostor sub-sampling (when there are more
impostor pairs than ``max_impostors``) draws seeded random (row, column) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Default false-accept rate of the stored operating point (1 %: with a few hundred validation
#: identities there are ~1e5-1e6 impostor pairs, so 1e-2 is estimated from >= 1e3 accepted impostors;
#: 1e-3 is also reported).
DEFAULT_FAR = 1e-2
#: Impostor pairs kept at most (beyond this, a seeded uniform sample); 2M scores cost 8 MB.
DEFAULT_MAX_IMPOSTORS = 2_000_000
#: Rows of the similarity matrix computed at once.
_ROW_CHUNK = 1024


@dataclass
class PairScores:
    """Cosine similarities of the genuine and impostor pairs, and how they were drawn."""

    genuine: np.ndarray  # float32 [G]
    impostor: np.ndarray  # float32 [I]
    total_impostors: int  # impostor pairs that exist (I < total when sub-sampled)

    @property
    def sampled(self) -> bool:
        return self.impostor.shape[0] < self.total_impostors

    @property
    def num_pairs(self) -> int:
        return int(self.genuine.shape[0] + self.impostor.shape[0])


@dataclass
class RocCurve:
    """ROC points in order of decreasing threshold: ``far[k]``/``tar[k]`` are the rates of
    ``score >= thresholds[k]``; point 0 is (0, 0) at threshold +inf."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    num_genuine: int
    num_impostor: int


def _normalised(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2:
        raise ValueError(f"features must be 2-D [num_images, dim], got shape {tuple(t.shape)}")
    return F.normalize(t.float(), dim=1)


def cross_modality_pair_scores(
    features_a: Any,
    pids_a: Sequence[int] | np.ndarray,
    features_b: Any,
    pids_b: Sequence[int] | np.ndarray,
    *,
    max_impostors: int | None = DEFAULT_MAX_IMPOSTORS,
    seed: int = 0,
) -> PairScores:
    """Scores of every (a, b) pair: all genuine pairs, and all impostor pairs or a seeded sample.

    ``features_a`` (e.g. infrared) and ``features_b`` (e.g. visible) are embeddings [Na, D] / [Nb, D]
    (normalised here); ``pids_*`` their identities. With more than ``max_impostors`` impostor pairs
    (None: no limit), ``max_impostors`` (row, column) pairs are drawn uniformly with replacement
    among all pairs of different identities (rejection of genuine draws, seeded), so FAR estimates
    stay unbiased while the memory stays bounded.
    """
    a, b = _normalised(features_a), _normalised(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a have {a.shape[1]} dims but features_b have {b.shape[1]}")
    pa = np.asarray(pids_a).reshape(-1)
    pb = np.asarray(pids_b).reshape(-1)
    if pa.shape[0] != a.shape[0] or pb.shape[0] != b.shape[0]:
        raise ValueError("one identity per feature row is needed for both sets")
    # genuine pairs per identity: count_a(pid) * count_b(pid)
    ids, inv = np.unique(np.concatenate([pa, pb]), return_inverse=True)
    ca = np.bincount(inv[: len(pa)], minlength=len(ids))
    cb = np.bincount(inv[len(pa):], minlength=len(ids))
    num_genuine = int((ca * cb).sum())
    total_impostors = int(len(pa) * len(pb) - num_genuine)
    take_all = max_impostors is None or total_impostors <= max_impostors

    la = torch.as_tensor(inv[: len(pa)], dtype=torch.long)
    lb = torch.as_tensor(inv[len(pa):], dtype=torch.long)
    genuine_parts, impostor_parts = [], []
    for start in range(0, a.shape[0], _ROW_CHUNK):
        block = a[start:start + _ROW_CHUNK] @ b.T  # [R, Nb]
        same = la[start:start + _ROW_CHUNK, None] == lb[None, :]
        genuine_parts.append(block[same])
        if take_all:
            impostor_parts.append(block[~same])
    genuine = torch.cat(genuine_parts) if genuine_parts else torch.zeros(0)
    if take_all:
        impostor = torch.cat(impostor_parts) if impostor_parts else torch.zeros(0)
    else:
        impostor = _sampled_impostor_scores(a, b, la, lb, int(max_impostors), seed)
    return PairScores(genuine.numpy().astype(np.float32), impostor.numpy().astype(np.float32), total_impostors)


def _sampled_impostor_scores(a: torch.Tensor, b: torch.Tensor, la: torch.Tensor, lb: torch.Tensor,
                             count: int, seed: int) -> torch.Tensor:
    """``count`` impostor scores of uniformly drawn (row, column) pairs of different identities."""
    gen = torch.Generator().manual_seed(int(seed))
    out: list[torch.Tensor] = []
    have = 0
    while have < count:
        # draw a little more than needed: genuine pairs are rejected
        n = int((count - have) * 1.1) + 16
        rows = torch.randint(0, a.shape[0], (n,), generator=gen)
        cols = torch.randint(0, b.shape[0], (n,), generator=gen)
        keep = la[rows] != lb[cols]
        rows, cols = rows[keep][: count - have], cols[keep][: count - have]
        for start in range(0, rows.shape[0], 1 << 18):
            r, c = rows[start:start + (1 << 18)], cols[start:start + (1 << 18)]
            out.append((a[r] * b[c]).sum(dim=1))
        have += rows.shape[0]
    return torch.cat(out)


def roc_curve(genuine: np.ndarray, impostor: np.ndarray) -> RocCurve:
    """ROC of the decision ``score >= t`` over every distinct score (one descending sort)."""
    genuine = np.asarray(genuine, dtype=np.float64).reshape(-1)
    impostor = np.asarray(impostor, dtype=np.float64).reshape(-1)
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError(f"a ROC curve needs genuine and impostor pairs, got {genuine.size} and {impostor.size}")
    if not (np.isfinite(genuine).all() and np.isfinite(impostor).all()):
        raise ValueError("pair scores must be finite")
    scores = np.concatenate([genuine, impostor])
    is_genuine = np.concatenate([np.ones(genuine.size, dtype=np.int64), np.zeros(impostor.size, dtype=np.int64)])
    order = np.argsort(-scores, kind="stable")
    scores, is_genuine = scores[order], is_genuine[order]
    tp = np.cumsum(is_genuine)
    fp = np.arange(1, scores.size + 1) - tp
    # one point per distinct score: the last position of each run of equal scores
    last = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    tar = np.r_[0.0, tp[last] / genuine.size]
    far = np.r_[0.0, fp[last] / impostor.size]
    thresholds = np.r_[np.inf, scores[last]]
    return RocCurve(far, tar, thresholds, int(genuine.size), int(impostor.size))


def equal_error_rate(roc: RocCurve) -> tuple[float, float]:
    """(EER, threshold): the rate where FAR = FRR (= 1 - TAR), linearly interpolated between the two
    ROC points around the crossing, and the ROC threshold closest to it (smallest |FAR - FRR|)."""
    frr = 1.0 - roc.tar
    diff = roc.far - frr  # increases from -1 (threshold +inf) to >= 0 (lowest threshold: FRR = 0)
    k = int(np.argmax(diff >= 0))
    if k == 0:
        eer = float(roc.far[0])
    else:
        d0, d1 = diff[k - 1], diff[k]
        w = d0 / (d0 - d1) if d1 != d0 else 0.0
        eer = float(roc.far[k - 1] + w * (roc.far[k] - roc.far[k - 1]))
    best = int(np.argmin(np.abs(diff[1:]))) + 1  # skip the +inf point
    return eer, float(roc.thresholds[best])


def tar_at_far(roc: RocCurve, far_target: float) -> tuple[float, float, float]:
    """(TAR, threshold, achieved FAR) of the lowest threshold whose FAR does not exceed ``far_target``.

    FAR only grows as the threshold falls, so this is also the highest TAR at that FAR. When even
    the highest score of an impostor would be accepted (no threshold reaches the target), the
    threshold is just above the highest score (TAR 0).
    """
    if not 0.0 <= far_target <= 1.0:
        raise ValueError(f"far_target must be within [0, 1], got {far_target}")
    k = int(np.flatnonzero(roc.far <= far_target)[-1])
    threshold = float(roc.thresholds[k])
    if not np.isfinite(threshold):  # point 0: nothing accepted; report a finite threshold above every score
        threshold = float(np.nextafter(np.float32(roc.thresholds[1]), np.float32(np.inf)))
    return float(roc.tar[k]), threshold, float(roc.far[k])


def rates_at_threshold(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(TAR, FAR) of ``score >= threshold`` on given pairs (e.g. the test set at the calibrated threshold)."""
    genuine = np.asarray(genuine).reshape(-1)
    impostor = np.asarray(impostor).reshape(-1)
    tar = float((genuine >= threshold).mean()) if genuine.size else float("nan")
    far = float((impostor >= threshold).mean()) if impostor.size else float("nan")
    return tar, far


def downsample_roc(roc: RocCurve, points: int = 256) -> dict[str, list[float]]:
    """At most ``points`` ROC points (log-spaced in FAR, plus the ends) as plain lists, for storing
    with a model and plotting later."""
    if roc.far.size <= points:
        idx = np.arange(roc.far.size)
    else:
        targets = np.r_[0.0, np.logspace(np.log10(max(1.0 / roc.num_impostor, 1e-9)), 0.0, points - 2)]
        idx = np.unique(np.r_[np.searchsorted(roc.far, targets, side="right") - 1, roc.far.size - 1].clip(0))
    thresholds = np.where(np.isfinite(roc.thresholds[idx]), roc.thresholds[idx], 1.0 + 1e-6)
    return {"far": roc.far[idx].tolist(), "tar": roc.tar[idx].tolist(), "thresholds": thresholds.tolist()}


def summarize_verification(scores: PairScores, far_target: float = DEFAULT_FAR, *, criterion: str = "far",
                           split: str = "val", extra_fars: Sequence[float] = (1e-3, 1e-2, 1e-1)) -> dict:
    """Calibration record of a set of pairs (the dict stored with a model under ``"verification"``).

    ``threshold`` is the operating point chosen by ``criterion``: ``"far"`` (default) the lowest
    threshold with FAR <= ``far_target`` (``tar_at_far`` is its TAR), ``"eer"`` the equal-error
    threshold. Both thresholds are kept (``threshold_far``, ``threshold_eer``); ``tar_at`` maps a
    few standard FARs to their TAR; ``roc`` holds a down-sampled curve for plots.
    """
    if criterion not in ("far", "eer"):
        raise ValueError(f"criterion must be 'far' or 'eer', got {criterion!r}")
    roc = roc_curve(scores.genuine, scores.impostor)
    eer, threshold_eer = equal_error_rate(roc)
    tar, threshold_far, achieved = tar_at_far(roc, far_target)
    threshold = threshold_far if criterion == "far" else threshold_eer
    op_tar, op_far = rates_at_threshold(scores.genuine, scores.impostor, threshold)
    record = {
        "metric": "cosine",
        "threshold": threshold,
        "criterion": criterion,
        "operating_point": {"far": op_far, "tar": op_tar},  # rates of ``score >= threshold`` on these pairs
        "eer": eer,
        "threshold_eer": threshold_eer,
        "far_target": float(far_target),
        "tar_at_far": tar,
        "far_achieved": achieved,
        "threshold_far": threshold_far,
        "tar_at": {f"{f:g}": tar_at_far(roc, f)[0] for f in extra_fars},
        "split": split,
        "num_pairs": scores.num_pairs,
        "num_genuine": int(scores.genuine.size),
        "num_impostor": int(scores.impostor.size),
        "impostors_sampled": bool(scores.sampled),
        "roc": downsample_roc(roc),
    }
    return record


__all__ = [
    "DEFAULT_FAR",
    "DEFAULT_MAX_IMPOSTORS",
    "PairScores",
    "RocCurve",
    "cross_modality_pair_scores",
    "downsample_roc",
    "equal_error_rate",
    "rates_at_threshold",
    "roc_curve",
    "summarize_verification",
    "tar_at_far",
]
