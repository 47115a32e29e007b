"""Batch tensor augmentations: determinism, geometry, erasing, CAJ channel augmentation, speed."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

import vireid  # noqa: F401  (installs the torchvision guard before anything else)
from vireid.data.transforms import (
    AGW_ERASING_FILL,
    GRAY_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRANSFORM_STEPS,
    ChannelAdaptiveGray,
    Normalize,
    RandomChannelExchange,
    RandomErasing,
    RandomGrayscale,
    RandomPadCropFlip,
    RandomToneCurve,
    add_configured_steps,
    build_eval_transform,
    build_train_transform,
)
from vireid.errors import ConfigError


def _images(batch: int = 8, height: int = 24, width: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _reference_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((images.double() / 255.0 - mean) / std).float()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_transform_is_deterministic_for_a_seed_and_varies_with_it():
    images = _images()
    modalities = torch.tensor([0, 1] * 4)
    transform = build_train_transform(24, 12, channel_aug=True, grayscale=0.3)
    first = transform(images, modalities, _gen(5))
    again = transform(images, modalities, _gen(5))
    other = transform(images, modalities, _gen(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.dtype == torch.float32 and first.shape == (8, 3, 24, 12)
    assert images.dtype == torch.uint8 and torch.equal(images, _images())  # input left untouched


def test_eval_transform_gives_exact_normalised_values():
    images = torch.zeros((2, 3, 4, 5), dtype=torch.uint8)
    images[1] = 255
    images[0, :, 0, 0] = torch.tensor([10, 128, 200], dtype=torch.uint8)
    out = build_eval_transform()(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, _reference_normalize(images), atol=1e-6, rtol=0)
    expected_black = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(out[0, :, 1, 1], torch.tensor(expected_black), atol=1e-6, rtol=0)
    expected_white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor(expected_white), atol=1e-6, rtol=0)
    with pytest.raises(TypeError):
        Normalize()(images.float())


def test_flip_mirrors_exactly_the_chosen_samples():
    images = _images(batch=16)
    step = RandomPadCropFlip(pad=0, flip=0.5)
    out = step(images, None, _gen(1))
    flipped = step.last_flipped
    assert 0 < int(flipped.sum()) < 16
    torch.testing.assert_close(out[flipped], images[flipped].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(out[~flipped], images[~flipped], rtol=0, atol=0)
    always = RandomPadCropFlip(pad=0, flip=1.0)(images, None, _gen(2))
    assert torch.equal(always, images.flip(-1))


def test_crop_offsets_stay_within_the_padding_and_match_a_padded_crop():
    pad = 3
    images = _images(batch=64, height=10, width=7)
    step = RandomPadCropFlip(pad=pad, flip=0.5)
    out = step(images, None, _gen(3))
    offsets, flipped = step.last_offsets, step.last_flipped
    assert int(offsets.min()) == 0 and int(offsets.max()) == 2 * pad  # whole range used, nothing beyond
    padded = F.pad(images, (pad, pad, pad, pad))
    for i in range(images.shape[0]):  # reference, per sample on purpose
        dy, dx = offsets[i].tolist()
        crop = padded[i, :, dy : dy + 10, dx : dx + 7]
        expected = crop.flip(-1) if flipped[i] else crop
        assert torch.equal(out[i], expected), f"sample {i} offset {(dy, dx)} flipped {bool(flipped[i])}"


def test_random_erasing_boxes_respect_area_and_aspect_bounds():
    height, width = 64, 32
    images = torch.full((200, 3, height, width), -5.0)
    step = RandomErasing(p=1.0, fill=AGW_ERASING_FILL)
    out = step(images.clone(), None, _gen(4))
    boxes = step.last_boxes
    top, left, h, w = boxes.unbind(1)
    assert bool((h > 0).all()) and bool((w > 0).all())
    assert bool((h < height).all() & (w < width).all())
    assert bool((top >= 0).all() & (top + h <= height).all() & (left >= 0).all() & (left + w <= width).all())
    area = (h * w).double() / (height * width)
    # rounding h and w to integers moves the area by at most about one row and one column
    slack = (h + w + 1).double() / (height * width)
    assert bool((area >= 0.02 - slack).all() & (area <= 0.4 + slack).all())
    ratio = h.double() / w.double()
    assert bool((ratio > 0.3 * 0.5).all() & (ratio < (1 / 0.3) * 2).all())
    erased = out[:, 0] == AGW_ERASING_FILL[0]
    assert torch.equal(erased.sum(dim=(1, 2)), h * w)  # exactly the box, nothing else
    for channel, value in enumerate(AGW_ERASING_FILL):
        assert torch.equal(out[:, channel] == value, erased)
    i = 0
    assert bool(erased[i, top[i] : top[i] + h[i], left[i] : left[i] + w[i]].all())


def test_random_erasing_probability_fill_and_modalities():
    images = torch.full((100, 3, 32, 16), 3.0)
    step = RandomErasing(p=0.5, fill="mean")
    out = step(images.clone(), None, _gen(7))
    erased = (step.last_boxes[:, 2] > 0)
    assert 25 < int(erased.sum()) < 75
    assert torch.equal((out == 0).flatten(1).any(1), erased)
    assert bool((out[~erased] == 3.0).all())

    modalities = torch.tensor([0, 1] * 50)
    infrared_only = RandomErasing(p=1.0, fill="mean", modalities=("infrared",))
    out = infrared_only(images.clone(), modalities, _gen(7))
    assert bool((out[modalities == 0] == 3.0).all())
    assert bool((out[modalities == 1] == 0).flatten(1).any(1).all())

    noisy = RandomErasing(p=1.0, fill="random")
    first = noisy(images.clone(), None, _gen(8))
    assert torch.equal(first, noisy(images.clone(), None, _gen(8)))
    assert int((first != 3.0).sum()) > 0 and float(first[first != 3.0].std()) > 0.5


def test_channel_exchange_only_touches_visible_samples_and_equalises_channels():
    images = torch.randn(40, 3, 8, 6)
    modalities = torch.tensor([0, 1] * 20)
    step = RandomChannelExchange(p=1.0)
    out = step(images.clone(), modalities, _gen(9))
    visible, infrared = modalities == 0, modalities == 1
    assert torch.equal(out[infrared], images[infrared])
    assert torch.equal(out[visible][:, 0], out[visible][:, 1]) and torch.equal(out[visible][:, 1], out[visible][:, 2])
    choice = step.last_choice
    assert bool((choice[infrared] == -1).all()) and set(choice[visible].tolist()) == {0, 1, 2}
    for i in torch.nonzero(visible).squeeze(1).tolist():
        assert torch.equal(out[i, 0], images[i, int(choice[i])])


def test_channel_exchange_gray_option_and_adaptive_gray():
    images = torch.randn(60, 3, 5, 4)
    modalities = torch.zeros(60, dtype=torch.long)
    step = RandomChannelExchange(p=1.0, include_gray=True)
    out = step(images.clone(), modalities, _gen(10))
    gray = step.last_choice == 3
    assert int(gray.sum()) > 0
    weights = torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    luma = (images[gray] * weights).sum(1)
    torch.testing.assert_close(out[gray][:, 1], luma)

    adaptive = ChannelAdaptiveGray(gray_p=1.0)
    out = adaptive(images.clone(), modalities, _gen(11))
    assert set(adaptive.last_choice.tolist()) == {0, 1, 2, 3}
    assert torch.equal(out[:, 0], out[:, 2])  # every option makes the channels equal when gray_p = 1
    never_gray = ChannelAdaptiveGray(gray_p=0.0)
    out = never_gray(images.clone(), modalities, _gen(11))
    untouched = never_gray.last_choice == -1
    assert int(untouched.sum()) > 0 and torch.equal(out[untouched], images[untouched])


def test_channel_aug_in_the_pipeline_spares_infrared_images():
    images = _images(batch=12)
    modalities = torch.tensor([0, 1] * 6)
    plain = build_train_transform(24, 12, random_erasing=0.0)
    augmented = build_train_transform(24, 12, random_erasing=0.0, channel_aug=True, channel_aug_p=1.0)
    assert augmented.names()[-1] == "channel_exchange"
    a = plain(images, modalities, _gen(12))
    b = augmented(images, modalities, _gen(12))
    assert torch.equal(a[1::2], b[1::2])
    assert torch.equal(b[0::2, 0], b[0::2, 1]) and torch.equal(b[0::2, 1], b[0::2, 2])
    assert not torch.equal(a[0::2], b[0::2])


def test_random_grayscale_on_uint8_visible_images():
    images = _images(batch=10)
    modalities = torch.tensor([0] * 5 + [1] * 5)
    step = RandomGrayscale(p=1.0)
    out = step(images, modalities, _gen(13))
    assert out.dtype == torch.uint8
    assert torch.equal(out[5:], images[5:])
    expected = (images[:5].double() * torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)).sum(1)
    assert (out[:5, 0].double() - expected).abs().max() <= 0.5 + 1e-6
    assert torch.equal(out[:5, 0], out[:5, 2])


def test_tone_curve_maps_the_grey_image_through_each_samples_table():
    images = _images(batch=12)
    modalities = torch.tensor([0, 1] * 6)
    step = RandomToneCurve(p=0.6, knots=4, modalities=("visible", "infrared"))
    out = step(images, modalities, _gen(5))
    chosen, tables = step.last_chosen, step.last_tables
    assert out.dtype == torch.uint8 and 0 < int(chosen.sum()) < 12 and tables.shape == (int(chosen.sum()), 256)
    assert torch.equal(out[~chosen], images[~chosen])  # the others untouched
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).view(3, 1, 1)
    for row, i in enumerate(chosen.nonzero().squeeze(1).tolist()):  # loop reference, one pixel at a time
        grey = (images[i].double() * weights).sum(0).round().clamp(0, 255).long()
        expected = torch.tensor([[int(tables[row, g]) for g in line] for line in grey.tolist()], dtype=torch.uint8)
        assert all(torch.equal(out[i, c], expected) for c in range(3))
    # each table is piecewise linear between its 4 knots (levels 0, 85, 170, 255) and not always rising
    knots = tables[:, [0, 85, 170, 255]].float()
    assert torch.allclose(tables[:, 42].float(), (knots[:, 0] * 43 + knots[:, 1] * 42) / 85, atol=1.0)
    assert bool(((knots[:, 1:] - knots[:, :-1]) < 0).any())
    # seeded: the same generator seed gives the same batch; modalities restrict the step
    assert torch.equal(RandomToneCurve(p=0.6)(images, modalities, _gen(5)), out)
    only_ir = RandomToneCurve(p=1.0, modalities=("infrared",))
    only_ir(images, modalities, _gen(1))
    assert torch.equal(only_ir.last_chosen, modalities == 1)
    with pytest.raises(ConfigError, match="knots=1"):
        RandomToneCurve(knots=1)


def test_tone_curve_from_a_config_list_goes_before_normalisation():
    transform = build_train_transform(24, 12, grayscale=0.5)
    add_configured_steps(transform, [{"type": "tone_curve", "before": "normalize", "p": 0.5}])
    assert transform.names() == ["pad_crop_flip", "grayscale", "tone_curve", "normalize", "random_erasing"]
    with pytest.raises(ConfigError, match="tone_curve"):
        add_configured_steps(build_train_transform(24, 12), [{"type": "tone_curve", "p": 1.5}])


def test_builder_validates_options_and_steps_can_be_inserted_by_name():
    transform = build_train_transform(24, 12)
    assert transform.names() == ["pad_crop_flip", "normalize", "random_erasing"]
    with pytest.raises(ConfigError, match="channel_aug='sideways'"):
        build_train_transform(24, 12, channel_aug="sideways")
    with pytest.raises(ConfigError, match="probability"):
        build_train_transform(24, 12, flip=1.5)
    with pytest.raises(ValueError, match="24x12"):
        transform(_images(height=10, width=10), None, _gen(0))

    class Invert:
        name = "invert"

        def __call__(self, images, modalities, generator):
            return 255 - images

    transform.insert(Invert(), after="pad_crop_flip")
    assert transform.names() == ["pad_crop_flip", "invert", "normalize", "random_erasing"]
    with pytest.raises(ConfigError, match="no step 'mag'"):
        transform.insert(Invert(), before="mag")
    assert "random_erasing" in TRANSFORM_STEPS and "channel_exchange" in TRANSFORM_STEPS


def test_augmenting_a_batch_of_64_at_288x144_is_fast():
    images = torch.randint(0, 256, (64, 3, 288, 144), dtype=torch.uint8)
    modalities = torch.tensor([0, 1] * 32)
    transform = build_train_transform(288, 144, channel_aug=True)
    generator = _gen(0)
    transform(images, modalities, generator)  # warm-up
    # Best of several runs (about 20 ms on an idle 2-CPU machine; the bound leaves room for a busy
    # CI machine): keep trying for a few seconds and stop as soon as one run is fast enough.
    best = float("inf")
    deadline = time.perf_counter() + 5.0
    while best >= 0.100 and time.perf_counter() < deadline:
        start = time.perf_counter()
        transform(images, modalities, generator)
        best = min(best, time.perf_counter() - start)
    assert best < 0.100, f"augmenting 64x3x288x144 took {best * 1e3:.1f} ms at best"
