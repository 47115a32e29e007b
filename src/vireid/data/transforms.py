"""Batch augmentations on tensors: one call augments a whole batch, on whatever device it lives.

Images arrive as uint8 ``[B, 3, H, W]`` (from :class:`~vireid.data.cache.ImageCache`), already at the
model's input size. Every step draws its per-sample random parameters from a CPU
:class:`torch.Generator` (so a seed gives the same augmentation on CPU and GPU), moves the few
parameters to the images' device and applies them to the whole batch at once with index gathers and
broadcast masks -- no Python loop per sample.

The order follows the AGW / CAJ training pipelines (Ye et al., TPAMI 2021; ICCV 2021)::

    pad + random crop + horizontal flip -> [grayscale] -> normalise -> random erasing -> [channel aug]

Steps before :class:`Normalize` see uint8 pixels and return new tensors; steps after it see the
normalised float tensor that Normalize created and may modify it in place (AGW and CAJ erase and
exchange channels on the normalised tensor, and so do we). A transform is a
:class:`BatchTransform` holding a plain list of steps; a later step (e.g. modality patch exchange) is
inserted by name with :meth:`BatchTransform.insert`, and steps are registered in
:data:`TRANSFORM_STEPS` so configs can name them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import torch

from vireid.data.extras import shift_flip_extras
from vireid.data.geometry import MPII_FLIP_PAIRS, move_joints, shift_and_flip  # noqa: F401 - re-exported here
from vireid.data.records import MODALITY_CODE
from vireid.errors import ConfigError
from vireid.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Fill of AGW's / CAJ's ``ChannelRandomErasing``: CIFAR-10 channel means written into the *normalised*
#: tensor (pass ``erasing_fill=AGW_ERASING_FILL`` to reproduce those repositories exactly).
AGW_ERASING_FILL = (0.4914, 0.4822, 0.4465)
#: ITU-R 601 luma weights as used by CAJ's ``ChannelAdapGray`` / ``ChannelExchange``.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

TRANSFORM_STEPS: Registry = Registry("transform step")


class BatchContext:
    """Side information of a batch for the steps that need more than pixels and modalities.

    ``labels``: int64 [B] identity labels (e.g. modality patch exchange pairs images of one identity).
    ``extras``: the batch's named side inputs (:mod:`vireid.data.extras`), e.g. ``joints`` float [B, J, 3]
    ``(x, y, visible)`` in pixel coordinates of the current images; geometric steps change each by its
    registered kind (:func:`~vireid.data.extras.shift_flip_extras`: joints move with the pixels and swap
    MPII left/right joints on a mirror, a mask is cropped and mirrored like the image), so methods see
    side inputs that match the augmented image. Steps that use the context set the class attribute ``uses_context = True`` and
    are called with ``context=`` as a keyword. A context step may add rows to the batch
    (:class:`DuplicateViews`): it then indexes every per-row field here (extras included) the same way,
    and later steps get the new ``modalities``.
    """

    #: fields with one row per image, indexed together when a step adds rows (extras are too)
    ROW_FIELDS = ("labels", "modalities", "rows")

    def __init__(self, labels: torch.Tensor | None = None, extras: dict | None = None,
                 modalities: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                 views: torch.Tensor | None = None) -> None:
        self.labels = labels
        self.extras: dict = dict(extras or {})
        #: CPU int64 [B] modality codes of the current rows (set by :class:`BatchTransform`).
        self.modalities = modalities
        #: CPU int64 [B]: the row of the sampled batch each current image comes from (identity unless a step
        #: such as :class:`DuplicateViews` adds rows; the loader then repeats labels and indices to match).
        self.rows = rows
        #: CPU int64 [B]: 0 for a sampled image, k for its k-th extra view (:class:`DuplicateViews`).
        self.views = views

    def select_rows(self, rows: torch.Tensor) -> None:
        """Index every per-row field and every extra by ``rows`` (CPU int64)."""
        for field_name in self.ROW_FIELDS:
            value = getattr(self, field_name)
            if value is not None:
                setattr(self, field_name, value[rows.to(value.device)])
        self.extras = {name: value[rows.to(value.device)] for name, value in self.extras.items()}


class Step(Protocol):
    """One augmentation step: ``(images, modalities, generator) -> images`` on a whole batch.

    ``name`` identifies the step in :meth:`BatchTransform.insert` and :data:`TRANSFORM_STEPS`. A step
    with ``uses_context = True`` is also given ``context=`` (a :class:`BatchContext`).
    """

    name: str

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor: ...


def _uniform(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float32)


def _sample_mask(modalities: torch.Tensor | None, batch: int, targets: tuple[int, ...]) -> torch.Tensor:
    """CPU bool [B]: samples whose modality is one of ``targets`` (every sample when modalities is None)."""
    if modalities is None:
        return torch.ones(batch, dtype=torch.bool)
    modalities = torch.as_tensor(modalities).to("cpu").reshape(-1)
    if modalities.shape[0] != batch:
        raise ValueError(f"got {modalities.shape[0]} modality codes for a batch of {batch} images")
    return torch.isin(modalities, torch.tensor(targets, dtype=modalities.dtype))


def _modality_codes(names: Iterable[str]) -> tuple[int, ...]:
    codes = []
    for name in names:
        if name not in MODALITY_CODE:
            raise ConfigError(f"transform modality {name!r} is unknown; use 'visible' and/or 'infrared'")
        codes.append(MODALITY_CODE[name])
    return tuple(codes)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of float [B,3,H,W] with CAJ's weights, shape [B,1,H,W]."""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


