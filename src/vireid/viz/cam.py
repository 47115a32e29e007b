"""Class-activation heatmaps over person images, visible and infrared (DFW+SLN Fig. 1), with the
grad-cam library (``pytorch_grad_cam``).

A re-identification model has no class scores at test time: its evaluation forward takes
``(images, modalities)`` and returns an embedding. Two adaptations make Grad-CAM apply:

* :class:`EmbeddingModel` wraps the model as a single-input module (the modality codes, and the side
  inputs such as joints for pose-guided models, are held by the wrapper), which is what grad-cam calls;
* the explained scalar ("target") is a function of the embedding ``f`` of the image:
  ``"similarity"`` (default) -- the cosine similarity ``cos(f, r)`` to a reference embedding ``r``,
  here the embedding of the *same identity's image in the other modality* (held fixed), so the map
  shows which regions make the visible and the infrared image of a person match; or ``"norm"`` --
  ``||f||_2``, the regions that drive the embedding as a whole (used when no partner image exists).

Grad-CAM (Selvaraju et al., ICCV 2017) weights the target layer's activation maps ``A_k`` by the
spatial mean of the target's gradient, ``w_k = mean_ij d y / d A_k(i, j)``, and shows
``ReLU(sum_k w_k A_k)`` upsampled to the image and scaled to 0..1 per image.

Target layer: the **last feature stage of the backbone** -- the output of the final stage of the
:class:`~vireid.modeling.backbones.two_stream.TwoStreamBackbone` (``backbone.shared_stages[-1]``,
or the modality's own last stage when nothing is shared), i.e. the feature map that pooling turns
into the embedding; for the DFW+SLN paper's SLN, whose last stage is N parallel copies, each copy is a
target layer and the maps are averaged. It is the deepest map that still has a spatial layout (with last stride 1 it
is 1/16 of the input, 18 x 9 at 288 x 144), the usual choice for Grad-CAM and the layer whose
responses the papers' heatmaps show. A method can name another one with a
``cam_target_layer(modality)`` method; ``layer="dotted.module.name"`` overrides both. For other
models the last module whose output is a 4-D map with more than one position is used.

Transformers (the TransReID-style ViT, CLIP's ViT encoders) are explained by **attention rollout**
(:mod:`vireid.viz.rollout`) by default: ``method="auto"`` picks rollout for a model with a
``cam_attention(modality)`` method and Grad-CAM otherwise; ``method="gradcam"`` asks for Grad-CAM
anyway (on a ViT: the patch tokens entering the last block, reshaped to the patch grid), and
``method="rollout"`` refuses, in one sentence, models without attention. Naming a ``layer`` means
Grad-CAM.

Layout of :func:`plot_cams` (Pillow, exact pixel size, see :func:`cam_grid_size`): items in rows of
``columns``; an item is its label, the image and, below it, the heatmap blended over the image (JET
colour map, grad-cam's ``show_cam_on_image``). :func:`cams_for_run` puts, for each chosen identity,
the visible and the infrared image side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE
from vireid.errors import VireidError
from vireid.viz._common import BLACK, WHITE, Output, fit_text, font, pick_cross_modality_ids, save_image
from vireid.viz.rollout import CAM_METHODS, has_rollout, rollout_cams

PAD = 6
FRAME = 2
TEXT_HEIGHT = 16
DEFAULT_THUMB = (160, 80)
TARGETS = ("similarity", "norm")
_FRAME_COLOURS = {MODALITY_CODE[VISIBLE]: (230, 140, 20), MODALITY_CODE[INFRARED]: (90, 90, 90)}


class EmbeddingModel(nn.Module):
    """``images -> model(images, modalities, **extras)``: a vireid model as the single-input module grad-cam calls."""

    def __init__(self, model: nn.Module, modalities: torch.Tensor, extras: dict | None = None) -> None:
        super().__init__()
        self.model = model
        self.modalities = modalities
        self.extras = extras or {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, self.modalities, **self.extras)


class EmbeddingNormTarget:
    """Grad-CAM target ``||f||_2`` of one embedding ``f``."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.float().norm()


