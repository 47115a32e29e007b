"""Ranking metrics of re-identification: CMC, mAP and mINP under the official camera rules.

Conventions (see ``docs/protocols.md`` of the shared material):

* ``distmat[i, j]`` is a *distance* between query ``i`` and gallery image ``j``: smaller means
  more similar. Each query's gallery is ranked by ascending distance; equal distances keep the
  gallery order (stable sort), so ties are broken by gallery index, identically in the fast path
  and in the loop reference.
* A camera rule removes gallery images from a query's ranking *before* anything is measured
  (the "filtered ranking"):

  - ``None``: nothing is removed;
  - ``"sysu"``: a query from camera 3 ignores every gallery image from camera 2, whatever its
    identity (cameras 2 and 3 of SYSU-MM01 share a location);
  - ``"same-camera"``: gallery images with the query's identity *and* the query's camera are
    ignored (LLCM, NPU-ReID, Market-1501).

* CMC: the rank of the first correct match in the filtered ranking. With ``dedup_cmc=True`` the
  filtered ranking is first reduced to one entry per identity (each identity's best position,
  order preserved), as in the reference SYSU-MM01 and LLCM evaluation code.
* AP: the mean over the correct matches of the precision at their (filtered) positions.
* mINP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI
  2021, Eq. 6): number of correct matches divided by the 1-based filtered position of the hardest
  (last) correct match.
* Queries left without any correct match after filtering are excluded from every average.

:func:`evaluate_ranking` is vectorised in torch (chunks of queries, no Python loop per query);
:func:`evaluate_ranking_trials` ranks several galleries (trials) that are column subsets of one
query x union distance matrix in one batched pass; :func:`evaluate_ranking_loop` is the plain
per-query twin the tests hold both against.

Fast float32 ranking: only the positions of the few correct matches matter. Each entry gets an
int64 key that increases in the stable-sort order (the float's order-preserving bit pattern, then
the gallery position); the sorted keys of the correct matches split the row into buckets, and
``searchsorted`` + a bucket histogram give, for the n-th correct match, the number of kept entries
ranked before it -- no sort of the row and no [queries, matches, gallery] comparison cube.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CAM_RULES = (None, "sysu", "same-camera")
#: SYSU-MM01: queries of this (infrared, indoor) camera ignore gallery images of ``SYSU_SKIPPED_CAMERA``.
SYSU_QUERY_CAMERA = 3
SYSU_SKIPPED_CAMERA = 2
# Elements per chunk of the [queries, gallery(, matches)] working tensors (a few such tensors live at once).
_CHUNK_ELEMENTS = 1 << 21
# Up to this many gallery images per identity, ranks are found by counting instead of sorting.
_COUNTING_MAX_MATCHES = 16
# The trial ranker's chunks hold twice as many elements (its tensors are float32/bool): few chunks
# mean few parallel ops, and on a shared 2-core machine every op can stall on an OpenMP barrier
# (measured: 1<<17 elements per chunk 25 s, 1<<21 1.9 s for the same ranking at load 4).


def _check_cam_rule(cam_rule: str | None, q_camids: Any, g_camids: Any) -> None:
    if cam_rule not in CAM_RULES:
        raise ValueError(f"unknown cam_rule {cam_rule!r}; use one of None, 'sysu', 'same-camera'")
    if cam_rule is not None and (q_camids is None or g_camids is None):
        raise ValueError(f"cam_rule={cam_rule!r} needs q_camids and g_camids")


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device)
    return torch.as_tensor(np.asarray(x), device=device)


def _finish(first_positions: np.ndarray, ap: np.ndarray, inp: np.ndarray, max_rank: int) -> dict:
    """Average per-valid-query figures into the result dict."""
    num_valid = int(first_positions.shape[0])
    if num_valid == 0:
        raise ValueError("no query has a correct match in its gallery after the camera rule; nothing to evaluate")
    hits = np.bincount(np.minimum(first_positions, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hits).astype(np.float64) / num_valid
    return {
        "cmc": cmc,
        "mAP": float(np.mean(ap)),
        "mINP": float(np.mean(inp)),
        "num_valid_queries": num_valid,
    }


def _validate_shapes(distmat_shape: tuple, q_pids: np.ndarray, g_pids: np.ndarray, max_rank: int) -> None:
    if len(distmat_shape) != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {tuple(distmat_shape)}")
    if distmat_shape[0] != q_pids.shape[0] or distmat_shape[1] != g_pids.shape[0]:
        raise ValueError(
            f"distmat shape {tuple(distmat_shape)} does not match {q_pids.shape[0]} query and "
            f"{g_pids.shape[0]} gallery identities"
        )
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")


def evaluate_ranking(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    *,
    cam_rule: str | None = None,
    dedup_cmc: bool = False,
    max_rank: int = 20,
) -> dict:
    """CMC, mAP and mINP of a query-by-gallery distance matrix (vectorised, chunked over queries).

    ``distmat`` may be a numpy array or a torch tensor on any device; the work runs on its device.
    Returns ``{"cmc": float64 array [max_rank], "mAP": float, "mINP": float,
    "num_valid_queries": int}`` with values in 0..1. ``cmc[r]`` is the fraction of valid queries
    whose first correct match is within rank ``r + 1``; when the ranking is shorter than
    ``max_rank`` the last value carries forward. See the module docstring for the semantics of
    ``cam_rule`` and ``dedup_cmc``; raises ``ValueError`` when no query keeps a correct match.
    """
    _check_cam_rule(cam_rule, q_camids, g_camids)
    dist = distmat if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    dist = dist.detach()
    if not dist.is_floating_point() or dist.dtype in (torch.float16, torch.bfloat16):
        dist = dist.float()
    device = dist.device
    q_pid_np, g_pid_np = _as_numpy(q_pids).reshape(-1), _as_numpy(g_pids).reshape(-1)
    _validate_shapes(tuple(dist.shape), q_pid_np, g_pid_np, max_rank)
    num_q, num_g = dist.shape
    if dist.dtype == torch.float32 and _max_matches(q_pid_np, g_pid_np) <= _COUNTING_MAX_MATCHES:
        return evaluate_ranking_trials(
            dist, q_pid_np, g_pid_np, [np.arange(num_g)], q_camids, g_camids,
            cam_rule=cam_rule, dedup_cmc=dedup_cmc, max_rank=max_rank,
        )[0]  # fmt: skip

    # Contiguous gallery identity labels 0..P-1 and each query's label (-1: identity not in the gallery).
    g_unique, g_label_np = np.unique(g_pid_np, return_inverse=True)
    q_label_np = np.searchsorted(g_unique, q_pid_np)
    found = (q_label_np < len(g_unique)) & (g_unique[np.minimum(q_label_np, len(g_unique) - 1)] == q_pid_np)
    q_label_np = np.where(found, q_label_np, -1)
    counts_np = np.bincount(g_label_np.reshape(-1), minlength=len(g_unique))
    gallery = _Gallery(
        label=torch.as_tensor(g_label_np.reshape(-1).astype(np.int64), device=device),
        cam=_as_tensor(g_camids, device).reshape(-1).long() if cam_rule is not None else None,
        num_labels=len(g_unique),
        counts=torch.as_tensor(counts_np, device=device),
        offsets=torch.as_tensor(np.cumsum(counts_np) - counts_np, device=device),
        by_label=torch.as_tensor(np.argsort(g_label_np.reshape(-1), kind="stable"), device=device),
        max_count=int(counts_np[q_label_np[q_label_np >= 0]].max()) if (q_label_np >= 0).any() else 0,
    )
    q_label = torch.as_tensor(q_label_np.astype(np.int64), device=device)
    q_cam = _as_tensor(q_camids, device).reshape(-1).long() if cam_rule is not None else None

    # Few correct matches per query (re-id galleries: 1..~20 per identity): locate each one by
    # counting the kept entries ranked before it -- cheaper than sorting the whole row.
    by_counting = 0 < gallery.max_count <= _COUNTING_MAX_MATCHES
    per_row = num_g * (gallery.max_count if by_counting else 1)
    chunk = max(1, _CHUNK_ELEMENTS // max(per_row, 1))
    rank_chunk = _rank_chunk_by_counting if by_counting else _rank_chunk_by_sorting
    first_all, ap_all, inp_all = [], [], []
    for start in range(0, num_q, chunk):
        rows = slice(start, min(start + chunk, num_q))
        out = rank_chunk(
            dist[rows], q_label[rows], q_cam[rows] if q_cam is not None else None, gallery, cam_rule, dedup_cmc
        )
        if out is not None:
            first_all.append(out[0].cpu())
            ap_all.append(out[1].cpu())
            inp_all.append(out[2].cpu())
    if not first_all:
        return _finish(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), max_rank)
    first = torch.cat(first_all).numpy().astype(np.int64)
    return _finish(first, torch.cat(ap_all).numpy(), torch.cat(inp_all).numpy(), max_rank)


@dataclass
class _Gallery:
    """Gallery columns prepared once per call: labels, cameras and the columns grouped by label."""

    label: torch.Tensor  # [Ng] contiguous identity label
    cam: torch.Tensor | None  # [Ng] camera number (only with a camera rule)
    num_labels: int
    counts: torch.Tensor  # [P] images per label
    offsets: torch.Tensor  # [P] start of each label's run in ``by_label``
    by_label: torch.Tensor  # [Ng] gallery columns ordered by label (stable)
    max_count: int  # most gallery images of any query's identity


def _keep_mask(q_label: torch.Tensor, q_cam: torch.Tensor | None, gallery: _Gallery, cam_rule: str | None):
    """[B, Ng] mask of the gallery entries a camera rule leaves in each query's ranking (None: all)."""
    if cam_rule == "sysu":
        return ~((q_cam[:, None] == SYSU_QUERY_CAMERA) & (gallery.cam[None, :] == SYSU_SKIPPED_CAMERA))
    if cam_rule == "same-camera":
        return ~((gallery.label[None, :] == q_label[:, None]) & (gallery.cam[None, :] == q_cam[:, None]))
    return None