@TRANSFORM_STEPS.register("pad_crop_flip")
class RandomPadCropFlip:
    """Zero-pad by ``pad`` pixels, crop a random H x W window back, and mirror left-right with
    probability ``flip`` (torchvision ``Pad`` + ``RandomCrop`` + ``RandomHorizontalFlip`` in one step).

    The crop offset per sample is uniform in ``0..2*pad`` on each axis. Crop and flip are one gather
    of shifted (and, for flipped samples, reversed) row/column indices over the uint8 batch, with
    pixels that come from the padding set to zero -- a single pass over the images instead of three.
    """

    name = "pad_crop_flip"
    uses_context = True

    def __init__(self, pad: int = 10, flip: float = 0.5) -> None:
        if pad < 0:
            raise ConfigError(f"transform pad={pad} is invalid; use 0 or a positive number of pixels")
        self.pad = int(pad)
        self.flip = _probability("flip", flip)
        self.last_offsets: torch.Tensor | None = None  # [B, 2] crop origin (dy, dx) in the padded image
        self.last_flipped: torch.Tensor | None = None  # [B] bool

    def _draw(self, batch: int, modalities: torch.Tensor | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: crop origin ``[B, 2]`` (dy, dx) in ``0..2*pad`` and mirror flag ``[B]``."""
        offsets = torch.randint(0, 2 * self.pad + 1, (batch, 2), generator=generator)
        return offsets, _uniform(generator, batch) < self.flip

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator,
                 context: BatchContext | None = None) -> torch.Tensor:
        _, _, height, width = images.shape
        offsets, flipped = self._draw(images.shape[0], modalities, generator)
        self.last_offsets, self.last_flipped = offsets, flipped
        if context is not None and context.extras:
            context.extras = shift_flip_extras(context.extras, offsets - self.pad, flipped, width, height)
        return shift_and_flip(images, offsets - self.pad, flipped, self.pad)


@TRANSFORM_STEPS.register("grayscale")
class RandomGrayscale:
    """Replace a sample by its grey level (3 equal channels, luma weights) with probability ``p``.

    Works on uint8 pixels before normalisation, like torchvision's ``RandomGrayscale``; by default
    only visible samples are touched (infrared images are grey already). Returns a new tensor.
    """

    name = "grayscale"

    def __init__(self, p: float = 0.0, modalities: Sequence[str] = ("visible",)) -> None:
        self.p = _probability("grayscale", p)
        self.targets = _modality_codes(modalities)
        self.last_chosen: torch.Tensor | None = None

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        chosen = _uniform(generator, images.shape[0]) < self.p
        chosen &= _sample_mask(modalities, images.shape[0], self.targets)
        self.last_chosen = chosen
        selected = chosen.nonzero().squeeze(1).to(images.device)
        if selected.numel() == 0:
            return images
        subset = images.index_select(0, selected).to(torch.float32)
        gray = _grayscale(subset).round_().clamp_(0, 255).to(images.dtype).expand_as(subset)
        return images.index_put((selected,), gray)


@TRANSFORM_STEPS.register("tone_curve")
class RandomToneCurve:
    """Grey image through a random, non-monotone tone curve, with probability ``p`` per sample.

    Why: an infrared camera sees how warm a garment is, a colour camera how light its colour is, and
    the two are unrelated (a dark-blue jacket may glow bright in infrared, a white shirt stay dim). So
    the grey levels of the same person's regions are reordered between the modalities, while the
    region *boundaries* (clothing layout, patterns, outline, accessories) stay where they are. This
    step shows the network the same reordering within each modality: a chosen sample becomes its
    luma image (infrared images already are grey), mapped through a piecewise-linear curve whose
    ``knots`` levels at 0, 1/(knots-1), ..., 1 are drawn uniformly in [0, 255] (so the curve may rise,
    fall or fold), and copied to the three channels. Grey levels that were different stay different
    almost surely, so edges survive while their polarity and contrast become unreliable.

    On uint8 pixels before :class:`Normalize`, like :class:`RandomGrayscale` (put it after
    ``grayscale``); one ``[n, 256]`` lookup table and one gather for the chosen samples, no loop.
    ``knots=2`` is a random linear (possibly inverted) contrast change. Returns a new tensor.
    """

    name = "tone_curve"

    def __init__(self, p: float = 0.5, knots: int = 4, modalities: Sequence[str] = ("visible", "infrared")) -> None:
        self.p = _probability("tone_curve", p)
        if int(knots) != knots or knots < 2:
            raise ConfigError(f"tone_curve knots={knots!r} is invalid; use a whole number of 2 or more")
        self.knots = int(knots)
        self.targets = _modality_codes(modalities)
        self.last_chosen: torch.Tensor | None = None
        self.last_tables: torch.Tensor | None = None  # [n, 256] uint8 lookup table of each chosen sample

    def tables(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``[count, 256]`` uint8 lookup tables: random knot levels, linear between knots."""
        levels = _uniform(generator, count, self.knots) * 255.0
        position = torch.arange(256, dtype=torch.float32) * ((self.knots - 1) / 255.0)
        left = position.floor().long().clamp_(max=self.knots - 2)
        frac = position - left
        table = levels[:, left] * (1.0 - frac) + levels[:, left + 1] * frac
        return table.round_().clamp_(0, 255).to(torch.uint8)

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        batch = images.shape[0]
        chosen = _uniform(generator, batch) < self.p
        chosen &= _sample_mask(modalities, batch, self.targets)
        self.last_chosen = chosen
        selected = chosen.nonzero().squeeze(1)
        tables = self.tables(selected.numel(), generator)
        self.last_tables = tables
        if selected.numel() == 0:
            return images
        selected = selected.to(images.device)
        subset = images.index_select(0, selected)
        gray = _grayscale(subset.to(torch.float32)).round_().clamp_(0, 255).long()  # [n, 1, H, W]
        mapped = torch.gather(tables.to(images.device), 1, gray.flatten(1)).view_as(gray)
        return images.index_put((selected,), mapped.to(images.dtype).expand_as(subset))


@TRANSFORM_STEPS.register("normalize")
class Normalize:
    """uint8 [0,255] -> float32 ``(x/255 - mean) / std`` per channel (ImageNet statistics by default).

    Always returns a new tensor, which the float steps after it may then modify in place.
    """

    name = "normalize"

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"normalisation mean={list(mean)} / std={list(std)} is invalid; give 3 values each, std > 0")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(
        self, images: torch.Tensor, modalities: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if images.is_floating_point():
            raise TypeError("Normalize expects uint8 images in [0, 255]; it was given a float tensor")
        device = images.device
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], device=device).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=device).view(1, 3, 1, 1)
        return images.to(torch.float32).mul_(scale).add_(shift)


