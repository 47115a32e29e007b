"""CLIP-ReID's stage-1 loss: image-to-text and text-to-image supervised contrast.

Li et al., "CLIP-ReID: exploiting vision-language model for image re-identification without
concrete text labels", AAAI 2023, eqs. (3)-(5); reference repository Syliz517/CLIP-ReID,
``loss/supcontrast.py`` and ``processor/processor_clipreid_stage1.py``. For a batch of ``B``
image features ``V_i`` and the text features ``T_i`` of each image's identity prompt
(``y_i`` its identity), with ``s(a, b) = a · b`` (the reference uses the raw dot product of
the projected features with temperature 1):

    L_i2t = - 1/B Σ_i  1/|P(i)| Σ_{p ∈ P(i)}  log( exp s(V_i, T_p) / Σ_a exp s(V_i, T_a) )
    L_t2i = - 1/B Σ_i  1/|P(i)| Σ_{p ∈ P(i)}  log( exp s(T_i, V_p) / Σ_a exp s(T_i, V_a) )

where ``P(i) = {p : y_p = y_i}`` are the batch entries of the same identity (the batch holds
several images per identity, so several positives). The loss returned is ``L_i2t + L_t2i``.

Input: the method's ``image_text`` output, a ``[B, 2, D]`` tensor holding ``(V_i, T_i)`` per
sample (:class:`vireid.modeling.methods.clip_reid.ClipReID`, stage 1).
"""

from __future__ import annotations

import torch

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.registries import LOSSES


def supervised_contrast(anchors: torch.Tensor, others: torch.Tensor, anchor_labels: torch.Tensor,
                        other_labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``-mean_i mean_{p: y_p = y_i} log softmax_a(anchors_i · others_a / τ)[p]`` (one direction of eq. 3-4)."""
    logits = anchors.float() @ others.float().t() / temperature
    positives = (anchor_labels.view(-1, 1) == other_labels.view(1, -1)).float()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -((positives * log_prob).sum(1) / positives.sum(1).clamp(min=1.0)).mean()


@LOSSES.register("clip_contrastive")
class ClipContrastiveLoss(ReIDLoss):
    """``L_i2t + L_t2i`` of CLIP-ReID stage 1 on ``[B, 2, D]`` (image, text) pairs (see the module docstring)."""

    input_key = "image_text"

    def __init__(self, temperature: float = 1.0, i2t_weight: float = 1.0, t2i_weight: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"clip_contrastive temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.i2t_weight = float(i2t_weight)
        self.t2i_weight = float(t2i_weight)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None) -> torch.Tensor:
        if inputs.dim() != 3 or inputs.shape[1] != 2:
            raise ValueError(f"clip_contrastive reads [B, 2, D] (image, text) pairs, got shape {tuple(inputs.shape)}")
        image, text = inputs[:, 0], inputs[:, 1]
        i2t = supervised_contrast(image, text, labels, labels, self.temperature)
        t2i = supervised_contrast(text, image, labels, labels, self.temperature)
        return self.i2t_weight * i2t + self.t2i_weight * t2i


__all__ = ["ClipContrastiveLoss", "supervised_contrast"]
