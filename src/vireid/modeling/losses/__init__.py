"""Losses, each a small module with the call ``loss(inputs, labels, modalities=None)``.

Registered names (``LOSSES``): ``cross_entropy``, ``triplet``, ``wrt``,
``hetero_center_triplet``, ``center``. Each class's ``input_key`` says which model output it
reads by default (``"logits"`` or ``"features"``).
"""

from vireid.modeling.losses.base import ReIDLoss, pairwise_euclidean
from vireid.modeling.losses.center import CenterLoss
from vireid.modeling.losses.identity import CrossEntropyLabelSmooth
from vireid.modeling.losses.triplet import (
    BatchHardTripletLoss,
    HeteroCenterTripletLoss,
    WeightedRegularizedTripletLoss,
)

__all__ = [
    "BatchHardTripletLoss",
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "HeteroCenterTripletLoss",
    "ReIDLoss",
    "WeightedRegularizedTripletLoss",
    "pairwise_euclidean",
]
from vireid.modeling.losses import overlap, partwise  # noqa: E402,F401  (DFW+SLN: "overlap_penalty", "partwise")
from vireid.modeling.losses import multi_masking  # noqa: E402,F401  (dual-path Swin: "multi_masking_triplet")
from vireid.modeling.losses import cmce  # noqa: E402,F401  (PDFENet: "cmce", "center_contrast")
from vireid.modeling.losses import cluster_memory  # noqa: E402,F401  (unsupervised/semi-supervised: "cluster_memory")
