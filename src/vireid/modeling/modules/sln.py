"""Segmented learning network (SLN) of DFW+SLN (§3.3, Fig. 2a): the last backbone stage as N
parallel sub-networks.

Each sub-network is a full copy of the stage it replaces (layer4 of a ResNet), all starting from
the same (pretrained) weights; they see the same input and give N feature maps. What makes them
learn different things is what sits after them: each has its own pooling, BNNeck and identity
classifier (randomly initialised, so their gradients differ from the first step), and the
overlap penalty loss (:mod:`vireid.modeling.losses.overlap`) pushes the centres of their
attention apart. The paper uses N = 2; its Table 2 FLOPs (+4.85 G over the baseline at
288x144) are exactly those of one more ResNet-50 layer4 at last stride 1, which is what a full
copy costs.

The outputs are stacked on a new leading axis, ``[N, B, C, h, w]``, so losses and heads work on
all sub-networks at once.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES


@MODULES.register("sln")
class SegmentedLearningNetwork(nn.Module):
    """N parallel copies of ``stage``; ``forward(x [B,C,H,W]) -> [N, B, C', h, w]``.

    Args:
        stage: the module to copy (e.g. the shared layer4 of a two-stream backbone).
        num_branches: N >= 1 sub-networks (paper: 2). N = 1 is the plain stage (with a
            leading axis of size 1), which lets ablations switch SLN off with one number.
    """

    def __init__(self, stage: nn.Module, num_branches: int = 2) -> None:
        super().__init__()
        if int(num_branches) < 1:
            raise ConfigError(f"SLN num_branches must be >= 1, got {num_branches!r}")
        self.num_branches = int(num_branches)
        self.branches = nn.ModuleList([stage] + [copy.deepcopy(stage) for _ in range(self.num_branches - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches], dim=0)

    def extra_repr(self) -> str:
        return f"num_branches={self.num_branches}"


__all__ = ["SegmentedLearningNetwork"]
