"""Structured channel pruning: remove whole inner channels of residual blocks for real.

The survey §6 names network pruning, next to depthwise-separable (MobileNet-class) backbones, as
the way to fit cross-modality re-identification onto embedded devices. Unstructured (masked)
pruning leaves dense tensors of the same size and saves nothing on a CPU; this module removes
channels, so convolution weights shrink and the forward pass does fewer FLOPs.

What is pruned (the *inner* channels of a block; the block's input and output channels stay, so
residual additions, shortcuts, inserted modules and the embedding keep their sizes):

==========================  =====================================================================
block (timm)                channel group(s) removed together
==========================  =====================================================================
ResNet ``BasicBlock``       ``conv1`` filters + ``bn1`` -> ``conv2`` input channels
ResNet ``Bottleneck``       ``conv1``/``bn1`` -> ``conv2`` inputs; ``conv2``/``bn2`` -> ``conv3`` inputs
                            (not for grouped ``conv2``, i.e. ResNeXt)
``InvertedResidual``        the expansion: ``conv_pw``/``bn1`` -> depthwise ``conv_dw``/``bn2``
(MobileNetV2/V3,            -> squeeze-excitation (``conv_reduce`` inputs, ``conv_expand`` outputs)
EfficientNet-Lite)          -> ``conv_pwl`` input channels
``EdgeResidual``            ``conv_exp``/``bn1`` -> squeeze-excitation -> ``conv_pwl`` inputs
``Mlp`` (Swin)              hidden units: ``fc1`` outputs (+ hidden norm) -> ``fc2`` inputs
==========================  =====================================================================

Every such block anywhere in the model is pruned, in both modality branches and in the shared
stages (each copy chooses its own channels), whatever method composed them.

Channel importance (per group, the same fraction ``amount`` is removed from every group, as
in Li et al.'s uniform setting):

* ``"l1"`` — the L1 norm of each producer filter, ``s_j = sum |F_j|`` (Li, Kadav, Durdanovic,
  Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017, §3.1);
* ``"bn"`` — the magnitude ``|gamma_j|`` of the BatchNorm scale after the producer (Liu et al.,
  "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017, Eq. 1),
  which accounts for BN rescaling the filter's output; groups without a norm fall back to L1.

The pruned architecture is the list of kept channel counts per group (:func:`prune_model`
returns it). Stored in a checkpoint under ``"pruning"``, :func:`apply_pruning_spec` shrinks a
freshly built model to the same shapes before ``load_state_dict`` (``load_model_from_checkpoint``
does this), so pruned checkpoints stay plain tensors + containers (``weights_only`` loading).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError, VireidError

SPEC_VERSION = 1
CRITERIA = ("l1", "bn")


@dataclass
class ChannelGroup:
    """Inner channels of one block that are removed together.

    ``producer`` computes the channels (its output channels/features are scored and sliced),
    ``norms`` normalise them, ``channelwise`` are depthwise convolutions that keep them one to
    one (sliced on both sides, ``groups`` follows), ``squeeze`` are squeeze-excitation modules
    whose ``conv_reduce`` reads them and ``conv_expand`` writes them, and ``consumers`` read them
    (their input channels are sliced).
    """

    name: str
    producer: nn.Conv2d | nn.Linear
    norms: list[nn.Module] = field(default_factory=list)
    channelwise: list[nn.Conv2d] = field(default_factory=list)
    squeeze: list[nn.Module] = field(default_factory=list)
    consumers: list[nn.Conv2d | nn.Linear] = field(default_factory=list)

    @property
    def channels(self) -> int:
        p = self.producer
        return int(p.out_channels if isinstance(p, nn.Conv2d) else p.out_features)


# ----------------------------------------------------------------------------- discovery
def _is_plain_conv(module: Any) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1


def _is_depthwise(module: Any, channels: int) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == channels
        and module.in_channels == channels
        and module.out_channels == channels
    )


def _is_norm(module: Any, channels: int) -> bool:
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return module.num_features == channels and module.affine
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape) == (channels,)
    return False


def _is_identity_like(module: Any) -> bool:
    """Modules that pass channels through untouched (absent, identity, dropout/drop-block)."""
    return module is None or isinstance(module, (nn.Identity, nn.Dropout)) or type(module).__name__ in {
        "DropBlock2d", "DropPath",
    }


def _squeeze_excite(module: Any, channels: int) -> list[nn.Module] | None:
    """``[se]`` for an SE module with 1x1 ``conv_reduce``/``conv_expand`` over ``channels``,
    ``[]`` for no SE, ``None`` for something unknown (the group is then left alone)."""
    if _is_identity_like(module):
        return []
    reduce_, expand = getattr(module, "conv_reduce", None), getattr(module, "conv_expand", None)
    if (
        _is_plain_conv(reduce_) and _is_plain_conv(expand)
        and reduce_.in_channels == channels and expand.out_channels == channels
    ):
        return [module]
    return None


def _resnet_groups(name: str, block: nn.Module) -> list[ChannelGroup]:
    kind = type(block).__name__
    if not _is_identity_like(getattr(block, "aa", None)):  # anti-aliasing blur has per-channel buffers
        return []
    groups: list[ChannelGroup] = []
    if kind == "BasicBlock":
        c1, b1, c2 = block.conv1, block.bn1, block.conv2
        if _is_plain_conv(c1) and _is_norm(b1, c1.out_channels) and _is_plain_conv(c2):
            groups.append(ChannelGroup(f"{name}/conv1", c1, [b1], consumers=[c2]))
    elif kind == "Bottleneck":
        c1, b1, c2, b2, c3 = block.conv1, block.bn1, block.conv2, block.bn2, block.conv3
        if not (_is_plain_conv(c1) and _is_plain_conv(c2) and _is_plain_conv(c3)):
            return []  # grouped 3x3 (ResNeXt): its channel groups would have to be pruned in step
        if _is_norm(b1, c1.out_channels):
            groups.append(ChannelGroup(f"{name}/conv1", c1, [b1], consumers=[c2]))
        if _is_norm(b2, c2.out_channels):
            groups.append(ChannelGroup(f"{name}/conv2", c2, [b2], consumers=[c3]))
    return groups


def _inverted_residual_groups(name: str, block: nn.Module) -> list[ChannelGroup]:
    pw, bn1, dw, bn2, pwl = (getattr(block, k, None) for k in ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl"))
    if not (_is_plain_conv(pw) and _is_plain_conv(pwl)):
        return []
    mid = pw.out_channels
    if not (_is_norm(bn1, mid) and _is_depthwise(dw, mid) and _is_norm(bn2, mid)):
        return []
    if not _is_identity_like(getattr(block, "aa", None)):
        return []
    se = _squeeze_excite(getattr(block, "se", None), mid)
    if se is None or pwl.in_channels != mid:
        return []
    return [ChannelGroup(f"{name}/conv_pw", pw, [bn1, bn2], channelwise=[dw], squeeze=se, consumers=[pwl])]


def _edge_residual_groups(name: str, block: nn.Module) -> list[ChannelGroup]:
    exp, bn1, pwl = (getattr(block, k, None) for k in ("conv_exp", "bn1", "conv_pwl"))
    if not (_is_plain_conv(exp) and _is_plain_conv(pwl)):
        return []
    mid = exp.out_channels
    if not (_is_norm(bn1, mid) and _is_identity_like(getattr(block, "aa", None))):
        return []
    se = _squeeze_excite(getattr(block, "se", None), mid)
    if se is None or pwl.in_channels != mid:
        return []
    return [ChannelGroup(f"{name}/conv_exp", exp, [bn1], squeeze=se, consumers=[pwl])]


def _mlp_groups(name: str, block: nn.Module) -> list[ChannelGroup]:
    fc1, fc2, norm = getattr(block, "fc1", None), getattr(block, "fc2", None), getattr(block, "norm", None)
    if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)) or fc2.in_features != fc1.out_features:
        return []
    norms: list[nn.Module] = []
    if not _is_identity_like(norm):
        if not _is_norm(norm, fc1.out_features):
            return []
        norms.append(norm)
    return [ChannelGroup(f"{name}/fc1", fc1, norms, consumers=[fc2])]


_BLOCK_HANDLERS: dict[str, Callable[[str, nn.Module], list[ChannelGroup]]] = {
    "BasicBlock": _resnet_groups,
    "Bottleneck": _resnet_groups,
    "InvertedResidual": _inverted_residual_groups,
    "EdgeResidual": _edge_residual_groups,
    "Mlp": _mlp_groups,
}


def find_channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every prunable channel group of ``model``, in module order (names are module paths)."""
    groups: list[ChannelGroup] = []
    for name, module in model.named_modules():
        handler = _BLOCK_HANDLERS.get(type(module).__name__)
        if handler is not None:
            groups.extend(handler(name, module))
    return groups


