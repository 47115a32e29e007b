"""TransReID-style ViT re-identification model (method ``vit``) with the jigsaw patch module (JPM).

    images, modalities (, cameras)
      -> ViTBackbone: overlapping patches, interpolated position embedding, SIE,
         ``specific_stages`` leading stages per modality, blocks 1..L-1
      -> global branch: last block + LayerNorm -> class token = ``features``
         -> BNNeck = ``bn_features`` -> bias-free classifier = ``logits``
      -> (jpm) K local branches: shift + shuffle the patch tokens, split them into K groups, each group
         with the class token through a copy of the last block + LayerNorm -> its class token =
         ``part_features[k]`` -> its own BNNeck ``part_bn_features[k]`` and classifier ``part_logits[k]``

This follows TransReID (He et al., ICCV 2021, §3.4 and Fig. 4; code: damo-cv/TransReID
``model/make_model.py``, ``build_transformer_local`` and ``shuffle_unit``):

- **Shift** (``jpm_shift``): the first ``m`` patch tokens (class token excluded) move to the end.
  TransReID's ``shuffle_unit(features, shift=5, group=2, begin=1)`` slices
  ``features[:, begin-1+shift:]`` + ``features[:, begin:begin-1+shift]``, which moves 4 patches for its
  ``SHIFT_NUM: 5``; vireid's ``jpm_shift`` counts moved patches, so its default 4 is that same shift.
- **Shuffle** (``jpm_groups``, TransReID ``SHUFFLE_GROUP: 2``): the N shifted tokens are viewed as
  ``[groups, N / groups]`` and transposed, interleaving the groups. When N is not a multiple of the group
  count, the token before the last is repeated until it is (TransReID repeats it once, for 2 groups).
- **Split** (``jpm_branches``, TransReID ``DEVIDE_LENGTH: 4``): part k takes tokens
  ``[k * (N // K), (k + 1) * (N // K))`` of the rearranged sequence (N before padding, as TransReID), and the
  class token is put in front of every part (``torch.cat((token, part))``).
- The global branch is the backbone's own last block and norm; the local branches share one copy
  of them (TransReID's ``b1`` and ``b2`` are both copies of the pretrained last block and norm).
- **Losses**: TransReID averages the identity (and triplet) loss over the K local branches and
  weighs it 0.5 against 0.5 for the global branch (``loss/make_loss.py``). In a vireid config that
  is the global terms on ``logits``/``features`` with weight 0.5 and ``partwise`` terms on
  ``part_logits``/``part_features`` with weight 0.5 (see ``configs/vit_synth.yaml``).
- **Test feature**: the global feature concatenated with each local feature divided by K
  (``torch.cat([feat, local_feat_1 / 4, ...])``), before the BNNeck (TransReID's ``NECK_FEAT: before``:
  ``embedding: features``) or after it (``bn_features``; PMT tests with the BN feature).

Without ``jpm`` the model is TransReID's ``build_transformer``: the global branch only.

Layer-wise learning-rate decay (``optim.layer_decay``, BEiT: Bao et al., ICLR 2022, §2.4 / the
``layer_decay`` of its fine-tuning code): :meth:`param_groups` gives layer ``l`` (0 = embeddings,
1..L = blocks, L + 1 = final norm and the new heads) the rate ``lr * decay ** (L + 1 - l)``; the JPM copy
of the last block is at layer L.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.vit import DEFAULT_SIE_WEIGHT, ViTBackbone
from vireid.modeling.heads import LinearClassifier, build_neck
from vireid.modeling.registries import METHODS

EMBEDDINGS = ("bn_features", "features")

#: why ``vireid prune`` refuses this model (vireid.modeling.pruning reads ``pruning_refusal``)
PRUNING_REFUSAL = (
    "structured pruning does not support ViT models: it removes channels of CNN/Swin blocks only, and "
    "a ViT's attention heads, class token and position embedding have no channel groups it can shrink; "
    "export the unpruned model or quantise it to int8 instead"
)


def jpm_rearrange(patches: torch.Tensor, shift: int, groups: int) -> torch.Tensor:
    """TransReID's shift + patch shuffle of patch tokens ``[B, N, D]`` (class token excluded).

    Shift: the first ``shift`` tokens move to the end. Shuffle: view as ``[B, groups, N / groups, D]``,
    swap the two middle axes, flatten (the token before the last is repeated until ``groups`` divides N).
    """
    n = patches.shape[1]
    shift = shift % n if n else 0
    x = torch.cat([patches[:, shift:], patches[:, :shift]], dim=1)
    if groups <= 1:
        return x
    missing = (-n) % groups
    if missing:
        x = torch.cat([x, x[:, -2:-1].expand(-1, missing, -1)], dim=1)
    b, m, d = x.shape
    return x.view(b, groups, m // groups, d).transpose(1, 2).reshape(b, m, d)


@METHODS.register("vit")
class ViTReID(nn.Module):
    """TransReID-style ViT: global class token + BNNeck + classifier, optional JPM local branches.

    Args:
        num_classes: training identities.
        backbone: timm ViT name (see :class:`~vireid.modeling.backbones.vit.ViTBackbone`).
        pretrained: None, "timm" (hub) or a local weights file of the timm ViT (224 x 224 weights fit).
        img_size: (height, width); the trainer fills it from ``data.height``/``data.width``.
        stride: patch stride (None = patch size; TransReID's ``*_stride`` configs: 12).
        drop_remainder: accept an input size whose last pixels no patch covers (TransReID at 256 x 128).
        specific_stages: leading stages (patch embedding, then blocks) per modality.
        sie_modality, sie_cameras, sie_weight: side-information embeddings (TransReID's SIE, weight 3.0).
        jpm: add the jigsaw patch module; ``jpm_branches`` (K = 4), ``jpm_shift`` (4 patches),
            ``jpm_groups`` (2), ``jpm_shuffle`` (False: split without shift/shuffle, TransReID's
            ``RE_ARRANGE: False``).
        drop_path_rate, attn_drop_rate, pos_drop_rate: timm regularisation.
        vit_kwargs: extra ``timm.create_model`` arguments (a tiny ViT: embed_dim, depth, num_heads, patch_size).
        neck: "bnneck" or "none"; embedding: "bn_features" or "features" (the test feature).
    """

    pruning_refusal = PRUNING_REFUSAL

    def __init__(
        self,
        num_classes: int,
        backbone: str = "vit_small_patch16_224",
        pretrained: str | bool | None = None,
        img_size: Sequence[int] = (256, 128),
        stride: int | None = None,
        drop_remainder: bool = False,
        specific_stages: int = 0,
        sie_modality: bool = True,
        sie_cameras: int = 0,
        sie_weight: float = DEFAULT_SIE_WEIGHT,
        jpm: bool = False,
        jpm_branches: int = 4,
        jpm_shift: int = 4,
        jpm_groups: int = 2,
        jpm_shuffle: bool = True,
        drop_path_rate: float = 0.1,
        attn_drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        vit_kwargs: Mapping[str, Any] | None = None,
        neck: str = "bnneck",
        embedding: str = "bn_features",
    ) -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ConfigError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
        if int(jpm_branches) < 1 or int(jpm_groups) < 1 or int(jpm_shift) < 0:
            raise ConfigError(
                f"jpm_branches and jpm_groups must be >= 1 and jpm_shift >= 0, got {jpm_branches}, {jpm_groups}, {jpm_shift}"
            )
        self.num_classes = int(num_classes)
        self.embedding = embedding
        self.backbone = ViTBackbone(
            arch=backbone, img_size=img_size, stride=stride, drop_remainder=drop_remainder,
            specific_stages=specific_stages, pretrained=pretrained, sie_modality=sie_modality,
            sie_cameras=sie_cameras, sie_weight=sie_weight, drop_path_rate=drop_path_rate,
            attn_drop_rate=attn_drop_rate, pos_drop_rate=pos_drop_rate, vit_kwargs=vit_kwargs,
        )
        self.embed_dim: int = self.backbone.embed_dim
        self.neck = build_neck(neck, self.embed_dim)
        self.classifier = LinearClassifier(self.embed_dim, self.num_classes)
        self.jpm = bool(jpm)
        self.jpm_branches = int(jpm_branches)
        self.jpm_shift = int(jpm_shift)
        self.jpm_groups = int(jpm_groups)
        self.jpm_shuffle = bool(jpm_shuffle)
        if self.jpm:
            n = self.backbone.grid_size[0] * self.backbone.grid_size[1]
            if n < self.jpm_branches:
                raise ConfigError(
                    f"jpm_branches={self.jpm_branches} needs at least as many patches, but the input has {n}; "
                    "lower jpm_branches or use a larger input or a smaller stride"
                )
            # TransReID's b2: a copy of the (pretrained) last block and norm, shared by the K local branches
            self.local_block = nn.Sequential(copy.deepcopy(self.backbone.last_block), copy.deepcopy(self.backbone.norm))
            self.local_necks = nn.ModuleList([build_neck(neck, self.embed_dim) for _ in range(self.jpm_branches)])
            self.local_classifiers = nn.ModuleList(
                [LinearClassifier(self.embed_dim, self.num_classes) for _ in range(self.jpm_branches)]
            )

    # ------------------------------------------------------------------ forward
    def local_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """JPM: the input tokens of the last block -> ``[K, B, D]`` local class-token features."""
        prefix = self.backbone.num_prefix
        cls = tokens[:, :1]
        patches = tokens[:, prefix:]
        n = patches.shape[1]
        if self.jpm_shuffle:
            patches = jpm_rearrange(patches, self.jpm_shift, self.jpm_groups)
        length = n // self.jpm_branches
        parts = [
            self.local_block(torch.cat([cls, patches[:, k * length : (k + 1) * length]], dim=1))[:, 0]
            for k in range(self.jpm_branches)
        ]
        return torch.stack(parts)

    def forward(
        self, images: torch.Tensor, modalities: torch.Tensor | int, cameras: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training: dict of outputs (see the module docstring); evaluation: the embedding ``[B, D]``
        (``[B, (1 + K) D]`` with JPM)."""
        tokens = self.backbone.forward_tokens(images, modalities, cameras, skip_last=True)
        features = self.backbone.norm(self.backbone.last_block(tokens))[:, 0]
        bn_features = self.neck(features)
        outputs: dict[str, torch.Tensor] = {"features": features, "bn_features": bn_features}
        if self.jpm:
            local = self.local_features(tokens)
            local_bn = torch.stack([neck(part) for neck, part in zip(self.local_necks, local.unbind(0), strict=True)])
            outputs["part_features"] = local
            outputs["part_bn_features"] = local_bn
        if self.training:
            outputs["logits"] = self.classifier(bn_features)
            if self.jpm:
                outputs["part_logits"] = torch.stack(
                    [cls(part) for cls, part in zip(self.local_classifiers, outputs["part_bn_features"].unbind(0), strict=True)]
                )
            return outputs
        return self.select_embedding(outputs)

    @property
    def output_dim(self) -> int:
        """Width of the test embedding (:meth:`select_embedding`): ``embed_dim`` (the global feature the losses
        see), times 1 + K with JPM."""
        return self.embed_dim * (1 + self.jpm_branches) if self.jpm else self.embed_dim

    def select_embedding(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The test feature: the global one, with JPM followed by each local one divided by K (TransReID)."""
        key = self.embedding
        if not self.jpm:
            return outputs[key]
        parts = outputs["part_bn_features" if key == "bn_features" else "part_features"]
        return torch.cat([outputs[key], *(p / self.jpm_branches for p in parts.unbind(0))], dim=1)

    def check_extras(self, extras: Mapping[str, torch.Tensor]) -> None:
        """Check a whole loader's side inputs once (:func:`vireid.data.extras.check_model_extras`): the
        ``cameras`` against the camera SIE table (:meth:`ViTBackbone.check_cameras`)."""
        if "cameras" in extras:
            self.backbone.check_cameras(extras["cameras"])

    def cam_target_layer(self, modality: int) -> nn.Module:
        """Grad-CAM's layer: the patch tokens entering the last block, as a ``[B, D, h, w]`` map."""
        return self.backbone.token_grid

    def cam_attention(self, modality: int) -> dict[str, object]:
        """What attention rollout (:mod:`vireid.viz.rollout`) follows for images of ``modality``: the
        attention of every block the class token passes (the modality's own blocks, then the shared
        ones up to the last block; not the JPM copy), the prefix tokens and the patch geometry."""
        return self.backbone.cam_attention(modality)

    # ------------------------------------------------------------------ optimiser
    def layer_id(self, name: str) -> int:
        """Layer of parameter ``name`` for lr decay (see the module docstring)."""
        depth = self.backbone.depth
        if name.startswith("backbone."):
            return self.backbone.layer_id(name[len("backbone.") :])
        if name.startswith("local_block."):
            return depth if name.startswith("local_block.0.") else depth + 1
        return depth + 1

    def param_groups(self, base_lr: float, layer_decay: float = 1.0) -> list[dict[str, object]]:
        """Optimiser groups: with ``layer_decay`` < 1 one group per layer at ``base_lr * decay ** (L + 1 - l)``
        (BEiT's layer-wise decay); otherwise the backbone and the new heads, both at ``base_lr``."""
        if not 0.0 < float(layer_decay) <= 1.0:
            raise ConfigError(f"config key 'optim.layer_decay' must be in (0, 1], got {layer_decay!r}; use e.g. 0.65 (layer-wise decay) or 1.0 (none)")
        top = self.backbone.depth + 1
        by_layer: dict[int, list[nn.Parameter]] = {}
        names: dict[int, list[str]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            layer = self.layer_id(name) if layer_decay < 1.0 else (0 if name.startswith("backbone.") else top)
            by_layer.setdefault(layer, []).append(param)
            names.setdefault(layer, []).append(name)
        groups: list[dict[str, object]] = []
        for layer in sorted(by_layer):
            label = ("backbone" if layer == 0 else "head") if layer_decay >= 1.0 else f"layer{layer}"
            groups.append({
                "params": by_layer[layer],
                "lr": base_lr * float(layer_decay) ** (top - layer),
                "name": label,
                "layer": layer,
            })
        return groups


__all__ = ["EMBEDDINGS", "PRUNING_REFUSAL", "ViTReID", "jpm_rearrange"]
