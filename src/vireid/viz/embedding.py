"""2-D map of the embedding space: t-SNE (scikit-learn) of test features, colour = identity,
marker = modality (circle visible, triangle infrared), as PDFENet Fig. 3.

A well-trained cross-modality model puts the circles and triangles of one colour in one cluster;
a model that still separates the modalities shows two clouds per colour. t-SNE runs on the
L2-normalised embeddings (the cosine geometry the ranking uses), initialised with PCA and seeded,
so the same run and seed give the same picture. Default size 800 x 800 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vireid.data.records import MODALITY_CODE, VISIBLE
from vireid.errors import VireidError
from vireid.viz._common import Output, identity_colours, new_figure, pick_cross_modality_ids, save_figure

DEFAULT_SIZE = (800, 800)


def tsne_2d(features: np.ndarray, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE coordinates ``[N, 2]`` of ``features`` ``[N, D]`` (rows L2-normalised first).

    ``perplexity`` defaults to ``min(30, (N - 1) / 3)`` (scikit-learn needs it below ``N``).
    """
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise VireidError(f"t-SNE needs at least 3 feature rows, got shape {x.shape}; choose more identities")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    p = float(perplexity) if perplexity is not None else min(30.0, max((n - 1) / 3.0, 1.0))
    if not 0 < p < n:
        raise VireidError(f"t-SNE perplexity must be between 0 and the number of points ({n}), got {p}")
    tsne = TSNE(n_components=2, perplexity=p, init="pca", random_state=int(seed), metric="euclidean")
    return tsne.fit_transform(x).astype(np.float32)


def plot_embedding(points: np.ndarray, pids: Sequence[int] | np.ndarray, modalities: Sequence[int] | np.ndarray,
                   out: Output, *, title: str = "t-SNE of test embeddings", size: Sequence[int] = DEFAULT_SIZE) -> Path | None:
    """Scatter ``points`` ``[N, 2]``: colour per identity, circle = visible, triangle = infrared."""
    pts = np.asarray(points, dtype=np.float64)
    pids = np.asarray(pids)
    mods = np.asarray(modalities)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pids) != len(pts) or len(mods) != len(pts):
        raise ValueError(f"points must be [N, 2] with N identities and modalities, got {pts.shape}, {len(pids)}, {len(mods)}")
    fig = new_figure(size)
    ax = fig.add_subplot(1, 1, 1)
    ids, colour_index = np.unique(pids, return_inverse=True)
    colours = identity_colours(len(ids))[colour_index]
    vis = mods == MODALITY_CODE[VISIBLE]
    ax.scatter(pts[vis, 0], pts[vis, 1], c=colours[vis], marker="o", s=36, edgecolors="k", linewidths=0.4,
               label="visible")
    ax.scatter(pts[~vis, 0], pts[~vis, 1], c=colours[~vis], marker="^", s=44, edgecolors="k", linewidths=0.4,
               label="infrared")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({len(ids)} identities, {len(pts)} images)")
    legend = ax.legend(loc="best", fontsize=9)
    for handle in legend.legend_handles:
        handle.set_facecolor("lightgrey")
    fig.tight_layout()
    return save_figure(fig, out)


def choose_rows(pids: np.ndarray, modalities: np.ndarray, num_ids: int, per_modality: int, seed: int = 0) -> np.ndarray:
    """Rows of ``num_ids`` random identities that have both modalities, at most ``per_modality``
    random images of each modality per identity (sorted row indices)."""
    rng = np.random.default_rng(seed)
    chosen = pick_cross_modality_ids(pids, modalities, num_ids, rng, "the t-SNE plot needs both")
    # random rank of every row within its (identity, modality) group: keep ranks < per_modality
    keep = np.isin(pids, chosen)
    rows = np.flatnonzero(keep)
    order = rows[rng.permutation(len(rows))]
    group = pids[order] * 2 + (modalities[order] != MODALITY_CODE[VISIBLE])
    sort = np.argsort(group, kind="stable")
    g_sorted = group[sort]
    starts = np.searchsorted(g_sorted, g_sorted, side="left")
    rank_in_group = np.arange(len(g_sorted)) - starts
    return np.sort(order[sort][rank_in_group < int(per_modality)])


def embedding_for_run(run, out: Output, *, num_ids: int = 10, per_modality: int = 10, seed: int = 0,
                      perplexity: float | None = None, size: Sequence[int] = DEFAULT_SIZE) -> Path | None:
    """t-SNE picture of ``num_ids`` random test identities of a loaded run (:class:`~vireid.viz.data.LoadedRun`)."""
    rows = choose_rows(run.pids, run.modalities, num_ids, per_modality, seed)
    feats = run.features_for(rows).numpy()
    points = tsne_2d(feats, seed=seed, perplexity=perplexity)
    return plot_embedding(points, run.pids[rows], run.modalities[rows], out, size=size,
                          title=f"t-SNE of {run.name} test embeddings")
