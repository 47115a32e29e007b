"""Modality augmentation (MAG) of the dual-path Swin / NPU-ReID paper (§4.3 and appendix "MAG").

With probability ``p`` a visible image ``v_i^k`` and an infrared image ``t_i^k`` of the same identity
``i`` exchange one rectangular region ``(x1, y1, x2, y2)``, giving two "semi-modality" images
``v'_i^k`` and ``t'_i^k``; labels are unchanged (both parts show identity ``i``). The region is drawn
as the paper describes: for an ``H x W`` image with area ``S = H W``, an area ratio
``A ~ U[A_l, A_h]`` and an aspect ratio ``r ~ U[r_l, r_h]`` give ``h = sqrt(S A r)`` and
``w = sqrt(S A / r)``, and a centre ``c = (x_c, y_c)`` places it.

The exchanged area stays ``A`` (within a pixel row of rounding, and always inside ``[A_l, A_h]``):

* the centre is drawn uniformly among the positions where the whole box fits in the image (not over
  the whole image with the box clipped afterwards, as CutMix does: clipping cut the mean exchanged
  share to 0.157 of the image where the sampled ``A ~ U[0.02, 0.4]`` implies 0.21, measured over 20000
  boxes at 224x224, 288x144 and 64x32 alike; now 0.210);
* a box taller (wider) than the image at the drawn aspect ratio is made as tall (wide) as the image
  and correspondingly wider (taller), keeping ``h w = S A``;
* the integer sides are ``h`` rounded and then the width that brings ``h w`` closest to ``S A``,
  limited so the share stays in ``[A_l, A_h]``.

Choices where the paper is silent (documented here, configurable):

* Pairing. The sampler's batches hold P identities x (K visible then K infrared). The j-th visible
  image of an identity is paired with its j-th infrared image (order within the batch); images
  without a partner (unequal counts) are left alone. One Bernoulli(p) draw per pair decides
  whether that pair exchanges, so each image is touched at most once per batch.
* Same region in both images: the images of a pair are the same size and crops of a person, so
  the exchanged patch shows the same body part in both ("exchanging part region of v and t").
* Ranges: the paper gives none; the defaults are those of random erasing in the same pipelines
  (area 2-40 %, aspect 0.3-3.33) with ``p = 0.5``.
* Place in the pipeline: "given two images ... we first feed them into modality augmentation (MAG)
  ... Then the augmented images are resized" (§4.1), and MAG "can be seamlessly integrated with
  other common image augmentation operations": MAG runs first, before pad/crop/flip. A config step
  ``{type: modality_patch_exchange}`` without ``before``/``after`` goes first in the transform
  (:attr:`ModalityPatchExchange.default_position`); ``before: normalize`` (after crop and flip, where
  the shipped configs had it before) can still be asked for. The step works on uint8 or normalised
  float batches.

Everything is vectorised: one gather of per-pair boxes builds a ``[pairs, H, W]`` mask, and two
``torch.where`` calls swap the regions of all pairs at once.
"""

from __future__ import annotations

import math

import torch

from vireid.data.records import MODALITY_CODE
from vireid.data.transforms import TRANSFORM_STEPS, BatchContext, _probability
from vireid.errors import ConfigError


