"""Necks and classifiers that sit on the pooled feature.

BNNeck (Luo et al., "Bag of tricks and a strong baseline for deep person re-identification",
CVPRW 2019): a BatchNorm1d between the pooled feature (used by metric losses) and the
classifier (used by the identity loss). Its shift (bias) is frozen at 0 so the normalised
feature stays centred. The identity classifier is a bias-free linear layer initialised with
N(0, 0.001²) (as in Bag of tricks / AGW).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def _classifier_logits(features: torch.Tensor, weight: torch.Tensor, cosine: bool, scale: float) -> torch.Tensor:
    """``features [B, D]`` x ``weight [..., K, D]`` -> logits ``[B, ..., K]`` (scaled cosine or dot product)."""
    if cosine:
        features = F.normalize(features, dim=-1)
        weight = F.normalize(weight, dim=-1)
    logits = torch.einsum("bd,...kd->b...k", features, weight.to(features.dtype))
    return logits * scale if cosine else logits


@HEADS.register("cosine")
class CosineClassifier(nn.Module):
    """Identity classifier whose logits are ``scale * cos(w_k, x)`` (NormFace; PDFENet §3.4 describes
    its classifiers' predictions as the cosine similarity of parameters and features)."""

    def __init__(self, in_dim: int, num_classes: int, scale: float = 16.0, std: float = 0.01) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes!r}")
        if scale <= 0:
            raise ConfigError(f"cosine classifier scale must be > 0, got {scale!r}")
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.randn(num_classes, in_dim) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _classifier_logits(x, self.weight, True, self.scale)


@HEADS.register("momentum_modality")
class MomentumModalityClassifiers(nn.Module):
    """PDFENet §3.4: two modality-specific identity classifiers ``cls^V``, ``cls^I`` and their
    momentum copies ``cls_M^V``, ``cls_M^I`` (eqs. 13-14, α = 0.7), which make the cross-modality soft
    labels of CMCE.

    ``forward(features [B, D], modalities [B])`` returns ``(own, cross)``, both ``[B, K]``: ``own`` is each
    sample's own-modality classifier (``cls^V(f^V)`` for visible samples, ``cls^I(f^I)`` for infrared
    ones: ``p^VV``/``p^II`` after softmax, eqs. 9-12), with gradients; ``cross`` is the *other*
    modality's momentum classifier on the detached feature (``cls_M^I(f^V)``, ``cls_M^V(f^I)``:
    ``p^IV``/``p^VI``), a target without gradients. Both modalities' classifiers are applied to the
    whole batch in one einsum and each row picks its own (no loop over samples).

    :meth:`update_momentum` (called by the trainer's ``on_after_step`` hook through the method) does
    ``θ_M = α θ_M + (1 - α) θ_C`` on both classifiers.

    Args:
        kind: ``"cosine"`` (default; scaled cosine logits) or ``"linear"`` (bias-free dot product).
        scale: logit scale of the cosine classifiers.
        momentum: α of eqs. 13-14.
    """

    def __init__(self, in_dim: int, num_classes: int, momentum: float = 0.7, kind: str = "cosine",
                 scale: float = 16.0, std: float | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes!r}")
        if kind not in ("cosine", "linear"):
            raise ConfigError(f"modality classifier kind must be cosine or linear, got {kind!r}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"classifier momentum must be in [0, 1), got {momentum!r}")
        self.cosine = kind == "cosine"
        self.scale = float(scale)
        self.momentum = float(momentum)
        std = (0.01 if self.cosine else 0.001) if std is None else float(std)
        # θ_C^V, θ_C^I stacked: [2 (visible, infrared), K, D]
        self.weight = nn.Parameter(torch.randn(2, num_classes, in_dim) * std)
        # θ_M^V, θ_M^I: start equal to the online classifiers, then follow them slowly
        self.register_buffer("momentum_weight", self.weight.detach().clone())

    def all_logits(self, features: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        """Logits of both modalities' classifiers for every sample, ``[B, 2, K]``."""
        weight = self.momentum_weight if momentum else self.weight
        return _classifier_logits(features, weight, self.cosine, self.scale)

    def forward(self, features: torch.Tensor, modalities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = modalities.long().view(-1, 1, 1).expand(-1, 1, self.weight.shape[1])
        own = self.all_logits(features).gather(1, codes).squeeze(1)
        with torch.no_grad():
            cross = self.all_logits(features.detach(), momentum=True).gather(1, 1 - codes).squeeze(1)
        return own, cross

    @torch.no_grad()
    def update_momentum(self) -> None:
        """Eqs. 13-14: ``θ_M <- α θ_M + (1 - α) θ_C``."""
        self.momentum_weight.mul_(self.momentum).add_(self.weight.detach(), alpha=1.0 - self.momentum)

    def extra_repr(self) -> str:
        kind = f"cosine, scale={self.scale}" if self.cosine else "linear"
        return f"classes={self.weight.shape[1]}, dim={self.weight.shape[2]}, {kind}, momentum={self.momentum}"


__all__ = [
    "NECKS",
    "BNNeck",
    "CosineClassifier",
    "IdentityNeck",
    "LinearClassifier",
    "MomentumModalityClassifiers",
    "build_neck",
]
