"""Dual-path Swin transformer of dual-path Swin (§4.1, Fig. 3, appendix A.3 / Table 8).

An input stem and four Swin stages (timm ``swin_tiny_patch4_window7_224``); the stages before
the split are modality-specific (one copy per modality), the rest shared; global average pooling,
a BatchNorm neck and an identity classifier. The split is ``specific_stages`` of
:class:`~vireid.modeling.backbones.two_stream.TwoStreamBackbone`: the paper's Fk shares from stage k,
i.e. ``specific_stages = k`` — its choice F3 (first two stages specific, last two shared) is the
default. Paper input: 224 x 224 (square images suit window partition, §4.1); the configs use it.

It is :class:`~vireid.modeling.methods.baseline.BaselineReID` with the paper's defaults (no
non-local blocks, average pooling; Swin has no last stride), so every part of the toolkit (MAG,
MMT, protocols) combines with it through the config. Choices where the paper is silent: the neck
(BNNeck, as in the baseline it compares with) and that the embedding is the BN feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vireid.modeling.methods.baseline import BaselineReID
from vireid.modeling.registries import METHODS


@METHODS.register("dual_path_swin")
class DualPathSwin(BaselineReID):
    """The dual-path Swin paper's dual-path Swin: ``specific_stages`` leading stages per modality, the rest shared.

    Args: as :class:`BaselineReID` (the others pass through ``baseline_params``), with the dual-path Swin paper's
    defaults for those listed here (swin_tiny, F3 split, avg pooling, 224 x 224, no non-local).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "swin_tiny_patch4_window7_224",
        specific_stages: int = 3,
        pooling: str = "avg",
        non_local: str | Mapping[str, int | Sequence[int]] | None = None,
        img_size: Sequence[int] = (224, 224),
        **baseline_params: Any,
    ) -> None:
        super().__init__(
            num_classes, backbone=backbone, specific_stages=specific_stages, pooling=pooling,
            non_local=non_local, img_size=img_size, **baseline_params,
        )


__all__ = ["DualPathSwin"]
