"""Models: two-stream backbones, modules, heads, losses and the methods that compose them.

Registries (config names -> classes): ``BACKBONES``, ``MODULES``, ``HEADS``, ``LOSSES`` and ``METHODS``
(:mod:`vireid.modeling.registries`). Each part registers itself from its own file; :mod:`vireid.builtins`
imports every built-in one, and ``vireid list`` prints what each registry holds. timm is imported only
when a backbone is built.
"""

from vireid.modeling.registries import BACKBONES, HEADS, LOSSES, METHODS, MODULES

from vireid.modeling.backbones import TwoStreamBackbone
from vireid.modeling.heads import BNNeck, LinearClassifier
from vireid.modeling.losses import (
    BatchHardTripletLoss,
    CenterLoss,
    CrossEntropyLabelSmooth,
    HeteroCenterTripletLoss,
    WeightedRegularizedTripletLoss,
)
from vireid.modeling.methods import BaselineReID
from vireid.modeling.modules import GeneralizedMeanPooling, NonLocalBlock


def build_method(name: str, **kwargs: object) -> object:
    """Build a registered method by config name, e.g. ``build_method("baseline", num_classes=395)``
    (the registries are filled by ``import vireid.builtins``)."""
    return METHODS.build(name, **kwargs)


__all__ = [
    "BACKBONES",
    "HEADS",
    "LOSSES",
    "METHODS",
    "MODULES",
    "BNNeck",
    "BaselineReID",
    "BatchHardTripletLoss",
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "GeneralizedMeanPooling",
    "HeteroCenterTripletLoss",
    "LinearClassifier",
    "NonLocalBlock",
    "TwoStreamBackbone",
    "WeightedRegularizedTripletLoss",
    "build_method",
]
