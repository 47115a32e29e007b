"""Non-local block (Wang et al., "Non-local neural networks", CVPR 2018), AGW variant.

``z = x + BN(W y)``, ``y_i = sum_j f(x_i, x_j) g(x_j) / C(x)`` with ``theta, phi, g`` 1x1
convolutions to ``C'`` inner channels. AGW (Ye et al., TPAMI 2021) uses the dot-product form
``f = theta(x_i)^T phi(x_j)``, ``C(x) = N`` (number of positions), and initialises the output
BatchNorm's weight and bias to zero, so each block starts as the identity and does not disturb
pretrained features. ``mode="embedded_gaussian"`` uses ``softmax_j`` instead (Wang et al., eq. 2-3).

Two inner widths, both documented (``non_local`` setting of :class:`~vireid.modeling.methods.baseline.BaselineReID`):

``agw``
    AGW's *released* block: ``Non_local`` in ``model.py`` of the AGW reference code
    (mangye16/Cross-Modal-Re-ID-baseline, also ``ICCV21_CAJ/model.py``) sets
    ``inter_channels = reduc_ratio // reduc_ratio``, i.e. **one** inner channel, whatever the
    reduction ratio. Its published SYSU-MM01 numbers (R1 47.50 / mAP 47.65 / mINP 35.30) come
    from that block, so ``non_local: agw`` builds exactly it (:data:`AGW_INTER_CHANNELS` = 1). The AGW
    ResNet-50 (395 classes) then has 24.36 M parameters and 10.27 GFLOPs per 288x144 image
    (:mod:`vireid.modeling.flops`), against 31.69 M / 14.68 GFLOPs with ``agw_c2``.
``agw_c2``
    The same placement with ``C / 2`` inner channels, the bottleneck Wang et al. describe and
    what the AGW paper's text suggests (``reduc_ratio = 2``); vireid's ``agw`` block before it
    was made to match the released code.

AGW places 2 blocks in ResNet-50's layer2 (after its last two blocks) and 3 in layer3 (after
its last three blocks): ``layers = [3, 4, 6, 3]``, ``non_layers = [0, 2, 3, 0]`` in ``model.py``,
block ``i`` of a layer followed by a block when ``i`` is among its last ``non_layers`` indices.
That is :data:`AGW_NON_LOCAL` = ``{"stage2": 2, "stage3": 3}``, given to :func:`add_non_local`
(counts mean "after each of the last N blocks"; a list gives explicit block indices). The
reference's submodule names are kept (``g``, ``theta``, ``phi``, ``W`` = conv + BN), so its
weights map one-to-one (:mod:`vireid.workflows.import_agw`; its ``g`` is wrapped in a one-element
``nn.Sequential``, ours is the bare convolution).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.registries import MODULES

#: AGW's placement: ``non_layers = [0, 2, 3, 0]`` for layer1..layer4 of ResNet-50.
AGW_NON_LOCAL: dict[str, int] = {"stage2": 2, "stage3": 3}
#: Inner channels of AGW's released ``Non_local`` (``reduc_ratio // reduc_ratio`` in its ``model.py``).
AGW_INTER_CHANNELS = 1
NON_LOCAL_MODES = ("dot_product", "embedded_gaussian")
#: Named settings: placement + inner width (``None`` reduction = :data:`AGW_INTER_CHANNELS` channels).
NON_LOCAL_PRESETS: dict[str, tuple[dict[str, int], int | None]] = {
    "agw": (AGW_NON_LOCAL, None),
    "agw_c2": (AGW_NON_LOCAL, 2),
}


@MODULES.register("non_local")
class NonLocalBlock(nn.Module):
    """Residual non-local block on ``[B,C,H,W]``; starts as the identity (zero-initialised BN).

    ``reduction`` r gives ``C // r`` inner channels; ``reduction=None`` gives AGW's released
    block with :data:`AGW_INTER_CHANNELS` (one) inner channel.
    """

    def __init__(self, in_channels: int, reduction: int | None = 2, mode: str = "dot_product") -> None:
        super().__init__()
        if mode not in NON_LOCAL_MODES:
            raise ConfigError(f"non-local mode must be one of {', '.join(NON_LOCAL_MODES)}, got {mode!r}")
        if reduction is not None and (isinstance(reduction, bool) or int(reduction) < 1):
            raise ConfigError(f"non-local reduction must be >= 1 (or null for AGW's one-channel block), got {reduction!r}")
        self.in_channels = int(in_channels)
        self.reduction = None if reduction is None else int(reduction)
        self.inter_channels = AGW_INTER_CHANNELS if reduction is None else max(self.in_channels // int(reduction), 1)
        self.mode = mode
        self.theta = nn.Conv2d(self.in_channels, self.inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(self.in_channels, self.inter_channels, kernel_size=1)
        self.g = nn.Conv2d(self.in_channels, self.inter_channels, kernel_size=1)
        self.W = nn.Sequential(
            nn.Conv2d(self.inter_channels, self.in_channels, kernel_size=1),
            nn.BatchNorm2d(self.in_channels),
        )
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [B, N, C']
        phi = self.phi(x).flatten(2)  # [B, C', N]
        g = self.g(x).flatten(2).transpose(1, 2)  # [B, N, C']
        affinity = torch.bmm(theta, phi)  # [B, N, N]
        if self.mode == "dot_product":
            affinity = affinity / affinity.shape[-1]
        else:
            affinity = affinity.softmax(dim=-1)
        y = torch.bmm(affinity, g).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.W(y)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, mode={self.mode!r}"


def parse_stage_key(key: str | int) -> int:
    """``"stage3"``, ``"layer3"`` or ``3`` -> 3."""
    if isinstance(key, int):
        return key
    text = str(key).strip().lower()
    for prefix in ("stage", "layer"):
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            return int(text[len(prefix) :])
    if text.isdigit():
        return int(text)
    raise ConfigError(f"non_local key {key!r} must name a stage such as 'stage3' or 'layer3'")


def resolve_non_local(spec: str | Mapping[str, int | Sequence[int]] | None) -> dict[int, int | list[int]]:
    """Config value -> ``{stage: count or block indices}``: ``None``/``"none"``, a preset name
    (``"agw"``, ``"agw_c2"``: :data:`NON_LOCAL_PRESETS`) or a mapping."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in {"", "none", "off", "false"}):
        return {}
    if isinstance(spec, str):
        if spec.strip().lower() in NON_LOCAL_PRESETS:
            spec = NON_LOCAL_PRESETS[spec.strip().lower()][0]
        else:
            raise ConfigError(
                f"non_local must be null, one of {', '.join(map(repr, NON_LOCAL_PRESETS))} or a mapping like "
                f"{{stage2: 2, stage3: [3, 4, 5]}}, got {spec!r}"
            )
    if not isinstance(spec, Mapping):
        raise ConfigError(f"non_local must be null, 'agw' or a mapping, got {spec!r}")
    resolved: dict[int, int | list[int]] = {}
    for key, value in spec.items():
        stage = parse_stage_key(key)
        if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
            raise ConfigError(f"non_local {key!r} must be a block count or a list of block indices, got {value!r}")
        resolved[stage] = int(value) if isinstance(value, int) else [int(v) for v in value]
    return resolved