class SimilarityTarget:
    """Grad-CAM target ``cos(f, r)``: cosine similarity of the embedding ``f`` to a fixed reference ``r``."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.reference = nn.functional.normalize(reference.detach().float().flatten(), dim=0)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        ref = self.reference.to(output.device)
        return nn.functional.normalize(output.float().flatten(), dim=0) @ ref


def _last_spatial_module(model: nn.Module, images: torch.Tensor, modalities: torch.Tensor, extras: dict) -> nn.Module:
    """The module whose forward finished last with a 4-D output of more than one position (fallback)."""
    found: list[nn.Module] = []
    hooks = []

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
            found.append(module)

    for _name, module in model.named_modules():
        if module is not model:
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(images[:1], modalities[:1], **{k: v[:1] for k, v in extras.items()})
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise VireidError(f"cannot find a feature map to explain in {type(model).__name__}; pass --layer MODULE_NAME")
    return found[-1]


def target_layers(model: nn.Module, modality: int, layer: str | nn.Module | None = None) -> list[nn.Module] | None:
    """The layer(s) explained for images of ``modality`` (see the module docstring); None = find by a forward pass.

    A last stage made of parallel copies whose outputs are stacked (the DFW+SLN paper's SLN: ``branches``,
    ``[N, B, C, h, w]``) gives one layer per copy; grad-cam averages their maps.
    """
    if isinstance(layer, nn.Module):
        chosen = layer
    elif isinstance(layer, str):
        try:
            chosen = model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][:12]
            raise VireidError(f"the model has no module {layer!r}; names look like {', '.join(names)}, ...") from None
    elif hasattr(model, "cam_target_layer"):
        chosen = model.cam_target_layer(modality)
    else:
        from vireid.modeling.backbones.two_stream import TwoStreamBackbone

        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, TwoStreamBackbone):
            return None
        chosen = backbone.shared_stages[-1] if len(backbone.shared_stages) else backbone.modality_branches[modality][-1]
    branches = getattr(chosen, "branches", None)
    if isinstance(branches, nn.ModuleList) and len(branches):
        return list(branches)
    return [chosen]


def compute_cams(model: nn.Module, images: torch.Tensor, modalities: torch.Tensor | Sequence[int],
                 targets: Sequence[Any] | str = "norm", *, layer: str | nn.Module | None = None,
                 extras: dict | None = None) -> np.ndarray:
    """Grad-CAM maps ``[B, H, W]`` (float32, 0..1 per image) of normalised images ``[B, 3, H, W]``.

    ``targets`` is one grad-cam target per image (e.g. :class:`SimilarityTarget`) or ``"norm"``.
    Images whose modalities share a target layer are explained in one batched call.
    """
    from pytorch_grad_cam import GradCAM

    device = next(model.parameters()).device
    images = images.to(device)
    mods = torch.as_tensor(modalities, dtype=torch.long).to(device)
    extras = {k: torch.as_tensor(v).to(device) for k, v in (extras or {}).items()}
    n = images.shape[0]
    if isinstance(targets, str):
        if targets != "norm":
            raise VireidError(f"target {targets!r} needs reference embeddings; pass target objects or 'norm'")
        targets = [EmbeddingNormTarget() for _ in range(n)]
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images")
    groups: dict[tuple[int, ...], tuple[list[nn.Module], list[int]]] = {}
    for code in sorted(set(mods.tolist())):
        idx = torch.nonzero(mods == code).flatten().tolist()
        chosen = target_layers(model, code, layer)
        if chosen is None:
            chosen = [_last_spatial_module(model, images[idx], mods[idx], {k: v[idx] for k, v in extras.items()})]
        groups.setdefault(tuple(id(m) for m in chosen), (chosen, []))[1].extend(idx)
    out = np.zeros((n, images.shape[2], images.shape[3]), dtype=np.float32)
    was_training = model.training
    try:
        with torch.enable_grad():
            for chosen, idx in groups.values():
                index = torch.as_tensor(sorted(idx), device=device)
                wrapper = EmbeddingModel(model, mods[index], {k: v[index] for k, v in extras.items()})
                try:
                    with GradCAM(model=wrapper, target_layers=chosen) as cam:
                        maps = cam(input_tensor=images[index], targets=[targets[i] for i in index.tolist()])
                except ValueError as err:
                    raise VireidError(f"Grad-CAM cannot use the layer {type(chosen[0]).__name__} ({err}); "
                                      "pass --layer naming a module with a [B, C, h, w] output") from None
                out[index.cpu().numpy()] = maps
    finally:
        model.train(was_training)
    return out


def overlay(image: np.ndarray, cam: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """HxWx3 uint8 image with the 0..1 map ``cam`` (same HxW) blended over it (JET colours)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255.0, cam.astype(np.float32), use_rgb=True,
                             image_weight=1.0 - weight)


