"""Decoded-image cache: round trip, reuse without decoding, fingerprint, atomic writes, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vireid  # noqa: F401
import vireid.data.cache as cache_module
from vireid.data.cache import ImageCache, image_fingerprint
from vireid.data.images import decode_image
from vireid.errors import DatasetError

HEIGHT, WIDTH = 16, 8


def _write_images(folder: Path, count: int = 20, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = int(rng.integers(12, 30)), int(rng.integers(6, 15))
        if i % 3 == 2:  # a grey (infrared-like) image
            image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L")
        else:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")
        path = folder / f"{i:03d}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def _expected(paths: list[str]) -> np.ndarray:
    return np.stack([decode_image(p, size=(HEIGHT, WIDTH)).transpose(2, 0, 1) for p in paths])


def test_in_memory_cache_round_trips_decode_image(tmp_path):
    paths = _write_images(tmp_path / "img")
    cache = ImageCache.build(paths, HEIGHT, WIDTH, workers=2, progress=False)
    assert cache.in_memory and len(cache) == 20 and cache.shape == (20, 3, HEIGHT, WIDTH)
    expected = _expected(paths)
    indices = [5, 0, 19, 5]
    batch = cache[indices]
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, HEIGHT, WIDTH)
    assert np.array_equal(batch.numpy(), expected[indices])
    assert np.array_equal(cache[torch.tensor([3, 4])].numpy(), expected[[3, 4]])
    assert np.array_equal(cache[7].numpy(), expected[7])
    assert np.array_equal(cache[2:6].numpy(), expected[2:6])


def test_disk_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "img")
    first = ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert first.path is not None and first.path.is_file() and not first.in_memory
    assert np.array_equal(first[list(range(20))].numpy(), _expected(paths))

    def must_not_decode(*args, **kwargs):
        raise AssertionError("the finished cache should have been reused")

    monkeypatch.setattr(cache_module, "decode_image", must_not_decode)
    second = ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=tmp_path / "cache", progress=False)
    assert second.path == first.path
    assert isinstance(second.array, np.memmap)
    assert torch.equal(second[[1, 2, 3]], first[[1, 2, 3]])
    # another size is another cache, so it must decode
    with pytest.raises(AssertionError, match="reused"):
        ImageCache.build(paths, HEIGHT + 2, WIDTH, cache_dir=tmp_path / "cache", progress=False)


def test_fingerprint_changes_when_an_image_changes(tmp_path):
    paths = _write_images(tmp_path / "img", count=6)
    before = image_fingerprint(paths, HEIGHT, WIDTH)
    assert before == image_fingerprint(paths, HEIGHT, WIDTH)
    assert before != image_fingerprint(paths, HEIGHT, WIDTH + 1)
    assert before != image_fingerprint(paths[::-1], HEIGHT, WIDTH)
    old = ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=tmp_path / "cache", progress=False)

    Image.fromarray(np.full((20, 10, 3), 77, dtype=np.uint8)).save(paths[2])
    stat = os.stat(paths[2])
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = image_fingerprint(paths, HEIGHT, WIDTH)
    assert after != before
    new = ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=tmp_path / "cache", progress=False)
    assert new.path != old.path
    assert bool((new[2] == 77).all()) and not bool((old[2] == 77).all())


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftover_temporary_file_is_never_taken_for_a_cache(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "img", count=8)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    fingerprint = image_fingerprint(paths, HEIGHT, WIDTH)
    final = cache_dir / f"images-8x3x{HEIGHT}x{WIDTH}-{fingerprint[:24]}.npy"
    leftover = final.with_name(f"{final.name}.{_dead_pid()}.deadbeef.tmp")
    leftover.write_bytes(b"half-written cache from a killed build")

    seen_final_during_build = []
    real_decode = cache_module.decode_image

    def watching_decode(path, size=None, **kwargs):
        seen_final_during_build.append(final.exists())
        return real_decode(path, size=size, **kwargs)

    monkeypatch.setattr(cache_module, "decode_image", watching_decode)
    cache = ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=cache_dir, progress=False)
    assert cache.path == final
    assert seen_final_during_build and not any(seen_final_during_build)  # written elsewhere, renamed at the end
    assert not leftover.exists()
    assert list(cache_dir.glob("*.tmp")) == []
    assert np.array_equal(cache[list(range(8))].numpy(), _expected(paths))


def test_failed_build_leaves_no_cache_and_names_the_bad_file(tmp_path):
    paths = _write_images(tmp_path / "img", count=40)
    broken = Path(paths[25])
    broken.write_bytes(b"this is not a PNG")
    cache_dir = tmp_path / "cache"
    with pytest.raises(DatasetError, match=str(broken)):
        ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=cache_dir, workers=2, progress=False)
    assert list(cache_dir.iterdir()) == []  # neither a final file nor a temporary one
    with pytest.raises(DatasetError, match=str(broken)):
        ImageCache.build(paths, HEIGHT, WIDTH, workers=1, progress=False)

    missing = str(tmp_path / "img" / "missing.png")
    with pytest.raises(DatasetError, match="missing.png does not exist"):
        ImageCache.build(paths[:3] + [missing], HEIGHT, WIDTH, progress=False)


def test_open_reads_a_finished_cache_file(tmp_path):
    paths = _write_images(tmp_path / "img", count=4)
    built = ImageCache.build(paths, HEIGHT, WIDTH, cache_dir=tmp_path / "cache", progress=False)
    opened = ImageCache.open(built.path)
    assert torch.equal(opened[[0, 1, 2, 3]], built[[0, 1, 2, 3]])
    bad = tmp_path / "cache" / "garbage.npy"
    bad.write_bytes(b"nope")
    with pytest.raises(DatasetError, match="garbage.npy"):
        ImageCache.open(bad)
