"""Batch loaders end to end on a tiny on-disk dataset: content, determinism, resume, early stop, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import vireid  # noqa: F401
from vireid.data.cache import ImageCache
from vireid.data.loader import Batch, EvalLoader, TrainLoader, prefetch_in_thread
from vireid.data.sampler import CrossModalityIdentitySampler
from vireid.data.transforms import build_eval_transform, build_train_transform

HEIGHT, WIDTH = 16, 8


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """5 identities x (3 visible RGB + 2 infrared grey) PNGs of odd sizes, decoded to 16x8."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    paths, pids, modalities = [], [], []
    for pid in range(5):
        for code, count in ((0, 3), (1, 2)):
            for i in range(count):
                if code == 0:
                    image = Image.fromarray(rng.integers(0, 256, (20, 9, 3), dtype=np.uint8), mode="RGB")
                else:
                    image = Image.fromarray(rng.integers(0, 256, (18, 11), dtype=np.uint8), mode="L")
                path = folder / f"{pid}_{code}_{i}.png"
                image.save(path)
                paths.append(str(path))
                pids.append(pid)
                modalities.append(code)
    cache = ImageCache.build(paths, HEIGHT, WIDTH, workers=1, progress=False)
    return cache, np.asarray(pids), np.asarray(modalities)


def _loader(dataset, seed=0, prefetch=2, transform=None, epoch_length="images"):
    cache, pids, modalities = dataset
    sampler = CrossModalityIdentitySampler(pids, modalities, num_ids=2, num_per_modality=2, epoch_length=epoch_length)
    transform = transform or build_train_transform(HEIGHT, WIDTH, pad=2, channel_aug=True)
    return TrainLoader(cache, pids, modalities, sampler, transform, seed=seed, prefetch=prefetch)


def _no_prefetch_threads_left(timeout: float = 2.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(t.name.startswith("vireid-") and t.is_alive() for t in threading.enumerate()):
            return True
        time.sleep(0.01)
    return False


def test_train_loader_yields_augmented_batches_with_matching_labels(tiny_dataset):
    cache, pids, modalities = tiny_dataset
    loader = _loader(tiny_dataset)
    batches = list(loader)
    assert len(batches) == len(loader) == len(loader.batch_sampler) == 4  # ceil(15 visible / (P*K = 4))
    for batch in batches:
        assert isinstance(batch, Batch)
        assert batch.images.dtype == torch.float32 and batch.images.shape == (8, 3, HEIGHT, WIDTH)
        assert batch.labels.dtype == torch.int64 and batch.modalities.dtype == torch.int64
        assert torch.equal(batch.labels, torch.as_tensor(pids[batch.indices.numpy()]))
        assert torch.equal(batch.modalities, torch.tensor([0] * 4 + [1] * 4))
    # without augmentation the loader returns exactly the normalised cached pixels
    plain = _loader(tiny_dataset, transform=build_eval_transform())
    batch = next(iter(plain))
    assert torch.equal(batch.images, build_eval_transform()(cache[batch.indices]))
    assert _no_prefetch_threads_left()


def test_same_seed_gives_identical_batches_and_another_seed_other_augmentations(tiny_dataset):
    first = list(_loader(tiny_dataset, seed=3))
    second = list(_loader(tiny_dataset, seed=3, prefetch=0))  # threading does not matter either
    other = list(_loader(tiny_dataset, seed=4))
    for a, b, c in zip(first, second, other):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
        assert torch.equal(a.indices, c.indices)  # same sampler seed: same images ...
    assert any(not torch.equal(a.images, c.images) for a, c in zip(first, other))  # ... augmented differently


def test_resume_mid_epoch_reproduces_the_remaining_batches_and_augmentations(tiny_dataset):
    cache, pids, modalities = tiny_dataset

    def make():
        sampler = CrossModalityIdentitySampler(pids, modalities, 2, 2, seed=1, epoch_length=6)
        transform = build_train_transform(HEIGHT, WIDTH, pad=2, channel_aug=True)
        return TrainLoader(cache, pids, modalities, sampler, transform, seed=9, prefetch=2)

    reference = make()
    reference.set_epoch(4)
    full = list(reference)
    assert len(full) == 6

    interrupted = make()
    interrupted.set_epoch(4)
    seen = []
    for batch in interrupted:
        seen.append(batch)
        if len(seen) == 2:
            state = interrupted.state_dict()  # the prefetch thread is ahead; the state must not be
            break
    assert state["epoch"] == 4 and state["batches_consumed"] == 2

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(4)
    rest = list(resumed)
    assert len(rest) == 4
    for expected, got in zip(full[2:], rest):
        assert torch.equal(expected.indices, got.indices)
        assert torch.equal(expected.images, got.images)
    assert resumed.state_dict()["batches_consumed"] == 6


def test_breaking_out_early_stops_the_prefetch_thread(tiny_dataset):
    loader = _loader(tiny_dataset, prefetch=1, epoch_length=50)  # the producer ends up blocked on a full queue
    for _ in loader:
        time.sleep(0.05)
        break
    assert _no_prefetch_threads_left()
    iterator = iter(loader)
    next(iterator)
    del iterator  # an abandoned iterator is cleaned up too
    assert _no_prefetch_threads_left()
    assert loader.state_dict()["batches_consumed"] == 1


def test_errors_in_the_prefetch_thread_reach_the_consumer(tiny_dataset):
    calls = []

    def failing_transform(images, modalities, generator):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("augmentation exploded on batch 2")
        return images.float()

    loader = _loader(tiny_dataset, transform=failing_transform, epoch_length=5)
    received = []
    with pytest.raises(ValueError, match="exploded on batch 2"):
        for batch in loader:
            received.append(batch)
    assert len(received) == 1
    assert _no_prefetch_threads_left()

    def broken_source():
        yield 1
        raise KeyError("source broke")

    with pytest.raises(KeyError, match="source broke"):
        list(prefetch_in_thread(broken_source(), depth=3))


def test_eval_loader_walks_the_cache_in_order(tiny_dataset):
    cache = tiny_dataset[0]
    loader = EvalLoader(cache, batch_size=4)
    batches = list(loader)
    assert len(batches) == len(loader) == 7  # 25 images
    indices = torch.cat([b.indices for b in batches])
    assert torch.equal(indices, torch.arange(25))
    images = torch.cat([b.images for b in batches])
    assert torch.equal(images, build_eval_transform()(cache[list(range(25))]))
    first_images, first_indices, extras = batches[0]  # unpacks as (images, indices, extras)
    assert first_images.shape == (4, 3, HEIGHT, WIDTH) and first_indices.tolist() == [0, 1, 2, 3]
    assert extras == {}  # no joints given
    for _ in EvalLoader(cache, batch_size=1, prefetch=1):
        break
    assert _no_prefetch_threads_left()


def test_cache_gather_copies_once_and_matches_indexing(tiny_dataset):
    """``ImageCache.gather`` (the loaders' path: straight into pinned memory on CUDA) returns what
    ``cache[indices]`` does, for index lists, tensors and slices, as a tensor of its own."""
    cache = tiny_dataset[0]
    for indices in ([5, 0, 5, 3], torch.tensor([2, 1]), slice(3, 9), slice(len(cache) - 2, len(cache) + 4)):
        out = cache.gather(indices)
        assert out.dtype == torch.uint8 and torch.equal(out, cache[indices])
    out = cache.gather([1])
    out.zero_()
    assert cache[[1]].any()  # a copy, not a view of the cache
