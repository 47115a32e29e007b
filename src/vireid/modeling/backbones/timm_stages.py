"""Cut a timm model into five stages with one convention for every family.

Stage 0 is the stem, stages 1..4 are the four feature stages (output strides 4, 8, 16, 32
before any last-stride change). Every stage maps an ``NCHW`` tensor to an ``NCHW`` tensor,
so parts written for feature maps (non-local, DFW, ...) fit between any two stages.

Families:

- **ResNet** (any timm ``ResNet``: resnet18/34/50/101, -d variants, ...): stem =
  ``conv1, bn1, act1, maxpool``; stages = ``layer1..layer4``. ``last_stride=1`` removes the
  stride-2 of ``layer4`` (Luo et al., "Bag of tricks", 2019), doubling the final map.
- **EfficientNet / MobileNet** (timm ``EfficientNet``: mobilenetv2_*, efficientnet_*,
  efficientnet_lite*; timm ``MobileNetV3``: mobilenetv3_*): the block groups are regrouped
  by output stride with timm's ``feature_info``: stage 0 = ``conv_stem, bn1`` and the blocks
  at stride 2; stage k (1..4) = the blocks at stride 2^(k+1). For ``EfficientNet`` models
  stage 4 also holds ``conv_head, bn2`` (1280 channels for mobilenetv2_100 /
  efficientnet_lite0); ``MobileNetV3`` applies its head after pooling, so it is dropped
  (960 channels). Each stage is an ``nn.Sequential`` of individual blocks.
  ``last_stride=1`` sets the first stride-2 convolution of stage 4 to stride 1.
- **Swin** (timm ``SwinTransformer``): stage 0 = patch embedding, stages 1..4 =
  ``layers[0..3]`` (patch merging happens at the start of stages 2..4), stage 4 also holds
  the final ``norm``. The model is built with ``img_size`` = the training size, so non-square
  inputs such as 288x144 work (timm pads windows; the window shrinks where the map is
  smaller than 7). Stages are wrapped to take and give ``NCHW``. ``last_stride`` does not
  apply (patch merging changes the channel count): :func:`split_timm_model` refuses 1 and
  :class:`~vireid.modeling.backbones.two_stream.TwoStreamBackbone` ignores it for Swin.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from vireid.errors import ConfigError

RESNET = "resnet"
EFFICIENTNET = "efficientnet"
SWIN = "swin"
FAMILIES = (RESNET, EFFICIENTNET, SWIN)


@dataclass
class StageSplit:
    """Five stages (stem + four) of one model, their output channels and the model family."""

    stages: list[nn.Module]
    channels: list[int]
    family: str

    @property
    def sequential_blocks(self) -> bool:
        """True when every stage is an ``nn.Sequential`` of NCHW blocks (modules can be inserted)."""
        return self.family in (RESNET, EFFICIENTNET)


def model_family(model_or_name: nn.Module | str) -> str:
    """Return ``"resnet"``, ``"efficientnet"`` or ``"swin"`` for a timm model (instance or name)."""
    if isinstance(model_or_name, str):
        import timm

        name = model_or_name.split(".")[0]
        if not timm.is_model(name):
            raise ConfigError(f"backbone {model_or_name!r} is not a timm model name; see timm.list_models() (e.g. 'resnet50')")
        module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
        by_module = {
            "resnet": RESNET,
            "efficientnet": EFFICIENTNET,
            "mobilenetv3": EFFICIENTNET,
            "swin_transformer": SWIN,
        }
        if module not in by_module:
            raise ConfigError(
                f"backbone {model_or_name!r} (timm module {module!r}) is not supported; use a timm ResNet "
                "(resnet50), MobileNet/EfficientNet (mobilenetv2_100, efficientnet_lite0) or Swin model"
            )
        return by_module[module]
    name = type(model_or_name).__name__
    by_class = {"ResNet": RESNET, "EfficientNet": EFFICIENTNET, "MobileNetV3": EFFICIENTNET, "SwinTransformer": SWIN}
    if name not in by_class:
        raise ConfigError(f"timm model class {name!r} is not supported by the two-stream backbone")
    return by_class[name]


def split_timm_model(model: nn.Module, last_stride: int = 2) -> StageSplit:
    """Split a timm ``model`` into :class:`StageSplit`; ``last_stride`` 1 or 2 (CNN families)."""
    if last_stride not in (1, 2):
        raise ConfigError(f"last_stride must be 1 or 2, got {last_stride!r}")
    family = model_family(model)
    if family == RESNET:
        split = _split_resnet(model)
    elif family == EFFICIENTNET:
        split = _split_efficientnet(model)
    else:
        if last_stride != 2:
            raise ConfigError(
                "last_stride=1 is not possible for a Swin backbone (its last patch merging changes the channel "
                "count); set last_stride: 2"
            )
        return _split_swin(model)
    if last_stride == 1:
        _remove_first_stride(split.stages[4])
    return split


def _split_resnet(model: nn.Module) -> StageSplit:
    stem = nn.Sequential(
        OrderedDict(conv1=model.conv1, bn1=model.bn1, act1=model.act1, maxpool=model.maxpool)
    )
    stages: list[nn.Module] = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    channels = [int(info["num_chs"]) for info in model.feature_info]
    return StageSplit(stages, channels, RESNET)


class ConvHead(nn.Sequential):
    """EfficientNet's final 1x1 convolution + BN/activation, kept as the last block of stage 4."""


