"""Multi-modal fusion re-id (the survey §4.1 feature fusion strategies, §4.2 model building steps 1-4).

The survey §4.2 builds a multi-modal model in four steps: (1) an input layer per modality whose data go
"into their respective independent sub-network branches", (2) a feature extractor per modality (a
CNN for images), (3) a modality fusion layer -- early, late or attention fusion (§4.1) -- and (4) a
fully connected output layer with a softmax over identities. :class:`FusionReID` is that model for
visible + infrared images of one person taken at the same moment (RegDB-style co-located cameras,
or the synthetic generator's RegDB layout)::

    strategy="early"      images -> per-modality shallow stages (``specific_stages``; 0 = raw pixels)
                          -> EarlyFusion (channel concat + 1x1 mix) -> joint deeper stages -> GeM
    strategy="late"       images -> per-modality branch networks (``specific_stages``=5: separate
                          models) -> GeM -> per-modality BNNeck/classifier -> LateFusion
                          (weighted average of embeddings / of scores, or rank voting)
    strategy="attention"  images -> per-modality branches (shared deeper stages) -> GeM
                          -> AttentionFusion (input-dependent modality weights) -> BNNeck

**Sets, not just pairs.** Every path can also embed a *single* image: a set with one modality (early
fusion zero-fills the absent input, late/attention fusion weigh only the present modality). So the
model answers fused queries against fused galleries *and* against single-modality galleries, and
still runs the ordinary single-image protocols (RegDB visible->thermal) and the embedder.

**Training batches.** The trainer's batch is P identities x K visible, then the same P x K infrared
(:class:`~vireid.data.paired.PairedIdentitySampler` makes row ``i`` of each half one registered
moment; with the plain cross-modality sampler, e.g. on unpaired SYSU-MM01 data, the two rows are
still the same identity, only not the same moment). The model pairs the k-th visible row with the
k-th infrared row and returns, besides the
per-image outputs ``features`` / ``bn_features`` / ``logits`` (each image as a single-modality set;
for early fusion through the joint network with the other input absent), the fused outputs
``fused_features`` / ``fused_bn_features`` / ``fused_logits``. The fused outputs are given one row per
*image* (row ``j`` holds the fused result of the pair that image ``j`` belongs to), so the batch's own
labels are their targets: with each pair present twice, cross-entropy and batch-hard triplet values
equal those over the pairs alone (same mean, same hardest positive/negative). A method cannot
return per-pair ``<key>_labels`` because the trainer does not pass it the labels.

Late fusion trains the single-modality models "separately" (§4.1): configs put losses on the
per-image outputs only; the fusion happens at the decision layer. Evaluation-mode
:meth:`FusionReID.forward` returns the single-image embedding (``bn_features``);
:meth:`FusionReID.embed_sets` returns fused embeddings of sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError, VireidError
from vireid.modeling.backbones.two_stream import NUM_MODALITIES, TwoStreamBackbone, as_modality_tensor
from vireid.modeling.heads import LinearClassifier, build_neck
from vireid.modeling.modules.fusion_layers import ATTENTION_GRANULARITIES, LATE_MODES, AttentionFusion, EarlyFusion, LateFusion
from vireid.modeling.modules.pooling import build_pooling
from vireid.modeling.registries import METHODS

STRATEGIES = ("early", "late", "attention")
#: Modality-specific stages per strategy when ``specific_stages`` is not given: early fusion mixes the
#: stem outputs ("shallow features"); late fusion uses two separate networks (single-modal models);
#: attention fusion shares the stages after the stem, like the AGW two-stream baseline.
DEFAULT_SPECIFIC_STAGES = {"early": 1, "late": 5, "attention": 1}


def modality_codes_of(modalities: torch.Tensor | int, images: torch.Tensor, num_modalities: int = NUM_MODALITIES
                      ) -> torch.Tensor:
    """``[B]`` int64 modality codes of a batch, checked to lie in ``0..M-1``."""
    codes = as_modality_tensor(modalities, images.shape[0], images.device)
    if codes.numel() and bool(((codes < 0) | (codes >= num_modalities)).any()):
        raise ValueError(f"modality codes must be 0 (visible) or 1 (infrared), got {sorted(set(codes.tolist()))}")
    return codes


def single_members(codes: torch.Tensor, num_modalities: int = NUM_MODALITIES) -> torch.Tensor:
    """``int64 [B, M]``: every image as a set of its own (its row at its modality, -1 elsewhere)."""
    rows = torch.arange(codes.shape[0], device=codes.device)
    members = torch.full((codes.shape[0], num_modalities), -1, dtype=torch.long, device=codes.device)
    return members.scatter_(1, codes.long().view(-1, 1), rows.view(-1, 1))


def paired_members(codes: torch.Tensor) -> torch.Tensor:
    """``int64 [n, 2]``: the k-th visible row with the k-th infrared row of a batch (the paired layout)."""
    visible = torch.nonzero(codes == 0, as_tuple=False).squeeze(1)
    infrared = torch.nonzero(codes == 1, as_tuple=False).squeeze(1)
    if visible.numel() != infrared.numel() or visible.numel() == 0:
        raise VireidError(
            f"fusion training needs a batch of visible/infrared pairs (as many visible as infrared images), got "
            f"{visible.numel()} visible and {infrared.numel()} infrared; use the cross-modality sampler"
        )
    return torch.stack([visible, infrared], dim=1)


def gather_members(values: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``values`` ``[B, ...]`` per set: ``[S, M, ...]`` (row 0 where absent) and the mask ``[S, M]``."""
    mask = members >= 0
    return values[members.clamp(min=0)], mask


