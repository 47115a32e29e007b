"""Tracklet grouping, frame choice (restricted / evenly) and the evaluation frames of tracklet protocols."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.data.records import ImageRecord
from vireid.data.tracklets import chunk_bounds, eval_frames, frame_positions, group_tracklets
from vireid.errors import ConfigError, DatasetError


def _tracklet(tid: int, n: int, pid: int = 1, cam: int = 1, modality: str = "visible") -> list[ImageRecord]:
    return [ImageRecord(f"/t{tid}/f{i:03d}.png", pid, cam, modality, tracklet=tid) for i in range(n)]


def test_evenly_takes_the_middle_of_equal_chunks_and_repeats_frames_of_short_tracklets():
    assert frame_positions(24, 6).tolist() == [1, 5, 9, 13, 17, 21]
    assert frame_positions(6, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert frame_positions(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # short: repeated, still in order
    assert frame_positions(1, 4).tolist() == [0, 0, 0, 0]
    # one call for many lengths
    assert frame_positions(np.array([24, 3]), 6).tolist() == [[1, 5, 9, 13, 17, 21], [0, 0, 1, 1, 2, 2]]


def test_mitml_mode_reproduces_the_reference_test_frames():
    # MITML data_loader.VideoDataset_test("video_test"): first frame of each ceil(n/T) chunk, tail padded
    def reference(n, t):
        inter = -(-n // t) if n >= t else 1
        strip = list(range(n)) + [n - 1] * (inter * t - n)
        return [strip[inter * s] for s in range(t)]

    for n in (1, 3, 6, 7, 13, 24, 25, 40):
        assert frame_positions(n, 6, "mitml").tolist() == reference(n, 6), n
    frames, ids, _ = eval_frames(_tracklet(3, 13), seq_len=6, mode="mitml")
    assert [f.path[-8:-4] for f in frames] == ["f000", "f003", "f006", "f009", "f012", "f012"]


def test_restricted_picks_one_frame_inside_each_chunk_and_covers_every_frame():
    rng = np.random.default_rng(0)
    n, t = 23, 5
    lo, hi = chunk_bounds(n, t)
    seen = set()
    for _ in range(300):
        pos = frame_positions(n, t, "restricted", rng)
        assert ((pos >= lo) & (pos < hi)).all() and (np.diff(pos) > 0).all()
        seen.update(pos.tolist())
    assert seen == set(range(n))
    again = frame_positions(n, t, "restricted", np.random.default_rng(7))
    assert again.tolist() == frame_positions(n, t, "restricted", np.random.default_rng(7)).tolist()
    with pytest.raises(ConfigError, match="random generator"):
        frame_positions(n, t, "restricted")
    with pytest.raises(ConfigError, match="unknown"):
        frame_positions(n, t, "dense")
    with pytest.raises(ConfigError, match="positive"):
        frame_positions(n, 0)


def test_eval_frames_is_tracklet_major_in_temporal_order():
    records = _tracklet(7, 10, pid=3) + _tracklet(2, 2, pid=4, modality="infrared")
    frames, ids, order = eval_frames(records, seq_len=4, mode="evenly")
    assert ids.tolist() == [7, 7, 7, 7, 2, 2, 2, 2] and order.tolist() == [7, 2]
    assert [f.path for f in frames[:4]] == ["/t7/f000.png", "/t7/f003.png", "/t7/f005.png", "/t7/f008.png"]
    assert [f.path for f in frames[4:]] == ["/t2/f000.png", "/t2/f000.png", "/t2/f001.png", "/t2/f001.png"]
    every = eval_frames(records, mode="all")
    assert every.records == records and every.tracklets.tolist() == [7] * 10 + [2] * 2
    # interleaved frames of two tracklets are grouped, each keeping its own order
    mixed = [records[0], records[10], records[1], records[11]]
    frames, ids, _ = eval_frames(mixed, mode="all")
    assert ids.tolist() == [7, 7, 2, 2] and [f.path for f in frames] == [
        "/t7/f000.png", "/t7/f001.png", "/t2/f000.png", "/t2/f001.png"]


def test_eval_frames_refuses_still_images_mixed_tracklets_and_empty_input():
    with pytest.raises(DatasetError, match="still image /s.png"):
        eval_frames([ImageRecord("/s.png", 1, 1, "visible")])
    with pytest.raises(DatasetError, match="tracklet 5 mixes frames of camera 1 .* and 2"):
        group_tracklets(_tracklet(5, 2) + [ImageRecord("/x.png", 1, 2, "visible", tracklet=5)])
    with pytest.raises(DatasetError, match="no frames"):
        eval_frames([])
    with pytest.raises(ConfigError, match="evaluation frame mode"):
        eval_frames(_tracklet(1, 3), mode="restricted")