def cam_grid_size(num_items: int, columns: int, thumb: Sequence[int] = DEFAULT_THUMB) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of :func:`plot_cams`.

    ``width = PAD + columns * (cell_w + PAD)``, ``height = PAD + rows * (TEXT_HEIGHT + 2 * cell_h + 2 * PAD)``
    with ``rows = ceil(num_items / columns)`` and ``cell = thumb + 2 * FRAME``.
    """
    columns = max(1, min(int(columns), int(num_items)))
    rows = math.ceil(int(num_items) / columns)
    cell_h, cell_w = int(thumb[0]) + 2 * FRAME, int(thumb[1]) + 2 * FRAME
    return PAD + columns * (cell_w + PAD), PAD + rows * (TEXT_HEIGHT + 2 * cell_h + 2 * PAD)


def plot_cams(images: Sequence[np.ndarray], cams: np.ndarray | Sequence[np.ndarray], out: Output, *,
              labels: Sequence[str] | None = None, modalities: Sequence[int] | None = None, columns: int = 8,
              thumb: Sequence[int] = DEFAULT_THUMB) -> Path | None:
    """Image over heatmap for each item, ``columns`` items per row, as a PNG of :func:`cam_grid_size` pixels.

    ``images`` are HxWx3 uint8 arrays and ``cams`` their 0..1 maps of the same HxW; frames are
    orange for visible and grey for infrared images when ``modalities`` are given.
    """
    from PIL import Image, ImageDraw

    n = len(images)
    if n == 0 or len(cams) != n:
        raise ValueError(f"plot_cams needs one map per image, got {n} images and {len(cams)} maps")
    width, height = cam_grid_size(n, columns, thumb)
    columns = max(1, min(int(columns), n))
    th, tw = int(thumb[0]), int(thumb[1])
    cell_h, cell_w = th + 2 * FRAME, tw + 2 * FRAME
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    text_font = font(11)
    for i in range(n):
        row, col = divmod(i, columns)
        x = PAD + col * (cell_w + PAD)
        y = PAD + row * (TEXT_HEIGHT + 2 * cell_h + 2 * PAD)
        colour = _FRAME_COLOURS.get(int(modalities[i]), BLACK) if modalities is not None else (200, 200, 200)
        if labels is not None:
            draw.text((x, y + 2), fit_text(draw, str(labels[i]), text_font, cell_w + PAD), fill=BLACK, font=text_font)
        image = np.asarray(images[i], dtype=np.uint8)
        blended = overlay(image, np.asarray(cams[i]))
        for j, pixels in enumerate((image, blended)):
            top = y + TEXT_HEIGHT + j * (cell_h + PAD)
            draw.rectangle([x, top, x + cell_w - 1, top + cell_h - 1], fill=colour)
            tile = Image.fromarray(np.ascontiguousarray(pixels)).resize((tw, th), Image.BILINEAR)
            canvas.paste(tile, (x + FRAME, top + FRAME))
    return save_image(canvas, out)


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> the evaluation input (ImageNet-normalised float ``[B, 3, H, W]``)."""
    from vireid.data.transforms import build_eval_transform

    return build_eval_transform()(torch.as_tensor(pixels).permute(0, 3, 1, 2).contiguous())


def resolve_method(model: nn.Module, method: str = "auto", layer: str | nn.Module | None = None) -> str:
    """``"rollout"`` or ``"gradcam"`` for ``model``: ``auto`` = rollout for transformers (a ``cam_attention``
    method) unless a ``layer`` is named, Grad-CAM otherwise; a choice that cannot apply is one sentence."""
    if method not in CAM_METHODS:
        raise VireidError(f"CAM method {method!r} is unknown; use one of {', '.join(CAM_METHODS)}")
    if method == "auto":
        return "rollout" if layer is None and has_rollout(model) else "gradcam"
    if method == "rollout":
        if layer is not None:
            raise VireidError("--layer names a layer for Grad-CAM, attention rollout uses every block; "
                              "drop --layer or use --method gradcam")
        if not has_rollout(model):
            raise VireidError(f"{type(model).__name__} has no transformer attention to roll out; "
                              "use --method gradcam (or auto)")
    return method


