"""PDFENet, "Pure Detail Feature Extraction Network for Visible-Infrared
Re-Identification" (Cui, Chan, Mu, Tang, Zhou, 2023), Fig. 1, §3.1-3.5::

    images, modalities, joints [B,16,3]
      -> two-stream ResNet-50 (modality-specific stem, last stride 1)       F_g  [B, C, h, w]
      -> joint heatmaps of the 9 selected MPII joints, max-pooled to h x w      H  [B, 9, h, w]
      -> ADMG (eqs. 1-5): credibility-weighted masks M_top, M_mid; F_top = M_top ⊙ F_g, F_mid = M_mid ⊙ F_g;
         F_low = the lower third of F_g (part pooling)
      -> pooling: f_g, f_top, f_mid, f_low                                       [B, C] each
      -> IDI (eqs. 6-8) over [f_top; f_mid; f_low]                               [B, 3, C]
      -> f = [f_g; f̃_d]                                                           [B, 4C]  = ``features``
      -> BNNeck                                                                   = ``bn_features`` (test embedding)
      -> modality classifiers cls^V, cls^I + momentum copies (eqs. 13-14)         = ``modality_logits`` (CMCE)

Training outputs:

===================== ================ ==============================================================
key                   shape            read by (configs/pdfenet_*.yaml)
===================== ================ ==============================================================
``features``          ``[B, 4C]``      ``center_contrast`` (eqs. 16-17)
``bn_features``       ``[B, 4C]``      the test embedding
``modality_logits``   ``[B, 2, K]``    ``cmce`` (eqs. 9-15): own-modality logits, other modality's
                                       momentum logits (``classifier: modality``)
``logits``            ``[B, K]``       own-modality (or the shared classifier's) logits; ``cross_entropy``
``detail_features``   ``[B, 3, C]``    - (the enhanced details f̃_d)
``detail_masks``      ``[B, G, h, w]`` - (M_top, M_mid; for visualisation)
``joint_credibility`` ``[B, S]``       - (W of eq. 1)
===================== ================ ==============================================================

The ablations of Tables 4-5 are overrides of one config: ``details: []`` (no detail features: the
baseline's global feature only), ``details: [part, part, part]`` (PCB stripes, Table 5 "P P P"),
``[admg, part, part]``, ``[admg, admg, admg]`` (ADMG for the lower third too, with
:data:`~vireid.modeling.modules.admg.LOW_JOINTS`), ``idi: false``, and ``classifier: shared`` with a
``cross_entropy`` loss instead of ``cmce`` (no CMCE).

Joints come from the loader (``data.joints``; see :mod:`vireid.data.pose`) as ``forward(images,
modalities, joints=...)``. Without joints, or for a sample with no visible selected joint, the heatmaps
of a fixed average pose are used (:data:`~vireid.modeling.modules.admg.PRIOR_POSE`), so the model also
embeds arbitrary images (``vireid.inference.embedder``).

Not given in the paper and chosen here: the two-stream split (modality-specific stem, as the AGW
baseline), average pooling, BNNeck, cosine classifiers with scale 16 (§3.4 calls their prediction "the
cosine similarity of its parameters and features"), heatmaps of σ = 2 cells at stride 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vireid.errors import ConfigError
from vireid.modeling.backbones.two_stream import as_modality_tensor
from vireid.modeling.heads import CosineClassifier, LinearClassifier, MomentumModalityClassifiers, build_neck
from vireid.modeling.methods.baseline import BaselineReID
from vireid.modeling.modules.admg import (
    LOW_JOINTS,
    MID_JOINTS,
    TOP_JOINTS,
    AdaptiveDetailMaskGeneration,
    joint_heatmaps,
    joint_indices,
    part_stripe,
    prior_joints,
)
from vireid.modeling.modules.idi import InterDetailInteraction
from vireid.modeling.modules.pooling import GlobalAvgPooling
from vireid.modeling.registries import METHODS

DETAIL_SOURCES = ("admg", "part")
PART_NAMES = ("top", "mid", "low")


@METHODS.register("pdfenet")
class PDFENet(BaselineReID):
    """Two-stream backbone + ADMG + IDI + momentum modality classifiers (PDFENet).

    Args (the others of :class:`BaselineReID` pass through ``baseline_params``):
        details: how each of the three details (top, mid, low) is extracted: ``"admg"`` (joint mask,
            eqs. 1-5) or ``"part"`` (the third horizontal stripe; PCB). Paper: ``[admg, admg, part]``;
            ``[]`` uses the global feature only.
        top_joints, mid_joints, low_joints: MPII joint names of each ADMG group (paper §3.2: top =
            thorax, upper-neck, head-top, shoulders; mid = left hip, elbows, left wrist).
        heatmap_sigma, heatmap_stride: Gaussian heatmaps of ``sigma`` cells on a stride-``stride`` grid,
            max-pooled to the feature map (:func:`~vireid.modeling.modules.admg.joint_heatmaps`).
        idi: use the inter-detail interaction (eqs. 6-8); ``idi_reduction``: its C/4 weight branch.
        classifier: ``"modality"`` (cls^V, cls^I and momentum copies for CMCE) or ``"shared"`` (one
            identity classifier, the baseline).
        classifier_kind: ``"cosine"`` (scaled by ``classifier_scale``) or ``"linear"``.
        momentum: α of eqs. 13-14 (paper 0.7).
        detach_cross: CMCE's soft labels ``p^IV``/``p^VI`` on the detached feature (no cross-modal
            gradient to ``f``; the behaviour before, kept as an ablation). Default ``False``: the gradient
            reaches ``f^V``/``f^I``; eqs. 13-14 only keep it out of the momentum weights.
    """

    #: the named side inputs it reads (vireid.data.extras): the body joints of each image (§3.2)
    extra_inputs = ("joints",)

    def __init__(
        self,
        num_classes: int,
        pooling: str = "avg",
        non_local: str | Mapping[str, int | Sequence[int]] | None = None,
        neck: str = "bnneck",
        img_size: Sequence[int] = (384, 128),
        details: Sequence[str] = ("admg", "admg", "part"),
        top_joints: Sequence[str | int] = TOP_JOINTS,
        mid_joints: Sequence[str | int] = MID_JOINTS,
        low_joints: Sequence[str | int] = LOW_JOINTS,
        heatmap_sigma: float = 2.0,
        heatmap_stride: int = 4,
        idi: bool = True,
        idi_reduction: int = 4,
        classifier: str = "modality",
        classifier_kind: str = "cosine",
        classifier_scale: float = 16.0,
        momentum: float = 0.7,
        detach_cross: bool = False,
        **baseline_params: Any,
    ) -> None:
        super().__init__(
            num_classes, pooling=pooling, non_local=non_local, neck=neck, img_size=img_size, **baseline_params
        )
        self.details = [str(d) for d in details]
        if self.details and (len(self.details) != 3 or any(d not in DETAIL_SOURCES for d in self.details)):
            raise ConfigError(
                f"model.params.details must be [] or three of {', '.join(DETAIL_SOURCES)} (top, mid, low), got {list(details)}"
            )
        if idi and not self.details:
            raise ConfigError("model.params.idi needs detail features; set details (e.g. [admg, admg, part]) or idi: false")
        if heatmap_sigma <= 0 or heatmap_stride < 1:
            raise ConfigError(f"heatmap_sigma must be > 0 and heatmap_stride >= 1, got {heatmap_sigma} and {heatmap_stride}")
        if classifier not in ("modality", "shared"):
            raise ConfigError(f"model.params.classifier must be modality or shared, got {classifier!r}")
        if classifier_kind not in ("cosine", "linear"):
            raise ConfigError(f"model.params.classifier_kind must be cosine or linear, got {classifier_kind!r}")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.heatmap_sigma = float(heatmap_sigma)
        self.heatmap_stride = int(heatmap_stride)
        channels = self.backbone.out_channels
        self.part_dim = channels

        groups = {"top": joint_indices(top_joints), "mid": joint_indices(mid_joints), "low": joint_indices(low_joints)}
        self.admg_parts = [k for k, d in enumerate(self.details) if d == "admg"]
        selected = [j for k in self.admg_parts for j in groups[PART_NAMES[k]]]
        for k in self.admg_parts:
            if not groups[PART_NAMES[k]]:
                raise ConfigError(f"model.params.{PART_NAMES[k]}_joints is empty but details uses admg for it")
        self.register_buffer("joint_index", torch.tensor(selected, dtype=torch.long), persistent=False)
        self.admg = (
            AdaptiveDetailMaskGeneration(channels, [len(groups[PART_NAMES[k]]) for k in self.admg_parts])
            if self.admg_parts else None
        )
        self.idi = InterDetailInteraction(channels, reduction=idi_reduction) if idi else None

        self.embed_dim = channels * (1 + len(self.details))
        self.neck = build_neck(neck, self.embed_dim)
        self.classifier_mode = classifier
        if classifier == "modality":
            self.classifier = MomentumModalityClassifiers(self.embed_dim, self.num_classes, momentum=momentum,
                                                          kind=classifier_kind, scale=classifier_scale,
                                                          detach_cross=detach_cross)
        elif classifier_kind == "cosine":
            self.classifier = CosineClassifier(self.embed_dim, self.num_classes, scale=classifier_scale)
        else:
            self.classifier = LinearClassifier(self.embed_dim, self.num_classes)

    # ------------------------------------------------------------------ pose
    def heatmaps(self, joints: torch.Tensor | None, batch: int, image_size: Sequence[int], out_size: Sequence[int],
                 device: torch.device) -> torch.Tensor:
        """Heatmaps ``[B, S, h, w]`` of the ADMG joints; the prior pose where joints are missing."""
        prior = prior_joints(batch, image_size, device).index_select(1, self.joint_index)
        if joints is None:
            chosen = prior
        else:
            if joints.dim() != 3 or joints.shape[0] != batch or joints.shape[2] != 3 or joints.shape[1] <= int(self.joint_index.max()):
                raise ValueError(f"joints must have shape [{batch}, 16, 3] (x, y, visible; MPII order), got {tuple(joints.shape)}")
            chosen = joints.to(device=device, dtype=torch.float32).index_select(1, self.joint_index)
            seen = (chosen[..., 2] > 0).any(dim=1)  # samples where the estimator found some selected joint
            chosen = torch.where(seen.view(-1, 1, 1), chosen, prior)
        return joint_heatmaps(chosen, image_size, out_size, sigma=self.heatmap_sigma, stride=self.heatmap_stride)

    # ------------------------------------------------------------------ forward
    def forward_head(
        self,
        feature_map: torch.Tensor,
        joints: torch.Tensor | None = None,
        modalities: torch.Tensor | int | None = None,
        image_size: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Feature map ``[B, C, h, w]`` (+ joints in input pixels) -> the outputs of the module docstring."""
        batch = feature_map.shape[0]
        out: dict[str, torch.Tensor] = {}
        global_feature = self.pool(feature_map)
        if self.details:
            vectors: list[torch.Tensor | None] = [None, None, None]
            if self.admg is not None:
                heat = self.heatmaps(joints, batch, image_size or self.img_size, feature_map.shape[2:], feature_map.device)
                masks, credibility = self.admg(feature_map, heat)
                if isinstance(self.pool, GlobalAvgPooling):
                    pooled = self.admg.pooled_details(feature_map, masks)  # [B, G, C], no masked maps in memory
                else:
                    maps = self.admg.detail_maps(feature_map, masks)  # [G, B, C, h, w]
                    pooled = self.pool(maps.flatten(0, 1)).view(len(self.admg_parts), batch, -1).transpose(0, 1)
                for g, k in enumerate(self.admg_parts):
                    vectors[k] = pooled[:, g]
                out["detail_masks"] = masks
                out["joint_credibility"] = credibility
            for k, source in enumerate(self.details):
                if source == "part":
                    vectors[k] = self.pool(part_stripe(feature_map, k, parts=3))
            details = torch.stack(vectors, dim=1)  # [B, 3, C]
            if self.idi is not None:
                details = self.idi(details)
            out["detail_features"] = details
            features = torch.cat([global_feature, details.flatten(1)], dim=1)
        else:
            features = global_feature
        bn_features = self.neck(features)
        out["features"] = features
        out["bn_features"] = bn_features
        if self.training:
            if self.classifier_mode == "modality":
                if modalities is None:
                    raise ValueError("pdfenet's modality classifiers need the modality of every sample")
                codes = as_modality_tensor(modalities, batch, feature_map.device)
                own, cross = self.classifier(bn_features, codes)
                out["modality_logits"] = torch.stack([own, cross], dim=1)
                out["logits"] = own
            else:
                out["logits"] = self.classifier(bn_features)
        return out

    def forward(
        self, images: torch.Tensor, modalities: torch.Tensor | int, joints: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: dict of outputs (module docstring); evaluation: the embedding ``[B, embed_dim]``."""
        feature_map = self.forward_features(images, modalities)
        outputs = self.forward_head(feature_map, joints, modalities, image_size=images.shape[2:])
        if self.training:
            return outputs
        return self.select_embedding(outputs)

    def on_after_step(self) -> None:
        """Trainer hook after each optimiser step: the momentum classifiers follow (eqs. 13-14)."""
        if isinstance(self.classifier, MomentumModalityClassifiers):
            self.classifier.update_momentum()


__all__ = ["PDFENet"]