@METHODS.register("fusion")
class FusionReID(nn.Module):
    """Per-modality branches + a fusion layer + BNNeck + identity classifier (the survey §4.1/§4.2).

    Args:
        num_classes: training identities.
        strategy: ``"early"``, ``"late"`` or ``"attention"``.
        backbone: timm model name (see :class:`TwoStreamBackbone`).
        specific_stages: modality-specific stages (0..5). Early fusion: the shallow per-modality stages
            before the concatenation (0 concatenates the images themselves). Late/attention: the
            branch stages each modality has to itself (5 = fully separate networks). Default per strategy:
            :data:`DEFAULT_SPECIFIC_STAGES`.
        last_stride, pretrained, pooling, gem_p, neck, img_size: as :class:`~vireid.modeling.methods.baseline.BaselineReID`.
        late_mode: late fusion decision rule used by the fused evaluation: ``"average"`` or ``"vote"``.
        late_weights: fixed late-fusion weight per modality (visible, infrared); default equal.
        attention: attention granularity, ``"modality"`` (one weight per modality) or ``"channel"``.
        attention_hidden: hidden width of the attention scorer (default ``max(D/4, 16)``).
    """

    def __init__(
        self,
        num_classes: int,
        strategy: str = "attention",
        backbone: str = "resnet50",
        specific_stages: int | None = None,
        last_stride: int = 1,
        pretrained: str | bool | None = None,
        pooling: str = "gem",
        gem_p: float = 3.0,
        neck: str = "bnneck",
        late_mode: str = "average",
        late_weights: Sequence[float] | None = None,
        attention: str = "modality",
        attention_hidden: int | None = None,
        img_size: Sequence[int] = (288, 144),
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ConfigError(f"config key 'model.params.strategy' is {strategy!r}; use one of {', '.join(STRATEGIES)}")
        if late_mode not in LATE_MODES:
            raise ConfigError(f"config key 'model.params.late_mode' is {late_mode!r}; use one of {', '.join(LATE_MODES)}")
        if attention not in ATTENTION_GRANULARITIES:
            raise ConfigError(
                f"config key 'model.params.attention' is {attention!r}; use one of {', '.join(ATTENTION_GRANULARITIES)}"
            )
        stages = DEFAULT_SPECIFIC_STAGES[strategy] if specific_stages is None else int(specific_stages)
        if strategy == "early" and stages > 4:
            raise ConfigError(
                f"early fusion needs a joint network after the fusion, so specific_stages must be 0..4, got {stages}"
            )
        self.num_classes = int(num_classes)
        self.strategy = strategy
        self.num_modalities = NUM_MODALITIES
        self.backbone = TwoStreamBackbone(arch=backbone, specific_stages=stages, last_stride=last_stride,
                                          pretrained=pretrained, img_size=img_size)
        self.embed_dim: int = self.backbone.out_channels
        self.pool = build_pooling(pooling, p=gem_p)
        # one neck per modality: single-image embeddings of each modality keep their own BN statistics
        self.necks = nn.ModuleList([build_neck(neck, self.embed_dim) for _ in range(self.num_modalities)])
        self.classifier = LinearClassifier(self.embed_dim, self.num_classes)  # shared: one identity space
        # a late-fusion decision rule is used by every strategy's score-level evaluation
        self.late = LateFusion(self.num_modalities, weights=late_weights, mode=late_mode)
        self.fusion: nn.Module | None = None
        self.fused_neck: nn.Module | None = None
        if strategy == "early":
            channels = 3 if stages == 0 else self.backbone.stage_channels[stages - 1]
            self.fusion = EarlyFusion(channels, self.num_modalities)
        elif strategy == "attention":
            self.fusion = AttentionFusion(self.embed_dim, self.num_modalities, hidden=attention_hidden,
                                          granularity=attention)
        if strategy != "late":
            self.fused_neck = build_neck(neck, self.embed_dim)
        # the fused head is unused when a config puts no loss on the fused outputs
        self.has_unused_parameters = strategy != "late"

    # ------------------------------------------------------------------ pieces
    def _necks(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Per-modality BNNeck: each row through the neck of its modality (one call per modality)."""
        out = torch.empty_like(features)
        for code, neck in enumerate(self.necks):
            index = torch.nonzero(codes == code, as_tuple=False).squeeze(1)
            if index.numel():
                out = out.index_copy(0, index, neck(features.index_select(0, index)))
        return out

    def _pooled_sets(self, images: torch.Tensor, codes: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        """Early fusion: pooled joint-network features ``[S, C]`` of the sets (``int64 [S, M]`` rows)."""
        assert isinstance(self.fusion, EarlyFusion)
        shallow = self.backbone.forward_specific(images, codes)
        maps, mask = gather_members(shallow, sets)
        return self.pool(self.backbone.forward_shared(self.fusion(maps, mask)))

    def _fuse_pooled(self, pooled: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        """Attention fusion of per-image pooled features into ``[S, C]``."""
        embeddings, mask = gather_members(pooled, sets)
        assert self.fusion is not None
        return self.fusion(embeddings, mask)

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, modalities: torch.Tensor | int, **extras: Any
                ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: per-image and fused outputs (see the module doc); evaluation: single-image
        embeddings ``[B, D]``. ``extras`` (e.g. joints) are accepted and not used."""
        codes = modality_codes_of(modalities, images, self.num_modalities)
        if not self.training:
            return self.embed_sets(images, codes, single_members(codes, self.num_modalities))
        batch = images.shape[0]
        pairs = paired_members(codes)
        if self.strategy == "early":
            pooled = self._pooled_sets(images, codes, torch.cat([single_members(codes, self.num_modalities), pairs]))
            features, fused_pooled = pooled[:batch], pooled[batch:]
        else:
            features = self.pool(self.backbone(images, codes))
            fused_pooled = self._fuse_pooled(features, pairs) if self.strategy == "attention" else None
        bn_features = self._necks(features, codes)
        logits = self.classifier(bn_features)
        if fused_pooled is None:  # late fusion: decision-level fusion of the single-modality results
            fused_features = self.late(*gather_members(features, pairs))
            fused_bn = self.late(*gather_members(bn_features, pairs))
            fused_logits = self.late.fuse_scores(*gather_members(logits, pairs), mode="average")
        else:
            assert self.fused_neck is not None
            fused_features = fused_pooled
            fused_bn = self.fused_neck(fused_pooled)
            fused_logits = self.classifier(fused_bn)
        # one row per image: row j carries the fused result of image j's pair (see the module doc)
        pair_of_row = torch.empty(batch, dtype=torch.long, device=codes.device)
        slots = torch.arange(pairs.shape[0], device=codes.device)
        pair_of_row[pairs[:, 0]] = slots
        pair_of_row[pairs[:, 1]] = slots
        return {
            "features": features,
            "bn_features": bn_features,
            "logits": logits,
            "fused_features": fused_features[pair_of_row],
            "fused_bn_features": fused_bn[pair_of_row],
            "fused_logits": fused_logits[pair_of_row],
        }

    @torch.no_grad()
    def modality_weights(self, images: torch.Tensor, modalities: torch.Tensor | int, sets: torch.Tensor) -> torch.Tensor:
        """The fusion weights of each set ``[S, M]`` (attention: input-dependent, averaged over channels for
        ``"channel"``; late: the fixed weights renormalised; early: uniform over the present modalities)."""
        codes = modality_codes_of(modalities, images, self.num_modalities)
        mask = sets >= 0
        if self.strategy == "attention":
            assert isinstance(self.fusion, AttentionFusion)
            pooled = self.pool(self.backbone(images, codes))
            alpha = self.fusion.weights(*gather_members(pooled, sets))
            return alpha if alpha.dim() == 2 else alpha.mean(dim=2)
        if self.strategy == "late":
            return self.late.effective_weights(mask)
        return mask.float() / mask.float().sum(dim=1, keepdim=True)

    def embed_sets(self, images: torch.Tensor, modalities: torch.Tensor | int, sets: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[S, D]`` of sets of images (``sets`` ``int64 [S, M]``: the row of ``images`` holding
        modality ``m`` of set ``s``, -1 when absent). A one-image set gets that image's single-modality
        embedding (its modality's BNNeck); a multi-modal set the fused one (late fusion: the weighted
        average of the L2-normalised single-modality embeddings)."""
        codes = modality_codes_of(modalities, images, self.num_modalities)
        sets = sets.to(images.device).long()
        if sets.dim() != 2 or sets.shape[1] != self.num_modalities:
            raise ValueError(f"sets must have shape [S, {self.num_modalities}], got {tuple(sets.shape)}")
        mask = sets >= 0
        valid = torch.where(mask, codes[sets.clamp(min=0)] == torch.arange(self.num_modalities, device=sets.device), True)
        if not bool(valid.all()):
            raise ValueError("sets must put each image in the column of its own modality")
        count = mask.sum(dim=1)
        single = count == 1
        if self.strategy == "early":
            pooled = self._pooled_sets(images, codes, sets)
        else:
            per_image = self.pool(self.backbone(images, codes))
            first = sets.clamp(min=-1).max(dim=1).values  # the one row of a single-image set
            pooled = per_image[first.clamp(min=0)]
        set_codes = mask.long().argmax(dim=1)  # the modality of single-image sets
        out = torch.empty(sets.shape[0], self.embed_dim, dtype=pooled.dtype, device=pooled.device)
        if bool(single.any()):
            index = torch.nonzero(single, as_tuple=False).squeeze(1)
            out[index] = self._necks(pooled[index], set_codes[index])
        multi = torch.nonzero(~single, as_tuple=False).squeeze(1)
        if multi.numel():
            if self.strategy == "early":
                assert self.fused_neck is not None
                out[multi] = self.fused_neck(pooled[multi])
            elif self.strategy == "attention":
                assert self.fused_neck is not None
                out[multi] = self.fused_neck(self._fuse_pooled(per_image, sets[multi]))
            else:
                bn = self._necks(per_image, codes)
                out[multi] = self.late(*gather_members(bn, sets[multi]))
        return out

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}, num_classes={self.num_classes}, embed_dim={self.embed_dim}"


__all__ = ["DEFAULT_SPECIFIC_STAGES", "FusionReID", "STRATEGIES", "gather_members", "paired_members", "single_members"]
