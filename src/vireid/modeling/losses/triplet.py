"""Metric losses on features: batch-hard triplet, weighted regularised triplet, hetero-center triplet.

All distances are Euclidean on the features exactly as given (no normalisation), computed for
the whole batch at once; anchors without a valid positive/negative are left out, and a batch
with no valid anchor gives a zero that stays in the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss, pairwise_euclidean, zero_loss
from vireid.modeling.registries import LOSSES


def _label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels.view(-1, 1) == labels.view(1, -1)
    return same, ~same


@LOSSES.register("triplet")
class BatchHardTripletLoss(ReIDLoss):
    """Batch-hard triplet loss (Hermans et al., "In defense of the triplet loss", 2017, eq. 5).

    For each anchor a: the hardest positive ``max_{p: y_p = y_a} d(a, p)`` and hardest negative
    ``min_{n: y_n ≠ y_a} d(a, n)``; loss ``mean_a [m + d_ap − d_an]_+`` with margin m = 0.3
    (the re-ID default of Bag of tricks / AGW), or the soft-margin form
    ``mean_a log(1 + exp(d_ap − d_an))`` when ``margin`` is None (Hermans et al., eq. 6).
    The anchor itself counts as a positive at distance 0, so an identity with a single sample
    still yields ``[m − d_an]_+``.
    """

    input_key = "features"

    def __init__(self, margin: float | None = 0.3) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ConfigError(f"triplet margin must be >= 0 or null (soft margin), got {margin!r}")
        self.margin = None if margin is None else float(margin)

    def hardest_distances(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hardest-positive and hardest-negative distances per anchor, and which anchors have a negative."""
        dist = pairwise_euclidean(inputs)
        is_pos, is_neg = _label_masks(labels)
        d_ap = dist.masked_fill(~is_pos, float("-inf")).amax(dim=1)
        d_an = dist.masked_fill(~is_neg, float("inf")).amin(dim=1)
        return d_ap, d_an, is_neg.any(dim=1)

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        d_ap, d_an, valid = self.hardest_distances(inputs, labels)
        if not bool(valid.any()):
            return zero_loss(inputs)
        d_ap, d_an = d_ap[valid], d_an[valid]
        if self.margin is None:
            return F.softplus(d_ap - d_an).mean()
        return F.relu(d_ap - d_an + self.margin).mean()


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores`` along dim 1 over the entries where ``mask`` is true (0 elsewhere)."""
    has_any = mask.any(dim=1, keepdim=True)
    usable = mask | ~has_any  # rows with no entry use a plain softmax, then get zeroed: no NaN anywhere
    weights = scores.masked_fill(~usable, float("-inf")).softmax(dim=1)
    return weights * mask


@LOSSES.register("wrt")
class WeightedRegularizedTripletLoss(ReIDLoss):
    """Weighted regularised triplet (WRT) loss of AGW (Ye et al., "Deep learning for person
    re-identification: a survey and outlook", TPAMI 2021, eq. 5).

    For anchor i with positives P_i (same identity, the anchor included, as in AGW's code) and
    negatives N_i::

        w_ij^p = exp(d_ij) / Σ_{k∈P_i} exp(d_ik)      w_ij^n = exp(−d_ij) / Σ_{k∈N_i} exp(−d_ik)
        L = mean_i log(1 + exp(Σ_j w_ij^p d_ij − Σ_j w_ij^n d_ij))

    Far positives and close negatives get more weight; there is no margin to tune.

    ``alpha``, ``gamma`` and ``squared`` generalise it to CAJ's ``TripletLoss_ADP`` (see
    :class:`ADPTripletLoss`); their defaults (1, 1, False) are exactly WRT.
    """

    input_key = "features"

    def __init__(self, alpha: float = 1.0, gamma: float = 1.0, squared: bool = False) -> None:
        super().__init__()
        if alpha <= 0 or gamma <= 0:
            raise ConfigError(f"{type(self).__name__} alpha ({alpha}) and gamma ({gamma}) must be > 0")
        self.alpha, self.gamma, self.squared = float(alpha), float(gamma), bool(squared)

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        dist = pairwise_euclidean(inputs)
        is_pos, is_neg = _label_masks(labels)
        valid = is_neg.any(dim=1)
        if not bool(valid.any()):
            return zero_loss(inputs)
        weighted_pos = (_masked_softmax(self.alpha * dist, is_pos) * dist).sum(dim=1)[valid]
        weighted_neg = (_masked_softmax(-self.alpha * dist, is_neg) * dist).sum(dim=1)[valid]
        gap = weighted_pos - weighted_neg
        if not self.squared:
            return F.softplus(self.gamma * gap).mean()
        # CAJ's squared difference: the violation's sign with its squared size, capped at 88 (exp overflow)
        sign = torch.where(gap > 0, 1.0, -1.0).to(gap.dtype)
        return F.softplus(sign * (self.gamma * gap.pow(2)).clamp(max=88.0)).mean()


@LOSSES.register("adp_triplet")
class ADPTripletLoss(WeightedRegularizedTripletLoss):
    """CAJ's enhanced squared-difference triplet (Ye et al., "Channel augmented joint learning for
    visible-infrared recognition", ICCV 2021, Sec. 3.3; ``TripletLoss_ADP`` in its released code).

    With the WRT weights sharpened by ``alpha`` (``w^p ∝ exp(α d)``, ``w^n ∝ exp(−α d)``, the weighted
    distances themselves unscaled), ``δ_i = Σ_j w_ij^p d_ij − Σ_j w_ij^n d_ij`` and ``s_i = sign(δ_i)``
    (−1 at δ_i = 0)::

        L = mean_i log(1 + exp(s_i · min(γ δ_i², 88)))

    A violated triplet (δ > 0) is penalised by its squared size, a satisfied one rewarded likewise,
    so the gradient grows with the violation instead of saturating as WRT's. The release trains with
    α = γ = 1 and the squared form (``--method adp --square 1``), the defaults here;
    ``squared: false`` gives ``log(1 + exp(γ δ))``.
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 1.0, squared: bool = True) -> None:
        super().__init__(alpha=alpha, gamma=gamma, squared=squared)


