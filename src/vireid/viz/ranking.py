"""Ranked lists: each query next to its top-k gallery images, with scores, correct matches framed
green and wrong ones red (DFW+SLN Fig. 6, PDFENet Fig. 4).

The ranking itself is one :func:`torch.topk` over the whole query x gallery score matrix (excluded
entries set to ``-inf`` first); only the ``Q x (k + 1)`` shown images are decoded.

Layout (Pillow, exact pixel size, see :func:`ranked_list_size`): one row per query; the query
(framed blue, its label above) on the left, then the top-k gallery images left to right by
decreasing score, each with its score printed above it. Every image is drawn at ``thumb = (height,
width)`` inside a ``FRAME``-pixel frame; cells are ``PAD`` pixels apart, with ``SEPARATOR`` extra
pixels between the query and its list, and each row has ``TEXT_HEIGHT`` pixels of text above the
images. With the defaults (thumb 128x64, k = 10) the picture is 850 pixels wide and each row
adds 156 pixels (plus 6 at the top).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vireid.viz._common import BLACK, BLUE, GREEN, RED, WHITE, Output, as_thumbnail, fit_text, font, save_image

PAD = 6
FRAME = 3
SEPARATOR = 14
TEXT_HEIGHT = 16
DEFAULT_THUMB = (128, 64)

ImageLike = str | os.PathLike | np.ndarray


def top_k(scores: torch.Tensor | np.ndarray, k: int, excluded: torch.Tensor | np.ndarray | None = None,
          largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and gallery indices ``[Q, k']`` of the best ``k' = min(k, G)`` entries of each row.

    ``scores`` is ``[Q, G]`` (similarities with ``largest=True``, distances with ``largest=False``);
    ``excluded`` (bool ``[Q, G]``) entries never rank. One batched :func:`torch.topk` call. Entries
    beyond a row's allowed gallery come back with a score of ``-inf`` (``+inf`` for distances).
    """
    s = torch.as_tensor(scores).float()
    if s.dim() != 2:
        raise ValueError(f"scores must be a [queries, gallery] matrix, got shape {tuple(s.shape)}")
    if excluded is not None:
        mask = torch.as_tensor(excluded, dtype=torch.bool, device=s.device)
        s = s.masked_fill(mask, float("-inf") if largest else float("inf"))
    k = min(int(k), s.shape[1])
    values, indices = torch.topk(s, k, dim=1, largest=largest, sorted=True)
    return values, indices


