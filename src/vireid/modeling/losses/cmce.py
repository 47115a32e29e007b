"""PDFENet losses: cross-modality cross-entropy (CMCE, §3.4, eqs. 9-15) and the center
contrast loss (§3.5, eqs. 16-17).

CMCE reads the method output ``modality_logits`` ``[B, 2, K]`` made by
:class:`~vireid.modeling.heads.MomentumModalityClassifiers`: row ``[:, 0]`` is the sample's
own-modality classifier (``cls^V(f^V)`` / ``cls^I(f^I)``), row ``[:, 1]`` the other modality's momentum
classifier (``cls_M^I(f^V)`` / ``cls_M^V(f^I)``). With ``p = softmax``:

* eqs. 9-10: ``L_M^V = -Σ_i p^IV(i) log p^VV(i)``, ``L_M^I = -Σ_i p^VI(i) log p^II(i)``. The momentum
  cross-modality prediction is the soft label; the loss does not detach it, so its gradient reaches
  the feature ``f^V`` / ``f^I`` through ``cls_M`` (whose weights are a buffer, eqs. 13-14). The head
  decides: ``model.params.detach_cross: true`` computes it on the detached feature instead (see
  :class:`~vireid.modeling.heads.MomentumModalityClassifiers`);
* eqs. 11-12: ``L_ID^V``, ``L_ID^I``: cross entropy of the own-modality prediction with the identity;
* eq. 15: ``L_CM = λ1 (L_M^V + L_M^I) + λ2 (L_ID^V + L_ID^I)``, λ1 = 2.5, λ2 = 0.5 (§4.2).

The soft-label term as printed is a cross entropy, ``H(p^IV, p^VV) = H(p^IV) + KL(p^IV || p^VV)``. When the
soft label keeps its gradient, its own entropy ``H(p^IV)`` is part of what the features minimise: they can
lower the loss by making the momentum classifier *confident*, whichever identity it names. Measured on the
synthetic data from scratch (docs/results.md, "cmce-soft-labels"): the soft labels end near one-hot
(entropy 0.38 nats against ln K = 4.79), the two classifiers agree on every sample and the identity is right
for 2 % of training images. ``soft_label_loss: kl`` drops that entropy: ``KL(p^IV || p^VV)`` has the same
gradient with respect to the own-modality prediction (so a detached soft label trains exactly as before)
and still passes the cross-modal gradient to the feature, but it only asks the two predictions to agree.

Each of ``L^V``/``L^I`` is the mean over the batch's samples of that modality (a modality absent from
the batch contributes 0), so the two modalities weigh the same as in eq. 15.

Center contrast (eqs. 16-17). ``C_p`` is the mean feature of identity ``p`` in the batch (both
modalities). Eq. 17 as printed, ``||f_{p,k} - C_p||_2 + ||C_p - C_q||_2``, would pull the centres of
*different* people together, the opposite of its name and of Fig. 3c (classes well separated). We read
the second term as the contrast it is named for and bound it with a margin ρ::

    L_C = mean_i ||f_i - C_{y_i}||_2 + mean_{p != q} max(0, ρ - ||C_p - C_q||_2)

ρ = 0 leaves only the pull to the centres (Wen et al.'s center loss, unsquared, with batch centres).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss, pairwise_euclidean
from vireid.modeling.registries import LOSSES


def per_modality_mean(values: torch.Tensor, modalities: torch.Tensor, num_modalities: int = 2) -> torch.Tensor:
    """``Σ_m mean_{i: m_i = m} values_i`` over the modalities present (one scatter, no loop)."""
    codes = modalities.long().to(values.device)
    sums = values.new_zeros(num_modalities).index_add(0, codes, values)
    counts = torch.bincount(codes, minlength=num_modalities).to(values.dtype)
    return (sums / counts.clamp(min=1)).sum()


@LOSSES.register("cmce")
class CrossModalityCrossEntropy(ReIDLoss):
    """CMCE (eq. 15) on ``modality_logits`` ``[B, 2, K]``.

    Args:
        num_classes: K (checked against the logits).
        lambda_m: λ1, weight of the cross-modality soft-label terms (eqs. 9-10; paper 2.5).
        lambda_id: λ2, weight of the identity terms (eqs. 11-12; paper 0.5).
        epsilon: label smoothing of the identity terms (paper: none, 0).
        soft_label_loss: ``"cross_entropy"`` (eqs. 9-10 as printed, the default) or ``"kl"``
            (``KL(p^IV || p^VV)``: the same without the soft label's own entropy; see the module doc).
    """

    input_key = "modality_logits"
    needs_modalities = True

    def __init__(self, num_classes: int, lambda_m: float = 2.5, lambda_id: float = 0.5, epsilon: float = 0.0,
                 soft_label_loss: str = "cross_entropy") -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ConfigError(f"cmce epsilon must be in [0, 1), got {epsilon!r}")
        if soft_label_loss not in ("cross_entropy", "kl"):
            raise ConfigError(f"cmce soft_label_loss must be 'cross_entropy' (eqs. 9-10) or 'kl', got {soft_label_loss!r}")
        self.num_classes = int(num_classes)
        self.lambda_m = float(lambda_m)
        self.lambda_id = float(lambda_id)
        self.epsilon = float(epsilon)
        self.soft_label_loss = soft_label_loss

    def terms(self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"cross": L_M^V + L_M^I, "identity": L_ID^V + L_ID^I}`` (before the λ weights)."""
        if inputs.dim() != 3 or inputs.shape[1] != 2 or inputs.shape[2] != self.num_classes:
            raise ValueError(f"cmce expects modality_logits [B, 2, {self.num_classes}], got {tuple(inputs.shape)}")
        if modalities is None:
            raise ValueError("cmce needs the modality of every sample")
        log_own = F.log_softmax(inputs[:, 0].float(), dim=1)
        log_soft = F.log_softmax(inputs[:, 1].float(), dim=1)
        soft = log_soft.exp()  # gradient to the feature unless the head detached it
        if self.soft_label_loss == "kl":
            cross = (soft * (log_soft - log_own)).sum(dim=1)  # KL(p^IV || p^VV) per sample
        else:
            cross = -(soft * log_own).sum(dim=1)  # eqs. 9-10 per sample
        nll = -log_own.gather(1, labels.long().view(-1, 1)).squeeze(1)
        identity = (1.0 - self.epsilon) * nll - self.epsilon * log_own.mean(dim=1)  # eqs. 11-12 per sample
        return {"cross": per_modality_mean(cross, modalities), "identity": per_modality_mean(identity, modalities)}

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = self.terms(inputs, labels, modalities)
        return self.lambda_m * t["cross"] + self.lambda_id * t["identity"]  # eq. 15


@LOSSES.register("center_contrast")
class CenterContrastLoss(ReIDLoss):
    """Pull features to their identity's batch centre, push centres of different identities at least
    ``margin`` apart (eqs. 16-17, see the module docstring for the reading of eq. 17).

    Args:
        margin: ρ of the centre contrast (0 disables it).
        normalize: L2-normalise the features first (the distances are then in cosine units).
    """

    input_key = "features"

    def __init__(self, margin: float = 0.3, normalize: bool = False) -> None:
        super().__init__()
        if margin < 0:
            raise ConfigError(f"center_contrast margin must be >= 0, got {margin!r}")
        self.margin = float(margin)
        self.normalize = bool(normalize)

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = inputs.float()
        if self.normalize:
            features = F.normalize(features, dim=1)
        ids, inverse = torch.unique(labels.long(), return_inverse=True)
        counts = torch.bincount(inverse, minlength=ids.numel()).to(features.dtype)
        centers = features.new_zeros(ids.numel(), features.shape[1]).index_add(0, inverse, features)
        centers = centers / counts.unsqueeze(1)  # eq. 16
        pull = (features - centers[inverse]).square().sum(dim=1).clamp(min=1e-12).sqrt().mean()
        if ids.numel() < 2 or self.margin == 0.0:
            return pull
        dist = pairwise_euclidean(centers)
        off_diagonal = ~torch.eye(ids.numel(), dtype=torch.bool, device=dist.device)
        push = F.relu(self.margin - dist[off_diagonal]).mean()
        return pull + push


__all__ = ["CenterContrastLoss", "CrossModalityCrossEntropy", "per_modality_mean"]