def non_local_reduction(spec: str | Mapping[str, int | Sequence[int]] | None, reduction: int | None) -> int | None:
    """The inner-width reduction a ``non_local`` setting implies: an explicit ``reduction`` wins; else
    the preset's (``agw`` -> None, AGW's one-channel block; ``agw_c2`` -> 2); else 2 for a mapping."""
    if reduction is not None:
        return int(reduction)
    if isinstance(spec, str) and spec.strip().lower() in NON_LOCAL_PRESETS:
        return NON_LOCAL_PRESETS[spec.strip().lower()][1]
    return 2


def upgrade_non_local_params(params: dict, state: Mapping[str, torch.Tensor]) -> bool:
    """Make a checkpoint saved before ``non_local: agw`` meant AGW's one-channel block load again.

    Such checkpoints hold ``C/2``-channel blocks under ``non_local: agw`` with no explicit
    ``non_local_reduction``; their ``model.params`` are switched to ``agw_c2`` (the same network) in
    place. Returns True when it changed ``params``.
    """
    if str(params.get("non_local", "")).strip().lower() != "agw" or params.get("non_local_reduction") is not None:
        return False
    widths = [int(t.shape[0]) for k, t in state.items() if ".non_local_after_" in k and k.endswith(".g.weight")]
    if not widths or max(widths) <= AGW_INTER_CHANNELS:
        return False
    params["non_local"] = "agw_c2"
    return True


def add_non_local(
    backbone: nn.Module,
    spec: str | Mapping[str, int | Sequence[int]] | None,
    reduction: int | None = None,
    mode: str = "dot_product",
) -> dict[int, list[int]]:
    """Insert :class:`NonLocalBlock` s into the shared stages of a two-stream ``backbone``.

    ``reduction=None`` takes the width the setting implies (:func:`non_local_reduction`): AGW's
    one inner channel for ``"agw"``, ``C/2`` for ``"agw_c2"`` and for a mapping.
    Returns ``{stage: block indices after which a block was inserted}``.
    """
    reduction = non_local_reduction(spec, reduction)
    placed: dict[int, list[int]] = {}
    for stage, positions in resolve_non_local(spec).items():
        placed[stage] = backbone.insert_after_blocks(
            stage, positions, lambda channels: NonLocalBlock(channels, reduction=reduction, mode=mode), label="non_local"
        )
    return placed


__all__ = [
    "AGW_INTER_CHANNELS",
    "AGW_NON_LOCAL",
    "NON_LOCAL_MODES",
    "NON_LOCAL_PRESETS",
    "NonLocalBlock",
    "add_non_local",
    "non_local_reduction",
    "parse_stage_key",
    "resolve_non_local",
    "upgrade_non_local_params",
]
