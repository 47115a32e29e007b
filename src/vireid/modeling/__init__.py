"""Models: two-stream backbones, modules, heads, losses and the methods that compose them.

Registries (config names -> classes): ``BACKBONES`` (``two_stream``), ``MODULES`` (``gem``,
``avg``, ``max``, ``non_local``), ``HEADS`` (``bnneck``, ``identity_neck``, ``linear``),
``LOSSES`` (``cross_entropy``, ``triplet``, ``wrt``, ``hetero_center_triplet``, ``center``),
``METHODS`` (``baseline``). A new method registers itself the same way from its own file and
is imported here. timm is imported only when a backbone is built.
"""

from vireid.modeling.registries import BACKBONES, HEADS, LOSSES, METHODS, MODULES

from vireid.modeling import backbones, heads, losses, methods, modules  # noqa: E402,F401  (registers parts)
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
    """Build a registered method by config name, e.g. ``build_method("baseline", num_classes=395)``."""
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
