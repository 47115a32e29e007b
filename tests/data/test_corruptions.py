"""The corruption suite: determinism (per image, any batching), severity ordering, input checks,
and its use as a training augmentation step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vireid.data.corruptions import CORRUPTIONS, CorruptionError, RandomCorruption, corrupt
from vireid.data.transforms import TRANSFORM_STEPS, add_configured_steps, build_train_transform


def _images(batch: int = 4, height: int = 64, width: int = 32) -> torch.Tensor:
    """Smooth coloured images with edges (blur and JPEG need structure to change anything)."""
    gen = torch.Generator().manual_seed(0)
    low = torch.rand(batch, 3, height // 8, width // 8, generator=gen)
    smooth = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    stripes = (torch.arange(width) // 4 % 2).float().view(1, 1, 1, width) * 0.3
    return ((smooth * 0.7 + stripes) * 255).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_deterministic_per_image_and_severity_ordered(name):
    images = _images()
    first = corrupt(images, name, 3, seed=7)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, corrupt(images, name, 3, seed=7))  # same seed, same result
    # an image's corruption does not depend on the batch it is in (ids = its pool index)
    assert torch.equal(first[2:4], corrupt(images[2:4], name, 3, seed=7, ids=[2, 3]))
    deviation = [float((corrupt(images, name, s, seed=7).float() - images.float()).abs().mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(deviation, deviation[1:])), deviation
    assert deviation[0] > 0.5


def test_seed_changes_random_corruptions_and_numpy_hwc_is_accepted():
    images = _images(2)
    assert not torch.equal(corrupt(images, "gaussian_noise", 2, seed=0), corrupt(images, "gaussian_noise", 2, seed=1))
    hwc = images[0].permute(1, 2, 0).numpy()
    out = corrupt(hwc, "occlusion", 4, seed=3)
    assert isinstance(out, np.ndarray) and out.shape == hwc.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, corrupt(images[:1], "occlusion", 4, seed=3)[0].permute(1, 2, 0).numpy())


def test_bad_inputs_raise_one_clear_error():
    images = _images(1)
    with pytest.raises(CorruptionError, match="unknown corruption 'snow'"):
        corrupt(images, "snow", 1)
    with pytest.raises(CorruptionError, match="outside 1..5"):
        corrupt(images, "fog", 6)
    with pytest.raises(CorruptionError, match="uint8"):
        corrupt(images.float(), "fog", 1)


def test_training_step_from_a_config_is_seeded_and_touches_chosen_samples_only():
    assert TRANSFORM_STEPS.get("corruption") is RandomCorruption
    transform = add_configured_steps(build_train_transform(64, 32, random_erasing=0.0), [
        {"type": "corruption", "before": "normalize", "p": 0.5, "severities": [2, 4]}])
    assert transform.names() == ["pad_crop_flip", "corruption", "normalize"]
    images = _images(8)
    mods = torch.tensor([0, 1] * 4)
    a = transform(images, mods, torch.Generator().manual_seed(3))
    b = transform(images, mods, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    step = RandomCorruption(p=0.5, corruptions=["contrast"], severities=[5], modalities=["infrared"])
    out = step(images, mods, torch.Generator().manual_seed(0))
    chosen = step.last_choice[:, 0] >= 0
    assert bool(chosen.any()) and not bool(chosen[mods == 0].any())  # only infrared samples
    assert torch.equal(out[~chosen], images[~chosen]) and not torch.equal(out[chosen], images[chosen])
    assert torch.equal(out[chosen], corrupt_batch(images[chosen]))


def corrupt_batch(images):
    from vireid.data.corruptions import contrast

    return (contrast(images.float() / 255.0, 5, torch.Generator()).clamp(0, 1) * 255).round().to(torch.uint8)
