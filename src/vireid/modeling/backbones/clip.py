"""CLIP image (and text) encoders through open_clip, as vireid backbones.

open_clip (``pip install 'vireid[clip]'``, the ``open-clip-torch`` package) builds the CLIP
models of Radford et al. (ICML 2021) and their open re-trainings. vireid uses them the way
CLIP-ReID (Li et al., AAAI 2023; reference repository Syliz517/CLIP-ReID,
``model/make_model_clipreid.py``) does:

- **ViT** models (``ViT-B-16``, ``ViT-B-32``, ``ViT-L-14``, ...): the image goes through the patch
  embedding, the class token and the transformer; ``features`` is the class token after
  ``ln_post`` (768-d for ViT-B/16, CLIP-ReID's ``img_feature``), ``projected`` is that token times
  CLIP's projection (512-d, ``img_feature_proj``). The model is built at the training size
  (``img_size``, e.g. 256x128) and open_clip resizes the pretrained position embeddings to that
  grid when it loads the weights; the size must be a multiple of the patch size.
- **ModifiedResNet** models (``RN50``, ``RN101``, ...): ``features`` is the average-pooled last
  feature map (2048-d for RN50, CLIP-ReID's ``img_feature``), ``projected`` the output of CLIP's
  attention pooling (1024-d, ``img_feature_proj``). The attention pool's position embedding
  (a square grid for 224x224) is resized bicubically to ``img_size / 32`` after the weights are
  loaded; the size must be a multiple of 32.

Two streams: the encoder is **shared** by both modalities (as in CLIP-ReID and CSDN); the
modality enters through the text side instead (modality-aware prompts,
:mod:`vireid.modeling.methods.clip_reid`). ``forward(images, modalities)`` takes the codes for
the common backbone signature and does not use them.

Weights (``pretrained``):

- ``null``: random initialisation;
- ``"openclip:<model>/<tag>"``, e.g. ``openclip:ViT-B-16/openai``, ``openclip:RN50/openai``: the
  weights open_clip publishes under that tag. They come from the Hugging Face cache; when they
  are not cached they download only where downloading is allowed (``HF_HUB_OFFLINE`` unset, a
  connected machine) — with ``HF_HUB_OFFLINE=1`` and no cached file, building stops with one
  sentence saying how to get the file. The OpenAI weights need QuickGELU, which is switched on
  for them (``quick_gelu: null`` = what the tag asks for);
- a path to a local file holding an open_clip / OpenAI CLIP state_dict (e.g. the
  ``open_clip_pytorch_model.bin`` of a tag downloaded elsewhere). It is read with
  ``weights_only=True`` (no code runs). Set ``quick_gelu: true`` for OpenAI-trained weights.

Tiny encoders for tests and CPU demos (random initialisation only, no download, built from a
config dict the way open_clip builds any CLIP): ``tiny-vit`` (2 blocks of width 64, patch 8) and
``tiny-rn`` (a ModifiedResNet with one block per stage, width 16). Their text towers have one
block of width 32 and a 16-token context.

``import open_clip`` must follow vireid's torchvision guard (:mod:`vireid._compat`); this module
imports open_clip lazily, only when a CLIP model is built, after the guard.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.backbones.vit import TokenGrid
from vireid.modeling.registries import BACKBONES

#: Prefix of open_clip weight names in configs: ``openclip:<model>/<tag>``.
OPENCLIP_PREFIX = "openclip:"

_TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
#: vireid's own tiny CLIP configurations (embed_dim, vision_cfg, text_cfg), random initialisation only.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-vit": {"embed_dim": 32, "vision_cfg": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8,
                                                 "mlp_ratio": 2.0}, "text_cfg": _TINY_TEXT},
    "tiny-rn": {"embed_dim": 32, "vision_cfg": {"layers": (1, 1, 1, 1), "width": 16, "head_width": 16,
                                                "image_size": 64}, "text_cfg": _TINY_TEXT},
}


def import_open_clip() -> Any:
    """``open_clip``, imported after vireid's torchvision guard; a clear sentence when it is missing."""
    from vireid._compat import ensure_torchvision

    ensure_torchvision()  # open_clip imports torchvision, which needs the guard on CPU-only torch
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            "CLIP models need open_clip; install it with pip install 'vireid[clip]' (the open-clip-torch package)"
        ) from exc
    return open_clip


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_clip_model(name: str) -> str:
    """``name`` if open_clip (or vireid's tiny set) knows it, else a :class:`ConfigError` naming the choices."""
    if name in TINY_CONFIGS:
        return name
    open_clip = import_open_clip()
    models = list(open_clip.list_models())
    if name not in models:
        clip_like = [m for m in models if m.startswith(("RN", "ViT-"))]
        raise ConfigError(
            f"clip_model {name!r} is not an open_clip model{_suggest(name, models)}; choose one of "
            f"{', '.join(clip_like)} (open_clip.list_models() lists all {len(models)}) or vireid's "
            f"{', '.join(TINY_CONFIGS)}"
        )
    return name


