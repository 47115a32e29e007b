"""Adaptive detail mask generation (ADMG), PDFENet (Cui et al., "Pure Detail Feature Extraction
Network for Visible-Infrared Re-Identification", 2023), §3.2, eqs. 1-5; and the joint heatmaps it
reads.

Heatmaps. The paper's auxiliary branch is an MPII pose estimator (GCM) whose 16 joint heatmaps are
max-pooled down to the feature map. Here joints come as coordinates (``[B, 16, 3]`` = x, y,
visibility in input pixels, MPII order; :mod:`vireid.data.pose`) and :func:`joint_heatmaps` draws the
heatmap a pose estimator is trained to output: a Gaussian of ``sigma`` cells on a grid of stride
``stride`` (defaults 2 cells at stride 4, i.e. 8 input pixels: the usual MPII target of top-down pose
networks), scaled by the joint's visibility/score, then max-pooled to the feature map's size as the
paper does. Everything is one batched tensor expression (no loop over samples or joints).

Without joints (an arbitrary uploaded image, ``model(images, modalities)``), or for a sample whose
selected joints are all invisible (the estimator found no person), the heatmaps of
:data:`PRIOR_POSE` are used: the median joints of an upright, frontal pedestrian in a tight re-id crop
(measured with MediaPipe on SYSU-MM01 crops, made left/right symmetric), at visibility 1.

ADMG (eqs. 1-5). ``F_pose = [F_g; H]`` (C + S channels, H the S selected heatmaps); credibilities
``W = sigmoid(GAP(F_pose) W_1 + b_1)`` (eq. 1, one per heatmap); per group g (top, mid) the mask
``M_g = sum_j W_j H_j`` over the group's joints (eqs. 2-3) and the detail map ``F_g' = M_g ⊙ F_g``
(eqs. 4-5). The lower third is taken by part pooling (the last of three equal horizontal stripes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES

#: MPII joint order (the same as :data:`vireid.data.synth.render.MPII_JOINTS`; repeated here so that the
#: model layer does not import the data layer).
MPII_JOINTS = (
    "r-ankle", "r-knee", "r-hip", "l-hip", "l-knee", "l-ankle", "pelvis", "thorax",
    "upper-neck", "head-top", "r-wrist", "r-elbow", "r-shoulder", "l-shoulder", "l-elbow", "l-wrist",
)
MPII_INDEX = {name: i for i, name in enumerate(MPII_JOINTS)}
#: §3.2: the joints whose GCM accuracy is balanced between modalities (Table 1), in two groups.
TOP_JOINTS = ("thorax", "upper-neck", "head-top", "l-shoulder", "r-shoulder")
MID_JOINTS = ("l-hip", "l-elbow", "r-elbow", "l-wrist")
#: Not in the paper (which pools the lower body by parts): the remaining lower-body joints, for the
#: ablation "A A A" of Table 5 (ADMG for the lower third as well).
LOW_JOINTS = ("r-hip", "pelvis", "r-knee", "l-knee", "r-ankle", "l-ankle")
JOINT_GROUPS = {"top": TOP_JOINTS, "mid": MID_JOINTS, "low": LOW_JOINTS}

#: Fallback pose (x, y) as fractions of the image width and height, MPII order: median MediaPipe joints
#: of the SYSU-MM01 crops in shared/data/real-mini, made left/right symmetric (a frontal view: the
#: person's right side on the image's left).
PRIOR_POSE = (
    (0.44, 0.89), (0.41, 0.70), (0.39, 0.50), (0.61, 0.50), (0.59, 0.70), (0.56, 0.89),  # legs
    (0.50, 0.50), (0.50, 0.22), (0.50, 0.16), (0.50, 0.05),  # pelvis, thorax, upper neck, head top
    (0.27, 0.45), (0.21, 0.35), (0.28, 0.21), (0.72, 0.21), (0.79, 0.35), (0.73, 0.45),  # arms
)


def joint_indices(names: Sequence[str | int]) -> list[int]:
    """MPII indices of joint names (``"l-hip"``) or indices; unknown names raise a ConfigError."""
    out = []
    for name in names:
        if isinstance(name, int) and 0 <= name < len(MPII_JOINTS):
            out.append(name)
        elif isinstance(name, str) and name in MPII_INDEX:
            out.append(MPII_INDEX[name])
        else:
            raise ConfigError(f"unknown MPII joint {name!r}; use one of {', '.join(MPII_JOINTS)} or an index 0..15")
    return out


def prior_joints(batch: int, image_size: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """:data:`PRIOR_POSE` as joints ``[batch, 16, 3]`` in pixels of an image of ``image_size`` (H, W)."""
    height, width = int(image_size[0]), int(image_size[1])
    frac = torch.tensor(PRIOR_POSE, dtype=torch.float32, device=device)
    xy = frac * torch.tensor([width, height], dtype=torch.float32, device=device) - 0.5
    joints = torch.cat([xy, torch.ones(len(PRIOR_POSE), 1, device=device)], dim=1)
    return joints.unsqueeze(0).expand(batch, -1, -1)


def joint_heatmaps(
    joints: torch.Tensor,
    image_size: Sequence[int],
    out_size: Sequence[int],
    sigma: float = 2.0,
    stride: int = 4,
) -> torch.Tensor:
    """Gaussian heatmaps ``[B, J, h, w]`` of joints ``[B, J, 3]`` (x, y, visibility; input pixels, pixel
    centres at integers) for a feature map of ``out_size`` (h, w).

    Drawn on the grid of stride ``stride`` over the ``image_size`` (H, W) input, ``exp(-d² / 2σ²)``
    with ``d`` in grid cells and peak = visibility, then max-pooled to ``out_size`` (§3.2).
    """
    height, width = int(image_size[0]), int(image_size[1])
    gh, gw = max(1, round(height / stride)), max(1, round(width / stride))
    joints = joints.float()
    # grid cell centres in input pixels, then distances in cells
    ys = (torch.arange(gh, device=joints.device, dtype=torch.float32) + 0.5) * (height / gh) - 0.5
    xs = (torch.arange(gw, device=joints.device, dtype=torch.float32) + 0.5) * (width / gw) - 0.5
    dy = (ys.view(1, 1, gh, 1) - joints[..., 1, None, None]) / (height / gh)
    dx = (xs.view(1, 1, 1, gw) - joints[..., 0, None, None]) / (width / gw)
    heat = torch.exp(-(dy.square() + dx.square()) / (2.0 * float(sigma) ** 2))
    heat = heat * joints[..., 2, None, None].clamp(0.0, 1.0)
    if (gh, gw) != (int(out_size[0]), int(out_size[1])):
        heat = F.adaptive_max_pool2d(heat, (int(out_size[0]), int(out_size[1])))
    return heat


def part_stripe(feature_map: torch.Tensor, index: int, parts: int = 3) -> torch.Tensor:
    """Stripe ``index`` of ``parts`` equal horizontal stripes (rounded bounds, each at least one row)."""
    h = feature_map.shape[2]
    bounds = [min(int(round(h * k / parts)), h) for k in range(parts + 1)]
    start = min(bounds[index], h - 1)
    return feature_map[:, :, start:max(bounds[index + 1], start + 1)]


@MODULES.register("admg")
class AdaptiveDetailMaskGeneration(nn.Module):
    """Credibility-weighted joint masks for groups of joints (eqs. 1-5).

    Args:
        channels: C, channels of the feature map ``F_g``.
        group_sizes: joints per group, in the order the heatmaps are stacked (paper: (5, 4) for
            top and mid; their sum S is the number of heatmaps).

    ``forward(feature_map [B,C,h,w], heatmaps [B,S,h,w])`` returns ``(masks, credibility)``: the
    masks ``[B, G, h, w]`` (eqs. 2-3) and the credibilities ``W`` ``[B, S]`` (eq. 1).
    :meth:`detail_maps` applies the masks (eqs. 4-5); :meth:`pooled_details` gives the global average
    of those maps without materialising them (one einsum), which is what the IDI reads with ``avg``
    pooling.
    """

    def __init__(self, channels: int, group_sizes: Sequence[int] = (5, 4)) -> None:
        super().__init__()
        self.group_sizes = [int(n) for n in group_sizes]
        if not self.group_sizes or min(self.group_sizes) < 1:
            raise ConfigError(f"ADMG needs at least one group of at least one joint, got {list(group_sizes)}")
        self.num_heatmaps = sum(self.group_sizes)
        self.channels = int(channels)
        self.credibility = nn.Linear(self.channels + self.num_heatmaps, self.num_heatmaps)  # W_1, b_1 of eq. 1
        # group membership matrix [G, S]: sum_j W_j H_j per group as one einsum
        membership = torch.zeros(len(self.group_sizes), self.num_heatmaps)
        start = 0
        for g, n in enumerate(self.group_sizes):
            membership[g, start:start + n] = 1.0
            start += n
        self.register_buffer("membership", membership, persistent=False)

    def forward(self, feature_map: torch.Tensor, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if heatmaps.shape[1] != self.num_heatmaps or heatmaps.shape[2:] != feature_map.shape[2:]:
            raise ValueError(f"ADMG expects heatmaps [B, {self.num_heatmaps}, {feature_map.shape[2]}, "
                             f"{feature_map.shape[3]}], got {tuple(heatmaps.shape)}")
        heatmaps = heatmaps.to(feature_map.dtype)
        descriptor = torch.cat([feature_map, heatmaps], dim=1).mean(dim=(2, 3))  # GAP(F_pose): [B, C+S]
        credibility = torch.sigmoid(self.credibility(descriptor))  # eq. 1: [B, S]
        weighted = credibility.unsqueeze(1) * self.membership.to(credibility.dtype)  # [B, G, S]
        masks = torch.einsum("bgs,bshw->bghw", weighted, heatmaps)  # eqs. 2-3
        return masks, credibility

    @staticmethod
    def detail_maps(feature_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Eqs. 4-5: ``M_g ⊙ F_g`` for every group, ``[G, B, C, h, w]``."""
        return masks.transpose(0, 1).unsqueeze(2) * feature_map.unsqueeze(0)

    @staticmethod
    def pooled_details(feature_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Global average pooling of eqs. 4-5, ``[B, G, C]`` = ``mean_hw M_g F_g`` (no [G,B,C,h,w] tensor)."""
        area = feature_map.shape[2] * feature_map.shape[3]
        return torch.einsum("bghw,bchw->bgc", masks.to(feature_map.dtype), feature_map) / area

    def extra_repr(self) -> str:
        return f"channels={self.channels}, group_sizes={self.group_sizes}"


__all__ = [
    "JOINT_GROUPS",
    "LOW_JOINTS",
    "MID_JOINTS",
    "MPII_JOINTS",
    "PRIOR_POSE",
    "TOP_JOINTS",
    "AdaptiveDetailMaskGeneration",
    "joint_heatmaps",
    "joint_indices",
    "part_stripe",
    "prior_joints",
]
