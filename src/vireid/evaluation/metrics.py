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
:func:`evaluate_ranking_loop` is the plain per-query twin the tests hold it against.
"""

from __future__ import annotations

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
    """Metrics of one chunk of queries without sorting.

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
    if dist.dtype == torch.float32:
        # One int64 key per entry, increasing in the stable-sort order: the float's order-preserving
        # integer image in the high 32 bits, the gallery index in the low 32; removed entries get
        # the largest key so they are never ahead of anything.
        keys = _stable_order_keys(dist, column, keep)
        key_correct = keys.gather(1, cols)

        def ahead_of(slots: torch.Tensor) -> torch.Tensor:
            # [B, S, Ng]: kept entries ranked before the correct entries in ``slots`` [B, S]
            return keys.unsqueeze(1) < key_correct.gather(1, slots).unsqueeze(-1)

    else:
        d_correct = dist.gather(1, cols)  # [B, C]

        def ahead_of(slots: torch.Tensor) -> torch.Tensor:
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