# ----------------------------------------------------------------------------- scoring
def channel_importance(group: ChannelGroup, criterion: str = "l1") -> torch.Tensor:
    """Importance of each channel of ``group`` (higher = keep), see the module docstring."""
    if criterion not in CRITERIA:
        raise ConfigError(f"pruning criterion {criterion!r} is unknown; use one of {', '.join(CRITERIA)}")
    if criterion == "bn":
        for norm in group.norms:
            if isinstance(norm, (nn.BatchNorm2d, nn.BatchNorm1d)) and norm.weight is not None:
                return norm.weight.detach().abs().float()
    weight = group.producer.weight.detach().float()
    return weight.abs().reshape(weight.shape[0], -1).sum(dim=1)


def kept_channel_count(channels: int, amount: float, multiple: int = 1) -> int:
    """How many of ``channels`` stay when ``amount`` (0..1) is removed, rounded to ``multiple``.

    Rounding to a multiple of 8 suits CPU kernels that work on 8/16-channel blocks; at least
    one multiple (or one channel) always stays and never more than ``channels``.
    """
    keep = channels * (1.0 - amount)
    if multiple > 1:
        keep = multiple * round(keep / multiple)
        keep = max(keep, min(multiple, channels))
    return int(min(max(round(keep), 1), channels))