def pair_modalities(labels: torch.Tensor, modalities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(visible, infrared)`` of same-identity pairs: the j-th visible sample of a label is paired
    with the j-th infrared sample of that label (batch order). Vectorised with sorting."""
    labels = labels.reshape(-1).to("cpu", torch.int64)
    modalities = modalities.reshape(-1).to("cpu", torch.int64)
    batch = labels.numel()
    position = torch.arange(batch)

    def ranked(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = position[mask]
        lab = labels[mask]
        order = torch.argsort(lab * (batch + 1) + torch.arange(idx.numel()), stable=True)
        idx, lab = idx[order], lab[order]
        if idx.numel() == 0:
            return idx, lab
        first = torch.ones_like(lab, dtype=torch.bool)
        first[1:] = lab[1:] != lab[:-1]
        group_start = torch.cummax(torch.where(first, torch.arange(lab.numel()), torch.zeros_like(lab)), 0).values
        rank = torch.arange(lab.numel()) - group_start
        return idx, lab * (batch + 1) + rank

    vis_idx, vis_key = ranked(modalities == MODALITY_CODE["visible"])
    ir_idx, ir_key = ranked(modalities == MODALITY_CODE["infrared"])
    if vis_idx.numel() == 0 or ir_idx.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    ir_sorted, ir_order = torch.sort(ir_key)
    where = torch.searchsorted(ir_sorted, vis_key).clamp(max=ir_sorted.numel() - 1)
    found = ir_sorted[where] == vis_key
    return vis_idx[found], ir_idx[ir_order[where[found]]]


def sample_regions(count: int, height: int, width: int, area: tuple[float, float], aspect: tuple[float, float],
                   generator: torch.Generator) -> torch.Tensor:
    """``[count, 4]`` boxes ``(y1, x1, y2, x2)`` (end exclusive) drawn as MAG describes: area share
    ``A ~ U[A_l, A_h]``, aspect ``r ~ U[r_l, r_h]``, placed wholly inside the image (module docstring)."""
    u = torch.rand((count, 4), generator=generator, dtype=torch.float64)
    a = area[0] + (area[1] - area[0]) * u[:, 0]
    r = aspect[0] + (aspect[1] - aspect[0]) * u[:, 1]
    s = float(height * width)
    target = s * a  # pixels to exchange
    h = torch.sqrt(target * r)
    h = torch.minimum(h, torch.full_like(h, float(height)))  # too tall: full height, wider instead
    h = torch.maximum(h, target / width)  # too wide: full width, taller instead
    h_int = h.round().clamp(1, height)
    low = torch.ceil(s * area[0] / h_int - 1e-9)
    high = torch.floor(s * area[1] / h_int + 1e-9)
    w_int = (target / h_int).round().clamp(min=low, max=high).clamp(1, width)
    y1 = (u[:, 2] * (height - h_int + 1)).floor().clamp(max=height - h_int)
    x1 = (u[:, 3] * (width - w_int + 1)).floor().clamp(max=width - w_int)
    return torch.stack([y1, x1, y1 + h_int, x1 + w_int], dim=1).long()


@TRANSFORM_STEPS.register("modality_patch_exchange")
class ModalityPatchExchange:
    """MAG: exchange a random region between same-identity visible/infrared pairs.

    Args:
        p: probability that a pair exchanges a region.
        area: ``(A_l, A_h)``, the region's share of the image area.
        aspect: ``(r_l, r_h)``, the region's height/width ratio range.
    """

    name = "modality_patch_exchange"
    uses_context = True
    #: where a config step without ``before``/``after`` goes: first, before crop and flip (§4.1)
    default_position = "first"

    def __init__(self, p: float = 0.5, area: tuple[float, float] | list[float] = (0.02, 0.4),
                 aspect: tuple[float, float] | list[float] = (0.3, 1 / 0.3)) -> None:
        self.p = _probability("modality_patch_exchange", p)
        area = tuple(float(v) for v in area)
        aspect = tuple(float(v) for v in aspect)
        if len(area) != 2 or not 0.0 < area[0] <= area[1] <= 1.0:
            raise ConfigError(f"modality_patch_exchange area={list(area)} is invalid; use [A_l, A_h] with 0 < A_l <= A_h <= 1")
        if len(aspect) != 2 or not 0.0 < aspect[0] <= aspect[1]:
            raise ConfigError(f"modality_patch_exchange aspect={list(aspect)} is invalid; use [r_l, r_h] with 0 < r_l <= r_h")
        self.area, self.aspect = area, aspect
        self.last_pairs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_boxes: torch.Tensor | None = None

    def __call__(self, images: torch.Tensor, modalities: torch.Tensor | None, generator: torch.Generator,
                 context: BatchContext | None = None) -> torch.Tensor:
        if context is None or context.labels is None or modalities is None:
            raise ConfigError("modality_patch_exchange needs the batch's labels and modalities; use it in a training "
                              "transform fed by the cross-modality loader")
        vis, ir = pair_modalities(context.labels, modalities)
        chosen = torch.rand(vis.numel(), generator=generator) < self.p
        vis, ir = vis[chosen], ir[chosen]
        batch, _, height, width = images.shape
        boxes = sample_regions(vis.numel(), height, width, self.area, self.aspect, generator)
        self.last_pairs, self.last_boxes = (vis, ir), boxes
        if vis.numel() == 0:
            return images
        device = images.device
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        b = boxes.to(device)
        mask = ((rows >= b[:, 0, None, None]) & (rows < b[:, 2, None, None])
                & (cols >= b[:, 1, None, None]) & (cols < b[:, 3, None, None])).unsqueeze(1)  # [n,1,H,W]
        vis_d, ir_d = vis.to(device), ir.to(device)
        v_img, t_img = images[vis_d], images[ir_d]
        out = images.clone()
        out[vis_d] = torch.where(mask, t_img, v_img)
        out[ir_d] = torch.where(mask, v_img, t_img)
        return out


__all__ = ["ModalityPatchExchange", "pair_modalities", "sample_regions"]