def parse_clip_pretrained(spec: object, clip_model: str) -> tuple[str, str | None]:
    """Classify a ``pretrained`` value: ``("none", None)``, ``("tag", tag)`` or ``("file", path)``.

    An ``openclip:<model>/<tag>`` name must name ``clip_model`` and one of its open_clip tags.
    """
    if spec is None or spec is False or (isinstance(spec, str) and spec.strip().lower() in {"", "none", "null", "random"}):
        return "none", None
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"pretrained must be null, 'openclip:<model>/<tag>' or a weights file path, got {spec!r}")
    text = str(spec).strip()
    if text.startswith(OPENCLIP_PREFIX):
        body = text[len(OPENCLIP_PREFIX):]
        if "/" not in body:
            raise ConfigError(f"pretrained {text!r} must read openclip:<model>/<tag>, e.g. openclip:ViT-B-16/openai")
        model, tag = body.split("/", 1)
        if clip_model in TINY_CONFIGS:
            raise ConfigError(f"clip_model {clip_model!r} is vireid's tiny test encoder and has no pretrained weights; "
                              "set pretrained: null or choose an open_clip model such as ViT-B-16")
        check_clip_model(model)
        if model != clip_model:
            raise ConfigError(f"pretrained {text!r} is for {model!r} but clip_model is {clip_model!r}; "
                              f"set clip_model: {model} or use openclip:{clip_model}/<tag>")
        open_clip = import_open_clip()
        tags = list(open_clip.list_pretrained_tags_by_model(model))
        if tag not in tags:
            listed = ", ".join(tags) if tags else "none (open_clip publishes no weights for it)"
            raise ConfigError(f"open_clip has no weights {tag!r} for {model}{_suggest(tag, tags)}; its tags are {listed}")
        return "tag", tag
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ConfigError(f"pretrained {text!r} is neither openclip:<model>/<tag> (e.g. openclip:ViT-B-16/openai) "
                          "nor an existing weights file; fix the path or set it to null")
    return "file", path


def resolve_tag_file(clip_model: str, tag: str) -> str:
    """The local file of open_clip's weights ``clip_model/tag``: the cached copy, or a download when allowed."""
    open_clip = import_open_clip()
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    cfg = get_pretrained_cfg(clip_model, tag)
    name = f"{OPENCLIP_PREFIX}{clip_model}/{tag}"
    try:
        path = download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001 - network, missing cache entry, hub errors
        if _hub_offline():
            raise ConfigError(
                f"the weights {name} are not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading; "
                "build the model once on a connected machine without HF_HUB_OFFLINE (it caches the file), "
                "or download its open_clip_pytorch_model.bin and set pretrained to that file's path"
            ) from exc
        raise ConfigError(f"could not download {name} ({type(exc).__name__}: {exc}); check the connection, "
                          "or set pretrained to a local weights file") from exc
    del open_clip
    if not path:
        raise ConfigError(f"open_clip names no file for {name}; set pretrained to a local weights file")
    return str(path)


def _resize_attnpool(visual: nn.Module, grid: tuple[int, int]) -> None:
    """Resize a ModifiedResNet attention pool's position embedding (1 + s*s rows) to ``grid`` (bicubic)."""
    pos = visual.attnpool.positional_embedding.data
    side = int(round((pos.shape[0] - 1) ** 0.5))
    if (side, side) == grid:
        return
    cls, spatial = pos[:1], pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial.float(), size=grid, mode="bicubic", align_corners=False)
    spatial = spatial.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
    visual.attnpool.positional_embedding = nn.Parameter(torch.cat([cls, spatial], 0))


def is_vit(visual: nn.Module) -> bool:
    return hasattr(visual, "class_embedding") and hasattr(visual, "conv1") and hasattr(visual, "transformer")


