"""The AGW-style cross-modality baseline (Ye et al., "Deep learning for person re-identification:
a survey and outlook", TPAMI 2021) that the other methods build on.

    images, modalities
      -> TwoStreamBackbone (modality-specific stem, shared stages; non-local blocks in the shared
         stages 2 and 3; last stride 1)
      -> feature map [B, C, h, w]
      -> GeM pooling (p = 3)                      = ``features``     (metric losses: triplet, WRT, HcTri)
      -> BNNeck (BatchNorm1d, bias frozen)        = ``bn_features``  (the retrieval embedding)
      -> bias-free linear classifier              = ``logits``       (identity loss)

Training mode returns ``{"features", "bn_features", "logits"}``; evaluation mode returns the
embedding ``[B, C]``: ``bn_features`` by default (the BN feature, as AGW and Bag of tricks test
with; AGW's ``test.py`` calls it "FC"), or ``features`` with ``embedding: features`` (AGW's
"POOL" feature). It is not L2-normalised here: the evaluator chooses the distance
(cosine/euclidean) and :class:`~vireid.inference.embedder.Embedder` L2-normalises, as AGW's
``embed_net`` does in evaluation mode (``l2norm(x_pool), l2norm(feat)`` in its ``model.py``).

Extension points (how DFW, SLN, ADMG/IDI and other methods plug in without touching the
trainer): subclass :class:`BaselineReID` and override

- :meth:`forward_features` — images -> feature map. Use ``self.backbone.forward_specific`` and
  ``self.backbone.forward_shared(x, start, end)`` to insert a module between shared stages
  (e.g. DFW between stage 3 and stage 4), or replace ``self.backbone.shared_stages[-1]``
  with a module holding N parallel copies (SLN);
- :meth:`forward_head` — feature map -> dict of outputs; add entries (part features, extra
  logits, attention maps) for the method's own losses, keep the three standard keys;
- :meth:`select_embedding` — which output(s) form the test embedding (e.g. concatenate parts).

Constructor arguments are plain keyword values so a YAML config can give them directly; the
config layer checks keys against this signature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.two_stream import TwoStreamBackbone
from vireid.modeling.heads import LinearClassifier, build_neck
from vireid.modeling.modules.non_local import add_non_local
from vireid.modeling.modules.pooling import build_pooling
from vireid.modeling.registries import METHODS

#: Evaluation-mode outputs :class:`BaselineReID` can return (keys of :meth:`BaselineReID.forward_head`).
EMBEDDINGS = ("bn_features", "features")


@METHODS.register("baseline")
class BaselineReID(nn.Module):
    """Two-stream backbone + pooling + BNNeck + identity classifier.

    Args:
        num_classes: number of training identities (classifier outputs).
        backbone: timm model name (see :class:`TwoStreamBackbone`).
        specific_stages: leading stages copied per modality (1 = stem only, AGW; 2 = DFW+SLN).
        last_stride: 1 (AGW, Bag of tricks) or 2; ignored for Swin.
        pretrained: None, True/"timm" (needs the hub) or a local weights file.
        pooling: "gem", "gem_agw" (AGW's exact GeM formula), "avg" or "max" (use "avg" for Swin).
        gem_p: GeM exponent (AGW: 3).
        gem_learnable: learn the GeM exponent.
        non_local: None, "agw" (AGW's released block: one inner channel; 2 blocks after layer2's
            last blocks, 3 after layer3's), "agw_c2" (the same placement with C/2 inner channels)
            or a mapping ``{stage2: 2, stage3: [3, 4, 5]}`` (count or block indices); CNNs only.
            See :mod:`vireid.modeling.modules.non_local`.
        non_local_reduction: None (the width the ``non_local`` setting implies: 1 channel for
            "agw", C/2 for "agw_c2" and mappings) or r for C/r inner channels.
        embedding: the evaluation-mode output, "bn_features" (after the BNNeck; AGW's "FC") or
            "features" (the pooled feature; AGW's "POOL").
        neck: "bnneck" or "none".
        img_size: (height, width) of the training crops; Swin builds its grid from it.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        specific_stages: int = 1,
        last_stride: int = 1,
        pretrained: str | bool | None = None,
        pooling: str = "gem",
        gem_p: float = 3.0,
        gem_learnable: bool = False,
        non_local: str | Mapping[str, int | Sequence[int]] | None = "agw",
        non_local_reduction: int | None = None,
        neck: str = "bnneck",
        img_size: Sequence[int] = (288, 144),
        embedding: str = "bn_features",
    ) -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ConfigError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
        self.embedding = embedding
        self.num_classes = int(num_classes)
        self.backbone = TwoStreamBackbone(
            arch=backbone,
            specific_stages=specific_stages,
            last_stride=last_stride,
            pretrained=pretrained,
            img_size=img_size,
        )
        self.non_local_positions = add_non_local(self.backbone, non_local, reduction=non_local_reduction)
        self.embed_dim: int = self.backbone.out_channels
        self.pool = build_pooling(pooling, p=gem_p, learnable=gem_learnable)
        self.neck = build_neck(neck, self.embed_dim)
        self.classifier = LinearClassifier(self.embed_dim, self.num_classes)

    def forward_features(self, images: torch.Tensor, modalities: torch.Tensor | int) -> torch.Tensor:
        """Images ``[B,3,H,W]`` + modality codes -> feature map ``[B,C,h,w]``."""
        return self.backbone(images, modalities)

    def forward_head(self, feature_map: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature map -> ``features`` (pooled), ``bn_features`` (after the neck), ``logits``."""
        features = self.pool(feature_map)
        bn_features = self.neck(features)
        return {"features": features, "bn_features": bn_features, "logits": self.classifier(bn_features)}

    def select_embedding(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The test-time embedding taken from :meth:`forward_head`'s outputs (``self.embedding``)."""
        return outputs[self.embedding]

    def forward(
        self, images: torch.Tensor, modalities: torch.Tensor | int
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: dict of ``features``, ``bn_features``, ``logits``; evaluation: embedding ``[B, embed_dim]``."""
        outputs = self.forward_head(self.forward_features(images, modalities))
        if self.training:
            return outputs
        return self.select_embedding(outputs)

    def param_groups(self, base_lr: float, pretrained_lr_mult: float = 1.0) -> list[dict[str, object]]:
        """Optimiser groups: the backbone (incl. its non-local blocks) at ``base_lr * pretrained_lr_mult``,
        the new parts (pooling, neck, classifier) at ``base_lr``.

        AGW's released recipe trains the pretrained backbone at 0.1x the learning rate of the new
        layers (SGD, lr 0.1): ``param_groups(0.1, pretrained_lr_mult=0.1)``. The default (1.0) is
        a single learning rate.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in backbone}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        groups: list[dict[str, object]] = [
            {"params": backbone, "lr": base_lr * pretrained_lr_mult, "name": "backbone"},
            {"params": new, "lr": base_lr, "name": "head"},
        ]
        return [g for g in groups if g["params"]]


__all__ = ["EMBEDDINGS", "BaselineReID"]