@TRANSFORM_STEPS.register("random_erasing")
class RandomErasing:
    """Random erasing (Zhong et al., AAAI 2020, Alg. 1) on normalised images, as AGW/CAJ apply it.

    With probability ``p`` a rectangle of area fraction ``U(area[0], area[1])`` and aspect ratio
    ``U(aspect, 1/aspect)`` (h = round(sqrt(S*r)), w = round(sqrt(S/r)), kept if h < H and w < W) is
    placed uniformly and filled. Zhong's algorithm retries up to 100 times until the box fits; we draw
    ``attempts`` candidates per sample at once and keep the first that fits (no box if none does).

    ``fill``: ``"mean"`` = the ImageNet mean pixel, i.e. 0 after normalisation (Zhong's "mean" variant,
    the default here); ``"random"`` = per-pixel standard normal values in normalised space (the
    "random" variant, as timm); three floats = per-channel constants in normalised space -- AGW's
    ``RandomErasing`` and CAJ's ``ChannelRandomErasing`` fill with :data:`AGW_ERASING_FILL`
    ``(0.4914, 0.4822, 0.4465)`` this way (CIFAR-10 means written into the normalised tensor, one value
    per channel, which is all "channel" means in CAJ's name). Both modalities are erased by default, as
    in AGW and CAJ. Works in place on the float tensor that :class:`Normalize` created.
    """

    name = "random_erasing"

    def __init__(
        self,
        p: float = 0.5,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: float = 0.3,
        fill: str | Sequence[float] = "mean",
        modalities: Sequence[str] = ("visible", "infrared"),
        attempts: int = 16,
    ) -> None:
        self.p = _probability("random_erasing", p)
        if not 0 < area[0] <= area[1] <= 1:
            raise ConfigError(f"random erasing area={tuple(area)} is invalid; use 0 < min <= max <= 1")
        if not 0 < aspect <= 1:
            raise ConfigError(f"random erasing aspect={aspect} is invalid; use a ratio in (0, 1] (its inverse is the max)")
        if isinstance(fill, str):
            if fill not in ("mean", "random"):
                raise ConfigError(f"random erasing fill={fill!r} is unknown; use 'mean', 'random' or three floats")
        elif len(fill) != 3:
            raise ConfigError(f"random erasing fill={list(fill)} is invalid; give three per-channel values")
        self.area = (float(area[0]), float(area[1]))
        self.aspect = float(aspect)
        self.fill = fill if isinstance(fill, str) else tuple(float(v) for v in fill)
        self.targets = _modality_codes(modalities)
        self.attempts = int(attempts)
        self.last_boxes: torch.Tensor | None = None  # [B, 4] (top, left, h, w); h = w = 0 where not erased

    def sample_boxes(self, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """Per-sample boxes ``(top, left, h, w)`` as int64 [B, 4]; zero size where nothing is erased."""
        apply = _uniform(generator, batch) < self.p
        lo, hi = self.area
        target_area = (lo + (hi - lo) * _uniform(generator, batch, self.attempts)) * (height * width)
        ratio = self.aspect + (1.0 / self.aspect - self.aspect) * _uniform(generator, batch, self.attempts)
        h = torch.sqrt(target_area * ratio).round().long()
        w = torch.sqrt(target_area / ratio).round().long()
        fits = (h < height) & (w < width)
        first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)  # first fitting attempt
        keep = apply & fits.any(dim=1)
        h = torch.where(keep, h.gather(1, first).squeeze(1), 0)
        w = torch.where(keep, w.gather(1, first).squeeze(1), 0)
        position = _uniform(generator, batch, 2)
        top = (position[:, 0] * (height - h + 1).float()).long().clamp(max=height - h)
        left = (position[:, 1] * (width - w + 1).float()).long().clamp(max=width - w)
        return torch.stack([top, left, h, w], dim=1)

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        if not images.is_floating_point():
            raise TypeError("RandomErasing works on normalised float images; put it after Normalize")
        batch, channels, height, width = images.shape
        boxes = self.sample_boxes(batch, height, width, generator)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if self.fill == "random" else 0
        boxes[:, 2:] *= _sample_mask(modalities, batch, self.targets).unsqueeze(1).long()
        self.last_boxes = boxes
        selected = (boxes[:, 2] * boxes[:, 3] > 0).nonzero().squeeze(1)
        if selected.numel() == 0:
            return images
        device = images.device
        top, left, h, w = boxes[selected].to(device).unbind(1)
        rows = torch.arange(height, device=device).unsqueeze(0)
        cols = torch.arange(width, device=device).unsqueeze(0)
        in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
        mask = torch.zeros((batch, 1, height, width), dtype=torch.bool, device=device)
        mask[selected.to(device), 0] = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)
        if self.fill == "mean":
            images.masked_fill_(mask, 0.0)
        elif self.fill == "random":
            noise_generator = torch.Generator(device=device).manual_seed(noise_seed)
            count = int(mask.sum()) * channels
            noise = torch.randn(count, generator=noise_generator, dtype=images.dtype, device=device)
            images.masked_scatter_(mask, noise)
        else:
            for channel, value in enumerate(self.fill):
                images[:, channel].masked_fill_(mask[:, 0], value)
        return images


