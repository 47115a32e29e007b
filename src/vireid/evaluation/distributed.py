"""Ranking of very large query/gallery sets, split over processes (ranks) and devices, in bounded memory.

A full ``[Nq, Ng]`` distance matrix does not fit anywhere for millions of images (1M x 1M float32
is 4 TB). The ranking metrics, however, need each query's row only once: CMC, AP and INP are
per-query figures averaged over the valid queries. :func:`distributed_evaluate_ranking` therefore

1. gives each rank of a ``torch.distributed`` group a contiguous slice of the queries
   (:func:`shard_range`), and splits that slice again over the rank's ``devices`` (one thread per
   device, e.g. all GPUs of a node driven by one process);
2. per chunk of ``max(1, max_elements // Ng)`` queries computes the distances to the whole
   gallery (:func:`~vireid.evaluation.distance.pairwise_distance`) and ranks them with the same
   batched ranker as :func:`~vireid.evaluation.metrics.evaluate_ranking_trials`
   (:func:`~vireid.evaluation.metrics.rank_trials`), so at most one chunk of distances exists per
   device at any time;
3. all-gathers the per-query figures (number of matches, first-match position, AP, INP) in query
   order and averages them exactly as the single-process evaluator does.

The result is the dict (or list of dicts with ``trial_columns``) that
:func:`~vireid.evaluation.metrics.evaluate_ranking` returns on the full distance matrix: the same
ranks per query (so the same CMC and number of valid queries), concatenated in the same order and
averaged the same way; mAP/mINP agree to the rounding of float64 sums (about 1e-16 relative: torch
may order a row's reduction differently for another chunk shape). Every rank gets the result.

Every rank passes the full feature sets (they may be numpy memory maps: a rank reads only its query
rows); the gallery is copied once to each device. With gloo the exchange runs on CPU tensors, with
NCCL on the current CUDA device. See ``docs/distributed.md`` for torchrun command lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.metrics import (
    TrialTable,
    _check_cam_rule,
    _check_trial_columns,
    finish_trials,
    rank_trials,
)

#: Distance entries computed per chunk and device (64M float32 = 256 MB).
DEFAULT_MAX_ELEMENTS = 1 << 26


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``n`` items for ``rank`` of ``world_size`` (sizes differ by at most 1)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not within a world of {world_size} processes")
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _world(group: Any) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _as_rows(x: Any, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a tensor / array / memory map as a float32 CPU tensor."""
    if isinstance(x, torch.Tensor):
        return x[start:stop].detach().float().cpu()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x[start:stop]), dtype=np.float32))


def _rank_on_device(device: torch.device, queries: Any, start: int, stop: int, gallery: torch.Tensor,
                    table_args: tuple, *, metric: str, normalize: bool, dedup_cmc: bool, rows_per_chunk: int,
                    progress: bool) -> list[np.ndarray]:
    """Per-query figures of query rows ``start:stop`` on one device, chunk by chunk."""
    table = TrialTable.build(*table_args, device=device)
    g = gallery.to(device)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    starts = range(start, stop, rows_per_chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"ranking ({device})", unit="chunk", leave=False, dynamic_ncols=True, disable=None)
    for lo in starts:
        hi = min(lo + rows_per_chunk, stop)
        distances = pairwise_distance(_as_rows(queries, lo, hi).to(device), g, metric=metric, normalize=normalize)
        for acc, part in zip(parts, rank_trials(distances, table, dedup_cmc, row_offset=lo)):
            acc.append(part)
        del distances
    num_trials = len(table_args[2])
    return [np.concatenate(acc) if acc else np.zeros((0, num_trials)) for acc in parts]


def _gather_rows(local: np.ndarray, sizes: list[int], group: Any) -> np.ndarray:
    """Concatenate every rank's ``[n_r, ...]`` float64 rows in rank order (padded all_gather)."""
    backend = dist.get_backend(group)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    width = max(sizes)
    padded = torch.zeros((width, *local.shape[1:]), dtype=torch.float64, device=device)
    padded[: local.shape[0]] = torch.from_numpy(local).to(device)
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded, group=group)
    return torch.cat([b[:n] for b, n in zip(buffers, sizes)]).cpu().numpy()