def build_clip(clip_model: str, pretrained: object = None, img_size: Sequence[int] = (256, 128),
               quick_gelu: bool | None = None) -> nn.Module:
    """An open_clip ``CLIP`` for ``clip_model`` at input size ``img_size`` with the weights ``pretrained``."""
    if len(img_size) != 2:
        raise ConfigError(f"img_size must be [height, width], got {img_size!r}")
    size = (int(img_size[0]), int(img_size[1]))
    check_clip_model(clip_model)
    kind, value = parse_clip_pretrained(pretrained, clip_model)
    open_clip = import_open_clip()
    if clip_model in TINY_CONFIGS:
        spec = TINY_CONFIGS[clip_model]
        vision = dict(spec["vision_cfg"])
        if not isinstance(vision["layers"], tuple):
            vision["image_size"] = size
        model = open_clip.CLIP(spec["embed_dim"], vision, dict(spec["text_cfg"]), quick_gelu=bool(quick_gelu))
        if kind == "file":  # open_clip's loader: weights_only torch.load, position embeddings resized to the grid
            try:
                open_clip.load_checkpoint(model, str(value), weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a foreign or broken weights file
                raise ConfigError(f"cannot load CLIP weights {str(value)!r} into {clip_model} ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]}); the file must be a state_dict of that model") from exc
    else:
        cfg = open_clip.get_model_config(clip_model) or {}
        vit = not isinstance(cfg.get("vision_cfg", {}).get("layers"), (list, tuple))
        force_gelu = quick_gelu
        path = None
        if kind == "tag":
            if quick_gelu is None:
                from open_clip.pretrained import get_pretrained_cfg

                force_gelu = bool(get_pretrained_cfg(clip_model, str(value)).get("quick_gelu", False))
            path = resolve_tag_file(clip_model, str(value))
        elif kind == "file":
            path = value
        kwargs: dict[str, Any] = {"force_quick_gelu": bool(force_gelu)}
        if vit:
            kwargs["force_image_size"] = size
        try:
            model = open_clip.create_model(clip_model, pretrained=path, **kwargs)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a foreign or broken weights file
            raise ConfigError(f"cannot load CLIP weights {pretrained!r} into {clip_model} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}); the file must be an open_clip/OpenAI state_dict of that model") from exc
    visual = model.visual
    if is_vit(visual):
        patch = visual.conv1.kernel_size
        if size[0] % patch[0] or size[1] % patch[1]:
            raise ConfigError(f"input size {size[0]}x{size[1]} is not divisible by {clip_model}'s patch size "
                              f"{patch[0]}x{patch[1]}; use a multiple, e.g. {256 - 256 % patch[0]}x{128 - 128 % patch[1]}")
    else:
        if size[0] % 32 or size[1] % 32:
            raise ConfigError(f"input size {size[0]}x{size[1]} is not divisible by 32, the output stride of "
                              f"{clip_model}; use a multiple of 32, e.g. 256x128")
        _resize_attnpool(visual, (size[0] // 32, size[1] // 32))
    return model


class ClipImageEncoder(nn.Module):
    """A CLIP image tower returning ``(features, projected)`` (see the module docstring).

    Args:
        clip: an open_clip ``CLIP`` model (from :func:`build_clip`); only its ``visual`` is kept.
        clip_model: the name it was built from (for messages and ``extra_repr``).
    """

    def __init__(self, clip: nn.Module, clip_model: str = "") -> None:
        super().__init__()
        self.clip_model = clip_model
        self.visual = clip.visual
        self.vit = is_vit(self.visual)
        if self.vit:
            self.out_channels = int(self.visual.class_embedding.shape[-1])
            self.proj_dim = int(self.visual.proj.shape[1])
            self.patch = tuple(int(k) for k in self.visual.conv1.kernel_size)
            self.token_grid = TokenGrid()  # Grad-CAM's hook point: the patch tokens entering the last block
        else:
            self.out_channels = int(self.visual.attnpool.k_proj.in_features)
            self.proj_dim = int(self.visual.attnpool.c_proj.out_features)

    def forward(self, x: torch.Tensor, modalities: torch.Tensor | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B,3,H,W]`` -> ``(features [B, out_channels], projected [B, proj_dim])``; one shared encoder."""
        v = self.visual
        if self.vit:
            tokens = v.conv1(x).flatten(2).transpose(1, 2)  # [B, grid, width]
            cls = v.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
            tokens = torch.cat([cls, tokens], dim=1) + v.positional_embedding.to(tokens.dtype)
            tokens = self._transformer(v.ln_pre(tokens), (x.shape[-2] // self.patch[0], x.shape[-1] // self.patch[1]))
            features = v.ln_post(tokens[:, 0])
            return features, features @ v.proj.to(features.dtype)
        fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
        return fmap.mean(dim=(2, 3)), v.attnpool(fmap)

    def _transformer(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """open_clip's ``Transformer.forward`` (the blocks in order, no mask for images) with the patch tokens
        passed through :class:`~vireid.modeling.backbones.vit.TokenGrid` (an identity) before the last block."""
        transformer = self.visual.transformer
        batch_first = getattr(transformer, "batch_first", True)
        blocks = list(transformer.resblocks)
        for block in blocks[:-1]:
            tokens = block(tokens) if batch_first else block(tokens.transpose(0, 1)).transpose(0, 1)
        self.token_grid.grid = grid
        spatial = self.token_grid(tokens[:, 1:])
        tokens = torch.cat([tokens[:, :1], spatial.flatten(2).transpose(1, 2)], dim=1)
        last = blocks[-1]
        return last(tokens) if batch_first else last(tokens.transpose(0, 1)).transpose(0, 1)

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's layer: for ViT towers the patch tokens entering the last block (as ``[B, D, h, w]``);
        for ModifiedResNets the last feature stage (``layer4``), the map CLIP's attention pool reads."""
        return self.token_grid if self.vit else self.visual.layer4

    def cam_attention(self) -> dict[str, object] | None:
        """Input of attention rollout (:mod:`vireid.viz.rollout`) for ViT towers: every block's
        ``nn.MultiheadAttention``, one class token, the patch size as size and stride; None for ModifiedResNets."""
        if not self.vit:
            return None
        return {"attentions": [block.attn for block in self.visual.transformer.resblocks], "prefix": 1,
                "patch": self.patch[0], "stride": self.patch[0]}

    def extra_repr(self) -> str:
        kind = "ViT" if self.vit else "ModifiedResNet"
        return f"clip_model={self.clip_model!r} ({kind}), out_channels={self.out_channels}, proj_dim={self.proj_dim}, shared"


@BACKBONES.register("clip")
def clip_image_encoder(clip_model: str = "ViT-B-16", pretrained: object = None, img_size: Sequence[int] = (256, 128),
                       quick_gelu: bool | None = None) -> ClipImageEncoder:
    """The image tower of :func:`build_clip` as a backbone (registered name ``clip``)."""
    return ClipImageEncoder(build_clip(clip_model, pretrained, img_size, quick_gelu), clip_model)


class ClipTextEncoder(nn.Module):
    """CLIP's text tower applied to token *embeddings* (so learnable tokens can be spliced in).

    Mirrors open_clip's ``CLIP.encode_text`` after the token lookup: position embedding, causal
    transformer, ``ln_final``, the feature at the end-of-text token, text projection (CLIP-ReID's
    ``TextEncoder``).
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        if not all(hasattr(clip, name) for name in ("token_embedding", "positional_embedding", "transformer", "attn_mask")):
            raise ConfigError(f"{type(clip).__name__} has a custom text tower; learned prompts need an open_clip model with "
                              "CLIP's own text transformer, such as RN50, ViT-B-16 or ViT-L-14")
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.context_length = int(clip.context_length)
        self.width = int(self.token_embedding.weight.shape[1])

    def forward(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """``embeddings [B, L, width]`` and the end-of-text position per row ``[B]`` -> text features ``[B, D]``."""
        x = embeddings + self.positional_embedding.to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection.to(x.dtype)


def clip_tokenizer(clip_model: str, context_length: int) -> Any:
    """open_clip's tokenizer for ``clip_model`` (the bundled CLIP BPE vocabulary: no download)."""
    open_clip = import_open_clip()
    from open_clip.tokenizer import SimpleTokenizer

    if clip_model in TINY_CONFIGS:
        return SimpleTokenizer(context_length=context_length)
    try:
        tokenizer = open_clip.get_tokenizer(clip_model, context_length=context_length)
    except Exception as exc:  # noqa: BLE001 - models with a Hugging Face tokenizer need the hub
        raise ConfigError(f"the text tokenizer of {clip_model} could not be loaded ({type(exc).__name__}); models with "
                          "a Hugging Face tokenizer need it cached first, or use a CLIP-BPE model such as ViT-B-16 or RN50") from exc
    if not hasattr(tokenizer, "encode"):
        raise ConfigError(f"{clip_model}'s tokenizer is not CLIP's BPE tokenizer, which the learned prompts need; "
                          "use a model trained with it, such as ViT-B-16, ViT-L-14 or RN50")
    return tokenizer


__all__ = [
    "OPENCLIP_PREFIX",
    "TINY_CONFIGS",
    "ClipImageEncoder",
    "ClipTextEncoder",
    "build_clip",
    "check_clip_model",
    "clip_image_encoder",
    "clip_tokenizer",
    "import_open_clip",
    "parse_clip_pretrained",
    "resolve_tag_file",
]
