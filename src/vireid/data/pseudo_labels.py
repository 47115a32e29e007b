"""Pseudo-labels for learning without (or with few) identity labels: clustering, association, quality.

The recipe is the one of Cluster-Contrast (Dai et al., ACCV 2022; alibaba/cluster-contrast-reid,
``examples/cluster_contrast_train_usl.py``) as carried over to visible-infrared ReID by ADCA (Yang et al.,
ACM MM 2022; yangbincv/ADCA, ``adca_sysu_train.py``) and PGM (Wu & Ye, CVPR 2023; zesenwu23/USL-VI-ReID):

1. features of every training image of one modality, L2-normalised;
2. the k-reciprocal Jaccard distance between them (Zhong et al., CVPR 2017, Eq. 7, 10, 11; defaults
   ``k1=30, k2=6`` as ``--k1``/``--k2`` of ``adca_sysu_train.py``);
3. DBSCAN on that distance, per modality (``eps=0.6, min_samples=4`` as ADCA's ``DBSCAN(eps=0.6,
   min_samples=4, metric='precomputed')``); label -1 marks an outlier, left out of training;
4. the clusters of the two modalities associated by one-to-one bipartite matching on centroid
   similarity (the Hungarian algorithm, as PGM's progressive graph matching) or, as an option, softly
   (many-to-many).

Bounded memory: the reference ``compute_jaccard_distance`` (``clustercontrast/utils/faiss_rerank.py``)
fills a dense ``N x N`` matrix (30,000 images: 3.6 GB in float32). Here the ``k1+1`` nearest neighbours
come from FAISS (exact inner product; a chunked torch search when FAISS is absent), the weights ``V`` are a
sparse matrix (vireid's re-ranking helpers of :mod:`vireid.evaluation.rerank`: reciprocal sets, Eq. 6
expansion, query expansion) and the Jaccard distance is computed only for pairs that share a non-zero
column of ``V``, in chunks, keeping only pairs closer than ``max_distance`` (DBSCAN's ``eps``): every
other pair is at distance 1 in the reference too, or farther than ``eps``, so DBSCAN sees the same graph.

Determinism: neighbour similarities and Jaccard distances are rounded to 6 decimals (float noise of BLAS
kernels or thread counts cannot move a pair across ``eps`` or reorder neighbours), ties are broken by image
index, the inputs keep the dataset's order and the clusters are renumbered canonically (by their smallest
image index), so the labels do not depend on DBSCAN's internal numbering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vireid.errors import VireidError

_DECIMALS = 6
#: (row entry, partner row) pairs expanded at once in the sparse Jaccard step
_PAIR_CHUNK = 1 << 22


class ClusteringError(VireidError):
    """Clustering gave no usable pseudo-labels (no cluster, a single one, or an empty modality)."""


# ----------------------------------------------------------------------------- neighbours


def _normalise(features: np.ndarray | torch.Tensor) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ClusteringError(f"clustering needs features of shape [N, D], got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of every row of ``x`` against all rows: (similarities, indices)."""
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        sims, idx = index.search(x, k)
        return sims, idx.astype(np.int64)
    t = torch.from_numpy(x)
    sims, idx = [], []
    step = max(1, (1 << 22) // max(len(x), 1))
    for s in range(0, len(x), step):
        top = torch.topk(t[s : s + step] @ t.T, k, dim=1)
        sims.append(top.values.numpy())
        idx.append(top.indices.numpy())
    return np.concatenate(sims), np.concatenate(idx).astype(np.int64)


def nearest_neighbours(features: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every image (itself first), by cosine similarity, int64 ``[N, k]``,
    with their similarities ``[N, k]`` (float64, rounded to 6 decimals); ties broken by the lower index."""
    x = _normalise(features)
    n = x.shape[0]
    k = min(k, n)
    extra = min(n, k + 8)  # a margin, so that ties at the k-th place can be broken by index
    sims, idx = _search(x, extra)
    sims = np.round(sims.astype(np.float64), _DECIMALS)
    sims = np.where(idx < 0, -np.inf, sims)
    idx = np.where(idx < 0, n, idx)
    # self first (similarity 1 up to rounding), then by similarity descending, index ascending
    is_self = idx == np.arange(n)[:, None]
    order = np.lexsort((idx, -sims, ~is_self), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)[:, :k]
    sims = np.take_along_axis(sims, order, axis=1)[:, :k]
    return idx, sims


# ----------------------------------------------------------------------------- Jaccard distance


def jaccard_graph(features: np.ndarray | torch.Tensor, k1: int = 30, k2: int = 6,
                  max_distance: float = 1.0):
    """The k-reciprocal Jaccard distance (Zhong et al. Eq. 10 with query expansion Eq. 11) between all
    images, as a scipy CSR matrix holding only the pairs at distance ``<= max_distance`` (the diagonal,
    distance 0, included). Defaults ``k1=30, k2=6``: ADCA's / Cluster-Contrast's ``--k1``/``--k2``.

    The weights are Cluster-Contrast's: ``V[i, j] = exp(-d(i, j)) / sum`` over i's expanded reciprocal
    set with ``d = 2 - 2 cos`` (the squared distance of L2-normalised features)."""
    import scipy.sparse as sp

    from vireid.evaluation.rerank import _csr, _expand_candidate_sets, _expand_ranges, _query_expansion, _reciprocal

    if k1 < 1 or k2 < 1:
        raise ClusteringError(f"the Jaccard distance needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}; "
                              "raise them (the recipes use k1=30, k2=6)")
    x = _normalise(features)
    n = x.shape[0]
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float64)
    half = int(np.around(k1 / 2.0))
    idx_np, sims_np = nearest_neighbours(x, max(k1 + 1, k2))
    neigh = torch.from_numpy(idx_np)
    r1 = neigh[:, : k1 + 1]
    rh = neigh[:, : half + 1]
    members, valid = _expand_candidate_sets(r1, _reciprocal(r1), rh, _reciprocal(rh))
    rows = torch.arange(n)[:, None].expand_as(members)[valid]
    cols = members[valid]
    xt = torch.from_numpy(x)
    cos = torch.empty(len(rows), dtype=torch.float64)
    step = max(1, _PAIR_CHUNK // max(x.shape[1], 1))  # pairs whose [pairs, D] rows are gathered at once
    for s in range(0, len(rows), step):
        cos[s : s + step] = torch.einsum("pd,pd->p", xt[rows[s : s + step]], xt[cols[s : s + step]]).double()
    cos = torch.round(cos, decimals=_DECIMALS)
    weights = torch.exp(-(2.0 - 2.0 * cos))
    row_sum = torch.zeros(n, dtype=weights.dtype).index_add_(0, rows, weights)
    ptr, cols, vals = _csr(rows, cols, weights / row_sum[rows], n)
    if k2 != 1:
        ptr, cols, vals = _query_expansion(ptr, cols, vals, neigh[:, :k2])
    # sum_k min(V[i,k], V[j,k]) for every pair (i, j) sharing a column, rows in chunks
    col_rows = torch.repeat_interleave(torch.arange(n), ptr[1:] - ptr[:-1])
    c_ptr, c_rows, c_vals = _csr(cols, col_rows, vals, n)  # column-major: the rows holding each column
    c_counts = c_ptr[1:] - c_ptr[:-1]
    pairs_per_row = torch.zeros(n, dtype=torch.long).index_add_(0, col_rows, c_counts[cols])
    bounds = torch.cumsum(pairs_per_row, dim=0).numpy()
    out_rows, out_cols, out_vals = [], [], []
    start = 0
    while start < n:
        base = bounds[start - 1] if start else 0
        stop = int(np.searchsorted(bounds, base + _PAIR_CHUNK, side="right"))
        stop = min(max(stop, start + 1), n)
        e0, e1 = int(ptr[start]), int(ptr[stop])
        counts = c_counts[cols[e0:e1]]
        total = int(bounds[stop - 1] - base)
        pos = _expand_ranges(c_ptr[cols[e0:e1]], counts, total)
        contrib = torch.minimum(torch.repeat_interleave(vals[e0:e1], counts, output_size=total), c_vals[pos])
        keys = torch.repeat_interleave(col_rows[e0:e1], counts, output_size=total) * n + c_rows[pos]
        keys, slot = torch.unique(keys, return_inverse=True)
        shared = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, slot, contrib)
        dist = torch.round(1.0 - shared / (2.0 - shared), decimals=_DECIMALS).clamp_(min=0.0)
        keep = dist <= max_distance
        out_rows.append(torch.div(keys[keep], n, rounding_mode="floor"))
        out_cols.append(keys[keep] % n)
        out_vals.append(dist[keep])
        start = stop
    r = torch.cat(out_rows).numpy()
    c = torch.cat(out_cols).numpy()
    v = torch.cat(out_vals).numpy()
    graph = sp.csr_matrix((v, (r, c)), shape=(n, n))
    graph.setdiag(0.0)  # an image is at distance 0 from itself, stored explicitly
    graph.sort_indices()
    return graph


# ----------------------------------------------------------------------------- DBSCAN


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... in the order of their smallest member index; -1 (outlier) stays."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        if label < 0:
            continue
        if label not in seen:
            seen[label] = len(seen)
        out[i] = seen[label]
    return out


def dbscan_labels(features: np.ndarray | torch.Tensor, eps: float = 0.6, min_samples: int = 4,
                  k1: int = 30, k2: int = 6, modality: str = "the") -> np.ndarray:
    """Cluster labels (int64 ``[N]``, -1 = outlier, clusters numbered canonically) of ``features`` by DBSCAN
    over the k-reciprocal Jaccard distance (ADCA: ``eps=0.6, min_samples=4, k1=30, k2=6``).

    Raises :class:`ClusteringError` (one sentence naming the parameters to change) for an empty set or
    when fewer than two clusters come out."""
    try:
        from sklearn.cluster import DBSCAN
    except ImportError:
        raise VireidError("clustering pseudo-labels needs scikit-learn, which is not installed; "
                          "pip install 'vireid[usl]'") from None

    n = len(features)
    if n == 0:
        raise ClusteringError(f"{modality} modality has no training image to cluster; unsupervised training "
                              "needs visible and infrared images, so check data.root and its split")
    if not 0 < eps <= 1 or min_samples < 1:
        raise ClusteringError(f"DBSCAN needs 0 < eps <= 1 (a Jaccard distance) and min_samples >= 1, got "
                              f"eps={eps}, min_samples={min_samples}")
    graph = jaccard_graph(features, k1=k1, k2=k2, max_distance=eps)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    labels = canonical_labels(labels)
    found = int(labels.max()) + 1 if n else 0
    if found < 2:
        what = "no cluster" if found == 0 else "a single cluster"
        hint = ("raise eps, lower min_samples or raise k1" if found == 0
                else "lower eps, or raise min_samples, or lower k1")
        raise ClusteringError(
            f"clustering the {n} {modality} images found {what} (eps={eps}, min_samples={min_samples}, k1={k1}, "
            f"k2={k2}), so there are no pseudo-labels to train on; {hint} (losses.<term>.params)"
        )
    return labels


def centroids(features: np.ndarray | torch.Tensor, labels: np.ndarray, num_clusters: int) -> torch.Tensor:
    """L2-normalised mean feature of every cluster ``0..num_clusters-1`` (outliers ignored), float32."""
    x = torch.as_tensor(np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features),
                        dtype=torch.float32)
    x = torch.nn.functional.normalize(x, dim=1)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    keep = labels_t >= 0
    sums = torch.zeros(num_clusters, x.shape[1]).index_add_(0, labels_t[keep], x[keep])
    return torch.nn.functional.normalize(sums, dim=1)


# ----------------------------------------------------------------------------- association


@dataclass
class Association:
    """Visible cluster <-> infrared cluster association.

    ``weights`` [Cv, Ci]: row ``c`` is the target distribution over infrared clusters of visible cluster
    ``c`` (one-hot for a Hungarian match, a zero row for an unmatched cluster); ``pairs`` the matched
    (visible, infrared) pairs; ``groups_visible`` / ``groups_infrared`` the cross-modality group of every
    cluster (a matched pair is a group; an unmatched cluster joins the group of its most similar cluster on
    the other side), used to sample batches with both modalities; ``cost`` the mean ``1 - cos`` of the pairs.
    """

    weights: torch.Tensor
    pairs: np.ndarray
    groups_visible: np.ndarray
    groups_infrared: np.ndarray
    cost: float


def hungarian_pairs(similarity: np.ndarray) -> np.ndarray:
    """One-to-one matching maximising the summed similarity (``scipy.optimize.linear_sum_assignment`` on
    ``-similarity``; min(rows, cols) pairs): int64 ``[P, 2]`` (row, col), sorted by row."""
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(similarity, dtype=np.float64)
    if sim.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    rows, cols = linear_sum_assignment(-np.round(sim, _DECIMALS))
    return np.stack([rows, cols], axis=1).astype(np.int64)


def associate(visible_centroids: torch.Tensor, infrared_centroids: torch.Tensor, mode: str = "hungarian",
              soft_temperature: float = 0.1, soft_topk: int = 3, fixed: int = 0) -> Association:
    """Associate visible and infrared clusters by the cosine similarity of their centroids.

    ``mode="hungarian"``: one-to-one bipartite matching (PGM's graph matching, ADCA's cross-modality
    association); ``"soft"``: many-to-many, each cluster's target a softmax (``soft_temperature``) over its
    ``soft_topk`` most similar clusters of the other modality. The first ``fixed`` clusters of both
    modalities are the same (labelled) identities in the same order: they are matched to each other and the
    rest is associated among the remaining clusters (semi-supervised training)."""
    if mode not in ("hungarian", "soft"):
        raise ClusteringError(f"association mode {mode!r} is unknown; use hungarian or soft")
    cv, ci = visible_centroids.float(), infrared_centroids.float()
    sim = (cv @ ci.T).numpy().astype(np.float64)
    nv, ni = sim.shape
    weights = torch.zeros(nv, ni)
    fixed_pairs = np.stack([np.arange(fixed), np.arange(fixed)], axis=1).astype(np.int64)
    free = hungarian_pairs(sim[fixed:, fixed:]) + fixed
    pairs = np.concatenate([fixed_pairs, free]) if fixed else free
    if fixed:
        weights[torch.arange(fixed), torch.arange(fixed)] = 1.0
    if mode == "hungarian":
        weights[torch.as_tensor(free[:, 0]), torch.as_tensor(free[:, 1])] = 1.0
    else:
        sub = torch.as_tensor(sim[fixed:, fixed:], dtype=torch.float32)
        if sub.numel():
            k = min(soft_topk, sub.shape[1])
            top = torch.topk(sub, k, dim=1)
            soft = torch.zeros_like(sub).scatter_(1, top.indices, torch.softmax(top.values / soft_temperature, dim=1))
            weights[fixed:, fixed:] = soft
    groups_v = np.full(nv, -1, dtype=np.int64)
    groups_i = np.full(ni, -1, dtype=np.int64)
    groups_v[pairs[:, 0]] = np.arange(len(pairs))
    groups_i[pairs[:, 1]] = np.arange(len(pairs))
    for c in np.flatnonzero(groups_v < 0):
        groups_v[c] = groups_i[int(np.argmax(np.where(groups_i >= 0, sim[c], -np.inf)))]
    for c in np.flatnonzero(groups_i < 0):
        groups_i[c] = groups_v[int(np.argmax(np.where(groups_v >= 0, sim[:, c], -np.inf)))]
    cost = float(np.mean(1.0 - sim[free[:, 0], free[:, 1]])) if len(free) else 0.0
    return Association(weights, pairs, groups_v, groups_i, cost)


# ----------------------------------------------------------------------------- quality


def pairwise_precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering: of the image pairs put in one cluster, the share of
    same-identity pairs, and of the same-identity pairs, the share put in one cluster (outliers -1 are
    singletons)."""
    pred = np.asarray(pred, dtype=np.int64).copy()
    truth = np.asarray(truth, dtype=np.int64)
    outliers = pred < 0
    pred[outliers] = pred.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    joint = np.unique(p * (t.max(initial=0) + 1) + t, return_counts=True)[1]

    def pairs(counts: np.ndarray) -> float:
        return float((counts.astype(np.float64) * (counts - 1) / 2).sum())

    together = pairs(np.bincount(p))
    same = pairs(np.bincount(t))
    both = pairs(joint)
    return (both / together if together else 0.0), (both / same if same else 0.0)


def label_quality(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """NMI, ARI (scikit-learn; outliers as singletons) and pairwise precision/recall of pseudo-labels."""
    try:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    except ImportError:
        raise VireidError("pseudo-label quality needs scikit-learn, which is not installed; "
                          "pip install 'vireid[usl]'") from None

    pred = np.asarray(pred, dtype=np.int64).copy()
    outliers = pred < 0
    pred[outliers] = pred.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    precision, recall = pairwise_precision_recall(pred, truth)
    return {"nmi": float(normalized_mutual_info_score(truth, pred)), "ari": float(adjusted_rand_score(truth, pred)),
            "pair_precision": precision, "pair_recall": recall}


def labelled_identities(pids: Sequence[int] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The identities that keep their labels in semi-supervised training: ``round(fraction * #ids)`` of them
    (at least one when ``fraction > 0``), drawn with ``numpy.random.default_rng([seed, 16])``, sorted."""
    ids = np.unique(np.asarray(pids, dtype=np.int64))
    if fraction <= 0 or ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    count = min(ids.size, max(1, int(round(fraction * ids.size))))
    rng = np.random.default_rng([int(seed), 16])
    return np.sort(rng.choice(ids, size=count, replace=False))


# ----------------------------------------------------------------------------- sampling


class SubsetBatchSampler:
    """A batch sampler over a subset of the dataset: ``sampler`` plans batches over positions of
    ``indices`` (e.g. the images that are not outliers) and this yields the dataset indices. ``set_epoch``,
    ``state_dict``, ``load_state_dict``, ``resume_offset``, ``epoch``, ``rank``, ``world_size`` and ``len``
    are the inner sampler's."""

    def __init__(self, sampler, indices: np.ndarray) -> None:
        self.sampler = sampler
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield self.indices[np.asarray(batch, dtype=np.int64)].tolist()

    def __getattr__(self, name: str):
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)