_INT64_MAX = torch.iinfo(torch.int64).max


def _stable_order_keys(dist: torch.Tensor, column: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """int64 keys of float32 distances ordered like a stable ascending sort (value, then index)."""
    bits = (dist + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0 (they must tie)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip magnitude bits to reverse their order
    keys = (bits.long() << 32) + column
    return keys.masked_fill(~keep, _INT64_MAX) if keep is not None else keys


def _rank_chunk_by_counting(dist, q_label, q_cam, gallery: _Gallery, cam_rule, dedup_cmc):
    """Metrics of one chunk of queries without sorting (non-float32 distances).

    The filtered position of a gallery entry j is one plus the number of kept entries k ranked
    before it, i.e. with ``d_k < d_j`` or ``d_k == d_j and k < j`` (the stable-sort order). Only
    the query's own identity's columns are needed, gathered as a padded [B, C] block.
    """
    num_g = dist.shape[1]
    device = dist.device
    label = q_label.clamp(min=0)
    slots = torch.arange(gallery.max_count, device=device)
    count = torch.where(q_label >= 0, gallery.counts[label], torch.zeros_like(label))
    slot_used = slots[None, :] < count[:, None]  # [B, C]
    cols = gallery.by_label[(gallery.offsets[label][:, None] + slots[None, :]).clamp(max=num_g - 1)]
    keep = _keep_mask(q_label, q_cam, gallery, cam_rule)
    correct = slot_used if keep is None else slot_used & keep.gather(1, cols)
    num_rel = correct.sum(dim=1)
    valid = num_rel > 0
    if not bool(valid.any()):
        return None
    if not bool(valid.all()):
        dist, cols, correct, num_rel = dist[valid], cols[valid], correct[valid], num_rel[valid]
        keep = keep[valid] if keep is not None else None
    column = torch.arange(num_g, device=device)
    d_correct = dist.gather(1, cols)  # [B, C]

    def ahead_of(slots: torch.Tensor) -> torch.Tensor:
        # [B, S, Ng]: kept entries ranked before the correct entries in ``slots`` [B, S] (stable order)
        d_ref = d_correct.gather(1, slots).unsqueeze(-1)
        col_ref = cols.gather(1, slots).unsqueeze(-1)
        d_all = dist.unsqueeze(1)
        ahead = (d_all < d_ref) | ((d_all == d_ref) & (column < col_ref))
        return ahead & keep.unsqueeze(1) if keep is not None else ahead

    big = num_g + 1
    all_slots = torch.arange(gallery.max_count, device=device).expand(cols.shape[0], -1)
    # (summing bools into int32 is several times faster than the default int64)
    pos = ahead_of(all_slots).sum(dim=-1, dtype=torch.int32).long() + 1  # [B, C] filtered 1-based positions
    pos = torch.where(correct, pos, torch.full_like(pos, big))
    sorted_pos = pos.sort(dim=1).values.double()
    nth = torch.arange(1, gallery.max_count + 1, device=device, dtype=torch.float64)
    in_range = nth[None, :] <= num_rel[:, None]
    ap = torch.where(in_range, nth[None, :] / sorted_pos, torch.zeros_like(sorted_pos)).sum(dim=1) / num_rel
    last = torch.where(correct, pos, torch.zeros_like(pos)).amax(dim=1)
    inp = num_rel.double() / last.double()
    first = sorted_pos[:, 0]
    if dedup_cmc:
        # Kept entries ranked before the first correct match all belong to other identities; the
        # de-duplicated position is one plus the number of distinct identities among them.
        first_slot = pos.argmin(dim=1, keepdim=True)
        ahead = ahead_of(first_slot).squeeze(1)  # [B, Ng]
        per_label = torch.zeros(ahead.shape[0], gallery.num_labels, device=device)
        per_label.scatter_add_(1, gallery.label.expand(ahead.shape[0], -1), ahead.float())
        first = (per_label > 0).sum(dim=1).double() + 1.0
    return first, ap, inp


def _rank_chunk_by_sorting(dist, q_label, q_cam, gallery: _Gallery, cam_rule, dedup_cmc):
    """Metrics of one chunk of queries from the stably sorted rows (for many matches per query)."""
    num_g = dist.shape[1]
    device = dist.device
    order = torch.sort(dist, dim=1, stable=True).indices  # [B, Ng], ties by gallery index
    sorted_label = gallery.label[order]
    matches = sorted_label == q_label[:, None]
    keep = _keep_mask(q_label, q_cam, gallery, cam_rule)
    if keep is not None:
        keep = keep.gather(1, order)
        matches &= keep
        filtered_pos = torch.cumsum(keep, dim=1, dtype=torch.float64)  # 1-based position among kept
    else:
        filtered_pos = torch.arange(1, num_g + 1, device=device, dtype=torch.float64).expand(dist.shape[0], num_g)
    num_rel = matches.sum(dim=1)
    valid = num_rel > 0
    if not bool(valid.any()):
        return None
    matches, filtered_pos, num_rel = matches[valid], filtered_pos[valid], num_rel[valid]
    big = float(num_g + 1)
    match_pos = torch.where(matches, filtered_pos, torch.full_like(filtered_pos, big))
    first_pos = match_pos.amin(dim=1)
    last_pos = torch.where(matches, filtered_pos, torch.zeros_like(filtered_pos)).amax(dim=1)
    hits_so_far = torch.cumsum(matches, dim=1, dtype=torch.float64)
    # filtered_pos is 0 before the first kept entry; those entries are never matches.
    precision = torch.where(matches, hits_so_far / filtered_pos.clamp(min=1.0), torch.zeros_like(hits_so_far))
    ap = precision.sum(dim=1) / num_rel
    inp = num_rel.double() / last_pos
    if dedup_cmc:
        # One plus the number of identities whose best kept entry comes before the first match.
        kept_pos = filtered_pos
        if keep is not None:  # removed entries must not count as identities ranked earlier
            kept_pos = torch.where(keep[valid], filtered_pos, torch.full_like(filtered_pos, big))
        best_by_label = torch.full((kept_pos.shape[0], gallery.num_labels), big, dtype=torch.float64, device=device)
        best_by_label.scatter_reduce_(1, sorted_label[valid], kept_pos, reduce="amin")
        first_pos = (best_by_label < first_pos[:, None]).sum(dim=1).double() + 1.0
    return first_pos, ap, inp


def evaluate_ranking_loop(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    *,
    cam_rule: str | None = None,
    dedup_cmc: bool = False,
    max_rank: int = 20,
) -> dict:
    """Plain per-query numpy twin of :func:`evaluate_ranking` (same signature and result).

    Written to be read, not to be fast: the tests and benchmarks hold the fast path against it.
    """
    _check_cam_rule(cam_rule, q_camids, g_camids)
    dist = _as_numpy(distmat)
    if dist.dtype in (np.float16,) or not np.issubdtype(dist.dtype, np.floating):
        dist = dist.astype(np.float32)
    q_pids, g_pids = _as_numpy(q_pids).reshape(-1), _as_numpy(g_pids).reshape(-1)
    _validate_shapes(dist.shape, q_pids, g_pids, max_rank)
    if cam_rule is not None:
        q_camids, g_camids = _as_numpy(q_camids).reshape(-1), _as_numpy(g_camids).reshape(-1)
    firsts, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        ranked_pids = g_pids[order]
        if cam_rule == "sysu":
            keep = ~((q_camids[i] == SYSU_QUERY_CAMERA) & (g_camids[order] == SYSU_SKIPPED_CAMERA))
        elif cam_rule == "same-camera":
            keep = ~((ranked_pids == q_pids[i]) & (g_camids[order] == q_camids[i]))
        else:
            keep = np.ones(len(order), dtype=bool)
        ranked_pids = ranked_pids[keep]
        correct = ranked_pids == q_pids[i]
        if not correct.any():
            continue
        correct_positions = np.flatnonzero(correct) + 1  # 1-based
        precisions = np.arange(1, len(correct_positions) + 1) / correct_positions
        aps.append(precisions.mean())
        inps.append(len(correct_positions) / correct_positions[-1])
        if dedup_cmc:
            _, first_index = np.unique(ranked_pids, return_index=True)
            dedup_pids = ranked_pids[np.sort(first_index)]
            firsts.append(int(np.flatnonzero(dedup_pids == q_pids[i])[0]) + 1)
        else:
            firsts.append(int(correct_positions[0]))
    return _finish(np.asarray(firsts, dtype=np.int64), np.asarray(aps), np.asarray(inps), max_rank)


# --------------------------------------------------------------------------------------------
# Batched ranking of several trials (column subsets of one query x union distance matrix)
# --------------------------------------------------------------------------------------------


def _max_matches(q_pids: np.ndarray, g_pids: np.ndarray) -> int:
    """Most gallery entries of any identity that some query has (0 when none is shared)."""
    g_unique, counts = np.unique(g_pids, return_counts=True)
    shared = np.isin(g_unique, q_pids)
    return int(counts[shared].max()) if shared.any() else 0


@dataclass
class TrialTable:
    """The galleries of ``T`` trials as padded ``[T, G]`` tables of union columns, prepared once.

    ``label`` are contiguous identity labels shared by all trials (``-1`` on padding), and
    ``correct[t, p]`` lists the gallery positions of label ``p`` in trial ``t`` (``-1`` padded).
    """

    cols: torch.Tensor  # [T, G] union column of each gallery position (0 on padding)
    valid: torch.Tensor  # [T, G] real (not padding) positions
    label: torch.Tensor  # [T, G]
    cam: torch.Tensor | None  # [T, G] (only with a camera rule)
    correct: torch.Tensor  # [T, P, C]
    num_labels: int
    q_label: torch.Tensor  # [Nq] label of each query, -1 when its identity is in no trial
    q_cam: torch.Tensor | None  # [Nq]
    cam_rule: str | None
    # Identity-grouped layout [T, P, C] of the same entries: union column, real slot, camera.
    grouped_cols: torch.Tensor | None = None
    grouped_pad: torch.Tensor | None = None
    grouped_cam: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        q_pids: np.ndarray,
        g_pids: np.ndarray,
        trial_columns: list[np.ndarray],
        q_camids: Any,
        g_camids: Any,
        cam_rule: str | None,
        device: torch.device,
    ) -> TrialTable:
        num_trials, width = len(trial_columns), max(len(c) for c in trial_columns)
        cols = np.zeros((num_trials, width), dtype=np.int64)
        valid = np.zeros((num_trials, width), dtype=bool)
        for t, c in enumerate(trial_columns):
            cols[t, : len(c)], valid[t, : len(c)] = c, True
        used = np.unique(cols[valid])
        g_unique = np.unique(g_pids[used])
        label = np.where(valid, np.searchsorted(g_unique, g_pids[cols]), -1)
        q_label = np.searchsorted(g_unique, q_pids)
        found = (q_label < len(g_unique)) & (g_unique[np.minimum(q_label, len(g_unique) - 1)] == q_pids)
        q_label = np.where(found, q_label, -1)
        counts = np.stack([np.bincount(label[t][valid[t]], minlength=len(g_unique)) for t in range(num_trials)])
        width_c = max(int(counts.max()), 1)
        correct = np.full((num_trials, len(g_unique), width_c), -1, dtype=np.int64)
        for t in range(num_trials):
            positions = np.flatnonzero(valid[t])
            order = positions[np.argsort(label[t][positions], kind="stable")]
            sorted_labels = label[t][order]
            starts = np.cumsum(counts[t]) - counts[t]
            correct[t, sorted_labels, np.arange(len(order)) - starts[sorted_labels]] = order
        as_t = functools.partial(torch.as_tensor, device=device)
        cam = q_cam = None
        if cam_rule is not None:
            g_cam_np = _as_numpy(g_camids).reshape(-1).astype(np.int64)
            cam = as_t(np.where(valid, g_cam_np[cols], -1))
            q_cam = as_t(_as_numpy(q_camids).reshape(-1).astype(np.int64))
        grouped_cols = np.where(correct >= 0, np.take_along_axis(cols[:, None, :], correct.clip(0).reshape(
            num_trials, 1, -1), axis=2).reshape(correct.shape), 0)  # fmt: skip
        grouped_cam = None
        if cam_rule is not None:
            grouped_cam = as_t(np.where(correct >= 0, g_cam_np[grouped_cols], -1))
        return cls(
            as_t(cols), as_t(valid), as_t(label), cam, as_t(correct), len(g_unique), as_t(q_label), q_cam, cam_rule,
            as_t(grouped_cols), as_t(correct < 0), grouped_cam,
        )  # fmt: skip

    def keep(self, rows: slice) -> torch.Tensor:
        """[B, T, G] entries each query of ``rows`` keeps after the camera rule (and padding)."""
        valid = self.valid.unsqueeze(0)
        if self.cam_rule == "sysu":
            return valid & ~((self.q_cam[rows, None, None] == SYSU_QUERY_CAMERA) & (self.cam == SYSU_SKIPPED_CAMERA))
        if self.cam_rule == "same-camera":
            same_id = self.label.unsqueeze(0) == self.q_label[rows, None, None]
            return valid & ~(same_id & (self.cam.unsqueeze(0) == self.q_cam[rows, None, None]))
        return valid.expand(rows.stop - rows.start, -1, -1)

    def correct_positions(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, C] gallery positions of each query's identity per trial, and which slots are real."""
        q_label = self.q_label[rows]
        positions = self.correct[:, q_label.clamp(min=0), :].permute(1, 0, 2)
        real = (positions >= 0) & (q_label >= 0)[:, None, None]
        return positions.clamp(min=0), real

    def rows_per_chunk(self, per_entry: int = 1) -> int:
        return max(1, _CHUNK_ELEMENTS // max(self.cols.numel() * per_entry, 1))


def _rank_trials_block(scores: torch.Tensor, table: TrialTable, rows: slice, dedup_cmc: bool):
    """Per (query, trial) of one block: number of correct matches, first position, AP and INP.

    ``scores`` [B, U] float32 (ascending = better) over the union columns. Returns tensors [B, T].
    """
    batch = scores.shape[0]
    num_trials, width = table.cols.shape
    device = scores.device
    gathered = scores.index_select(1, table.cols.reshape(-1)).view(batch, num_trials, width)
    keep = table.keep(rows)
    keys = _stable_order_keys(gathered, torch.arange(width, device=device), keep)
    positions, real = table.correct_positions(rows)
    slots = positions.shape[-1]
    correct_keys = keys.gather(2, positions).masked_fill(~real, _INT64_MAX).sort(dim=2).values
    num_rel = (correct_keys != _INT64_MAX).sum(dim=2)  # [B, T]
    flat_keys = keys.view(batch * num_trials, width)
    # bucket[k] = number of correct matches ranked before entry k (removed entries: overflow bucket)
    bucket = torch.searchsorted(correct_keys.view(batch * num_trials, slots), flat_keys)
    bucket.masked_fill_(flat_keys == _INT64_MAX, slots)
    histogram = torch.zeros(batch * num_trials, slots + 1, dtype=torch.int32, device=device)
    histogram.scatter_add_(1, bucket, torch.ones_like(bucket, dtype=torch.int32))
    # 1-based filtered position of the n-th correct match = kept entries in buckets 0..n
    pos = histogram.cumsum(dim=1)[:, :slots].view(batch, num_trials, slots).double()
    nth = torch.arange(1, slots + 1, device=device, dtype=torch.float64)
    in_range = nth <= num_rel.unsqueeze(-1)
    rel = num_rel.double().clamp(min=1.0)
    ap = torch.where(in_range, nth / pos, torch.zeros_like(pos)).sum(dim=2) / rel
    last = pos.gather(2, (num_rel - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    inp = num_rel.double() / last
    if dedup_cmc:
        # Entries before the best correct match (bucket 0) of other identities, counted once per identity.
        own = table.label.unsqueeze(0) == table.q_label[rows, None, None]
        ahead = (bucket.view(batch, num_trials, width) == 0) & ~own
        seen = torch.zeros(batch * num_trials, table.num_labels + 1, dtype=torch.int32, device=device)
        seen.scatter_add_(1, (table.label + 1).expand(batch, -1, -1).reshape(batch * num_trials, width),
                          ahead.view(batch * num_trials, width).int())  # fmt: skip
        first = (seen[:, 1:] > 0).sum(dim=1).view(batch, num_trials).double() + 1.0
    else:
        first = pos[:, :, 0]
    return num_rel, first, ap, inp


def _check_trial_columns(trial_columns: Any, num_columns: int) -> list[np.ndarray]:
    cols = [np.asarray(_as_numpy(c), dtype=np.int64).reshape(-1) for c in trial_columns]
    if not cols:
        raise ValueError("trial_columns is empty; pass one array of gallery columns per trial")
    for t, c in enumerate(cols):
        if len(c) == 0:
            raise ValueError(f"trial {t} has an empty gallery; every trial needs at least one gallery column")
        if c.min() < 0 or c.max() >= num_columns:
            raise ValueError(f"trial {t} refers to column {int(c.max())} but distmat has {num_columns} columns")
    return cols


# Up to this many gallery entries per identity and trial, the grouped float32 ranking is used.
_GROUPED_MAX_MATCHES = 8


def _rank_trials_grouped(scores: torch.Tensor, table: TrialTable, rows: slice, dedup_cmc: bool):
    """Float32 ranking of one block in the identity-grouped layout [B, T, P, C].

    Removed and padding entries become +inf; the entries before the c-th best correct match are
    those with a smaller value (one comparison pass per slot c). Ties with a correct match would
    need the gallery order: rows that have one are returned in ``tied`` for the exact key path.
    Needs finite scores.
    """
    batch = scores.shape[0]
    num_trials, num_labels, slots = table.correct.shape
    device = scores.device
    vals = scores.index_select(1, table.grouped_cols.reshape(-1)).view(batch, num_trials, num_labels, slots)
    vals.masked_fill_(table.grouped_pad, float("inf"))
    q_label = table.q_label[rows]
    own_index = q_label.clamp(min=0)[:, None, None, None].expand(batch, num_trials, 1, slots)
    if table.cam_rule == "sysu":
        cam3 = (table.q_cam[rows] == SYSU_QUERY_CAMERA)[:, None, None, None]
        skip = cam3 & (table.grouped_cam == SYSU_SKIPPED_CAMERA)
        vals.masked_fill_(skip, float("inf"))
    elif table.cam_rule == "same-camera":
        own_cam = table.grouped_cam.unsqueeze(0).expand(batch, -1, -1, -1).gather(2, own_index)
        own_vals = vals.gather(2, own_index)
        own_vals.masked_fill_(own_cam == table.q_cam[rows, None, None, None], float("inf"))
        vals.scatter_(2, own_index, own_vals)
    correct = vals.gather(2, own_index).squeeze(2)  # [B, T, C], +inf where removed / padding
    correct.masked_fill_((q_label < 0)[:, None, None], float("inf"))
    correct = correct.sort(dim=2).values
    num_rel = torch.isfinite(correct).sum(dim=2)
    active = int(num_rel.max()) if num_rel.numel() else 0
    lt = torch.zeros(batch, num_trials, slots, dtype=torch.int32, device=device)
    tied = torch.zeros(batch, dtype=torch.bool, device=device)
    ahead_best = None
    for c in range(active):
        ref = correct[:, :, c, None, None]
        below = vals < ref
        lt[:, :, c] = below.sum(dim=(2, 3), dtype=torch.int32)
        at_or_below = (vals <= ref).sum(dim=(2, 3), dtype=torch.int32)
        # a real correct match equals itself: anything more is a tie that needs the gallery order
        tied |= ((at_or_below - lt[:, :, c] > 1) & (c < num_rel)).any(dim=1)
        if c == 0:
            ahead_best = below.any(dim=3)  # [B, T, P]
    pos = lt.double() + 1.0
    nth = torch.arange(1, slots + 1, device=device, dtype=torch.float64)
    in_range = nth <= num_rel.unsqueeze(-1)
    ap = torch.where(in_range, nth / pos, torch.zeros_like(pos)).sum(dim=2) / num_rel.double().clamp(min=1.0)
    last = pos.gather(2, (num_rel - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    inp = num_rel.double() / last
    if dedup_cmc and ahead_best is not None:
        ahead_best.scatter_(2, q_label.clamp(min=0)[:, None, None].expand(batch, num_trials, 1), False)
        first = ahead_best.sum(dim=2).double() + 1.0
    else:
        first = pos[:, :, 0]
    return (num_rel, first, ap, inp), tied


def rank_trials(scores: Any, table: TrialTable, dedup_cmc: bool, row_offset: int = 0):
    """Per (query, trial) figures of rows ``row_offset ..`` of ``table`` from float32 ``scores``.

    Returns numpy arrays [B, T]: number of correct matches, first position, AP, INP. Finite scores
    with few entries per identity take the grouped float32 pass; rows with a tie at a correct
    match, non-finite scores or many entries per identity take the exact int64-key pass. Chunked
    over queries so the working tensors stay bounded.
    """
    out = [[], [], [], []]
    grouped = table.correct.shape[-1] <= _GROUPED_MAX_MATCHES and bool(torch.isfinite(scores).all())
    per_row = table.correct.numel() if grouped else table.cols.numel() * 4
    chunk = max(1, 2 * _CHUNK_ELEMENTS // max(per_row, 1))
    for start in range(0, scores.shape[0], chunk):
        stop = min(start + chunk, scores.shape[0])
        rows = slice(row_offset + start, row_offset + stop)
        if grouped:
            parts, tied = _rank_trials_grouped(scores[start:stop], table, rows, dedup_cmc)
            if bool(tied.any()):
                index = torch.nonzero(tied).squeeze(1)
                exact = [
                    _rank_trials_block(scores[start + i][None], table, slice(rows.start + i, rows.start + i + 1), dedup_cmc)
                    for i in index.tolist()
                ]
                parts = [p.clone() for p in parts]
                for part, fixed in zip(parts, zip(*exact)):
                    part[index] = torch.cat(fixed).to(part.dtype)
        else:
            parts = _rank_trials_block(scores[start:stop], table, rows, dedup_cmc)
        for acc, part in zip(out, parts):
            acc.append(part.cpu())
    return [torch.cat(acc).numpy() for acc in out]


def finish_trials(num_rel: np.ndarray, first: np.ndarray, ap: np.ndarray, inp: np.ndarray, max_rank: int) -> list[dict]:
    """Per-trial metric dicts (as :func:`evaluate_ranking` returns) from per (query, trial) figures."""
    results = []
    for t in range(num_rel.shape[1]):
        valid = num_rel[:, t] > 0
        results.append(_finish(first[valid, t].astype(np.int64), ap[valid, t], inp[valid, t], max_rank))
    return results


def evaluate_ranking_trials(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    trial_columns: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    *,
    cam_rule: str | None = None,
    dedup_cmc: bool = False,
    max_rank: int = 20,
) -> list[dict]:
    """Metrics of several trials that share one query set, in one batched pass.

    ``distmat`` is ``[Nq, U]`` over a union of gallery images with ``g_pids``/``g_camids`` per
    column; trial ``t`` ranks the columns ``trial_columns[t]`` in that order (the order breaks
    ties). Equal to ``[evaluate_ranking(distmat[:, c], q_pids, g_pids[c], q_camids, g_camids[c],
    ...) for c in trial_columns]``; float32 input takes the batched key path, other dtypes are
    ranked trial by trial.
    """
    _check_cam_rule(cam_rule, q_camids, g_camids)
    dist = distmat if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    dist = dist.detach()
    if not dist.is_floating_point() or dist.dtype in (torch.float16, torch.bfloat16):
        dist = dist.float()
    q_pid_np, g_pid_np = _as_numpy(q_pids).reshape(-1), _as_numpy(g_pids).reshape(-1)
    _validate_shapes(tuple(dist.shape), q_pid_np, g_pid_np, max_rank)
    cols = _check_trial_columns(trial_columns, dist.shape[1])
    if dist.dtype != torch.float32:
        g_cam_np = _as_numpy(g_camids).reshape(-1) if g_camids is not None else None
        return [
            evaluate_ranking(
                dist[:, torch.as_tensor(c, device=dist.device)], q_pid_np, g_pid_np[c], q_camids,
                g_cam_np[c] if g_cam_np is not None else None, cam_rule=cam_rule, dedup_cmc=dedup_cmc,
                max_rank=max_rank,
            )  # fmt: skip
            for c in cols
        ]
    table = TrialTable.build(q_pid_np, g_pid_np, cols, q_camids, g_camids, cam_rule, dist.device)
    return finish_trials(*rank_trials(dist, table, dedup_cmc), max_rank)


def undecided_comparisons(
    z: torch.Tensor, w: torch.Tensor, table: TrialTable, row_offset: int = 0, near_zero: float | None = None
) -> torch.Tensor:
    """[B] int64: per query row, the comparisons the certified screen leaves undecided (0: certified).

    ``z``/``w`` [B, U] are approximate scores and certified half-widths for rows
    ``row_offset .. row_offset + B`` of ``table`` (see :func:`vireid.evaluation.distance.bf16_screen`).
    A comparison of a kept entry ``k`` of another identity with a correct match ``j`` of the same
    trial is decided when ``|z_k - z_j| > w_k + w_j``. The metrics use only such comparisons: the
    n-th correct match sits at position n + (other-identity entries before it), and the
    de-duplicated CMC counts the identities with an entry before the best correct match; the order
    among the correct matches themselves changes nothing. So a row with none undecided ranks
    exactly as the fp32 path would. ``near_zero``: a comparison whose farther entry has a lower
    bound ``z - w`` at or below it is undecided too (the fp32 path clamps tiny squared distances
    to 0, which would create a tie).
    """
    out = []
    chunk = table.rows_per_chunk(per_entry=max(int(table.correct.shape[-1]), 1) * 3)
    for start in range(0, z.shape[0], chunk):
        stop = min(start + chunk, z.shape[0])
        rows = slice(row_offset + start, row_offset + stop)
        out.append(_undecided_block(z[start:stop], w[start:stop], table, rows, near_zero))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def _undecided_block(z, w, table: TrialTable, rows: slice, near_zero: float | None) -> torch.Tensor:
    batch = z.shape[0]
    num_trials, width = table.cols.shape
    flat_cols = table.cols.reshape(-1)
    zg = z.index_select(1, flat_cols).view(batch, num_trials, width)
    wg = w.index_select(1, flat_cols).view(batch, num_trials, width)
    keep = table.keep(rows)
    positions, real = table.correct_positions(rows)
    real &= keep.gather(2, positions)
    zc, wc = zg.gather(2, positions), wg.gather(2, positions)
    own = table.label.unsqueeze(0) == table.q_label[rows, None, None]  # [B, T, G]
    z_k, w_k, z_j, w_j = zg.unsqueeze(2), wg.unsqueeze(2), zc.unsqueeze(3), wc.unsqueeze(3)
    undecided = (z_k - z_j).abs_() <= w_k + w_j  # [B, T, C, G]
    if near_zero is not None:  # the farther entry's distance must be certainly above the clamp at 0
        undecided |= torch.where(z_k > z_j, z_k - w_k, z_j - w_j) <= near_zero
    undecided &= (keep & ~own).unsqueeze(2) & real.unsqueeze(3)
    count = undecided.flatten(1).sum(dim=1)
    return count