@TRANSFORM_STEPS.register("channel_exchange")
class RandomChannelExchange:
    """CAJ's ``ChannelExchange`` (Ye et al., ICCV 2021, Sec. 3.1): copy one random channel to all three.

    With probability ``p`` a sample (of the target modalities, visible by default) becomes
    R-R-R, G-G-G or B-B-B, each equally likely; with ``include_gray`` a fourth, equally likely option is
    the luma image (CAJ's ``gray=3``; its default ``gray=2`` draws only R/G/B). Applied to normalised
    values, as CAJ does, so the three output channels are exactly equal. CAJ feeds each visible image
    twice (plain and exchanged): :class:`DuplicateViews` then ``p=1, views=[1]`` reproduces that
    (``views`` restricts the step to those view numbers); with one view per image ``p=0.5`` gives the
    same mix in expectation. Works in place on the float tensor that :class:`Normalize` created.
    """

    name = "channel_exchange"
    uses_context = True

    def __init__(self, p: float = 0.5, include_gray: bool = False, modalities: Sequence[str] = ("visible",),
                 views: Sequence[int] | None = None) -> None:
        self.p = _probability("channel_exchange", p)
        self.include_gray = bool(include_gray)
        self.targets = _modality_codes(modalities)
        self.views = _view_list("channel_exchange", views)
        self.last_choice: torch.Tensor | None = None  # [B]: -1 untouched, 0/1/2 channel, 3 gray

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator,
                 context: BatchContext | None = None) -> torch.Tensor:
        batch = images.shape[0]
        apply = _uniform(generator, batch) < self.p
        choice = torch.randint(0, 4 if self.include_gray else 3, (batch,), generator=generator)
        apply &= _sample_mask(modalities, batch, self.targets) & _view_mask(self.views, context, batch)
        choice = torch.where(apply, choice, -1)
        self.last_choice = choice
        return _apply_channel_choice(images, choice)


