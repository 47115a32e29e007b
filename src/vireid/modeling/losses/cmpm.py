"""Cross-modal projection matching (CMPM) between image and text embeddings.

Zhang and Lu, "Deep Cross-Modal Projection Learning for Image-Text Matching", ECCV 2018, §3.1,
Eqs. (1)-(5): for a batch of ``n`` image embeddings ``x_i`` and text embeddings ``z_j``, the
probability that image ``i`` matches text ``j`` is the softmax over ``j`` of the scalar projection
``p_ij = softmax_j(x_i^T z_j / ||z_j||)``; the true matching distribution puts equal mass on every
text of the same identity, ``q_ij = y_ij / sum_k y_ik`` (``y_ij = 1`` when ``i`` and ``j`` share a
label); the loss is the KL divergence ``L_i2t = 1/n sum_i sum_j p_ij log(p_ij / (q_ij + eps))`` and
CMPM is ``L_i2t + L_t2i`` (texts projected on normalised images the same way).

Input (``input: image_text`` of the text methods, :mod:`vireid.modeling.methods.text_reid`): ``[B, 2, D]``,
row ``b`` holding image ``b``'s embedding and its own description's embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.registries import LOSSES


@LOSSES.register("cmpm")
class CMPMLoss(ReIDLoss):
    """CMPM (Zhang and Lu, ECCV 2018, Eqs. 1-5) on ``[B, 2, D]`` (image, text) embedding pairs."""

    input_key = "image_text"

    def __init__(self, epsilon: float = 1e-8) -> None:
        super().__init__()
        if not 0.0 < float(epsilon) < 1.0:
            raise ConfigError(f"cmpm epsilon must be in (0, 1), got {epsilon!r}")
        self.epsilon = float(epsilon)

    def _direction(self, a: torch.Tensor, b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        logits = a @ F.normalize(b, dim=1).t()
        p = F.softmax(logits, dim=1)
        return (p * (F.log_softmax(logits, dim=1) - torch.log(q + self.epsilon))).sum(dim=1).mean()

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
                ) -> torch.Tensor:
        if inputs.dim() != 3 or inputs.shape[1] != 2:
            raise ValueError(f"cmpm reads [B, 2, D] (image, text) pairs, got {tuple(inputs.shape)}")
        images, texts = inputs[:, 0].float(), inputs[:, 1].float()
        same = (labels.view(-1, 1) == labels.view(1, -1)).float()
        q = same / same.sum(dim=1, keepdim=True)
        return self._direction(images, texts, q) + self._direction(texts, images, q)


__all__ = ["CMPMLoss"]
