"""Tracklet sampler: P x K x T batches, tracklet-major order, both modalities, frame choice, resume, wiring."""

from __future__ import annotations

import numpy as np
import pytest

from vireid.data.tracklet_sampler import TrackletSampler
from vireid.data.tracklets import chunk_bounds
from vireid.errors import ConfigError, DatasetError


def _frames(num_ids: int = 7, seed: int = 0):
    """Per-frame pids / modality codes / tracklet ids / position in its tracklet: tracklets of 2..13 frames,
    1..3 per identity and modality, the frames of different tracklets interleaved in the dataset order but each
    tracklet's frames in temporal order (as a reader lists them)."""
    rng = np.random.default_rng(seed)
    pids, mods, tids, pos, keys = [], [], [], [], []
    tid = 100
    for pid in range(num_ids):
        for code in (0, 1):
            for _ in range(int(rng.integers(1, 4))):
                n = int(rng.integers(2, 14))
                pids += [pid * 3 + 1] * n
                mods += [code] * n
                tids += [tid] * n
                pos += list(range(n))
                keys += np.sort(rng.random(n)).tolist()  # increasing within the tracklet
                tid += 7
    order = np.argsort(np.asarray(keys), kind="stable")
    return [np.asarray(a)[order] for a in (pids, mods, tids, pos)]


def _check(batch, pids, mods, tids, pos, p, k, t, evenly=False):
    batch = np.asarray(batch)
    assert batch.shape == (2 * p * k * t,)
    clips = batch.reshape(2, p, k, t)
    for half, code in enumerate((0, 1)):
        assert (mods[clips[half]] == code).all()
    assert (pids[clips] == pids[clips[..., :1]]).all()  # one identity per clip
    assert (tids[clips] == tids[clips[..., :1]]).all()  # one tracklet per clip: T consecutive frames
    assert (pids[clips[0, :, 0, 0]] == pids[clips[1, :, 0, 0]]).all()  # same identities in both halves
    assert len(set(pids[clips[0, :, 0, 0]].tolist())) == p  # P distinct identities
    frame_pos = pos[clips]
    assert (np.diff(frame_pos, axis=-1) >= 0).all()  # temporal order inside each clip
    for clip in clips.reshape(-1, t):
        n = int((tids == tids[clip[0]]).sum())
        lo, hi = chunk_bounds(n, t)
        got = pos[clip]
        assert ((got >= lo) & (got < hi)).all()  # one frame from each chunk
        if evenly:
            assert got.tolist() == ((lo + hi - 1) // 2).tolist()
    return clips


def test_batches_are_p_ids_by_k_tracklets_by_t_frames_tracklet_major():
    pids, mods, tids, pos = _frames()
    sampler = TrackletSampler(pids, mods, tids, num_ids=3, tracklets_per_id=2, seq_len=4, seed=1)
    n_vis = len(np.unique(tids[mods == 0]))
    n_ir = len(np.unique(tids[mods == 1]))
    assert len(sampler) == int(np.ceil(max(n_vis, n_ir) / 6)) and sampler.batch_size == 48
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        _check(batch, pids, mods, tids, pos, 3, 2, 4)
    assert sampler.identity_plan(0).shape == (len(sampler), 3)
    # K tracklets per identity and modality are distinct when the identity has K of them
    clips = np.asarray(batches[0]).reshape(2, 3, 2, 4)
    for half in clips:
        for ident in half:
            if (np.unique(tids[(pids == pids[ident[0, 0]]) & (mods == mods[ident[0, 0]])]).size) >= 2:
                assert tids[ident[0, 0]] != tids[ident[1, 0]]


def test_evenly_is_deterministic_restricted_varies_and_short_tracklets_repeat_frames():
    pids, mods, tids, pos = _frames(seed=3)
    evenly = TrackletSampler(pids, mods, tids, num_ids=2, tracklets_per_id=1, seq_len=16, frame_sampling="evenly")
    for batch in evenly:  # T=16 > every tracklet's length: frames repeat, in order
        clips = _check(batch, pids, mods, tids, pos, 2, 1, 16, evenly=True)
        assert (np.diff(pos[clips], axis=-1) == 0).any()
    restricted = TrackletSampler(pids, mods, tids, num_ids=2, tracklets_per_id=1, seq_len=3, seed=5)
    picks = set()
    for epoch in range(6):
        restricted.set_epoch(epoch)
        for batch in restricted:
            _check(batch, pids, mods, tids, pos, 2, 1, 3)
            picks.update(zip(tids[batch].tolist(), pos[batch].tolist()))
    long_tracklet = next(t for t in np.unique(tids) if (tids == t).sum() >= 9)
    assert len({p for t, p in picks if t == long_tracklet}) > 3  # restricted random: more than T distinct frames


def test_plan_is_seeded_rank_shares_partition_it_and_resume_gives_the_same_batches():
    pids, mods, tids, pos = _frames(num_ids=9)
    kwargs = dict(num_ids=2, tracklets_per_id=2, seq_len=3, seed=4, epoch_length=8)
    one = TrackletSampler(pids, mods, tids, **kwargs)
    assert np.array_equal(one.plan_epoch(2), TrackletSampler(pids, mods, tids, **kwargs).plan_epoch(2))
    assert not np.array_equal(one.plan_epoch(2), one.plan_epoch(3))
    shares = [TrackletSampler(pids, mods, tids, rank=r, world_size=2, **{**kwargs, "epoch_length": 4}).plan_epoch(1)
              for r in range(2)]
    assert np.array_equal(np.stack(shares, 1).reshape(8, -1), one.plan_epoch(1))

    one.set_epoch(5)
    full = list(one)
    stream = iter(one)
    head = [next(stream) for _ in range(3)]
    state = one.state_dict()
    assert state["batches_consumed"] == 3 and state["seq_len"] == 3 and state["frame_sampling"] == "restricted"
    fresh = TrackletSampler(pids, mods, tids, **kwargs)
    fresh.load_state_dict(state)
    assert head + list(fresh) == full
    with pytest.raises(ConfigError, match="seq_len=3 but this sampler has seq_len=4"):
        TrackletSampler(pids, mods, tids, **{**kwargs, "seq_len": 4}).load_state_dict(state)


def test_bad_inputs_are_one_sentence():
    pids, mods, tids, _ = _frames()
    still = tids.copy()
    still[5] = -1
    with pytest.raises(DatasetError, match="belong to no tracklet; .*set sampler.seq_len: 0"):
        TrackletSampler(pids, mods, still, num_ids=2)
    mixed = mods.copy()
    t0 = tids[0]
    mixed[np.flatnonzero(tids == t0)[-1]] = 1 - mixed[0]
    with pytest.raises(DatasetError, match=f"tracklet {t0} mixes frames of modality"):
        TrackletSampler(pids, mixed, tids, num_ids=2)
    with pytest.raises(ConfigError, match="seq_len=0 is invalid"):
        TrackletSampler(pids, mods, tids, seq_len=0)
    with pytest.raises(ConfigError, match="frame_sampling='dense' is unknown"):
        TrackletSampler(pids, mods, tids, frame_sampling="dense")
    with pytest.raises(ConfigError, match="pass one of each per frame"):
        TrackletSampler(pids, mods, tids[:-1])
