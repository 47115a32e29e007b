"""Losses, each a small module with the call ``loss(inputs, labels, modalities=None)``.

Registered in ``LOSSES`` by name (``vireid list losses``). Each class's ``input_key`` says which model output it
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
