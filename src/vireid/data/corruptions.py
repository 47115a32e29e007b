"""Deterministic, seeded image corruptions at five severities, for robustness tests and augmentation.

The suite follows the corruption benchmarks of person re-identification, Market-1501-C /
SYSU-MM01-C / RegDB-C (Chen, Wang and Zheng, "Benchmarks for Corruption Invariant Person
Re-identification", NeurIPS 2021 Datasets and Benchmarks), which take their corruptions and
severity ladders from ImageNet-C (Hendrycks and Dietterich, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations", ICLR 2019, and its ``make_imagenet_c.py``):

===============  =======================================================================  ==========
name             what it does (severity 1 .. 5)                                           source
===============  =======================================================================  ==========
gaussian_noise   ``x + N(0, s)``, s = .08 .12 .18 .26 .38                                 ImageNet-C
shot_noise       ``Poisson(x * c) / c``, c = 60 25 12 5 3                                 ImageNet-C
motion_blur      one-sided line kernel, length r = 10 15 15 15 20 px with Gaussian        ImageNet-C
                 weights (sigma 3 5 8 12 15), angle ~ U(-45, 45) deg per image
defocus_blur     disk kernel, radius 3 4 6 8 10 px                                        ImageNet-C
jpeg             JPEG re-encoding at quality 25 18 15 10 7 (Pillow)                       ImageNet-C
contrast         ``(x - mean) * c + mean``, c = .4 .3 .2 .1 .05                           ImageNet-C
fog              fractal haze F in [0, 1] (ImageNet-C's plasma fractal: octaves with        ImageNet-C
                 amplitude decay 1/2) blended in: ``x (1 - a F) + 0.85 a F``,             (blended)
                 a = .3 .45 .6 .75 .9 (ImageNet-C adds ``c0 F`` and rescales, which
                 saturates on bright images; the blend keeps severities ordered)
rain             slanted streaks (drops convolved with a line kernel) blended over a      re-ID-C
                 dimmed image: density .002 .004 .006 .008 .010, length 8-16 px
low_light        ``a * x**g + N(0, n)``: a = .5 .35 .25 .15 .08, g = 1.2 .. 2.0,         this module
                 sensor noise n = .005 .01 .015 .02 .03
occlusion        one rectangle of area fraction .1 .2 .3 .4 .5 (aspect 1/2..2, inside     re-ID-C
                 the image) filled with a random colour
===============  =======================================================================  ==========

Lengths in pixels are those of ImageNet-C's 224 x 224 images; they are scaled by
``sqrt(H * W) / 224`` so a 288 x 144 person crop and a 64 x 32 test image are blurred alike.
Pixel values are in ``[0, 1]`` inside the functions; outputs are clipped and rounded back to uint8.

Determinism: :func:`corrupt` draws every random number from a CPU :class:`torch.Generator` seeded
per image from ``(seed, corruption, severity, image id)``, so an image's corruption does not depend on
the batch it is in, the device, or the other images (ids default to the position in the batch; the
robustness evaluation passes pool indices). :class:`RandomCorruption` is the same suite as a training
augmentation step (registered as ``corruption`` in :data:`~vireid.data.transforms.TRANSFORM_STEPS`),
drawing from the batch's generator like every other step.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vireid.data.transforms import TRANSFORM_STEPS, _modality_codes, _probability, _sample_mask
from vireid.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
#: Side of ImageNet-C's images, the scale of its pixel lengths.
_REFERENCE_SIDE = 224.0


def _scale(images: torch.Tensor) -> float:
    return math.sqrt(images.shape[-2] * images.shape[-1]) / _REFERENCE_SIDE


def _normal(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen).to(device)


def _uniform(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=gen).to(device)


# ------------------------------------------------------------------------------------ corruptions
# Each takes float [B, 3, H, W] in [0, 1], a severity 1..5 and a CPU generator; returns float [B, 3, H, W].


def gaussian_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise (ImageNet-C ``gaussian_noise``)."""
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return x + sigma * _normal(gen, x.shape, x.device)