def ranked_list_size(num_queries: int, k: int = 10, thumb: Sequence[int] = DEFAULT_THUMB) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of :func:`plot_ranked_lists` for ``num_queries`` rows of ``k`` results.

    ``width = PAD + cell_w + SEPARATOR + k * (cell_w + PAD)`` and
    ``height = PAD + num_queries * (TEXT_HEIGHT + cell_h + PAD)`` with ``cell = thumb + 2 * FRAME``.
    """
    cell_h, cell_w = int(thumb[0]) + 2 * FRAME, int(thumb[1]) + 2 * FRAME
    return PAD + cell_w + SEPARATOR + int(k) * (cell_w + PAD), PAD + int(num_queries) * (TEXT_HEIGHT + cell_h + PAD)


def plot_ranked_lists(
    query_images: Sequence[ImageLike],
    gallery_images: Sequence[ImageLike],
    scores: torch.Tensor | np.ndarray | None = None,
    *,
    k: int = 10,
    ranking: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray] | None = None,
    correct: torch.Tensor | np.ndarray | None = None,
    query_ids: Sequence[int] | np.ndarray | None = None,
    gallery_ids: Sequence[int] | np.ndarray | None = None,
    excluded: torch.Tensor | np.ndarray | None = None,
    query_labels: Sequence[str] | None = None,
    thumb: Sequence[int] = DEFAULT_THUMB,
    out: Output,
) -> Path | None:
    """Draw ranked lists and write them as a PNG of :func:`ranked_list_size` pixels.

    Args:
        query_images / gallery_images: image files or HxWx3 uint8 arrays.
        scores: ``[Q, G]`` similarities (higher is better); ranked with :func:`top_k`.
        k: results per query (``min(k, G)`` columns are drawn).
        ranking: instead of ``scores``, precomputed ``(values [Q, k], gallery indices [Q, k])``.
        correct: bool ``[Q, G]``: which gallery entries match each query; or give ``query_ids`` and
            ``gallery_ids`` (a match is the same identity).
        excluded: bool ``[Q, G]`` entries never ranked (e.g. SYSU-MM01's same-room camera).
        query_labels: one text per query (default: its identity, or its row number).
        thumb: ``(height, width)`` of every drawn image.
        out: PNG path or binary file object.
    """
    from PIL import Image, ImageDraw

    num_q = len(query_images)
    if num_q == 0:
        raise ValueError("plot_ranked_lists needs at least one query")
    if ranking is None:
        if scores is None:
            raise ValueError("give scores [Q, G] or a precomputed ranking (values, indices)")
        if tuple(torch.as_tensor(scores).shape) != (num_q, len(gallery_images)):
            raise ValueError(f"scores have shape {tuple(torch.as_tensor(scores).shape)}, expected ({num_q}, {len(gallery_images)})")
        values, indices = top_k(scores, k, excluded)
    else:
        values, indices = (torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a) for a in ranking)
        values, indices = values[:, :k].float(), indices[:, :k].long()
    if values.shape[0] != num_q:
        raise ValueError(f"the ranking has {values.shape[0]} rows for {num_q} queries")
    if correct is not None:
        hits = torch.gather(torch.as_tensor(np.asarray(correct), dtype=torch.bool), 1, indices)
    elif query_ids is not None and gallery_ids is not None:
        g_ids = torch.as_tensor(np.asarray(gallery_ids, dtype=np.int64))
        hits = g_ids[indices] == torch.as_tensor(np.asarray(query_ids, dtype=np.int64))[:, None]
    else:
        raise ValueError("give correct [Q, G] or query_ids and gallery_ids to colour the frames")
    if query_labels is None:
        query_labels = [f"query id {int(i)}" for i in query_ids] if query_ids is not None else [f"query {i + 1}" for i in range(num_q)]

    k_shown = values.shape[1]
    width, height = ranked_list_size(num_q, k_shown, thumb)
    th, tw = int(thumb[0]), int(thumb[1])
    cell_h, cell_w = th + 2 * FRAME, tw + 2 * FRAME
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    text_font = font(11)
    vals, idx, ok = values.tolist(), indices.tolist(), hits.tolist()

    def cell(x: int, y: int, image: ImageLike, colour: tuple[int, int, int], text: str, text_colour=BLACK) -> None:
        draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=colour)
        canvas.paste(as_thumbnail(image, thumb), (x + FRAME, y + FRAME))
        draw.text((x, y - TEXT_HEIGHT + 2), fit_text(draw, text, text_font, cell_w + PAD), fill=text_colour, font=text_font)

    for row in range(num_q):
        y = PAD + row * (TEXT_HEIGHT + cell_h + PAD) + TEXT_HEIGHT
        cell(PAD, y, query_images[row], BLUE, str(query_labels[row]), BLUE)
        x0 = PAD + cell_w + SEPARATOR
        for rank in range(k_shown):
            if not np.isfinite(vals[row][rank]):
                continue  # fewer allowed gallery entries than k
            colour = GREEN if ok[row][rank] else RED
            x = x0 + rank * (cell_w + PAD)
            cell(x, y, gallery_images[idx[row][rank]], colour, f"{vals[row][rank]:.3f}")
    return save_image(canvas, out)


def choose_queries(candidates: np.ndarray, num: int, seed: int = 0, pids: np.ndarray | None = None) -> np.ndarray:
    """``num`` query rows drawn from ``candidates`` with ``numpy.random.default_rng(seed)``.

    With ``pids`` (identity of each candidate, aligned with ``candidates``) distinct identities are preferred, so the picture shows
    different people. The order is the draw's.
    """
    rng = np.random.default_rng(seed)
    candidates = np.asarray(candidates)
    if len(candidates) == 0:
        return candidates
    order = rng.permutation(len(candidates))
    if pids is not None:
        # first image of each identity in the random order, then the rest
        _, first = np.unique(np.asarray(pids)[order], return_index=True)
        first = np.sort(first)
        rest = np.setdiff1d(np.arange(len(order)), first, assume_unique=True)
        order = np.concatenate([order[first], order[rest]])
    return candidates[order[: max(int(num), 0)]]


def ranked_lists_for_run(run, out: Output, *, num_queries: int = 6, k: int = 10, seed: int = 0,
                         direction: str = "i2v", thumb: Sequence[int] = DEFAULT_THUMB) -> Path | None:
    """Ranked lists of ``num_queries`` random test queries of a loaded run (:class:`~vireid.viz.data.LoadedRun`).

    Queries of the first modality of ``direction`` against every test image of the other one
    (``i2v``: SYSU-MM01's infrared queries vs visible gallery), cosine similarity of the model's
    embeddings, SYSU-MM01's camera rule applied on SYSU data.
    """
    from vireid.errors import VireidError

    q_all, g_idx = run.query_gallery(direction)
    if len(q_all) == 0 or len(g_idx) == 0:
        raise VireidError(f"the test split of {run.cfg.data.root} has no {direction} query/gallery images; try the other --direction")
    q_idx = choose_queries(q_all, num_queries, seed, run.pids[q_all])
    feats = run.features_for(np.concatenate([q_idx, g_idx]))
    scores = feats[: len(q_idx)] @ feats[len(q_idx):].T
    excluded = run.excluded(q_idx, g_idx)
    pids, cams = run.pids, run.cams
    labels = [f"id {pids[i]} cam {cams[i]}" for i in q_idx]
    return plot_ranked_lists(
        [run.records[i].path for i in q_idx], [run.records[i].path for i in g_idx], scores, k=k,
        query_ids=pids[q_idx], gallery_ids=pids[g_idx], excluded=excluded, query_labels=labels, thumb=thumb, out=out,
    )