# ----------------------------------------------------------------------------- surgery
def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    tensor = getattr(module, name, None)
    if tensor is None:
        return
    sliced = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
    else:  # buffer
        setattr(module, name, sliced)


def _slice_outputs(module: nn.Module, index: torch.Tensor) -> None:
    _slice_param(module, "weight", index, 0)
    _slice_param(module, "bias", index, 0)
    if isinstance(module, nn.Conv2d):
        module.out_channels = int(index.numel())
    else:
        module.out_features = int(index.numel())


def _slice_inputs(module: nn.Module, index: torch.Tensor) -> None:
    _slice_param(module, "weight", index, 1)
    if isinstance(module, nn.Conv2d):
        module.in_channels = int(index.numel())
    else:
        module.in_features = int(index.numel())


def _slice_norm(norm: nn.Module, index: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        _slice_param(norm, name, index, 0)
    if isinstance(norm, nn.LayerNorm):
        norm.normalized_shape = (int(index.numel()),)
    else:
        norm.num_features = int(index.numel())


def shrink_group(group: ChannelGroup, index: torch.Tensor) -> None:
    """Keep only channels ``index`` (sorted, 1-D long) of ``group``: every tensor is cut in place."""
    index = torch.as_tensor(index, dtype=torch.long).sort().values
    _slice_outputs(group.producer, index)
    for norm in group.norms:
        _slice_norm(norm, index)
    for conv in group.channelwise:
        _slice_param(conv, "weight", index, 0)
        _slice_param(conv, "bias", index, 0)
        conv.in_channels = conv.out_channels = conv.groups = int(index.numel())
    for se in group.squeeze:
        _slice_inputs(se.conv_reduce, index)
        _slice_outputs(se.conv_expand, index)
    for consumer in group.consumers:
        _slice_inputs(consumer, index)


def prune_model(model: nn.Module, amount: float, criterion: str = "l1", multiple: int = 8) -> dict[str, Any]:
    """Remove ``amount`` (0 < amount < 1) of the inner channels of every prunable block, in place.

    Kept counts are rounded to ``multiple`` (see :func:`kept_channel_count`): CPU runtimes lay
    channels out in blocks of 8/16 (oneDNN, onnxruntime's NCHWc kernels) and fall back to slow
    paths otherwise; a depthwise EfficientNet-Lite0 pruned to arbitrary counts ran 3x *slower* in
    onnxruntime than unpruned, pruned to multiples of 8 it ran 2x faster.

    Returns the pruning spec (JSON-able) to store in the checkpoint under ``"pruning"``.
    """
    if not 0.0 < float(amount) < 1.0:
        raise ConfigError(f"pruning amount must be between 0 and 1 (the fraction of channels removed), got {amount}")
    if int(multiple) < 1:
        raise ConfigError(f"pruning channel multiple must be >= 1, got {multiple}")
    refusal = getattr(model, "pruning_refusal", None)  # a model that says why it cannot be pruned (e.g. ViT)
    if refusal:
        raise VireidError(str(refusal))
    groups = find_channel_groups(model)
    if not groups:
        raise VireidError(
            f"{type(model).__name__} has no block whose inner channels can be pruned; structured pruning supports "
            "timm ResNet, MobileNet/EfficientNet (inverted residual) and Swin (MLP) backbones"
        )
    kept: dict[str, int] = {}
    original: dict[str, int] = {}
    for group in groups:
        channels = group.channels
        keep = kept_channel_count(channels, float(amount), int(multiple))
        original[group.name] = channels
        kept[group.name] = keep
        if keep < channels:
            scores = channel_importance(group, criterion)
            index = torch.topk(scores, keep, largest=True, sorted=False).indices
            shrink_group(group, index)
    return {
        "version": SPEC_VERSION,
        "amount": float(amount),
        "criterion": criterion,
        "multiple": int(multiple),
        "original": original,
        "kept": kept,
    }


def apply_pruning_spec(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Shrink a freshly built ``model`` to the architecture recorded in ``spec`` (weights are
    placeholders: load the pruned state_dict afterwards). Returns ``model``."""
    if not isinstance(spec, dict) or "kept" not in spec:
        raise VireidError("the checkpoint's 'pruning' entry is not a vireid pruning spec; re-create it with vireid prune")
    if int(spec.get("version", 0)) != SPEC_VERSION:
        raise VireidError(f"pruning spec version {spec.get('version')} is not supported (expected {SPEC_VERSION}); update vireid")
    groups = {g.name: g for g in find_channel_groups(model)}
    kept = {str(k): int(v) for k, v in dict(spec["kept"]).items()}
    unknown = sorted(set(kept) - set(groups))
    if unknown:
        raise VireidError(
            f"the pruned checkpoint names channel group {unknown[0]!r} that the rebuilt model lacks; "
            "it was pruned from a different architecture or vireid version"
        )
    for name, keep in kept.items():
        group = groups[name]
        if not 1 <= keep <= group.channels:
            raise VireidError(f"pruning spec keeps {keep} of {group.channels} channels in {name!r}; the checkpoint is corrupt")
        if keep < group.channels:
            shrink_group(group, torch.arange(keep))
    return model


# ----------------------------------------------------------------------------- checkpoints
@dataclass
class PruneSummary:
    """What pruning did: sizes and costs before and after."""

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    groups: int
    channels_before: int
    channels_after: int
    checkpoint: str = ""
    finetune: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def describe(self) -> str:
        def pct(after: int, before: int) -> str:
            return f"{100.0 * (1 - after / before):.1f}% fewer" if before else "n/a"

        return (
            f"pruned {self.groups} channel groups: inner channels {self.channels_before} -> {self.channels_after}; "
            f"parameters {self.params_before / 1e6:.3f}M -> {self.params_after / 1e6:.3f}M "
            f"({pct(self.params_after, self.params_before)}); forward FLOPs "
            f"{self.flops_before / 1e6:.1f}M -> {self.flops_after / 1e6:.1f}M ({pct(self.flops_after, self.flops_before)})"
        )


#: Checkpoint entries kept in a pruned checkpoint (training state of the unpruned model is dropped).
_KEEP_KEYS = ("format", "config", "num_classes", "embed_dim", "train_ids")


def pruned_checkpoint(ckpt: dict[str, Any], model: nn.Module, spec: dict[str, Any], summary: PruneSummary | None = None) -> dict:
    """A checkpoint dict for a pruned model: the source's config and metadata, the new weights, the spec.

    The source's ``"verification"`` threshold is dropped: it was calibrated on the unpruned
    model's embeddings; calibrate the pruned model again.
    """
    out = {k: copy.deepcopy(ckpt[k]) for k in _KEEP_KEYS if k in ckpt}
    out["model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out["pruning"] = json.loads(json.dumps(spec))
    if summary is not None:
        out["pruning"]["summary"] = summary.to_dict()
    return out


def summarise(model_before: nn.Module, model_after: nn.Module, spec: dict[str, Any], image_size: tuple[int, int]) -> PruneSummary:
    """Parameter and FLOP counts of the model before and after pruning."""
    from vireid.modeling.flops import count_forward_flops, count_parameters

    return PruneSummary(
        params_before=count_parameters(model_before),
        params_after=count_parameters(model_after),
        flops_before=count_forward_flops(model_before, image_size),
        flops_after=count_forward_flops(model_after, image_size),
        groups=len(spec["kept"]),
        channels_before=int(sum(spec["original"].values())),
        channels_after=int(sum(spec["kept"].values())),
    )

__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "PruneSummary",
    "apply_pruning_spec",
    "channel_importance",
    "find_channel_groups",
    "kept_channel_count",
    "prune_model",
    "pruned_checkpoint",
    "shrink_group",
]