def shot_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Photon (Poisson) noise (ImageNet-C ``shot_noise``)."""
    c = (60.0, 25.0, 12.0, 5.0, 3.0)[severity - 1]
    rate = (x.clamp(0, 1) * c).cpu()
    return (torch.poisson(rate, generator=gen) / c).to(x.device)


def _depthwise(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image with its own [K, K] kernel (``kernels`` [B, K, K]), reflect padding."""
    batch, channels, height, width = x.shape
    size = kernels.shape[-1]
    pad = size // 2
    mode = "reflect" if pad < min(height, width) else "replicate"
    padded = F.pad(x.reshape(1, batch * channels, height, width), (pad, pad, pad, pad), mode=mode)
    weight = kernels.to(x.dtype).repeat_interleave(channels, dim=0).unsqueeze(1)
    return F.conv2d(padded, weight, groups=batch * channels).view(batch, channels, height, width)


def _line_kernels(lengths: float, sigma: float, angles: torch.Tensor, one_sided: bool) -> torch.Tensor:
    """[B, K, K] normalised kernels along a line through the centre at ``angles`` (radians), with
    Gaussian weights ``exp(-t^2 / 2 sigma^2)`` along it, bilinearly splatted onto the pixel grid."""
    radius = max(float(lengths), 0.5)
    half = int(math.ceil(radius)) + 1
    size = 2 * half + 1
    steps = max(int(math.ceil(4 * radius)) + 1, 2)
    t = torch.linspace(0.0 if one_sided else -radius, radius, steps)
    w = torch.exp(-(t**2) / (2 * max(sigma, 1e-3) ** 2))
    batch = angles.shape[0]
    px = half + t[None, :] * torch.cos(angles)[:, None]  # [B, S] column
    py = half - t[None, :] * torch.sin(angles)[:, None]  # [B, S] row
    kernels = torch.zeros(batch, size * size)
    x0, y0 = px.floor(), py.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            frac = (1 - (px - cx).abs()) * (1 - (py - cy).abs())
            inside = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
            index = (cy.clamp(0, size - 1) * size + cx.clamp(0, size - 1)).long()
            kernels.scatter_add_(1, index, torch.where(inside, frac * w, torch.zeros_like(frac)))
    kernels = kernels.view(batch, size, size)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def motion_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Motion blur along a random direction (ImageNet-C ``motion_blur``: radius/sigma ladder, angle
    uniform in [-45, 45] degrees, one-sided kernel as ImageMagick's motion blur)."""
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    scale = _scale(x)
    angles = (_uniform(gen, (x.shape[0],), torch.device("cpu")) * 90.0 - 45.0) * math.pi / 180.0
    kernels = _line_kernels(radius * scale, sigma * scale, angles, one_sided=True)
    return _depthwise(x, kernels.to(x.device))


def defocus_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Defocus (disk) blur (ImageNet-C ``defocus_blur`` radii); disk edges anti-aliased by coverage."""
    radius = (3, 4, 6, 8, 10)[severity - 1] * _scale(x)
    radius = max(radius, 0.5)
    half = int(math.ceil(radius))
    coords = torch.arange(-half, half + 1, dtype=torch.float32)
    dist = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    disk = (radius + 0.5 - dist).clamp(0, 1)
    disk = disk / disk.sum()
    return _depthwise(x, disk.expand(x.shape[0], -1, -1).to(x.device))


def jpeg(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """JPEG compression artefacts (ImageNet-C ``jpeg_compression`` qualities), Pillow's encoder."""
    from PIL import Image

    quality = (25, 18, 15, 10, 7)[severity - 1]
    arrays = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


def contrast(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Contrast reduction towards the image mean (ImageNet-C ``contrast``)."""
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def _fractal(batch: int, height: int, width: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """[B, 1, H, W] fractal noise in [0, 1]: octaves of bilinearly upsampled uniform noise, the
    amplitude of octave ``o`` being ``decay ** -o`` (ImageNet-C's plasma fractal, ``wibbledecay``)."""
    side = 2 ** max(1, math.ceil(math.log2(max(height, width))))
    field = torch.zeros(batch, 1, height, width)
    octave, cells = 0, 2
    while cells <= side:
        grid = torch.rand(batch, 1, cells, cells, generator=gen)
        field += decay ** (-octave) * F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        octave, cells = octave + 1, cells * 2
    low = field.amin(dim=(2, 3), keepdim=True)
    high = field.amax(dim=(2, 3), keepdim=True)
    return (field - low) / (high - low).clamp(min=1e-6)


def fog(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Fog: a fractal haze (ImageNet-C's ``fog`` field) blended over the image with strength ``a``."""
    a = (0.3, 0.45, 0.6, 0.75, 0.9)[severity - 1]
    haze = a * _fractal(x.shape[0], x.shape[2], x.shape[3], 2.0, gen).to(x.device)
    return x * (1 - haze) + 0.85 * haze


def rain(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Rain streaks: Bernoulli drops (density per pixel) smeared by a slanted line kernel (angle
    U(-20, 20) degrees from vertical per image) and blended in light grey over a dimmed image."""
    density = (0.002, 0.004, 0.006, 0.008, 0.010)[severity - 1]
    length = (8, 10, 12, 14, 16)[severity - 1] * _scale(x)
    strength = (0.5, 0.6, 0.65, 0.7, 0.75)[severity - 1]
    batch, _, height, width = x.shape
    drops = (torch.rand(batch, 1, height, width, generator=gen) < density).float()
    angles = (90.0 + torch.rand(batch, generator=gen) * 40.0 - 20.0) * math.pi / 180.0
    kernels = _line_kernels(length, length, angles, one_sided=False)
    streaks = _depthwise(drops, kernels * (kernels > 0).sum(dim=(1, 2), keepdim=True) / 2).clamp(0, 1).to(x.device)
    dim = 1.0 - 0.04 * severity
    return x * dim * (1 - strength * streaks) + strength * streaks * 0.85


def low_light(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Low light: darkening with a gamma curve plus Gaussian sensor noise, ``a * x**g + N(0, n)``."""
    a = (0.5, 0.35, 0.25, 0.15, 0.08)[severity - 1]
    g = (1.2, 1.4, 1.6, 1.8, 2.0)[severity - 1]
    n = (0.005, 0.01, 0.015, 0.02, 0.03)[severity - 1]
    return a * x.clamp(0, 1) ** g + n * _normal(gen, x.shape, x.device)


def occlusion(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """One occluding rectangle per image: area fraction ``.1 .. .5``, aspect ratio ``2**U(-1, 1)``,
    placed uniformly so that it lies inside the image, filled with a uniform random colour."""
    fraction = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    batch, _, height, width = x.shape
    aspect = 2.0 ** (torch.rand(batch, generator=gen) * 2.0 - 1.0)
    area = fraction * height * width
    h = torch.sqrt(area * aspect).round().clamp(1, height)
    w = (area / h).round().clamp(1, width)
    top = (torch.rand(batch, generator=gen) * (height - h + 1)).floor()
    left = (torch.rand(batch, generator=gen) * (width - w + 1)).floor()
    colour = torch.rand(batch, 3, 1, 1, generator=gen)
    rows = torch.arange(height)[None, :]
    cols = torch.arange(width)[None, :]
    inside_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    inside_c = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    mask = (inside_r[:, :, None] & inside_c[:, None, :]).unsqueeze(1).to(x.device)
    return torch.where(mask, colour.to(x.device, x.dtype).expand_as(x), x)


#: The suite, in the order of tables and figures.
CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "jpeg": jpeg,
    "contrast": contrast,
    "low_light": low_light,
    "fog": fog,
    "rain": rain,
    "occlusion": occlusion,
}


class CorruptionError(ConfigError):
    """An unknown corruption name, a severity outside 1..5 or an image that is not uint8 RGB."""


def check_corruptions(names: Sequence[str] | str | None) -> list[str]:
    """Validated corruption names; ``None``/``"all"`` gives the whole suite."""
    if names is None or names == "all" or list(names) == ["all"]:
        return list(CORRUPTIONS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise CorruptionError(
            f"unknown corruption {unknown[0] if unknown else '(none given)'!r}; choose from {', '.join(CORRUPTIONS)} or 'all'"
        )
    return list(names)


def check_severities(severities: Sequence[int] | str | None) -> list[int]:
    """Validated severities (1..5); ``None`` gives all five; ``"1,3,5"`` is parsed."""
    if severities is None:
        return list(SEVERITIES)
    if isinstance(severities, str):
        try:
            severities = [int(s) for s in severities.split(",") if s.strip()]
        except ValueError:
            raise CorruptionError(f"severities {severities!r} must be integers 1..5 separated by commas, e.g. 1,3,5") from None
    bad = [s for s in severities if int(s) not in SEVERITIES]
    if bad or not severities:
        raise CorruptionError(f"severity {bad[0] if bad else '(none given)'} is outside 1..5; use e.g. 1,3,5")
    return [int(s) for s in severities]


def image_seed(seed: int, name: str, severity: int, image_id: int) -> int:
    """The generator seed of one image's corruption (stable across runs, platforms and batchings)."""
    digest = hashlib.blake2b(f"{int(seed)}/{name}/{int(severity)}/{int(image_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def corrupt(images: Any, name: str, severity: int, seed: int = 0, ids: Sequence[int] | None = None) -> Any:
    """Corrupt uint8 images with corruption ``name`` at ``severity`` (1..5), deterministically.

    ``images``: a numpy ``H x W x 3`` image, a numpy ``[B, H, W, 3]`` batch, or a torch uint8
    ``[3, H, W]`` / ``[B, 3, H, W]`` tensor (any device); the result has the same type, shape and
    device. Image ``b`` is corrupted with a generator seeded by :func:`image_seed` from ``seed``,
    ``name``, ``severity`` and ``ids[b]`` (default ``b``): the same image id gives the same result in
    any batch.
    """
    check_corruptions([name])
    check_severities([severity])
    is_numpy = isinstance(images, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if is_numpy else images
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
        raise CorruptionError(f"corruptions take uint8 images, got {getattr(images, 'dtype', type(images))}; convert to uint8 0..255")
    single = tensor.dim() == 3
    batch = tensor.unsqueeze(0) if single else tensor
    if is_numpy:
        batch = batch.permute(0, 3, 1, 2)
    if batch.dim() != 4 or batch.shape[1] != 3:
        layout = "H x W x 3" if is_numpy else "[B, 3, H, W]"
        raise CorruptionError(f"corruptions take RGB images of shape {layout}, got {tuple(images.shape)}")
    ids = list(range(batch.shape[0])) if ids is None else [int(i) for i in ids]
    if len(ids) != batch.shape[0]:
        raise CorruptionError(f"got {len(ids)} image ids for {batch.shape[0]} images; pass one id per image")
    fn = CORRUPTIONS[name]
    x = batch.to(torch.float32) / 255.0
    out = torch.empty_like(batch)
    for b, image_id in enumerate(ids):
        gen = torch.Generator().manual_seed(image_seed(seed, name, severity, image_id))
        out[b] = _to_uint8(fn(x[b : b + 1], int(severity), gen))[0]
    if is_numpy:
        out = out.permute(0, 2, 3, 1)
    out = out[0] if single else out
    return out.cpu().numpy() if is_numpy else out


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


@TRANSFORM_STEPS.register("corruption")
class RandomCorruption:
    """Training augmentation with the corruption suite: with probability ``p`` a sample of the target
    modalities gets one corruption drawn uniformly from ``corruptions`` at a severity drawn uniformly
    from ``severities``. Works on uint8 batches: insert it before ``normalize``, e.g. in a config::

        augment:
          steps:
            - {type: corruption, before: normalize, p: 0.3, severities: [1, 2, 3]}

    All random choices come from the batch generator (seeded training is reproducible); samples that
    got the same (corruption, severity) are corrupted together in one call.
    """

    name = "corruption"

    def __init__(self, p: float = 0.5, corruptions: Sequence[str] | str | None = None,
                 severities: Sequence[int] | None = (1, 2, 3), modalities: Sequence[str] = ("visible", "infrared")) -> None:
        self.p = _probability("corruption", p)
        self.corruptions = check_corruptions(corruptions)
        self.severities = check_severities(severities)
        self.targets = _modality_codes(modalities)
        self.last_choice: torch.Tensor | None = None  # [B, 2] (corruption index, severity); -1 where untouched

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError("the corruption step works on uint8 images; insert it before normalize")
        batch = images.shape[0]
        chosen = (torch.rand(batch, generator=generator) < self.p) & _sample_mask(modalities, batch, self.targets)
        which = torch.randint(0, len(self.corruptions), (batch,), generator=generator)
        level = torch.as_tensor(self.severities)[torch.randint(0, len(self.severities), (batch,), generator=generator)]
        self.last_choice = torch.stack([torch.where(chosen, which, -1), torch.where(chosen, level, -1)], dim=1)
        if not bool(chosen.any()):
            return images
        out = images.clone()
        keys = (which * 10 + level)[chosen]
        for key in torch.unique(keys).tolist():
            rows = (chosen & (which * 10 + level == key)).nonzero().squeeze(1)
            rows_dev = rows.to(images.device)
            fn = CORRUPTIONS[self.corruptions[key // 10]]
            out[rows_dev] = _to_uint8(fn(images[rows_dev].to(torch.float32) / 255.0, key % 10, generator))
        return out


__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "CorruptionError",
    "RandomCorruption",
    "check_corruptions",
    "check_severities",
    "corrupt",
    "image_seed",
]
