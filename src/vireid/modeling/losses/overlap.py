"""Overlap penalty loss of DFW+SLN (§3.4, eqs. 4-5): keep the regions the SLN sub-networks
attend to apart.

For each image and each sub-network s, the feature map ``F_s [C, h, w]`` is GeM-pooled over
its channels into a response map (eq. 4)::

    f_s(i, j) = ( mean_c F_s(c, i, j)^p )^(1/p)          (p = 3, inputs clamped at eps)

The position of the maximum of ``f_s`` is the centre of the sub-network's region of interest;
with ``d`` the distance between the centres of two sub-networks (eq. 5)::

    L_op = (1/N) Σ_images max(0, S − d(f_s^1, f_s^2))

N is the number of images in the batch, S the separation. With more than two sub-networks the
hinge is averaged over all pairs; with one there is no pair and the loss is 0 (an ablation that
switches SLN off keeps the same loss table). The weight λ of eq. 7 is the loss term's
``weight`` in the config (paper: 0.5 SYSU-MM01, 1 RegDB).

**Gradient path (the paper leaves it open).** The position of a maximum is piecewise constant
in the map, so a hard argmax gives the network no gradient and the loss would never act. The
centre is therefore a *soft-argmax*: a spatial softmax over the map, divided by its maximum
so the temperature does not depend on the feature scale, ``p = softmax(f / (max f · T))``, and
the centre is the expected position ``Σ p(i, j) · (y_i, x_j)``. As T -> 0 it tends to the argmax
the paper names; T = 0.1 (default) gives a position e^10 ≈ 22000 times the weight of a
position with zero response. Its gradient raises the response of positions away from the other
sub-network's centre and lowers it near it, which is what "avoid redundant focus on a region"
asks for. ``center="straight_through"`` uses the exact argmax position for the loss value (the
hinge is active exactly when the paper's is) and the soft-argmax's gradient.

**Units of S.** Positions are the centres of feature-map cells expressed in pixels of an image
of ``reference_size`` (default 288x144, the paper's input): cell (i, j) of an h x w map is at
``((i + 0.5) · 288 / h, (j + 0.5) · 144 / w)``. At the paper's size this is the cell's centre in
input pixels (layer4 at last stride 1 is 18x9, 16 pixels a cell), so S = 100 means what it
meant there (about a third of the image height); at another input size (e.g. 64x32 on synthetic
data) S keeps the same share of the person.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss, zero_loss
from vireid.modeling.registries import LOSSES

CENTER_MODES = ("soft", "straight_through")


def channel_gem(feature_maps: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 4: GeM over the channel axis (-3) of ``[..., C, h, w]`` -> response maps ``[..., h, w]``."""
    return feature_maps.clamp(min=eps).pow(p).mean(dim=-3).pow(1.0 / p)


def cell_centers(height: int, width: int, reference_size: Sequence[int], device=None, dtype=None) -> torch.Tensor:
    """Centres ``[h*w, 2]`` (y, x) of the cells of an ``height x width`` map, in reference-image pixels."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (float(reference_size[0]) / height)
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (float(reference_size[1]) / width)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)], dim=1)


def region_centers(
    maps: torch.Tensor,
    reference_size: Sequence[int] = (288, 144),
    temperature: float = 0.1,
    mode: str = "soft",
    eps: float = 1e-12,
) -> torch.Tensor:
    """Centre of the region of interest ``[..., 2]`` (y, x in reference pixels) of maps ``[..., h, w]``.

    ``mode="soft"``: soft-argmax of the max-normalised map at ``temperature``;
    ``"straight_through"``: the hard argmax position forward, the soft-argmax gradient backward.
    """
    if mode not in CENTER_MODES:
        raise ConfigError(f"overlap center must be one of {', '.join(CENTER_MODES)}, got {mode!r}")
    height, width = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], height * width)
    coords = cell_centers(height, width, reference_size, device=maps.device, dtype=maps.dtype)
    scale = flat.amax(dim=-1, keepdim=True).clamp(min=eps)
    weights = torch.softmax(flat / (scale * temperature), dim=-1)
    soft = weights @ coords
    if mode == "soft":
        return soft
    hard = coords[flat.argmax(dim=-1)]
    return hard + (soft - soft.detach())


@LOSSES.register("overlap_penalty")
class OverlapPenaltyLoss(ReIDLoss):
    """L_op of eq. 5 on the SLN feature maps ``[N_sub, B, C, h, w]`` (eq. 4 pools them).

    Args:
        separation: S, in pixels of a ``reference_size`` image (paper: 100 at 288x144).
        gem_p: GeM exponent of eq. 4 (3, as the method's pooling).
        temperature: softness T of the soft-argmax (relative to each map's maximum).
        center: ``"soft"`` or ``"straight_through"`` (see the module docstring).
        reference_size: (height, width) in whose pixels S and the centres are measured.
    """

    input_key = "part_maps"

    def __init__(
        self,
        separation: float = 100.0,
        gem_p: float = 3.0,
        temperature: float = 0.1,
        center: str = "soft",
        reference_size: Sequence[int] = (288, 144),
    ) -> None:
        super().__init__()
        if separation < 0:
            raise ConfigError(f"overlap_penalty separation must be >= 0, got {separation!r}")
        if gem_p <= 0:
            raise ConfigError(f"overlap_penalty gem_p must be positive, got {gem_p!r}")
        if temperature <= 0:
            raise ConfigError(f"overlap_penalty temperature must be positive, got {temperature!r}")
        if center not in CENTER_MODES:
            raise ConfigError(f"overlap_penalty center must be one of {', '.join(CENTER_MODES)}, got {center!r}")
        if len(reference_size) != 2 or min(reference_size) <= 0:
            raise ConfigError(f"overlap_penalty reference_size must be [height, width], got {reference_size!r}")
        self.separation = float(separation)
        self.gem_p = float(gem_p)
        self.temperature = float(temperature)
        self.center = center
        self.reference_size = (float(reference_size[0]), float(reference_size[1]))

    def centers(self, inputs: torch.Tensor) -> torch.Tensor:
        """Region centres ``[N_sub, B, 2]`` of feature maps ``[N_sub, B, C, h, w]`` (eq. 4 + centre)."""
        maps = channel_gem(inputs.float(), self.gem_p)
        return region_centers(maps, self.reference_size, self.temperature, self.center)

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor | None = None, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        if inputs.dim() != 5:
            raise ValueError(
                f"overlap_penalty reads the sub-network feature maps [N_sub, B, C, h, w] (a method's 'part_maps'); "
                f"got shape {tuple(inputs.shape)}"
            )
        num_sub = inputs.shape[0]
        if num_sub < 2 or inputs.shape[1] == 0:
            return zero_loss(inputs)
        centers = self.centers(inputs)
        first, second = torch.triu_indices(num_sub, num_sub, offset=1, device=inputs.device)
        gaps = centers[first] - centers[second]  # [pairs, B, 2]
        distance = gaps.pow(2).sum(dim=-1).clamp(min=1e-12).sqrt()
        return F.relu(self.separation - distance).mean()

    def extra_repr(self) -> str:
        return (f"separation={self.separation}, gem_p={self.gem_p}, temperature={self.temperature}, "
                f"center={self.center!r}, reference_size={self.reference_size}")


__all__ = ["CENTER_MODES", "OverlapPenaltyLoss", "cell_centers", "channel_gem", "region_centers"]