def _split_efficientnet(model: nn.Module) -> StageSplit:
    infos = list(model.feature_info)
    if len(infos) != 5:
        raise ConfigError(f"{type(model).__name__} exposes {len(infos)} feature levels, expected 5 (strides 2..32)")
    # the last block group of each stride; "bn1" (mobilenetv3_small_*: the first block already has stride 4)
    # means no block runs at stride 2, the stem is the whole stride-2 stage
    ends = [int(str(info["module"]).split(".")[1]) if str(info["module"]).startswith("blocks.") else -1 for info in infos]
    groups = list(model.blocks)
    bounds = [0] + [end + 1 for end in ends]

    def blocks_of(first: int, last: int) -> list[nn.Module]:
        return [block for group in groups[first:last] for block in group]

    stem = nn.Sequential(model.conv_stem, model.bn1, *blocks_of(bounds[0], bounds[1]))
    stages: list[nn.Module] = [stem]
    for level in range(1, 5):
        stages.append(nn.Sequential(*blocks_of(bounds[level], bounds[level + 1])))
    channels = [int(info["num_chs"]) for info in infos]
    if type(model).__name__ == "EfficientNet" and isinstance(getattr(model, "conv_head", None), nn.Conv2d):
        stages[4].append(ConvHead(model.conv_head, model.bn2))
        channels[4] = int(model.conv_head.out_channels)
    return StageSplit(stages, channels, EFFICIENTNET)


def _remove_first_stride(stage: nn.Module) -> None:
    """Set the first stride-2 operation of ``stage`` to stride 1 (convolution or shortcut pooling).

    Within a residual block both paths downsample (main conv and shortcut), so every stride-2
    convolution/pool of the block that holds the first one is changed.
    """
    for block in stage.children():
        strided = [
            m for m in block.modules()
            if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)) and _stride_of(m) == (2, 2)
        ]
        if not strided:
            continue
        for module in strided:
            if isinstance(module, nn.Conv2d):
                module.stride = (1, 1)
            else:  # ResNet-D shortcut: AvgPool2d(2, 2) -> identity-sized pooling
                module.kernel_size = 1
                module.stride = 1
                module.padding = 0
        return
    raise ConfigError("last_stride=1: the last stage has no stride-2 layer to change")


def _stride_of(module: nn.Module) -> tuple[int, int]:
    stride = module.stride
    if isinstance(stride, int):
        return (stride, stride)
    return (int(stride[0]), int(stride[1]))


class SwinStem(nn.Module):
    """Swin patch embedding returning NCHW."""

    def __init__(self, patch_embed: nn.Module) -> None:
        super().__init__()
        self.patch_embed = patch_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).permute(0, 3, 1, 2)


class SwinStage(nn.Module):
    """One Swin stage (NHWC inside) with an NCHW interface; ``norm`` is the final LayerNorm for stage 4."""

    def __init__(self, stage: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.stage = stage
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.stage(x.permute(0, 2, 3, 1)))
        return y.permute(0, 3, 1, 2)


def _split_swin(model: nn.Module) -> StageSplit:
    layers = list(model.layers)
    stages: list[nn.Module] = [SwinStem(model.patch_embed)]
    for index, layer in enumerate(layers):
        stages.append(SwinStage(layer, model.norm if index == len(layers) - 1 else None))
    channels = [int(model.patch_embed.proj.out_channels)] + [int(info["num_chs"]) for info in model.feature_info]
    return StageSplit(stages, channels, SWIN)


def block_out_channels(block: nn.Module) -> int:
    """Output channels of a CNN block: those of its last registered convolution."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"cannot tell the output channels of block {type(block).__name__}")
    return int(convs[-1].out_channels)


def clone_stages(stages: list[nn.Module]) -> nn.Sequential:
    """A deep copy of ``stages`` as one ``nn.Sequential`` (one modality branch)."""
    return nn.Sequential(*(copy.deepcopy(stage) for stage in stages))


__all__ = [
    "EFFICIENTNET",
    "FAMILIES",
    "RESNET",
    "SWIN",
    "ConvHead",
    "StageSplit",
    "SwinStage",
    "SwinStem",
    "block_out_channels",
    "clone_stages",
    "model_family",
    "split_timm_model",
]
