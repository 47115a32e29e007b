"""Two-stream backbone: modality-specific first stages, shared later stages, over timm models.

A visible–infrared network sees two image distributions. The usual answer (Ye et al., AGW,
TPAMI 2021; Liu et al., HcTri, TMM 2021) is to give each modality its own copy of the first
stages and share the rest. ``specific_stages`` says how many of the five stages (stage 0 =
stem, stages 1..4 = feature stages; see :mod:`.timm_stages`) are modality-specific:

==================  ===============================================================
``specific_stages``  meaning (and where the papers use it)
==================  ===============================================================
0                    one shared network for both modalities
1                    stem only (AGW's two-stream baseline)
2                    stem + stage 1 (layer0 + layer1 of DFW+SLN, the DFW/SLN baseline;
                     HcTri's best split)
3                    stem + stages 1..2 (the dual-path Swin paper's choice "F3": the first two Swin
                     stages specific, the last two shared)
5                    nothing shared (two separate networks)
==================  ===============================================================

Dual-path Swin (dual-path Swin) ablates sharing "from stage 1, 2, 3 or 4" and a fully specific
network, named F1..F5; its network is an input stem + four stages and shared learning starts
at stage k in Fk. In this numbering Fk is ``specific_stages = k`` (stem + stages 1..k-1
specific; F1 = stem only, F5 = nothing shared). If F1 is read as "shared from the very first
layer, stem included", use 0 for it.

Each modality copy is a deep copy made *after* the pretrained weights are loaded, so both
start from the same weights. Routing is by index: the samples of each modality are gathered
with ``index_select``, run through their branch, and scattered back with ``index_copy`` —
one call per modality, never per sample — so a batch may be mixed, visible-only or
infrared-only. BatchNorm layers of a branch therefore see only their modality's samples.

Extension points for methods: ``forward_specific`` (routing), ``forward_shared`` (a slice of
the shared stages by global stage index), ``shared_stages`` (an ``nn.ModuleList`` a method may
wrap or replace, e.g. SLN's parallel copies of stage 4), ``insert_after_blocks`` (put a module
after chosen blocks of a shared CNN stage, e.g. non-local blocks), ``stage_channels`` and
``out_channels``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.timm_stages import (
    SWIN,
    block_out_channels,
    clone_stages,
    model_family,
    split_timm_model,
)
from vireid.modeling.pretrained import PretrainedSpec, create_timm_model
from vireid.modeling.registries import BACKBONES

NUM_STAGES = 5
NUM_MODALITIES = 2  # 0 visible, 1 infrared (vireid.data.records.MODALITY_CODE)


def as_modality_tensor(modalities: torch.Tensor | int, batch_size: int, device: torch.device) -> torch.Tensor:
    """Return a ``[B]`` long tensor of modality codes; an int applies to the whole batch."""
    if isinstance(modalities, int):
        return torch.full((batch_size,), modalities, dtype=torch.long, device=device)
    if modalities.dim() != 1 or modalities.shape[0] != batch_size:
        raise ValueError(f"modalities must have shape [{batch_size}], got {tuple(modalities.shape)}")
    return modalities.to(device=device, dtype=torch.long)


def route_by_modality(codes: torch.Tensor, run: Callable[[int, torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
    """Each sample through its modality's branch: ``run(code, index)`` computes the rows ``index`` of the
    batch (``index`` None: the whole batch, a single-modality batch needs no gather/scatter); the results
    are scattered back into batch order. A code other than 0 / 1 is a ValueError."""
    out: torch.Tensor | None = None
    routed = 0
    for code in range(NUM_MODALITIES):
        index = torch.nonzero(codes == code, as_tuple=False).squeeze(1)
        if index.numel() == 0:
            continue
        routed += index.numel()
        if index.numel() == codes.shape[0]:
            return run(code, None)
        y = run(code, index)
        if out is None:
            out = y.new_zeros((codes.shape[0], *y.shape[1:]))
        out = out.index_copy(0, index, y)
    if routed != codes.shape[0] or out is None:
        raise ValueError("modalities must be 0 (visible) or 1 (infrared) for every sample")
    return out


@BACKBONES.register("two_stream")
class TwoStreamBackbone(nn.Module):
    """A timm model cut into stem + 4 stages, the first ``specific_stages`` copied per modality.

    Args:
        arch: timm model name (``resnet50``, ``resnet18``, ``mobilenetv2_100``,
            ``mobilenetv3_large_100``, ``efficientnet_lite0``, ``swin_tiny_patch4_window7_224``).
        specific_stages: number of leading stages (0..5) that are modality-specific.
        last_stride: 1 removes the last stage's downsampling (CNNs), 2 keeps it; ignored for Swin
            (whose last patch merging cannot be removed), so the default 1 is valid for every family.
        pretrained: see :mod:`vireid.modeling.pretrained`.
        img_size: (height, width) of the inputs; used by Swin, which fixes its grid at build time.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        specific_stages: int = 1,
        last_stride: int = 1,
        pretrained: PretrainedSpec = None,
        img_size: Sequence[int] = (288, 144),
    ) -> None:
        super().__init__()
        if not 0 <= int(specific_stages) <= NUM_STAGES:
            raise ConfigError(f"specific_stages must be between 0 and {NUM_STAGES}, got {specific_stages!r}")
        self.arch = arch
        self.family = model_family(arch)
        create_kwargs: dict[str, object] = {"num_classes": 0}
        if self.family == SWIN:
            if len(img_size) != 2:
                raise ConfigError(f"img_size must be [height, width], got {img_size!r}")
            create_kwargs["img_size"] = (int(img_size[0]), int(img_size[1]))
            if last_stride == 1:
                last_stride = 2  # documented: the last stride is not configurable for Swin
        model = create_timm_model(arch, pretrained, **create_kwargs)
        split = split_timm_model(model, last_stride=last_stride)
        self.specific_stages = int(specific_stages)
        self.last_stride = last_stride
        self.stage_channels: list[int] = list(split.channels)
        self.out_channels: int = self.stage_channels[-1]
        self.sequential_blocks: bool = split.sequential_blocks
        specific = split.stages[: self.specific_stages]
        self.modality_branches = nn.ModuleList(
            [clone_stages(specific) for _ in range(NUM_MODALITIES)] if specific else []
        )
        self.shared_stages = nn.ModuleList(split.stages[self.specific_stages :])

    # ------------------------------------------------------------------ forward
    def forward_specific(self, x: torch.Tensor, modalities: torch.Tensor | int) -> torch.Tensor:
        """Run each sample through its modality's specific stages (identity when there are none)."""
        if self.specific_stages == 0:
            return x
        codes = as_modality_tensor(modalities, x.shape[0], x.device)
        if isinstance(modalities, int):
            return self._branch(modalities)(x)
        return route_by_modality(codes, lambda code, index: self.modality_branches[code](
            x if index is None else x.index_select(0, index)))

    def _branch(self, code: int) -> nn.Module:
        if code not in range(NUM_MODALITIES):
            raise ValueError(f"modality code must be 0 (visible) or 1 (infrared), got {code}")
        return self.modality_branches[code]

    def forward_shared(self, x: torch.Tensor, start: int | None = None, end: int | None = None) -> torch.Tensor:
        """Run shared stages with global indices ``start <= stage < end`` (default: all shared)."""
        first = self.specific_stages if start is None else start
        last = NUM_STAGES if end is None else end
        if first < self.specific_stages or last > NUM_STAGES or first > last:
            raise ValueError(
                f"shared stages are {self.specific_stages}..{NUM_STAGES - 1}; got start={start}, end={end}"
            )
        for stage in self.shared_stages[first - self.specific_stages : last - self.specific_stages]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor, modalities: torch.Tensor | int) -> torch.Tensor:
        """Images ``[B,3,H,W]`` and modality codes ``[B]`` (or one int) -> feature map ``[B,C,h,w]``."""
        return self.forward_shared(self.forward_specific(x, modalities))

    # --------------------------------------------------------------- extension
    def shared_stage(self, stage: int) -> nn.Module:
        """The module of shared stage ``stage`` (global index)."""
        if not self.specific_stages <= stage < NUM_STAGES:
            raise ConfigError(
                f"stage {stage} is not shared (shared stages: {self.specific_stages}..{NUM_STAGES - 1}); "
                "lower specific_stages or choose a later stage"
            )
        return self.shared_stages[stage - self.specific_stages]

    def insert_after_blocks(
        self,
        stage: int,
        positions: int | Sequence[int],
        factory: Callable[[int], nn.Module],
        label: str = "inserted",
    ) -> list[int]:
        """Insert ``factory(channels)`` after blocks of shared CNN stage ``stage``.

        ``positions`` is either a count N (after each of the last N blocks, AGW's convention;
        clipped to the number of blocks) or a list of block indices (negative counts from the
        end). Returns the block indices used. Works on the shared ResNet / MobileNet stages.
        """
        if not self.sequential_blocks:
            raise ConfigError(f"{label} blocks need a CNN backbone; {self.arch!r} has no block-wise stages")
        module = self.shared_stage(stage)
        if not isinstance(module, nn.Sequential):
            raise ConfigError(f"stage {stage} of {self.arch!r} is not a sequence of blocks")
        blocks = list(module.named_children())
        count = len(blocks)
        if isinstance(positions, int):
            if positions < 0:
                raise ConfigError(f"{label}: stage{stage} count must be >= 0, got {positions}")
            chosen = list(range(max(count - positions, 0), count))
        else:
            chosen = []
            for position in positions:
                index = int(position) + count if int(position) < 0 else int(position)
                if not 0 <= index < count:
                    raise ConfigError(f"{label}: stage{stage} has {count} blocks, block index {position} is out of range")
                chosen.append(index)
            chosen = sorted(set(chosen))
        if not chosen:
            return []
        items: list[tuple[str, nn.Module]] = []
        for index, (child_name, block) in enumerate(blocks):
            items.append((child_name, block))
            if index in chosen:
                items.append((f"{label}_after_{child_name}", factory(block_out_channels(block))))
        self.shared_stages[stage - self.specific_stages] = nn.Sequential(OrderedDict(items))
        return chosen

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, family={self.family!r}, specific_stages={self.specific_stages}, out_channels={self.out_channels}"


__all__ = ["NUM_MODALITIES", "NUM_STAGES", "TwoStreamBackbone", "as_modality_tensor"]