def explain_images(model: nn.Module, pixels: np.ndarray, modalities: Sequence[int], *, target: str = "norm",
                   partners: Sequence[int] | None = None, layer: str | None = None,
                   extras: dict | None = None, method: str = "auto") -> np.ndarray:
    """Heatmaps of uint8 images ``[B, H, W, 3]`` (at the model's input size): Grad-CAM or attention rollout
    (``method``, see :func:`resolve_method`).

    For Grad-CAM, ``target="similarity"`` explains each image by its cosine similarity to the embedding of
    image ``partners[i]`` (held fixed); ``"norm"`` by the norm of its own embedding. Rollout has no target.
    """
    if target not in TARGETS:
        raise VireidError(f"CAM target {target!r} is unknown; use one of {', '.join(TARGETS)}")
    device = next(model.parameters()).device
    x = _normalised(pixels).to(device)
    mods = torch.as_tensor(np.asarray(modalities), dtype=torch.long, device=device)
    extras = {k: torch.as_tensor(v).to(device) for k, v in (extras or {}).items()}
    from vireid.data.extras import check_model_extras

    check_model_extras(model, extras)
    if resolve_method(model, method, layer) == "rollout":
        return rollout_cams(model, x, mods, extras)
    if target == "norm":
        targets: Sequence[Any] | str = "norm"
    else:
        if partners is None or len(partners) != len(pixels):
            raise VireidError("the similarity target needs a partner image for every image (e.g. pairs of one person)")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            emb = model(x, mods, **extras)
        model.train(was_training)
        targets = [SimilarityTarget(emb[int(p)]) for p in partners]
    return compute_cams(model, x, mods, targets, layer=layer, extras=extras)


def choose_pairs(pids: np.ndarray, modalities: np.ndarray, num_ids: int, seed: int = 0) -> list[tuple[int, int]]:
    """``num_ids`` random identities having both modalities, each with one random (visible, infrared) row pair."""
    rng = np.random.default_rng(seed)
    vis = MODALITY_CODE[VISIBLE]
    chosen = pick_cross_modality_ids(pids, modalities, num_ids, rng, "CAM pairs need both modalities")
    pairs = []
    for pid in chosen.tolist():
        v = np.flatnonzero((pids == pid) & (modalities == vis))
        i = np.flatnonzero((pids == pid) & (modalities != vis))
        pairs.append((int(rng.choice(v)), int(rng.choice(i))))
    return pairs


def cams_for_run(run, out: Output, *, num_ids: int = 4, seed: int = 0, target: str = "similarity",
                 layer: str | None = None, thumb: Sequence[int] = DEFAULT_THUMB, method: str = "auto") -> Path | None:
    """Heatmaps of ``num_ids`` random test identities of a loaded run (:class:`~vireid.viz.data.LoadedRun`):
    for each, a visible and an infrared image side by side (partners of each other for the
    ``"similarity"`` target); ``method`` as :func:`resolve_method`."""
    from vireid.data.images import decode_image
    from vireid.viz.data import record_extras

    pairs = choose_pairs(run.pids, run.modalities, num_ids, seed)
    rows = [r for pair in pairs for r in pair]
    records = [run.records[r] for r in rows]
    size = (run.cfg.data.height, run.cfg.data.width)
    pixels = np.stack([decode_image(rec.path, size=size) for rec in records])
    partners = [i ^ 1 for i in range(len(rows))]  # 0<->1, 2<->3, ...: the other image of the pair
    cams = explain_images(run.model, pixels, run.modalities[rows], target=target, partners=partners, layer=layer,
                          extras=record_extras(records, run.cfg), method=method)
    labels = [f"id {rec.orig_pid} {'VIS' if rec.modality == VISIBLE else 'IR'}" for rec in records]
    return plot_cams(list(pixels), cams, out, labels=labels, modalities=run.modalities[rows].tolist(),
                     columns=min(len(rows), 8), thumb=thumb)
