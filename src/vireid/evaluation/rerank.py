"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), with the semantics of the authors' widely used reference implementation.

Steps, on all ``N = Nq + Ng`` images (queries and gallery together):

1. ``D`` = the block distance matrix ``[[q_q, q_g], [q_g^T, g_g]]``, squared, each column divided
   by its maximum and transposed (the reference does exactly this: ``O = (D^2 / max_col(D^2))^T``).
2. ``R(i, k)``: the k nearest neighbours of ``i`` by ``O`` (row ``i``, ascending, ``i`` itself
   included; ties broken by index, as a stable sort). The k-reciprocal set (Eq. 2-3) keeps those
   ``j`` in ``R(i, k1)`` with ``i`` in ``R(j, k1)``.
3. Expansion (Eq. 6): each candidate ``c`` of the set adds its own ``round(k1/2)``-reciprocal set
   when more than 2/3 of that set lies in ``i``'s set.
4. ``V[i, j] = exp(-O[i, j])`` over the expanded set, normalised to sum 1 (Eq. 7), then local
   query expansion (Eq. 11): ``V[i] <- mean of V over R(i, k2)`` (skipped when ``k2 == 1``).
5. Jaccard distance (Eq. 10): ``1 - sum_k min(V[i,k], V[j,k]) / sum_k max(V[i,k], V[j,k])``, with
   ``sum max = 2 - sum min`` since rows sum to 1; final distance (Eq. 12):
   ``(1 - lambda) * jaccard + lambda * O`` for queries x gallery.

:func:`k_reciprocal_rerank` runs this in torch on the inputs' device: ``V`` is kept sparse (a few
hundred non-zeros per row), the neighbour lists come from chunked top-k, the reciprocal tests,
the expansion rule and the Jaccard sums are batched tensor operations; memory stays bounded by
the inputs plus chunks. The steps are helpers (``_nearest`` with an optional group mask,
``_expand_candidate_sets``, ``_weights``, ``_query_expansion``, ``_jaccard_final``) shared with the
modality-aware variant of :mod:`vireid.evaluation.rerank_modality`. :func:`k_reciprocal_rerank_loop` is the literal per-image numpy version
the tests and benchmark hold it against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# Elements of a [rows, N] working chunk.
_CHUNK_ELEMENTS = 1 << 22
# Query x gallery (i, k, j) triples expanded at once in the Jaccard step.
_PAIR_CHUNK = 1 << 22


def _to_tensor(x: Any, device: torch.device | None = None) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.float()
    return t.to(device) if device is not None else t


def _check_inputs(q_g: Any, q_q: Any, g_g: Any, k1: int, k2: int, lambda_value: float) -> tuple[int, int]:
    nq, ng = q_g.shape
    if tuple(q_q.shape) != (nq, nq) or tuple(g_g.shape) != (ng, ng):
        raise ValueError(
            f"re-ranking needs q_q [{nq}, {nq}] and g_g [{ng}, {ng}] for q_g [{nq}, {ng}], "
            f"got {tuple(q_q.shape)} and {tuple(g_g.shape)}"
        )
    if k1 < 1 or k2 < 1:
        raise ValueError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    return nq, ng


def _copy_transposed(dst: torch.Tensor, src: torch.Tensor, tile: int = 256) -> None:
    """``dst.copy_(src.T)`` in row tiles of ``src``: a plain strided transpose is several times
    slower (cache misses) on large matrices."""
    for start in range(0, src.shape[0], tile):
        dst[:, start : start + tile].copy_(src[start : start + tile].T)


