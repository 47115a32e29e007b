"""Tracklets (video sequences) of frame records: grouping, frame choice, evaluation frames.

A tracklet is the set of frame records (:class:`~vireid.data.records.ImageRecord`) that share one
``tracklet`` id (``-1`` marks a still image, which belongs to no tracklet). Readers list each
tracklet's frames in temporal order, so *the order of the records is the temporal order*: nothing
here sorts frames by file name.

Frame choice of a tracklet of ``n`` frames for a clip of ``T`` frames (:func:`frame_positions`). The
sequence is split into ``T`` equal chunks, chunk ``s`` holding the frames
``[floor(s*n/T), floor((s+1)*n/T))`` (at least one frame: when ``n < T`` a chunk is the single frame
``floor(s*n/T)``, so short tracklets repeat frames and keep their order):

* ``restricted`` -- one uniformly random frame of each chunk: the restricted random sampling of video
  ReID (Wang et al., "Temporal Segment Networks", ECCV 2016; used on HITSZ-VCM by the MITML reference
  code, ``data_loader.py`` ``VideoDataset_train`` mode ``video_train``, with chunks of ``ceil(n/T)``);
* ``evenly`` -- the middle frame of each chunk, deterministic (the MITML reference evaluates on the
  first frame of each ``ceil(n/T)`` chunk, ``VideoDataset_test`` mode ``video_test``; the middle of
  ``T`` equal chunks covers the sequence symmetrically and needs no padding);
* ``mitml`` -- the MITML reference's test frames exactly (evaluation only): frame ``min(s*ceil(n/T), n-1)`` for
  ``s = 0..T-1`` (the first frame of each ``ceil(n/T)`` chunk, the tail padded with the last frame), for
  reproducing its published numbers;
* ``all`` -- every frame (evaluation only; ``T`` is ignored).

:func:`eval_frames` gives the temporal models' protocols the frames to embed: the query or gallery
records flattened tracklet-major (each tracklet's chosen frames next to each other, in temporal order)
with the tracklet id of each frame -- the order the ``tracklets`` side input
(:class:`vireid.data.extras.TrackletExtra`) promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from vireid.data.records import ImageRecord
from vireid.errors import ConfigError, DatasetError

#: Frame choices of :func:`frame_positions` (``all``: evaluation only).
FRAME_SAMPLING = ("restricted", "evenly")
EVAL_FRAME_MODES = ("evenly", "mitml", "all")


class TrackletFrames(NamedTuple):
    """Flat frames of several tracklets, tracklet-major: ``records[i]`` is a frame of tracklet
    ``tracklets[i]``; each tracklet's frames are consecutive and in temporal order. ``order`` lists the
    tracklet ids once each, in the order their frames appear."""

    records: list[ImageRecord]
    tracklets: np.ndarray  # int64 [len(records)]
    order: np.ndarray  # int64 [number of tracklets]


def group_tracklets(records: Sequence[ImageRecord], what: str = "records") -> dict[int, list[int]]:
    """``{tracklet id: [record positions]}`` in order of first appearance, each list in record (= temporal) order.

    Every record must belong to a tracklet (``tracklet >= 0``) and the frames of one tracklet must share
    identity, camera and modality; otherwise one DatasetError sentence naming the first offending frame.
    """
    groups: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        tid = int(getattr(record, "tracklet", -1))
        if tid < 0:
            raise DatasetError(
                f"{what} include the still image {record.path} (no tracklet id); tracklet sampling and tracklet "
                "evaluation need every frame to name its tracklet: use a video dataset (hitsz-vcm, synthetic-vcm) "
                "or give your own frames a tracklet column / folder (see vireid.data.datasets.folder)"
            )
        groups.setdefault(tid, []).append(i)
    for tid, members in groups.items():
        first = records[members[0]]
        for i in members[1:]:
            other = records[i]
            for field in ("orig_pid", "camid", "modality"):
                if getattr(other, field) != getattr(first, field):
                    label = {"orig_pid": "identity", "camid": "camera", "modality": "modality"}[field]
                    raise DatasetError(
                        f"tracklet {tid} mixes frames of {label} {getattr(first, field)!r} ({first.path}) and "
                        f"{getattr(other, field)!r} ({other.path}); the frames of one tracklet must share identity, "
                        "camera and modality, so give these frames different tracklet ids"
                    )
    return groups


def _check_seq_len(seq_len: object) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise ConfigError(f"seq_len={seq_len!r} is invalid; use a positive number of frames per tracklet")
    return int(seq_len)


def chunk_bounds(num_frames: int | np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of the ``seq_len`` chunks of tracklets of ``num_frames`` frames: int64 ``[..., seq_len]``,
    chunk ``s`` = frames ``lo[s] .. hi[s]-1`` (never empty)."""
    n = np.asarray(num_frames, dtype=np.int64)[..., None]
    s = np.arange(seq_len, dtype=np.int64)
    lo = (s * n) // seq_len
    hi = np.maximum(lo + 1, ((s + 1) * n) // seq_len)
    return lo, hi


def frame_positions(num_frames: int | np.ndarray, seq_len: int, mode: str = "evenly",
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions (0-based, within the tracklet, ascending) of the ``seq_len`` frames chosen from tracklets of
    ``num_frames`` frames: int64 ``[..., seq_len]`` (``num_frames`` may be an array of lengths).

    ``restricted`` needs ``rng`` (one random frame per chunk); ``evenly`` (chunk middles) and ``mitml`` (the
    reference's test frames) are deterministic.
    """
    seq_len = _check_seq_len(seq_len)
    if np.any(np.asarray(num_frames) < 1):
        raise DatasetError("a tracklet has no frames; every tracklet needs at least one frame")
    if mode == "mitml":  # MITML data_loader.VideoDataset_test, sample="video_test"
        n = np.asarray(num_frames, dtype=np.int64)[..., None]
        step = -(-n // seq_len)
        return np.minimum(np.arange(seq_len, dtype=np.int64) * step, n - 1)
    lo, hi = chunk_bounds(num_frames, seq_len)
    if mode == "evenly":
        return (lo + hi - 1) // 2
    if mode == "restricted":
        if rng is None:
            raise ConfigError("restricted frame sampling needs a random generator (rng=)")
        return lo + np.floor(rng.random(lo.shape) * (hi - lo)).astype(np.int64)
    raise ConfigError(f"frame sampling {mode!r} is unknown; use one of {', '.join(FRAME_SAMPLING)} (or mitml)")


def eval_frames(records: Sequence[ImageRecord], seq_len: int | None = 6, mode: str = "evenly") -> TrackletFrames:
    """The frames of the tracklets of ``records`` to embed for tracklet evaluation, tracklet-major.

    ``mode="evenly"``: ``seq_len`` evenly spaced frames of each tracklet (chunk middles, see the module
    docstring; a tracklet shorter than ``seq_len`` repeats frames; the MITML reference evaluates with 6);
    ``mode="mitml"``: the MITML reference's test frames (see the module docstring); ``mode="all"``: every frame
    (``seq_len`` ignored). Tracklets come in the order of their first frame in
    ``records``, frames in record (= temporal) order. Returns :class:`TrackletFrames` (unpacks as
    ``frames, tracklet_ids, order``). Still images (tracklet ``-1``) and tracklets mixing identities,
    cameras or modalities are one DatasetError sentence.
    """
    if mode not in EVAL_FRAME_MODES:
        raise ConfigError(f"evaluation frame mode {mode!r} is unknown; use one of {', '.join(EVAL_FRAME_MODES)}")
    if not records:
        raise DatasetError("there are no frames to evaluate; the query or gallery split is empty")
    groups = group_tracklets(records, "the evaluation frames")
    out: list[ImageRecord] = []
    ids: list[int] = []
    if mode != "all":
        seq_len = _check_seq_len(seq_len)
    for tid, members in groups.items():
        chosen = members if mode == "all" else [members[int(p)] for p in frame_positions(len(members), seq_len, mode)]
        out.extend(records[i] for i in chosen)
        ids.extend([tid] * len(chosen))
    return TrackletFrames(out, np.asarray(ids, dtype=np.int64), np.asarray(list(groups), dtype=np.int64))


__all__ = [
    "EVAL_FRAME_MODES",
    "FRAME_SAMPLING",
    "TrackletFrames",
    "chunk_bounds",
    "eval_frames",
    "frame_positions",
    "group_tracklets",
]