def distributed_evaluate_ranking(
    query_features: Any,
    gallery_features: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any = None,
    g_camids: Any = None,
    *,
    metric: str = "euclidean",
    normalize: bool = True,
    cam_rule: str | None = None,
    dedup_cmc: bool = False,
    max_rank: int = 20,
    trial_columns: Sequence[Any] | None = None,
    devices: Sequence[str | torch.device] | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    group: Any = None,
    progress: bool = False,
) -> dict | list[dict]:
    """CMC/mAP/mINP of ``query x gallery`` ranked across ranks and devices with bounded memory.

    Equal to ``evaluate_ranking(pairwise_distance(qf, gf, metric, normalize), q_pids, g_pids,
    q_camids, g_camids, cam_rule=..., dedup_cmc=..., max_rank=...)`` (and, with ``trial_columns``,
    to :func:`~vireid.evaluation.metrics.evaluate_ranking_trials`, returning one dict per trial).
    Call it on every rank of ``group`` (default: the default group; no group: one process) with
    the same arguments; ``devices`` lists the devices this process uses (default: the gallery's
    device). ``max_elements`` bounds the distance entries alive per device (``Ng`` at least).
    """
    _check_cam_rule(cam_rule, q_camids, g_camids)
    q_pid = np.asarray(q_pids.cpu() if isinstance(q_pids, torch.Tensor) else q_pids).reshape(-1)
    g_pid = np.asarray(g_pids.cpu() if isinstance(g_pids, torch.Tensor) else g_pids).reshape(-1)
    num_q, num_g = len(query_features), len(gallery_features)
    if num_q != q_pid.shape[0] or num_g != g_pid.shape[0]:
        raise ValueError(f"{num_q} query / {num_g} gallery features but {q_pid.shape[0]} / {g_pid.shape[0]} identities")
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    cols = _check_trial_columns(trial_columns if trial_columns is not None else [np.arange(num_g)], num_g)
    gallery = _as_rows(gallery_features, 0, num_g)
    if devices is None:
        devices = [gallery_features.device if isinstance(gallery_features, torch.Tensor) else "cpu"]
    devices = [torch.device(d) for d in devices]
    if not devices:
        raise ValueError("devices is empty; give at least one device, e.g. ['cpu'] or ['cuda:0', 'cuda:1']")

    rank, world = _world(group)
    start, stop = shard_range(num_q, rank, world)
    rows_per_chunk = max(1, int(max_elements) // max(num_g, 1))
    table_args = (q_pid, g_pid, cols, q_camids, g_camids, cam_rule)
    options = dict(metric=metric, normalize=normalize, dedup_cmc=dedup_cmc, rows_per_chunk=rows_per_chunk,
                   progress=progress)
    pieces = [shard_range(stop - start, i, len(devices)) for i in range(len(devices))]
    jobs = [(device, start + lo, start + hi) for device, (lo, hi) in zip(devices, pieces) if hi > lo]
    if len(jobs) <= 1:
        results = [_rank_on_device(d, query_features, lo, hi, gallery, table_args, **options) for d, lo, hi in jobs]
    else:  # one thread per device: CUDA kernels run while the others wait on theirs
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(_rank_on_device, d, query_features, lo, hi, gallery, table_args, **options)
                       for d, lo, hi in jobs]
            results = [f.result() for f in futures]
    num_trials = len(cols)
    if results:
        local = np.stack([np.concatenate([r[k] for r in results]).astype(np.float64) for k in range(4)], axis=1)
    else:
        local = np.zeros((0, 4, num_trials))
    if world > 1:
        local = _gather_rows(local, [shard_range(num_q, r, world)[1] - shard_range(num_q, r, world)[0]
                                     for r in range(world)], group)
    num_rel, first, ap, inp = (local[:, k] for k in range(4))
    out = finish_trials(num_rel.astype(np.int64), first, ap, inp, max_rank)
    return out if trial_columns is not None else out[0]


__all__ = ["DEFAULT_MAX_ELEMENTS", "distributed_evaluate_ranking", "shard_range"]