@TRANSFORM_STEPS.register("channel_adaptive_gray")
class ChannelAdaptiveGray:
    """CAJ's ``ChannelAdapGray``: R-R-R, G-G-G, B-B-B or "gray" each with probability 1/4, where the gray
    option becomes the luma image with probability ``gray_p`` (CAJ: 0.5) and stays unchanged otherwise.

    On normalised values, as CAJ, in place. CAJ applies it to its infrared view (and, with ``--augc 1``,
    to every training image); here the target modalities are configurable, visible by default.
    """

    name = "channel_adaptive_gray"
    uses_context = True

    def __init__(self, gray_p: float = 0.5, modalities: Sequence[str] = ("visible",),
                 views: Sequence[int] | None = None) -> None:
        self.gray_p = _probability("channel_adaptive_gray", gray_p)
        self.targets = _modality_codes(modalities)
        self.views = _view_list("channel_adaptive_gray", views)
        self.last_choice: torch.Tensor | None = None

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator,
                 context: BatchContext | None = None) -> torch.Tensor:
        batch = images.shape[0]
        choice = torch.randint(0, 4, (batch,), generator=generator)
        gray = _uniform(generator, batch) < self.gray_p
        choice = torch.where((choice == 3) & ~gray, -1, choice)
        targets = _sample_mask(modalities, batch, self.targets) & _view_mask(self.views, context, batch)
        choice = torch.where(targets, choice, -1)
        self.last_choice = choice
        return _apply_channel_choice(images, choice)