class _Original:
    """Row access to ``O = (D^2 / colmax(D^2))^T`` without building the N x N matrix."""

    def __init__(self, q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.nq, self.ng = q_g.shape
        self.n = self.nq + self.ng
        # Column maxima of D^2, i.e. (row i of O) divisor: column i of D is [q_q[:, i]; q_g[i, :]]
        # for a query and [q_g[:, j]; g_g[:, j]] for gallery image j.
        q_max = torch.maximum(self._colmax_sq(q_q), (q_g * q_g).amax(dim=1))
        g_max = torch.maximum((q_g * q_g).amax(dim=0), self._colmax_sq(g_g))
        self.colmax = torch.cat([q_max, g_max])

    @staticmethod
    def _colmax_sq(m: torch.Tensor) -> torch.Tensor:
        out = torch.empty(m.shape[1], dtype=m.dtype, device=m.device)
        step = max(1, _CHUNK_ELEMENTS // max(m.shape[0], 1))
        for s in range(0, m.shape[1], step):
            block = m[:, s : s + step]
            out[s : s + step] = (block * block).amax(dim=0)
        return out

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of O, [B, N] float32."""
        nq = self.nq
        out = torch.empty(stop - start, self.n, dtype=self.q_g.dtype, device=self.q_g.device)
        if start < nq:  # query rows: columns of q_q, rows of q_g
            a, b = start, min(stop, nq)
            _copy_transposed(out[: b - a, :nq], self.q_q[:, a:b])
            out[: b - a, nq:].copy_(self.q_g[a:b])
        if stop > nq:  # gallery rows: columns of q_g and g_g
            a, b = max(start, nq) - nq, stop - nq
            done = max(nq - start, 0)
            _copy_transposed(out[done:, :nq], self.q_g[:, a:b])
            _copy_transposed(out[done:, nq:], self.g_g[:, a:b])
        out.mul_(out)
        return out.div_(self.colmax[start:stop, None])

    def at(self, i: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Elements ``O[i, c]`` = ``D[c, i]^2 / colmax[i]`` for index tensors of equal shape."""
        nq = self.nq
        d = torch.empty(i.shape, dtype=self.q_g.dtype, device=self.q_g.device)
        iq, cq = i < nq, c < nq
        m = cq & iq
        d[m] = self.q_q[c[m], i[m]]
        m = cq & ~iq
        d[m] = self.q_g[c[m], i[m] - nq]
        m = ~cq & iq
        d[m] = self.q_g[i[m], c[m] - nq]
        m = ~cq & ~iq
        d[m] = self.g_g[c[m] - nq, i[m] - nq]
        return (d * d) / self.colmax[i]


def _nearest(original: _Original, k: int, group: torch.Tensor | None = None, same: bool = True) -> torch.Tensor:
    """[N, k] first k columns of the stable ascending argsort of every row of O (chunked top-k).

    The selected entries are ordered by (value, index); a row whose k-th and (k+1)-th smallest
    values tie takes the lowest indices among the tied ones. The result therefore equals
    ``argsort(O, kind="stable")[:, :k]``. With ``group`` ([N] labels, e.g. modalities) the columns
    of another group (``same=True``) or of the row's own group (``same=False``) rank last (+inf):
    the first ``count`` slots of a row are then its stable argsort within / across groups.
    """
    n = original.n
    k = min(k, n)
    out = torch.empty(n, k, dtype=torch.long, device=original.colmax.device)
    step = max(1, _CHUNK_ELEMENTS // n)
    for s in range(0, n, step):
        rows = original.rows(s, min(s + step, n))
        if group is not None:
            differs = group[s : s + rows.shape[0], None] != group[None, :]
            rows.masked_fill_(differs if same else ~differs, float("inf"))
        top = torch.topk(rows, min(k + 1, n), dim=1, largest=False, sorted=True)
        idx = top.indices[:, :k]
        if k < n:
            boundary_tie = (top.values[:, k - 1] == top.values[:, k]).nonzero().flatten()
            if len(boundary_tie):  # rare: choose the tied entries with the lowest indices
                tied = rows[boundary_tie]
                kth = top.values[boundary_tie, k - 1 : k]
                less = tied < kth
                ties = tied == kth
                room = k - less.sum(dim=1, keepdim=True)
                chosen = less | (ties & (torch.cumsum(ties, dim=1) <= room))
                idx[boundary_tie] = chosen.nonzero()[:, 1].view(-1, k)
        idx = idx.sort(dim=1).values  # index order first, so the stable value sort breaks ties by index
        order = torch.sort(rows.gather(1, idx), dim=1, stable=True).indices
        out[s : s + rows.shape[0]] = idx.gather(1, order)
    return out


def _reciprocal(neigh: torch.Tensor) -> torch.Tensor:
    """[N, k] mask: ``neigh[i, m]`` has ``i`` among its own first k neighbours."""
    n, k = neigh.shape
    out = torch.empty(n, k, dtype=torch.bool, device=neigh.device)
    step = max(1, _CHUNK_ELEMENTS // (k * k))
    for s in range(0, n, step):
        rows = torch.arange(s, min(s + step, n), device=neigh.device)
        out[s : s + len(rows)] = (neigh[neigh[rows]] == rows[:, None, None]).any(dim=-1)
    return out


def _expanded_sets(neigh: torch.Tensor, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k-reciprocal set expanded by Eq. 6, as padded [N, E] indices + validity mask."""
    half = int(np.around(k1 / 2.0))
    r1 = neigh[:, : k1 + 1]
    rh = neigh[:, : half + 1]
    return _expand_candidate_sets(r1, _reciprocal(r1), rh, _reciprocal(rh))


def _expand_candidate_sets(
    r1: torch.Tensor, recip: torch.Tensor, rh: torch.Tensor, half_recip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 on given sets: row ``i``'s set is ``r1[i][recip[i]]`` (no repeats), candidate ``c``'s
    half set ``rh[c][half_recip[c]]``; a candidate adds its half set when more than 2/3 of it lies in
    ``i``'s set. Padded entries must be marked invalid in the masks (any index < N)."""
    n = r1.shape[0]
    k_full, k_half = r1.shape[1], rh.shape[1]
    two_thirds = torch.tensor(2.0 / 3.0, dtype=torch.float64, device=r1.device)
    idx_parts, valid_parts = [], []
    per_row = k_full * k_half * k_full
    step = max(1, _CHUNK_ELEMENTS // per_row)
    for s in range(0, n, step):
        sl = slice(s, min(s + step, n))
        cand = r1[sl]  # [B, k_full] candidates c
        cand_set = rh[cand]  # [B, k_full, k_half] members of each candidate's half set
        cand_valid = half_recip[cand]  # [B, k_full, k_half]
        in_own = (cand_set[..., None] == cand[:, None, None, :]) & recip[sl][:, None, None, :]
        overlap = (in_own.any(dim=-1) & cand_valid).sum(dim=-1)  # |cand set ∩ own set|
        size = cand_valid.sum(dim=-1)
        accept = recip[sl] & (overlap.double() > two_thirds * size.double())  # as the reference, in float64
        idx_parts.append(torch.cat([cand, cand_set.flatten(1)], dim=1))
        valid_parts.append(torch.cat([recip[sl], (cand_valid & accept[..., None]).flatten(1)], dim=1))
    idx, valid = torch.cat(idx_parts), torch.cat(valid_parts)
    # Unique per row: sort (invalid entries pushed to the end as n), drop repeats.
    keyed = torch.where(valid, idx, torch.full_like(idx, n))
    keyed = keyed.sort(dim=1).values
    valid = keyed < n
    valid[:, 1:] &= keyed[:, 1:] != keyed[:, :-1]
    return keyed.clamp(max=n - 1), valid


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int):
    """Sort COO entries by (row, col); return (row pointers, cols, vals)."""
    order = torch.argsort(rows * n_rows + cols)  # every column index is < n_rows here (square V)
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = torch.bincount(rows, minlength=n_rows)
    ptr = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    ptr[1:] = torch.cumsum(counts, dim=0)
    return ptr, cols, vals


def _expand_ranges(starts: torch.Tensor, counts: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenation of the index ranges [start, start + count) (``total`` = sum of counts)."""
    shift = starts - (torch.cumsum(counts, dim=0) - counts)
    return torch.arange(total, device=counts.device) + torch.repeat_interleave(shift, counts, output_size=total)


def k_reciprocal_rerank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked query x gallery distances (numpy float32 ``[Nq, Ng]``), Zhong et al. CVPR 2017.

    Inputs are distance matrices (numpy or torch, any device; the work runs on ``q_g_dist``'s
    device). Defaults are the paper's ``k1=20, k2=6, lambda=0.3``. See the module docstring.
    """
    nq, ng = _check_inputs(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)
    device = q_g_dist.device if isinstance(q_g_dist, torch.Tensor) else None
    q_g, q_q, g_g = (_to_tensor(x, device) for x in (q_g_dist, q_q_dist, g_g_dist))
    original = _Original(q_g, q_q, g_g)

    # Steps 2-3: neighbour lists, reciprocal sets and their expansion.
    # With fewer than k1 + 1 images the neighbour lists are simply shorter, as slicing in the reference.
    neigh = _nearest(original, max(k1 + 1, k2))
    members, valid = _expanded_sets(neigh, k1)

    ptr, cols, vals = _weights(original, members, valid)
    if k2 != 1:  # local query expansion: V[i] <- mean of V over i's k2 nearest neighbours
        ptr, cols, vals = _query_expansion(ptr, cols, vals, neigh[:, :k2])
    return _jaccard_final(original, ptr, cols, vals, lambda_value)


def _weights(original: _Original, members: torch.Tensor, valid: torch.Tensor):
    """Step 4: ``V[i, j] = exp(-O[i, j])`` over row i's set, normalised per row, as CSR rows."""
    n = original.n
    device = original.colmax.device
    row_of = torch.arange(n, device=device)[:, None].expand_as(members)
    rows, cols = row_of[valid], members[valid]
    weights = torch.exp(-original.at(rows, cols))
    row_sum = torch.zeros(n, dtype=weights.dtype, device=weights.device).index_add_(0, rows, weights)
    vals = weights / row_sum[rows]
    return _csr(rows, cols, vals, n)


def _query_expansion(ptr: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, expand_from: torch.Tensor,
                     source_valid: torch.Tensor | None = None):
    """Local query expansion (Eq. 11): row ``i`` of V becomes the mean of the rows ``expand_from[i]``
    (``[N, k]``; with ``source_valid`` only the valid ones, the mean over their number)."""
    n = ptr.shape[0] - 1
    device = ptr.device
    num_sources = expand_from.shape[1]
    if source_valid is None:
        source_valid = torch.ones_like(expand_from, dtype=torch.bool)
    per_row = source_valid.sum(dim=1)
    sources = expand_from[source_valid]
    counts = ptr[sources + 1] - ptr[sources]
    total = int(counts.sum())
    pos = _expand_ranges(ptr[sources], counts, total)
    target_row = torch.arange(n, device=device)[:, None].expand(n, num_sources)[source_valid]
    qe_rows = torch.repeat_interleave(target_row, counts, output_size=total)
    # Sum the entries falling on the same (row, column), then divide: the mean of the rows.
    keys, slot = torch.unique(qe_rows * n + cols[pos], return_inverse=True)  # sorted by (row, col)
    summed = torch.zeros(len(keys), dtype=vals.dtype, device=vals.device).index_add_(0, slot, vals[pos])
    key_rows = torch.div(keys, n, rounding_mode="floor")
    return _csr(key_rows, keys % n, summed / per_row[key_rows].to(summed.dtype), n)


def _jaccard_final(original: _Original, ptr: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
                   lambda_value: float) -> np.ndarray:
    """Step 5: Jaccard distance (Eq. 10) of query rows against gallery rows of V, mixed with the
    original distance (Eq. 12); chunked over queries so the expanded pairs stay bounded."""
    nq, ng, n = original.nq, original.ng, original.n
    q_g = original.q_g
    # Step 5: Jaccard distance between query rows and gallery rows of V.
    col_rows = torch.repeat_interleave(torch.arange(n, device=q_g.device), ptr[1:] - ptr[:-1])
    is_gallery_row = col_rows >= nq
    # Column-major view of the gallery rows: for every column k, the gallery rows holding it.
    g_ptr, g_rows, g_vals = _csr(cols[is_gallery_row], col_rows[is_gallery_row], vals[is_gallery_row], n)
    g_counts = g_ptr[1:] - g_ptr[:-1]
    q_entry_counts = g_counts[cols[: ptr[nq]]]  # gallery partners of each query entry
    pairs_per_query = torch.zeros(nq, dtype=torch.long, device=q_g.device).index_add_(
        0, col_rows[: ptr[nq]], q_entry_counts
    )
    overlap = torch.zeros(nq, ng, dtype=torch.float32, device=q_g.device)
    bounds = torch.cumsum(pairs_per_query, dim=0).cpu().numpy()
    start_q = 0
    while start_q < nq:
        # Largest block of queries whose expanded (query entry, gallery row) pairs fit the budget.
        base = bounds[start_q - 1] if start_q else 0
        stop_q = int(np.searchsorted(bounds, base + _PAIR_CHUNK, side="right"))
        stop_q = min(max(stop_q, start_q + 1), nq)
        e0, e1 = int(ptr[start_q]), int(ptr[stop_q])
        entry_cols = cols[e0:e1]
        counts = g_counts[entry_cols]
        total = int(bounds[stop_q - 1] - base)
        pos = _expand_ranges(g_ptr[entry_cols], counts, total)  # gallery entries sharing each column
        contrib = torch.minimum(torch.repeat_interleave(vals[e0:e1], counts, output_size=total), g_vals[pos])
        row_base = (col_rows[e0:e1] - start_q) * ng - nq
        flat = torch.repeat_interleave(row_base, counts, output_size=total) + g_rows[pos]
        block = overlap[start_q:stop_q].view(-1)
        block.index_add_(0, flat, contrib)
        start_q = stop_q
    # final = (1 - lambda) * (1 - s / (2 - s)) + lambda * O[q, g], computed in place (N_q x N_g
    # matrices are the largest live tensors here).
    final = overlap
    final.div_(2.0 - overlap).neg_().add_(1.0).mul_(1.0 - lambda_value)
    original_qg = torch.mul(q_g, q_g).div_(original.colmax[:nq, None]).mul_(lambda_value)
    final.add_(original_qg)
    del original_qg
    return final.cpu().numpy()


def _loop_inputs(q_g_dist: Any, q_q_dist: Any, g_g_dist: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three distance blocks as float32 numpy arrays (the loop twins work on the CPU)."""
    return tuple(  # type: ignore[return-value]
        np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        for x in (q_g_dist, q_q_dist, g_g_dist)
    )


def _loop_original(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> np.ndarray:
    """Zhong et al.'s ``O``: the full (query + gallery) squared distances, each column divided by its
    maximum, transposed (their ``re_ranking``: ``original_dist = transpose(dist / max(dist, axis=0))``)."""
    dist = np.concatenate([np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    dist = np.power(dist.astype(np.float32), 2)
    return np.transpose(dist / np.max(dist, axis=0))


def _loop_encode_and_rank(original: np.ndarray, nq: int, own_set: Callable[[int], np.ndarray],
                          half_set: Callable[[int], np.ndarray], expand_from: Callable[[int], np.ndarray], k2: int,
                          lambda_value: float) -> np.ndarray:
    """The per-image loop shared by the twins: expansion (Eq. 6, the 2/3 rule over each candidate's
    ``half_set``), ``V`` (Eq. 7), local query expansion over ``expand_from`` (Eq. 11), Jaccard distance
    and the final mix (Eq. 10, 12). ``own_set(i)`` is the k-reciprocal set the variant defines."""
    n = original.shape[0]
    V = np.zeros_like(original, dtype=np.float32)
    for i in range(n):
        own = own_set(i)
        expansion = own
        for candidate in own:
            cand_set = half_set(candidate)
            if len(np.intersect1d(cand_set, own)) > 2.0 / 3.0 * len(cand_set):
                expansion = np.append(expansion, cand_set)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(n):
            V_qe[i] = np.mean(V[expand_from(i)], axis=0)
        V = V_qe
    jaccard = np.zeros((nq, n), dtype=np.float32)
    for i in range(nq):
        overlap = np.zeros(n, dtype=np.float32)
        for k in np.where(V[i] != 0)[0]:
            partners = np.where(V[:, k] != 0)[0]
            overlap[partners] += np.minimum(V[i, k], V[partners, k])
        jaccard[i] = 1.0 - overlap / (2.0 - overlap)
    final = jaccard * (1.0 - lambda_value) + original[:nq] * lambda_value
    return final[:, nq:].astype(np.float32)


def k_reciprocal_rerank_loop(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Literal per-image numpy version of :func:`k_reciprocal_rerank` (dense, O(N^2) memory).

    Follows the reference algorithm step by step; argsort is stable so ties go by index.
    """
    q_g, q_q, g_g = _loop_inputs(q_g_dist, q_q_dist, g_g_dist)
    nq, ng = _check_inputs(q_g, q_q, g_g, k1, k2, lambda_value)
    original = _loop_original(q_g, q_q, g_g)
    initial_rank = np.argsort(original, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    return _loop_encode_and_rank(original, nq, lambda i: reciprocal(i, k1), lambda i: reciprocal(i, half),
                                 lambda i: initial_rank[i, :k2], k2, lambda_value)
