"""Modality augmentation (MAG) of the dual-path Swin paper (dual-path transformer, §4.3 and appendix "MAG").

With probability ``p`` a visible image ``v_i^k`` and an infrared image ``t_i^k`` of the same identity
``i`` exchange one rectangular region ``(x1, y1, x2, y2)``, giving two "semi-modality" images
``v'_i^k`` and ``t'_i^k``; labels are unchanged (both parts show identity ``i``). The region is drawn
as the paper describes: for an ``H x W`` image with area ``S = H W``, an area ratio
``A ~ U[A_l, A_h]`` and an aspect ratio ``r ~ U[r_l, r_h]`` give ``h = sqrt(S A r)`` and
``w = sqrt(S A / r)``; the centre ``c = (x_c, y_c)`` is uniform over the image and the box is
clipped to it (as CutMix does, which the paper names as its model).

Choices where the paper is silent (documented here, configurable):

* Pairing. The sampler's batches hold P identities x (K visible then K infrared). The j-th visible
  image of an identity is paired with its j-th infrared image (order within the batch); images
  without a partner (unequal counts) are left alone. One Bernoulli(p) draw per pair decides
  whether that pair exchanges, so each image is touched at most once per batch.
* Same region in both images: the images of a pair are the same size and crops of a person, so
  the exchanged patch shows the same body part in both ("exchanging part region of v and t").
* Ranges: the paper gives none; the defaults are those of random erasing in the same pipelines
  (area 2-40 %, aspect 0.3-3.33) with ``p = 0.5``.
* Place in the pipeline: the paper applies MAG first, before the other transforms. The step works
  on uint8 or normalised float batches; the dual-path Swin configs insert it before ``normalize``
  (after crop/flip, which do not change what is exchanged).

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
    """``[count, 4]`` boxes ``(y1, x1, y2, x2)`` (end exclusive) drawn as MAG describes (module docstring)."""
    u = torch.rand((count, 4), generator=generator, dtype=torch.float64)
    a = area[0] + (area[1] - area[0]) * u[:, 0]
    r = aspect[0] + (aspect[1] - aspect[0]) * u[:, 1]
    s = float(height * width)
    h = torch.sqrt(s * a * r).clamp(min=1.0)
    w = torch.sqrt(s * a / r).clamp(min=1.0)
    yc = u[:, 2] * height
    xc = u[:, 3] * width
    y1 = (yc - h / 2).round().clamp(0, height).long()
    y2 = (yc + h / 2).round().clamp(0, height).long()
    x1 = (xc - w / 2).round().clamp(0, width).long()
    x2 = (xc + w / 2).round().clamp(0, width).long()
    return torch.stack([y1, x1, y2, x2], dim=1)


@TRANSFORM_STEPS.register("modality_patch_exchange")
class ModalityPatchExchange:
    """MAG (dual-path Swin): exchange a random region between same-identity visible/infrared pairs.

    Args:
        p: probability that a pair exchanges a region.
        area: ``(A_l, A_h)``, the region's share of the image area.
        aspect: ``(r_l, r_h)``, the region's height/width ratio range.
    """

    name = "modality_patch_exchange"
    uses_context = True

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
