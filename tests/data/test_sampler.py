"""Cross-modality identity sampler: composition, passes, determinism, DDP shares, resume, errors, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from vireid.data.sampler import CrossModalityIdentitySampler
from vireid.errors import ConfigError, DatasetError


def _dataset(num_ids: int = 13, seed: int = 0, min_images: int = 1, max_images: int = 9):
    """pids/modalities with a varying number of images per identity and modality (some below K)."""
    rng = np.random.default_rng(seed)
    pids, modalities = [], []
    for pid in range(num_ids):
        for code in (0, 1):
            count = int(rng.integers(min_images, max_images + 1))
            pids += [pid * 10 + 3] * count  # non-contiguous identity numbers on purpose
            modalities += [code] * count
    order = rng.permutation(len(pids))  # images of one identity are not contiguous either
    return np.asarray(pids)[order], np.asarray(modalities)[order]


def _check_batch(batch, pids, modalities, p, k):
    batch = np.asarray(batch)
    assert batch.shape == (2 * p * k,)
    visible, infrared = batch[: p * k], batch[p * k :]
    assert (modalities[visible] == 0).all() and (modalities[infrared] == 1).all()
    ids_visible = pids[visible].reshape(p, k)
    ids_infrared = pids[infrared].reshape(p, k)
    assert (ids_visible == ids_visible[:, :1]).all() and (ids_infrared == ids_visible[:, :1]).all()
    identities = ids_visible[:, 0]
    assert len(set(identities.tolist())) == p  # P distinct identities
    return identities


def test_batches_hold_p_identities_with_k_visible_and_k_infrared_each():
    pids, modalities = _dataset()
    sampler = CrossModalityIdentitySampler(pids, modalities, num_ids=4, num_per_modality=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(max((modalities == 0).sum(), (modalities == 1).sum()) / 12)
    for batch in batches:
        identities = _check_batch(batch, pids, modalities, 4, 3)
        for pid in identities:  # K images without replacement when the identity has >= K of a modality
            for code in (0, 1):
                own = np.asarray(batch)[(pids[batch] == pid) & (modalities[batch] == code)]
                if ((pids == pid) & (modalities == code)).sum() >= 3:
                    assert len(set(own.tolist())) == 3


def test_identities_do_not_repeat_within_a_pass():
    pids, modalities = _dataset(num_ids=13)
    sampler = CrossModalityIdentitySampler(pids, modalities, num_ids=4, num_per_modality=2, epoch_length=40)
    stream = sampler.identity_plan(0).reshape(-1)  # 160 identity slots = 12 full passes of 13 + rest
    for start in range(0, len(stream) - 13 + 1, 13):
        assert sorted(stream[start : start + 13].tolist()) == sorted(set(pids.tolist()))
    for batch in sampler.identity_plan(0):  # including the batches that straddle two passes
        assert len(set(batch.tolist())) == 4


def test_plan_is_deterministic_and_changes_with_epoch_and_seed():
    pids, modalities = _dataset()
    a = CrossModalityIdentitySampler(pids, modalities, num_ids=4, num_per_modality=3, seed=7)
    b = CrossModalityIdentitySampler(pids, modalities, num_ids=4, num_per_modality=3, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    epoch_one = list(a)
    assert epoch_one == list(b)
    a.set_epoch(0)
    assert list(a) != epoch_one
    other_seed = CrossModalityIdentitySampler(pids, modalities, num_ids=4, num_per_modality=3, seed=8)
    assert list(other_seed) != list(b.plan_epoch(0).tolist())
    assert list(a) == list(a)  # iterating twice in one epoch gives the same batches


def test_epoch_length_modes():
    pids, modalities = _dataset(num_ids=13)
    largest = max((modalities == 0).sum(), (modalities == 1).sum())
    images = CrossModalityIdentitySampler(pids, modalities, num_ids=3, num_per_modality=2)
    assert len(images) == math.ceil(largest / 6)
    identities = CrossModalityIdentitySampler(pids, modalities, num_ids=3, num_per_modality=2, epoch_length="identities")
    assert len(identities) == 13 // 3
    flat = identities.identity_plan(0).reshape(-1)
    assert len(set(flat.tolist())) == len(flat)  # one pass: no identity twice
    fixed = CrossModalityIdentitySampler(pids, modalities, num_ids=3, num_per_modality=2, epoch_length=17)
    assert len(list(fixed)) == 17
    assert len(CrossModalityIdentitySampler(pids, modalities, 3, 2, epoch_length="17")) == 17  # CLI override
    # the shorter plans are prefixes of the same stream
    assert np.array_equal(identities.plan_epoch(0), fixed.plan_epoch(0)[: len(identities)])


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shares_are_disjoint_equal_sized_and_cover_the_single_process_plan(world_size):
    pids, modalities = _dataset(num_ids=13)
    ranks = [
        CrossModalityIdentitySampler(pids, modalities, 3, 2, seed=3, rank=r, world_size=world_size) for r in range(world_size)
    ]
    per_rank = len(ranks[0])
    largest = max((modalities == 0).sum(), (modalities == 1).sum())
    assert per_rank == math.ceil(largest / (3 * 2 * world_size))
    shares = [np.asarray(list(s)) for s in ranks]
    assert all(share.shape == (per_rank, 12) for share in shares)
    single = CrossModalityIdentitySampler(pids, modalities, 3, 2, seed=3, epoch_length=per_rank * world_size)
    global_plan = np.asarray(list(single))
    interleaved = np.stack(shares, axis=1).reshape(per_rank * world_size, 12)
    assert np.array_equal(interleaved, global_plan)  # rank r holds global batches r, r+W, ...
    as_sets = [{tuple(row) for row in share} for share in shares]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not as_sets[i] & as_sets[j]


def test_resume_mid_epoch_yields_exactly_the_remaining_batches():
    pids, modalities = _dataset()
    reference = CrossModalityIdentitySampler(pids, modalities, 4, 3, seed=5)
    reference.set_epoch(2)
    full = list(reference)

    interrupted = CrossModalityIdentitySampler(pids, modalities, 4, 3, seed=5)
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    consumed = [next(iterator) for _ in range(3)]
    state = interrupted.state_dict()
    assert consumed == full[:3] and state["epoch"] == 2 and state["batches_consumed"] == 3

    resumed = CrossModalityIdentitySampler(pids, modalities, 4, 3, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a trainer calls this at the start of the resumed epoch: must keep the offset
    assert resumed.resume_offset == 3
    assert list(resumed) == full[3:]
    assert list(resumed) == full  # the next pass over the same epoch is whole again
    resumed.set_epoch(3)
    assert resumed.state_dict()["batches_consumed"] == 0

    mismatched = CrossModalityIdentitySampler(pids, modalities, 4, 3, seed=6)
    with pytest.raises(ConfigError, match="seed=5"):
        mismatched.load_state_dict(state)


def test_clear_errors():
    pids, modalities = _dataset(num_ids=5)
    with pytest.raises(ConfigError, match="num_ids=6 but the training set has only 5 identities"):
        CrossModalityIdentitySampler(pids, modalities, num_ids=6, num_per_modality=2)
    no_infrared = ~((pids == 23) & (modalities == 1))
    with pytest.raises(DatasetError, match="identity 23 has no infrared image"):
        CrossModalityIdentitySampler(pids[no_infrared], modalities[no_infrared], num_ids=2, num_per_modality=2)
    with pytest.raises(ConfigError, match="epoch_length='weeks'"):
        CrossModalityIdentitySampler(pids, modalities, 2, 2, epoch_length="weeks")
    with pytest.raises(ConfigError, match="modality code 2"):
        CrossModalityIdentitySampler(pids, np.where(modalities == 1, 2, 0), 2, 2)
    with pytest.raises(ConfigError, match="rank=2"):
        CrossModalityIdentitySampler(pids, modalities, 2, 2, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="identities"):
        CrossModalityIdentitySampler(pids, modalities, 2, 2, world_size=3, epoch_length="identities")


def test_identities_with_fewer_than_k_images_are_sampled_with_replacement():
    pids = np.array([0, 0, 1, 1, 1, 1, 0, 1])
    modalities = np.array([0, 1, 0, 0, 0, 1, 1, 1])
    sampler = CrossModalityIdentitySampler(pids, modalities, num_ids=2, num_per_modality=3, epoch_length=4)
    for batch in sampler:
        _check_batch(batch, pids, modalities, 2, 3)
        visible_of_0 = [i for i in batch[:6] if pids[i] == 0]
        assert visible_of_0 == [0, 0, 0]  # identity 0 has a single visible image


def test_planning_a_sysu_sized_epoch_is_fast():
    rng = np.random.default_rng(0)
    pids = np.concatenate([rng.integers(0, 395, 22258), np.arange(395), rng.integers(0, 395, 11909)])
    modalities = np.concatenate([np.zeros(22258 + 395, dtype=np.int64), np.ones(11909, dtype=np.int64)])
    pids = np.concatenate([pids, np.arange(395)])
    modalities = np.concatenate([modalities, np.ones(395, dtype=np.int64)])
    sampler = CrossModalityIdentitySampler(pids, modalities, num_ids=6, num_per_modality=6)
    sampler.plan_epoch(0)
    best = min(_timed(sampler.plan_epoch, epoch) for epoch in range(1, 6))
    assert sampler.plan_epoch(1).shape == (math.ceil((22258 + 395) / 36), 72)
    assert best < 0.050, f"planning took {best * 1e3:.1f} ms"


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start