@LOSSES.register("hetero_center_triplet")
class HeteroCenterTripletLoss(ReIDLoss):
    """Hetero-center triplet loss (Liu, Tan & Zhou, "Parameter sharing exploration and
    hetero-center triplet loss for visible-thermal person re-identification", TMM 2021;
    DFW+SLN, eq. 6).

    In a P×K(visible)+K(infrared) batch, each identity i has a visible centre ``c_v^i`` and an
    infrared centre ``c_I^i`` (means of its features in that modality). Every centre is an
    anchor; its positive is the same identity's centre in the other modality, its negative the
    closest centre of another identity in either modality::

        L = Σ_i [ρ + ||c_v^i − c_I^i|| − min_{n∈{v,I}, j≠i} ||c_v^i − c_n^j||]_+
          + Σ_i [ρ + ||c_I^i − c_v^i|| − min_{n∈{v,I}, j≠i} ||c_I^i − c_n^j||]_+

    ``reduction="mean"`` (default) divides by the number of anchor centres (2P), as the
    authors' released code does (a ``MarginRankingLoss`` mean over the 2P centres);
    ``"sum"`` is eq. 6 as printed. Margin ρ = 0.3 (the authors' code default). Centres are
    found from ``labels`` and ``modalities`` (not from the batch order), so any batch layout
    works; a centre whose identity lacks the other modality in the batch is not an anchor (it
    still serves as a negative).
    """

    input_key = "features"
    needs_modalities = True

    def __init__(self, margin: float = 0.3, reduction: str = "mean") -> None:
        super().__init__()
        if margin < 0:
            raise ConfigError(f"hetero_center_triplet margin must be >= 0, got {margin!r}")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"hetero_center_triplet reduction must be 'mean' or 'sum', got {reduction!r}")
        self.margin = float(margin)
        self.reduction = reduction

    @staticmethod
    def centers(
        inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (identity, modality) mean features ``[G, D]`` with their labels and modalities ``[G]``."""
        keys = labels.long() * 2 + modalities.long()
        unique_keys, group = torch.unique(keys, return_inverse=True)
        sums = inputs.new_zeros((unique_keys.numel(), inputs.shape[1])).index_add(0, group, inputs)
        counts = torch.bincount(group, minlength=unique_keys.numel()).to(inputs.dtype).unsqueeze(1)
        return sums / counts, unique_keys // 2, unique_keys % 2

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        if modalities is None:
            raise ValueError("hetero_center_triplet needs the modality of every sample (modalities=[B] of 0/1)")
        if bool(((modalities != 0) & (modalities != 1)).any()):
            raise ValueError("modalities must be 0 (visible) or 1 (infrared)")
        centers, center_labels, center_modalities = self.centers(inputs, labels, modalities)
        dist = pairwise_euclidean(centers)
        same_id = center_labels.view(-1, 1) == center_labels.view(1, -1)
        other_modality = center_modalities.view(-1, 1) != center_modalities.view(1, -1)
        is_pos = same_id & other_modality
        is_neg = ~same_id
        valid = is_pos.any(dim=1) & is_neg.any(dim=1)
        if not bool(valid.any()):
            return zero_loss(inputs)
        d_ap = dist.masked_fill(~is_pos, float("-inf")).amax(dim=1)[valid]
        d_an = dist.masked_fill(~is_neg, float("inf")).amin(dim=1)[valid]
        hinge = F.relu(self.margin + d_ap - d_an)
        return hinge.mean() if self.reduction == "mean" else hinge.sum()


__all__ = ["BatchHardTripletLoss", "HeteroCenterTripletLoss", "WeightedRegularizedTripletLoss"]
