"""Multi-masking triplet (MMT) loss of the dual-path Swin / NPU-ReID paper, eq. 1.

For an anchor ``a`` of one modality, both its positives and its negatives are taken from the
*other* modality only (the "masks"; §4.2: "for visible anchor sample, we select negative samples
only in thermal images ... positive sample from different modalities are pulled closer")::

    L_mtri = Σ_a [ max_{p∈P̄(a)} d_ap − min_{n∈N̄(a)} d_an + m1 ]_+                    (MMTN)
           + λ · [ max_{p∈P̄(a)} d_ap − min_{p∈P̄(a)} d_ap − m2 ]_+                     (MMTP)

with ``P̄(a)`` / ``N̄(a)`` the same-identity / other-identity samples of the other modality and ``d``
the Euclidean distance. The first term is a cross-modality batch-hard triplet (only (P−1)K
negatives per anchor instead of 2(P−1)K); the second "positive-compress" term pulls the hardest
cross-modality positive towards the easiest one, so one outlier positive cannot dominate.

Choices where the paper is vague: eq. 1 prints ``p ∈ V`` and ``n ∈ T`` for its visible→thermal
example, which contradicts the text (negatives of a visible anchor are thermal, positives are
"from another modality"); we follow the text: both sets come from the anchor's other modality.
The printed sum over anchors is averaged (``reduction="mean"``, the convention of every triplet
loss here, so the weight does not depend on the batch size; ``"sum"`` gives the printed form).

Defaults that make MMTP a constraint (the paper gives no values for ``m1``, ``m2``, ``λ``):

* ``normalize=True``: distances between L2-normalised features (chord distances in [0, 2]). On raw
  features both terms are homogeneous in the feature scale, and the configs feed the pre-BN
  ``features`` that the BNNeck cross-entropy does not see the scale of: multiplying every feature by
  0.01 lowered MMTP 100-fold (1.466 -> 0.0147 on the batch of
  ``tests/modeling/test_dual_path_swin.py``) and MMTN towards ``m1`` alone (2.23 -> 0.32), so the network could
  satisfy the loss by shrinking its features instead of arranging them. Normalised, the loss is the
  same at every scale.
* ``compress_margin`` m2 = 0.1 (m1 = 0.3): with m2 = 0 the MMTP term is above zero whenever two
  positives are not exactly equidistant, i.e. always -- it never switches off. With m2 = 0.1 (a
  third of m1 on the unit sphere) it acts only on positives spread more than that, the outliers the
  paper aims at (§4.2: "hard examples are probably outliers").
* The easiest positive is the reference: ``min d_ap`` carries no gradient, so the term pulls the
  hardest positive in ("ensure that hard positive sample is closer to easy positive sample",
  §6) instead of also pushing the easiest one away from the anchor, which the minus sign of eq. 1
  does when both distances are differentiated.

``normalize: false, compress_margin: 0.0`` gives the earlier behaviour back (still with the easiest
positive as a fixed reference). λ = 1. Table 2's ablation of the two terms is ``negative_term`` /
``positive_term``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss, pairwise_euclidean, zero_loss
from vireid.modeling.registries import LOSSES


@LOSSES.register("multi_masking_triplet")
class MultiMaskingTripletLoss(ReIDLoss):
    """MMT loss (dual-path Swin paper, eq. 1); ``needs_modalities``. See the module docstring.

    Args:
        margin: m1 of MMTN.
        compress_margin: m2 of MMTP (the spread of an anchor's cross-modality positives it tolerates).
        compress_weight: λ.
        negative_term, positive_term: keep MMTN / MMTP (Table 2).
        normalize: distances between L2-normalised features (scale-invariant; see the module docstring).
        reduction: ``"mean"`` over anchors or the printed ``"sum"``.
    """

    input_key = "features"
    needs_modalities = True

    def __init__(self, margin: float = 0.3, compress_margin: float = 0.1, compress_weight: float = 1.0,
                 negative_term: bool = True, positive_term: bool = True, normalize: bool = True,
                 reduction: str = "mean") -> None:
        super().__init__()
        if margin < 0 or compress_weight < 0 or compress_margin < 0:
            raise ConfigError(f"multi_masking_triplet margin ({margin}), compress_margin ({compress_margin}) and "
                              f"compress_weight ({compress_weight}) must be >= 0")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"multi_masking_triplet reduction={reduction!r} is unknown; use 'mean' or 'sum'")
        if not (negative_term or positive_term):
            raise ConfigError("multi_masking_triplet needs at least one of negative_term / positive_term")
        self.margin = float(margin)
        self.compress_margin = float(compress_margin)
        self.compress_weight = float(compress_weight)
        self.negative_term = bool(negative_term)
        self.positive_term = bool(positive_term)
        self.normalize = bool(normalize)
        self.reduction = reduction

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None) -> torch.Tensor:
        if modalities is None:
            raise ConfigError("multi_masking_triplet needs the modality of every sample")
        features = F.normalize(inputs.float(), dim=1) if self.normalize else inputs
        dist = pairwise_euclidean(features)
        labels = labels.view(-1)
        modalities = modalities.view(-1).to(labels.device)
        other = modalities.view(-1, 1) != modalities.view(1, -1)
        same_id = labels.view(-1, 1) == labels.view(1, -1)
        pos = other & same_id
        neg = other & ~same_id
        has_pos = pos.any(dim=1)
        d_ap_max = dist.masked_fill(~pos, float("-inf")).amax(dim=1)
        d_an_min = dist.masked_fill(~neg, float("inf")).amin(dim=1)
        terms = []
        if self.negative_term:
            valid = has_pos & neg.any(dim=1)
            if bool(valid.any()):
                terms.append((valid, F.relu(d_ap_max - d_an_min + self.margin)))
        if self.positive_term and bool(has_pos.any()):
            d_ap_min = dist.detach().masked_fill(~pos, float("inf")).amin(dim=1)  # the reference: no gradient
            terms.append((has_pos, self.compress_weight * F.relu(d_ap_max - d_ap_min - self.compress_margin)))
        if not terms:
            return zero_loss(inputs)
        total = zero_loss(inputs)
        for valid, values in terms:
            picked = values[valid]
            total = total + (picked.sum() if self.reduction == "sum" else picked.mean())
        return total

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, compress_margin={self.compress_margin}, compress_weight={self.compress_weight}, "
                f"normalize={self.normalize}, negative_term={self.negative_term}, positive_term={self.positive_term}")


__all__ = ["MultiMaskingTripletLoss"]
