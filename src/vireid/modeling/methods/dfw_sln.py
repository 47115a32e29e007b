"""DFW+SLN: dynamic feature weakening (DFW) + segmented learning network (SLN) on the
two-stream baseline ("Dynamic Feature Weakening for Cross-Modality Person Re-Identification",
Computers and Electrical Engineering; Fig. 2, Algorithm 1)::

    images, modalities
      -> modality-specific layer0 + layer1           (specific_stages = 2, §3.1)
      -> shared layer2 -> DFW -> layer3 -> DFW         (dfw_after_stages = [2, 3]: "the first two
                                                        layers of the shared network", Alg. 1)
      -> SLN: N parallel copies of layer4              (num_branches = 2)
      -> per sub-network: GeM pooling -> BNNeck -> identity classifier

Training outputs (``N`` sub-networks, ``B`` images, ``C`` channels of layer4):

================== ================= ==========================================================
key                shape             read by (configs/dfw_sln_*.yaml)
================== ================= ==========================================================
``part_logits``    ``[N, B, K]``     ``partwise`` cross entropy: L_ReID's identity part
``part_features``  ``[N, B, C]``     ``partwise`` triplet: L_ReID's metric part
``features``       ``[B, N·C]``      hetero-center triplet on the final (concatenated) feature
``part_maps``      ``[N, B, C, h, w]`` overlap penalty L_op (eqs. 4-5)
``bn_features``    ``[B, N·C]``      the test embedding (BNNeck features of all sub-networks)
``part_bn_features`` ``[N, B, C]``   -
``logits``         ``[B, K]``        mean of the sub-networks' logits (for tools that read it)
================== ================= ==========================================================

Eq. 7, ``L = λ·L_op + L_hc_tri + L_ReID``, is the config's loss table. ``num_branches: 1`` with
``dfw_after_stages: []`` is exactly the baseline (one GeM/BNNeck/classifier head; the overlap
penalty is 0 without a pair), so the ablation rows of Table 1 are overrides of one config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.two_stream import NUM_STAGES
from vireid.modeling.heads import LinearClassifier, build_neck
from vireid.modeling.methods.baseline import BaselineReID
from vireid.modeling.modules.dfw import DynamicFeatureWeakening
from vireid.modeling.modules.sln import SegmentedLearningNetwork
from vireid.modeling.registries import METHODS

LAST_STAGE = NUM_STAGES - 1


@METHODS.register("dfw_sln")
class DFWSLNReID(BaselineReID):
    """Two-stream network with DFW after chosen shared stages and an SLN in place of the last stage.

    Args (the others of :class:`BaselineReID` pass through ``baseline_params``; the DFW+SLN paper's defaults):
        specific_stages: 2 (layer0 and layer1 modality-specific, §3.1).
        non_local: None (the DFW+SLN paper's baseline has no non-local blocks).
        dfw_after_stages: global stage indices after which a DFW block runs (each must be a
            shared stage before the last one); ``[]`` switches DFW off.
        dfw_mode, dfw_alpha, dfw_beta: the weakening matrix (see
            :class:`~vireid.modeling.modules.dfw.DynamicFeatureWeakening`; paper: ``d1``, α = 0.5
            on SYSU-MM01 and 0.2 on RegDB, Fig. 3).
        num_branches: SLN sub-networks N (paper: 2; 1 = no SLN).
    """

    def __init__(
        self,
        num_classes: int,
        specific_stages: int = 2,
        non_local: str | Mapping[str, int | Sequence[int]] | None = None,
        neck: str = "bnneck",
        dfw_after_stages: Sequence[int] = (2, 3),
        dfw_mode: str = "d1",
        dfw_alpha: float = 0.5,
        dfw_beta: float = 0.5,
        num_branches: int = 2,
        **baseline_params: Any,
    ) -> None:
        super().__init__(
            num_classes, specific_stages=specific_stages, non_local=non_local, neck=neck, **baseline_params
        )
        first_shared = self.backbone.specific_stages
        if first_shared > LAST_STAGE:
            raise ConfigError(
                f"dfw_sln needs a shared last stage for its sub-networks; specific_stages={specific_stages} "
                f"leaves none shared (use at most {LAST_STAGE})"
            )
        positions = sorted({int(s) for s in dfw_after_stages})
        for stage in positions:
            if not first_shared <= stage < LAST_STAGE:
                raise ConfigError(
                    f"model.params.dfw_after_stages: stage {stage} is not a shared stage before the last one; "
                    f"with specific_stages={first_shared} choose among {list(range(first_shared, LAST_STAGE))}"
                )
        self.dfw_after_stages = positions
        self.dfw = nn.ModuleDict(
            {str(stage): DynamicFeatureWeakening(dfw_mode, dfw_alpha, dfw_beta) for stage in positions}
        )
        self.num_branches = int(num_branches)
        self.backbone.shared_stages[-1] = SegmentedLearningNetwork(
            self.backbone.shared_stages[-1], self.num_branches
        )
        part_dim = self.backbone.out_channels
        self.part_dim = part_dim
        self.embed_dim = part_dim * self.num_branches
        del self.neck, self.classifier
        self.necks = nn.ModuleList([build_neck(neck, part_dim) for _ in range(self.num_branches)])
        self.classifiers = nn.ModuleList(
            [LinearClassifier(part_dim, self.num_classes) for _ in range(self.num_branches)]
        )

    def forward_features(self, images: torch.Tensor, modalities: torch.Tensor | int) -> torch.Tensor:
        """Images -> sub-network feature maps ``[N, B, C, h, w]`` (DFW after the chosen stages)."""
        x = self.backbone.forward_specific(images, modalities)
        for stage in range(self.backbone.specific_stages, NUM_STAGES):
            x = self.backbone.forward_shared(x, stage, stage + 1)
            key = str(stage)
            if key in self.dfw:
                x = self.dfw[key](x)
        return x

    def forward_head(self, feature_map: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sub-network maps ``[N, B, C, h, w]`` -> part and concatenated features, logits, maps."""
        num, batch = feature_map.shape[:2]
        part_features = self.pool(feature_map.flatten(0, 1)).view(num, batch, -1)
        part_bn = torch.stack([neck(f) for neck, f in zip(self.necks, part_features.unbind(0))])
        part_logits = torch.stack([head(f) for head, f in zip(self.classifiers, part_bn.unbind(0))])
        return {
            "features": part_features.transpose(0, 1).reshape(batch, -1),
            "bn_features": part_bn.transpose(0, 1).reshape(batch, -1),
            "logits": part_logits.mean(dim=0),
            "part_features": part_features,
            "part_bn_features": part_bn,
            "part_logits": part_logits,
            "part_maps": feature_map,
        }

    def extra_repr(self) -> str:
        return f"dfw_after_stages={self.dfw_after_stages}, num_branches={self.num_branches}"


__all__ = ["DFWSLNReID"]
