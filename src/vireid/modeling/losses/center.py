"""Center loss (Wen et al., "A discriminative feature learning approach for deep face
recognition", ECCV 2016, eq. 2): ``L_C = 1/2 Σ_i ||x_i − c_{y_i}||²``.

Normalisation used here: the sum is divided by the batch size, ``L = 1/(2B) Σ_i ||x_i −
c_{y_i}||²``, so its scale does not depend on the batch size (the config's weight, e.g.
Bag of tricks' 0.0005, multiplies this). The centres are an ``nn.Parameter`` updated by the
optimiser through this gradient (``∂L/∂c_j = −1/B Σ_{y_i=j} (x_i − c_j)``), not by Wen et al.'s
separate α-rule; give them their own learning rate in the optimiser if a recipe asks
(Bag of tricks: SGD, lr 0.5). Used by PDFENet as its baseline's metric loss.
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.registries import LOSSES


@LOSSES.register("center")
class CenterLoss(ReIDLoss):
    """Learnable per-identity centres ``[num_classes, feat_dim]`` (initialised N(0, 1))."""

    input_key = "features"

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.feat_dim = int(feat_dim)
        self.centers = nn.Parameter(torch.randn(self.num_classes, self.feat_dim))

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        if inputs.shape[1] != self.feat_dim:
            raise ValueError(f"features have {inputs.shape[1]} dims, center loss was built for {self.feat_dim}")
        centers = self.centers.index_select(0, labels.long())
        return (inputs - centers).pow(2).sum() / (2.0 * inputs.shape[0])


__all__ = ["CenterLoss"]
