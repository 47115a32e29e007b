"""A TransReID-style ViT backbone over any timm Vision Transformer, for visible–infrared ReID.

TransReID (He et al., "TransReID: Transformer-based Object Re-Identification", ICCV 2021; code:
damo-cv/TransReID ``model/backbones/vit_pytorch.py``) adapts an ImageNet ViT to re-identification
with three changes, all here:

- **Overlapping patch embedding** (TransReID §3.2, ``PatchEmbed_overlap``): the 16x16 patch
  convolution runs with a stride ``s`` < 16 (12 in the ``*_stride`` configs), so neighbouring
  patches share pixels. The patch grid of an ``H x W`` image is ``((H - p) // s + 1, (W - p) // s + 1)``:
  21 x 10 = 210 patches at 256 x 128 with p = 16, s = 12. An image size is *exact* when
  ``(size - p)`` is a multiple of ``s`` (every pixel is covered); otherwise the last
  ``(size - p) % s`` rows/columns are never seen. TransReID and PMT train at 256 x 128 with s = 12,
  which drops 4 columns; vireid refuses such a size with one sentence naming the nearest exact
  sizes, unless ``drop_remainder: true`` asks for TransReID's behaviour (the ViT configs for the
  real datasets set it).
- **Position-embedding interpolation** (TransReID ``resize_pos_embed``): the ImageNet weights hold
  a 14 x 14 grid of position embeddings (224 x 224 / 16); they are resampled bicubically (timm's
  ``resample_abs_pos_embed``) to the stride grid once at build time, after the pretrained weights
  are loaded (so a 224 x 224 checkpoint, from the hub or a local file, fits any input size). An
  image of another valid size at run time gets the grid resampled on the fly.
- **Side-information embeddings (SIE)** (TransReID §3.3, Eq. 5): learnable vectors added to every
  token (class token included) after the position embedding, scaled by ``sie_weight``
  (TransReID's ``sie_xishu``, 3.0 in all its configs): ``x = tokens + pos + w * (S_mod[m] + S_cam[c])``.
  The modality table has two rows (0 visible, 1 infrared: the SIE "view" of VI-ReID); the camera
  table ``sie_cameras`` rows (TransReID's camera SIE). Both start as N(0, 0.02²) (TransReID's
  ``trunc_normal_(std=.02)``). TransReID combines camera and view into one table indexed
  ``cam * views + view``; here they are two added tables, since in VI-ReID the camera mostly
  implies the modality. A zero ``sie_weight`` makes SIE a no-op.

**Stages and the two-stream split.** With the numbering of
:class:`~vireid.modeling.backbones.two_stream.TwoStreamBackbone`, stage 0 is the patch embedding
and stage k (1..depth) is transformer block k-1. ``specific_stages = s`` copies stages 0..s-1 per
modality: 0 = one shared ViT (PMT, TransReID), 1 = a patch embedding per modality (the analogue of
AGW's modality-specific stem), 1 + n = patch embedding + the first n blocks. The class token,
position embedding, SIE tables, the last block and the final norm are always shared
(``specific_stages <= depth``). Routing is by index as in the two-stream backbone (one call per
modality, a batch may be mixed); under ``torch.export`` both branches run on the whole batch and
each sample picks its own (``torch.where``), which is what the ONNX export traces.

The backbone exposes ``specific_stages``, ``modality_branches`` and ``shared_stages`` like the
two-stream backbone, so ``train.freeze_stages`` and ``optim.backbone_lr_mult`` work on it, plus
``layer_id`` for layer-wise learning-rate decay.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.two_stream import NUM_MODALITIES, as_modality_tensor, route_by_modality
from vireid.modeling.pretrained import PretrainedSpec, create_timm_model
from vireid.modeling.registries import BACKBONES

#: TransReID's sie_xishu (``SIE_COE: 3.0`` in every configs/*/vit_transreid*.yml).
DEFAULT_SIE_WEIGHT = 3.0


def exact_sizes(size: int, patch: int, stride: int) -> tuple[int | None, int]:
    """The exact image sizes (``patch + k * stride``) just below (None if none) and at or above ``size``."""
    if size <= patch:
        return None, patch
    k = (size - patch) // stride
    below = patch + k * stride
    above = below if below == size else below + stride
    return (below if below < size else None), above


def patch_grid(
    height: int, width: int, patch: int, stride: int, drop_remainder: bool = False
) -> tuple[int, int]:
    """Number of patch rows and columns of an ``height x width`` image; one sentence when the size is not exact."""
    for name, size in (("height", height), ("width", width)):
        if size < patch:
            raise ConfigError(
                f"input {name} {size} is smaller than one {patch}-pixel patch; use a {name} of at least {patch}"
            )
        rest = (size - patch) % stride
        if rest and not drop_remainder:
            below, above = exact_sizes(size, patch, stride)
            choices = f"{below} or {above}" if below is not None else f"{above}"
            raise ConfigError(
                f"input {name} {size} does not fit {patch}-pixel patches at stride {stride} (the last {rest} pixels "
                f"would never be seen); use a {name} of {choices} (patch + k x stride), or set "
                f"model.params.drop_remainder: true to drop them as TransReID does"
            )
    return (height - patch) // stride + 1, (width - patch) // stride + 1


class PatchEmbedStage(nn.Module):
    """Stage 0: the (overlapping) patch convolution of timm's ``PatchEmbed`` -> tokens ``[B, N, D]``."""

    def __init__(self, proj: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        self.proj = proj
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class TokenGrid(nn.Module):
    """Patch tokens ``[B, N, D]`` -> map ``[B, D, h, w]`` (what Grad-CAM hooks on: the last block's input)."""

    def __init__(self) -> None:
        super().__init__()
        self.grid: tuple[int, int] = (1, 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)


def _check_vit_name(arch: str) -> None:
    """One sentence when ``arch`` is not a timm Vision Transformer (before timm sees ViT-only arguments)."""
    import timm

    name = arch.split(".")[0]
    if not timm.is_model(name):
        raise ConfigError(f"backbone {arch!r} is not a timm model name; use a timm ViT such as vit_small_patch16_224")
    module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    if module != "vision_transformer":
        raise ConfigError(
            f"backbone {arch!r} (timm module {module!r}) is not a VisionTransformer; use a timm ViT such as "
            "vit_small_patch16_224 or vit_base_patch16_224"
        )


def _is_exporting() -> bool:
    return bool(torch.compiler.is_exporting() or torch.jit.is_tracing())


@BACKBONES.register("vit")
class ViTBackbone(nn.Module):
    """A timm ViT with overlapping patches, interpolated position embeddings, SIE and a two-stream split.

    Args:
        arch: timm ViT name (``vit_small_patch16_224``, ``vit_base_patch16_224``, any timm
            ``VisionTransformer`` with a class token; a tag such as ``vit_base_patch16_224.augreg_in21k``
            picks its pretrained weights).
        img_size: (height, width) of the inputs.
        stride: patch stride (None = the patch size, no overlap; TransReID: 12 for 16-pixel patches).
        drop_remainder: accept sizes whose last pixels no patch covers (TransReID at 256 x 128, s = 12).
        specific_stages: 0..depth leading stages (patch embedding, then blocks) copied per modality.
        pretrained: see :mod:`vireid.modeling.pretrained` (weights of the 224 x 224 model).
        sie_modality: add the modality SIE.
        sie_cameras: number of camera SIE rows (0 = no camera SIE); ``forward`` then needs ``cameras``.
        sie_weight: TransReID's ``sie_xishu``.
        drop_path_rate, attn_drop_rate, pos_drop_rate: timm's stochastic depth and dropouts
            (TransReID/PMT: drop path 0.1; PMT: dropout 0.03).
        vit_kwargs: further keyword arguments of ``timm.create_model`` (e.g. ``embed_dim``, ``depth``,
            ``num_heads``, ``patch_size`` for a tiny ViT).
    """

    #: freeze_stages / backbone_lr_mult find it like a TwoStreamBackbone (vireid.engine.transfer)
    stage_structured = True

    def __init__(
        self,
        arch: str = "vit_small_patch16_224",
        img_size: Sequence[int] = (256, 128),
        stride: int | None = None,
        drop_remainder: bool = False,
        specific_stages: int = 0,
        pretrained: PretrainedSpec = None,
        sie_modality: bool = True,
        sie_cameras: int = 0,
        sie_weight: float = DEFAULT_SIE_WEIGHT,
        drop_path_rate: float = 0.1,
        attn_drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        vit_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(img_size) != 2:
            raise ConfigError(f"img_size must be [height, width], got {img_size!r}")
        if int(sie_cameras) < 0:
            raise ConfigError(f"sie_cameras must be 0 (no camera embedding) or the number of cameras, got {sie_cameras!r}")
        if float(sie_weight) < 0:
            raise ConfigError(f"sie_weight must be >= 0 (TransReID uses 3.0), got {sie_weight!r}")
        kwargs = dict(vit_kwargs or {})
        _check_vit_name(arch)
        model = create_timm_model(
            arch, pretrained, num_classes=0, drop_path_rate=float(drop_path_rate),
            attn_drop_rate=float(attn_drop_rate), pos_drop_rate=float(pos_drop_rate), **kwargs,
        )
        if type(model).__name__ != "VisionTransformer":
            raise ConfigError(
                f"backbone {arch!r} is a timm {type(model).__name__}, not a VisionTransformer; use a timm ViT such as "
                "vit_small_patch16_224 or vit_base_patch16_224"
            )
        if getattr(model, "cls_token", None) is None:
            raise ConfigError(f"timm model {arch!r} has no class token; the ViT backbone needs one (e.g. vit_base_patch16_224)")
        proj = model.patch_embed.proj
        self.arch = arch
        self.patch = int(proj.kernel_size[0])
        self.stride = self.patch if stride is None else int(stride)
        if not 1 <= self.stride <= self.patch:
            raise ConfigError(f"stride must be between 1 and the patch size {self.patch}, got {stride!r}")
        self.drop_remainder = bool(drop_remainder)
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.grid_size = patch_grid(*self.img_size, self.patch, self.stride, self.drop_remainder)
        proj.stride = (self.stride, self.stride)
        self.embed_dim = int(model.embed_dim)
        self.out_channels = self.embed_dim
        self.depth = len(model.blocks)
        if not 0 <= int(specific_stages) <= self.depth:
            raise ConfigError(
                f"specific_stages must be between 0 and {self.depth} for {arch!r} (stage 0 = patch embedding, "
                f"stage k = block k-1; the last block stays shared), got {specific_stages!r}"
            )
        self.specific_stages = int(specific_stages)
        # prefix tokens (class token, register tokens of *_reg ViTs) and the position embedding
        self.cls_token = model.cls_token
        self.reg_token = getattr(model, "reg_token", None)
        self.num_prefix = int(model.num_prefix_tokens)
        self.no_embed_class = bool(getattr(model, "no_embed_class", False))
        old_grid = tuple(int(g) for g in model.patch_embed.grid_size)
        self.pos_embed = nn.Parameter(self._resample(model.pos_embed.detach(), self.grid_size, old_grid))
        self.pos_drop = model.pos_drop
        self.norm_pre = model.norm_pre
        self.norm = model.norm
        # SIE (TransReID Eq. 5)
        self.sie_weight = float(sie_weight)
        self.sie_modality = bool(sie_modality)
        self.sie_cameras = int(sie_cameras)
        self.modality_embed = nn.Parameter(torch.zeros(NUM_MODALITIES, 1, self.embed_dim)) if self.sie_modality else None
        self.camera_embed = nn.Parameter(torch.zeros(self.sie_cameras, 1, self.embed_dim)) if self.sie_cameras else None
        for table in (self.modality_embed, self.camera_embed):
            if table is not None:
                nn.init.trunc_normal_(table, std=0.02)
        # stages: 0 = patch embedding, k = block k-1
        stages: list[nn.Module] = [PatchEmbedStage(proj, model.patch_embed.norm), *model.blocks]
        specific = stages[: self.specific_stages]
        self.modality_branches = nn.ModuleList(
            [nn.Sequential(*(copy.deepcopy(m) for m in specific)) for _ in range(NUM_MODALITIES)] if specific else []
        )
        self.shared_stages = nn.ModuleList(stages[self.specific_stages :])
        self.token_grid = TokenGrid()
        self.token_grid.grid = self.grid_size

    # ------------------------------------------------------------------ helpers
    def _resample(self, pos: torch.Tensor, new: tuple[int, int], old: tuple[int, int]) -> torch.Tensor:
        from timm.layers import resample_abs_pos_embed

        if tuple(new) == tuple(old):
            return pos.clone()
        prefix = 0 if self.no_embed_class else self.num_prefix
        return resample_abs_pos_embed(pos, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a patch grid (the built one, or resampled for another input size)."""
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        return self._resample(self.pos_embed, grid, self.grid_size)

    def _grid_of(self, images: torch.Tensor) -> tuple[int, int]:
        return patch_grid(int(images.shape[-2]), int(images.shape[-1]), self.patch, self.stride, self.drop_remainder)

    def assemble(
        self, patches: torch.Tensor, grid: tuple[int, int], modalities: torch.Tensor, cameras: torch.Tensor | None
    ) -> torch.Tensor:
        """Patch tokens -> prefix tokens + patches, with position embedding and SIE added."""
        b = patches.shape[0]
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(b, -1, -1))
        pos = self.pos_embed_for(grid)
        if self.no_embed_class:
            x = torch.cat([*prefix, patches + pos], dim=1)
        else:
            x = torch.cat([*prefix, patches], dim=1) + pos
        side = None
        if self.modality_embed is not None:
            side = self.modality_embed[modalities]
        if self.camera_embed is not None:
            if cameras is None:
                raise ConfigError(
                    f"this ViT has a camera side-information embedding (sie_cameras: {self.sie_cameras}) but got no "
                    "camera ids; add data.extras: {cameras: dataset} to the config (or pass cameras=[B] ids to the "
                    "model), or set sie_cameras: 0"
                )
            cams = torch.as_tensor(cameras, device=patches.device).long()
            # the range is checked once per loader (check_cameras, via the model's check_extras), not here: a
            # .max() per forward would synchronise an accelerator. On the CPU an out-of-range row still stops
            # with the sentence (IndexError is raised at once there; nothing is read to find it).
            try:
                cam = self.camera_embed[cams]
            except IndexError:
                self.check_cameras(cams)
                raise
            side = cam if side is None else side + cam
        if side is not None:
            x = x + self.sie_weight * side
        return self.norm_pre(self.pos_drop(x))

    def check_cameras(self, cameras: torch.Tensor) -> None:
        """One sentence when a camera number is outside the camera SIE table (``0 .. sie_cameras - 1``).

        Called once for a whole loader's ``cameras`` side input (:meth:`ViTReID.check_extras
        <vireid.modeling.methods.vit.ViTReID.check_extras>`, which the trainer and feature extraction call),
        so ``forward`` reads no value back from the device."""
        if self.camera_embed is None:
            return
        cams = torch.as_tensor(cameras).long()
        if not cams.numel():
            return
        low, high = int(cams.min()), int(cams.max())
        if low < 0 or high >= self.sie_cameras:
            bad = high if high >= self.sie_cameras else low
            raise ConfigError(f"camera number {bad} is outside this ViT's camera embedding (sie_cameras: "
                              f"{self.sie_cameras}, numbers 0-{self.sie_cameras - 1}); set sie_cameras above the "
                              "largest camera number")

    # ------------------------------------------------------------------ forward
    def _branch_forward(
        self, stages: Sequence[nn.Module], images: torch.Tensor, grid: tuple[int, int],
        modalities: torch.Tensor, cameras: torch.Tensor | None,
    ) -> torch.Tensor:
        x = self.assemble(stages[0](images), grid, modalities, cameras)
        for stage in stages[1:]:
            x = stage(x)
        return x

    def forward_specific(
        self, images: torch.Tensor, modalities: torch.Tensor | int, cameras: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images -> tokens after the modality-specific stages (or after the shared patch embedding)."""
        grid = self._grid_of(images)
        codes = as_modality_tensor(modalities, images.shape[0], images.device)
        if self.specific_stages == 0:
            return self._branch_forward([self.shared_stages[0]], images, grid, codes, cameras)
        branches = self.modality_branches
        if _is_exporting():  # no data-dependent control flow: both branches, per-sample selection
            vis = self._branch_forward(list(branches[0]), images, grid, codes, cameras)
            ir = self._branch_forward(list(branches[1]), images, grid, codes, cameras)
            return torch.where((codes == 0).view(-1, 1, 1), vis, ir)

        def run(code: int, index: torch.Tensor | None) -> torch.Tensor:
            if index is None:
                return self._branch_forward(list(branches[code]), images, grid, codes, cameras)
            cams = None if cameras is None else torch.as_tensor(cameras, device=images.device).index_select(0, index)
            return self._branch_forward(list(branches[code]), images.index_select(0, index), grid,
                                        codes.index_select(0, index), cams)

        return route_by_modality(codes, run)

    def first_shared_block(self) -> int:
        """Index into ``shared_stages`` of the first shared block."""
        return 1 if self.specific_stages == 0 else 0

    def forward_tokens(
        self, images: torch.Tensor, modalities: torch.Tensor | int, cameras: torch.Tensor | None = None,
        skip_last: bool = False,
    ) -> torch.Tensor:
        """Tokens ``[B, prefix + N, D]``: after every block and the final norm, or (``skip_last``) the
        input of the last block (the JPM of :class:`~vireid.modeling.methods.vit.ViTReID` runs it itself)."""
        x = self.forward_specific(images, modalities, cameras)
        blocks = list(self.shared_stages)[self.first_shared_block():]
        for block in blocks[:-1]:
            x = block(x)
        x = self.through_grid(x, self._grid_of(images))
        if skip_last:
            return x
        return self.norm(blocks[-1](x))

    def through_grid(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Pass the patch tokens through :class:`TokenGrid` and back (an identity; Grad-CAM's hook point)."""
        self.token_grid.grid = grid
        patches = tokens[:, self.num_prefix :]
        spatial = self.token_grid(patches)
        return torch.cat([tokens[:, : self.num_prefix], spatial.flatten(2).transpose(1, 2)], dim=1)

    def cam_attention(self, modality: int) -> dict[str, object]:
        """Attention modules, in forward order, that tokens of ``modality`` pass (stage k >= 1 = block k-1 of the
        modality's branch while ``k < specific_stages``, then the shared blocks), the number of prefix tokens,
        the patch size and stride: the input of attention rollout (:mod:`vireid.viz.rollout`)."""
        specific = list(self.modality_branches[modality])[1:] if self.specific_stages else []
        shared = list(self.shared_stages)[self.first_shared_block():]
        return {"attentions": [block.attn for block in (*specific, *shared)], "prefix": self.num_prefix,
                "patch": self.patch, "stride": self.stride}

    @property
    def last_block(self) -> nn.Module:
        return self.shared_stages[-1]

    def forward(self, images: torch.Tensor, modalities: torch.Tensor | int, cameras: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``[B,3,H,W]`` + modality codes -> the normalised class token ``[B, D]``."""
        return self.forward_tokens(images, modalities, cameras)[:, 0]

    # ------------------------------------------------------------------ layer ids (lr decay)
    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` (relative to this module) for layer-wise lr decay: 0 = embeddings
        (patch embedding, tokens, position, SIE), k = block k-1 (1..depth), depth + 1 = the final norm."""
        if name.startswith("modality_branches."):
            stage = int(name.split(".")[2])
            return stage  # stage 0 = patch embedding (layer 0), stage k = block k-1 (layer k)
        if name.startswith("shared_stages."):
            return int(name.split(".")[1]) + self.specific_stages
        if name.startswith("norm."):
            return self.depth + 1
        return 0

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, img_size={self.img_size}, patch={self.patch}, stride={self.stride}, "
                f"grid={self.grid_size}, specific_stages={self.specific_stages}, sie_modality={self.sie_modality}, "
                f"sie_cameras={self.sie_cameras}, sie_weight={self.sie_weight}")


__all__ = ["DEFAULT_SIE_WEIGHT", "PatchEmbedStage", "TokenGrid", "ViTBackbone", "exact_sizes", "patch_grid"]
