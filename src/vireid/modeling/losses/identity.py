"""Identity (classification) loss with label smoothing.

Szegedy et al., "Rethinking the Inception architecture", CVPR 2016, sec. 7: the one-hot
target ``q`` is replaced by ``(1 − ε) q + ε / K``; the loss is the cross entropy
``−Σ_k q'_k log p_k`` averaged over the batch. ε = 0 gives plain cross entropy; Bag of tricks
and AGW use ε = 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.registries import LOSSES


@LOSSES.register("cross_entropy")
class CrossEntropyLabelSmooth(ReIDLoss):
    """Cross entropy on logits ``[B, K]`` with label smoothing ``epsilon``."""

    input_key = "logits"

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ConfigError(f"cross_entropy epsilon must be in [0, 1), got {epsilon!r}")
        self.num_classes = int(num_classes)
        self.epsilon = float(epsilon)

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        if inputs.shape[-1] != self.num_classes:
            raise ValueError(f"logits have {inputs.shape[-1]} classes, the loss was built for {self.num_classes}")
        log_probs = F.log_softmax(inputs, dim=1)
        nll = -log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
        uniform = -log_probs.mean(dim=1)
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()


__all__ = ["CrossEntropyLabelSmooth"]
