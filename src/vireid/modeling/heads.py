"""Necks and classifiers that sit on the pooled feature.

BNNeck (Luo et al., "Bag of tricks and a strong baseline for deep person re-identification",
CVPRW 2019): a BatchNorm1d between the pooled feature (used by metric losses) and the
classifier (used by the identity loss). Its shift (bias) is frozen at 0 so the normalised
feature stays centred. The identity classifier is a bias-free linear layer initialised with
N(0, 0.001²) (as in Bag of tricks / AGW).
"""

from __future__ import annotations

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import HEADS


@HEADS.register("bnneck")
class BNNeck(nn.Module):
    """BatchNorm1d with the bias frozen at zero (weight 1, bias 0 at start)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


@HEADS.register("identity_neck")
class IdentityNeck(nn.Module):
    """No neck: the classifier sees the pooled feature itself."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@HEADS.register("linear")
class LinearClassifier(nn.Module):
    """Bias-free linear identity classifier, weights ~ N(0, std²) (std = 0.001)."""

    def __init__(self, in_dim: int, num_classes: int, std: float = 0.001) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes!r}")
        self.fc = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, mean=0.0, std=std)

    @property
    def weight(self) -> torch.Tensor:
        return self.fc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


NECKS = {"bnneck": BNNeck, "none": IdentityNeck}


def build_neck(kind: str, in_dim: int) -> nn.Module:
    """Neck by config name: ``"bnneck"`` or ``"none"``."""
    if kind not in NECKS:
        raise ConfigError(f"neck must be one of {', '.join(NECKS)}, got {kind!r}")
    return NECKS[kind](in_dim)


__all__ = ["NECKS", "BNNeck", "IdentityNeck", "LinearClassifier", "build_neck"]