def _view_list(name: str, views: Sequence[int] | None) -> tuple[int, ...] | None:
    if views is None:
        return None
    if isinstance(views, (int, str)) or any(int(v) < 0 for v in views):
        raise ConfigError(f"transform {name} views={views!r} must be a list of view numbers (0 = sampled image, 1 = first extra view)")
    return tuple(int(v) for v in views)


def _view_mask(views: tuple[int, ...] | None, context: BatchContext | None, batch: int) -> torch.Tensor:
    """CPU bool [B]: rows whose view number is in ``views`` (every row when ``views`` is None)."""
    if views is None:
        return torch.ones(batch, dtype=torch.bool)
    current = context.views if context is not None and context.views is not None else torch.zeros(batch, dtype=torch.int64)
    return torch.isin(current, torch.tensor(views, dtype=current.dtype))


@TRANSFORM_STEPS.register("duplicate_views")
class DuplicateViews:
    """CAJ's two views of each visible image (Ye et al., ICCV 2021, Sec. 3.1 and its released training
    code): every sample of ``modalities`` is appended ``copies`` more times to the batch, so later
    steps augment each view independently (crop, flip, erasing) and view-restricted steps (e.g.
    ``channel_exchange`` with ``views: [1]``) change only the copies. Labels, modalities, side inputs (extras) and
    dataset indices are repeated with the rows (:class:`BatchContext`); the loss sees every view.

    Place it before ``pad_crop_flip`` (``before: pad_crop_flip``) so the views get their own geometry,
    as CAJ's two independent transform pipelines do. CAJ's batch of P x K visible + P x K infrared
    becomes P x 2K visible + P x K infrared.
    """

    name = "duplicate_views"
    uses_context = True

    def __init__(self, modalities: Sequence[str] = ("visible",), copies: int = 1) -> None:
        if int(copies) < 1:
            raise ConfigError(f"transform duplicate_views copies={copies} must be at least 1")
        self.targets = _modality_codes(modalities)
        self.copies = int(copies)

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator,
                 context: BatchContext | None = None) -> torch.Tensor:
        if context is None:
            raise ConfigError("transform duplicate_views needs the batch context; use it inside a BatchTransform")
        batch = images.shape[0]
        source = _sample_mask(modalities, batch, self.targets).nonzero().squeeze(1)
        rows = torch.cat([torch.arange(batch), source.repeat(self.copies)])
        added_views = torch.arange(1, self.copies + 1).repeat_interleave(source.numel())
        views = context.views if context.views is not None else torch.zeros(batch, dtype=torch.int64)
        context.views = torch.cat([views, added_views])
        context.select_rows(rows)
        if context.modalities is None and modalities is not None:
            context.modalities = torch.as_tensor(modalities).to("cpu").reshape(-1)[rows]
        return images[rows.to(images.device)]


