"""The colour-histogram matcher and the random baseline."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vireid  # noqa: F401
from vireid.baselines import color_histogram_features, random_features


def _reference_features(images: np.ndarray, bins, stripes, center_fraction) -> np.ndarray:
    """Plain per-pixel twin of the vectorised implementation (colorsys HSV, Python loops)."""
    nh, ns, nv = bins
    n, h, w, _ = images.shape
    keep = max(1, int(round(w * center_fraction)))
    left = (w - keep) // 2
    out = np.zeros((n, stripes, nh * ns * nv))
    for i in range(n):
        for y in range(h):
            s = min(y * stripes // h, stripes - 1)
            for x in range(left, left + keep):
                r, g, b = (images[i, y, x] / 255.0).tolist()
                hue, sat, val = colorsys.rgb_to_hsv(r, g, b)
                hb, sb, vb = min(int(hue * nh), nh - 1), min(int(sat * ns), ns - 1), min(int(val * nv), nv - 1)
                out[i, s, (hb * ns + sb) * nv + vb] += 1
    out /= out.sum(axis=2, keepdims=True)
    feats = np.sqrt(out).reshape(n, -1)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def test_matches_the_plain_reference_implementation() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 12, 10, 3), dtype=np.uint8)
    images[0, :, :, :] = images[0, :, :, :1]  # a grey image: hue undefined, saturation 0
    for bins, stripes, frac in (((8, 4, 4), 6, 0.5), ((4, 2, 3), 3, 1.0), ((6, 3, 2), 5, 0.3)):
        fast = color_histogram_features(images, bins=bins, stripes=stripes, center_fraction=frac)
        slow = _reference_features(images, bins, stripes, frac)
        assert fast.shape == (3, stripes * int(np.prod(bins))) and fast.dtype == np.float32
        np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_features_are_normalised_and_separate_colours() -> None:
    red = np.zeros((1, 32, 16, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((1, 32, 16, 3), np.uint8)
    blue[..., 2] = 220
    feats = color_histogram_features(np.concatenate([red, red, blue]))
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert np.allclose(feats[0], feats[1])
    assert float(feats[0] @ feats[2]) < 0.01  # disjoint colour bins


def test_paths_arrays_and_tensors_give_the_same_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 16, 8, 3), dtype=np.uint8)
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / f"{i}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    from_array = color_histogram_features(images)
    from_paths = color_histogram_features(paths, size=(16, 8), batch_size=3)  # two batches
    from_tensor = color_histogram_features(torch.from_numpy(images))
    np.testing.assert_allclose(from_paths, from_array, atol=1e-6)
    np.testing.assert_allclose(from_tensor, from_array, atol=1e-6)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="center_fraction"):
        color_histogram_features(np.zeros((1, 8, 8, 3), np.uint8), center_fraction=0.0)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        color_histogram_features(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        color_histogram_features(np.zeros((1, 8, 8, 3), np.float32))


def test_random_features_are_seeded_unit_vectors() -> None:
    a, b, c = random_features(50, 32, seed=1), random_features(50, 32, seed=1), random_features(50, 32, seed=2)
    assert a.shape == (50, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(a, b) and not np.allclose(a, c)