def _apply_channel_choice(images: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """In place, per sample: -1 keep, 0/1/2 copy that channel to all three, 3 luma to all three."""
    if not images.is_floating_point():
        raise TypeError("channel augmentation works on normalised float images; put it after Normalize")
    selected = (choice >= 0).nonzero().squeeze(1)
    if selected.numel() == 0:
        return images
    device = images.device
    chosen = choice[selected]
    selected_on_device = selected.to(device)
    single = images[selected_on_device, chosen.clamp(max=2).to(device)]  # [n, H, W], one gather
    gray = chosen == 3
    if bool(gray.any()):
        gray_on_device = gray.to(device)
        single[gray_on_device] = _grayscale(images[selected_on_device[gray_on_device]]).squeeze(1)
    images.index_put_((selected_on_device,), single.unsqueeze(1).expand(-1, 3, -1, -1))
    return images


def _probability(name: str, p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"transform {name} probability {p} is outside [0, 1]")
    return float(p)


class BatchTransform:
    """An ordered list of steps applied to a batch: ``(images_uint8, modalities, generator) -> float``.

    ``modalities`` (int64 [B], 0 visible / 1 infrared, any device) lets steps target one modality;
    ``None`` treats every sample as a target. ``generator`` is a CPU :class:`torch.Generator`; without
    one a fresh unseeded generator is used (non-deterministic). ``size=(H, W)``, when given, is checked
    against every batch (the cache must have resized the images to the model's input size).
    """

    def __init__(self, steps: Sequence[Step], size: tuple[int, int] | None = None) -> None:
        self.steps: list[Step] = list(steps)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def __call__(
        self,
        images: torch.Tensor,
        modalities: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        context: BatchContext | None = None,
    ) -> torch.Tensor:
        """Augment a batch. ``context`` carries labels/extras for the steps that use them; the extras in it
        are updated in place of the context (read ``context.extras`` afterwards)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        if self.size is not None and tuple(images.shape[2:]) != self.size:
            raise ValueError(
                f"the transform was built for {self.size[0]}x{self.size[1]} images but got "
                f"{images.shape[2]}x{images.shape[3]}; build the image cache at the model's input size"
            )
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        if context is None:
            context = BatchContext()
        batch = images.shape[0]
        if context.modalities is None and modalities is not None:
            context.modalities = torch.as_tensor(modalities).to("cpu").reshape(-1)
        if context.rows is None:
            context.rows = torch.arange(batch)
        if context.views is None:
            context.views = torch.zeros(batch, dtype=torch.int64)
        for step in self.steps:
            if getattr(step, "uses_context", False):
                images = step(images, modalities, generator, context=context)
                if images.shape[0] != batch:  # the step added rows: later steps see the grown batch
                    batch, modalities = images.shape[0], context.modalities
            else:
                images = step(images, modalities, generator)
        return images

    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def insert(self, step: Step, *, after: str | None = None, before: str | None = None, first: bool = False) -> None:
        """Insert ``step`` after/before the step named ``after``/``before``; with neither, at the start
        (``first=True``) or at the end."""
        anchor = after if after is not None else before
        if anchor is None:
            if first:
                self.steps.insert(0, step)
            else:
                self.steps.append(step)
            return
        names = self.names()
        if anchor not in names:
            raise ConfigError(f"transform has no step {anchor!r} to insert next to; steps are {names}")
        index = names.index(anchor) + (1 if after is not None else 0)
        self.steps.insert(index, step)

    def __repr__(self) -> str:
        return f"BatchTransform({self.names()})"


def build_train_transform(
    height: int,
    width: int,
    pad: int = 10,
    flip: float = 0.5,
    random_erasing: float = 0.5,
    erasing_area: tuple[float, float] = (0.02, 0.4),
    erasing_aspect: float = 0.3,
    erasing_fill: str | Sequence[float] = "mean",
    channel_aug: bool | str = False,
    channel_aug_p: float = 0.5,
    channel_aug_modalities: Sequence[str] = ("visible",),
    grayscale: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> BatchTransform:
    """Training augmentation of AGW / CAJ as a :class:`BatchTransform`.

    Defaults reproduce AGW's pipeline (pad 10 + crop, flip 0.5, random erasing 0.5 over 2-40 % of the
    area with aspect 0.3-3.33, ImageNet normalisation). ``height``/``width`` are the input size the
    images already have (the cache resizes); they are checked at call time.

    ``channel_aug``: ``False``; ``True`` or ``"exchange"`` -> :class:`RandomChannelExchange` with
    probability ``channel_aug_p`` (CAJ's random channel, R/G/B); ``"exchange_gray"`` -> the same with
    the luma option; ``"adaptive_gray"`` -> :class:`ChannelAdaptiveGray` (gray option probability
    ``channel_aug_p``). Channel augmentation touches ``channel_aug_modalities`` only (visible by default).
    ``grayscale``: probability of :class:`RandomGrayscale` on visible images (0 = off).
    """
    steps: list[Step] = []
    if pad or flip:
        steps.append(RandomPadCropFlip(pad, flip))
    if grayscale:
        steps.append(RandomGrayscale(grayscale))
    steps.append(Normalize(mean, std))
    if random_erasing:
        steps.append(RandomErasing(random_erasing, area=erasing_area, aspect=erasing_aspect, fill=erasing_fill))
    if channel_aug is True or channel_aug == "exchange":
        steps.append(RandomChannelExchange(channel_aug_p, include_gray=False, modalities=channel_aug_modalities))
    elif channel_aug == "exchange_gray":
        steps.append(RandomChannelExchange(channel_aug_p, include_gray=True, modalities=channel_aug_modalities))
    elif channel_aug == "adaptive_gray":
        steps.append(ChannelAdaptiveGray(channel_aug_p, modalities=channel_aug_modalities))
    elif channel_aug not in (False, None, "none"):
        raise ConfigError(
            f"channel_aug={channel_aug!r} is unknown; use false, 'exchange', 'exchange_gray' or 'adaptive_gray'"
        )
    return BatchTransform(steps, size=(height, width))


def add_configured_steps(transform: BatchTransform, specs: Sequence[dict], key: str = "augment.steps") -> BatchTransform:
    """Insert the registered steps named in a config list ``[{type, after|before, **params}]`` into ``transform``.

    A step without ``after``/``before`` goes where its class's ``default_position`` says (``"first"``:
    before every other step, e.g. modality patch exchange) or, by default, at the end."""
    for i, spec in enumerate(specs or ()):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"config key '{key}[{i}]' must be a mapping with a 'type' (one of {', '.join(TRANSFORM_STEPS.names())})")
        params = {k: v for k, v in spec.items() if k not in ("type", "after", "before")}
        cls, params = TRANSFORM_STEPS.check(spec["type"], params, f"{key}[{i}]")
        transform.insert(cls(**params), after=spec.get("after"), before=spec.get("before"),
                         first=getattr(cls, "default_position", None) == "first")
    return transform


def build_eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> BatchTransform:
    """Evaluation transform: normalisation only (images are already resized by the cache)."""
    return BatchTransform([Normalize(mean, std)])
