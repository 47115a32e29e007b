"""Attention rollout heatmaps for transformer backbones (the TransReID-style ViT and CLIP's ViT encoders).

Grad-CAM explains a convolutional feature map; a ViT's embedding is its class token, and the path
from the patches to that token runs through the attention of every block. Attention rollout (Abnar
& Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020, §3 "attention rollout") follows
that path:

1. per block ``l``, the attention probabilities ``W_l`` ``[heads, N, N]`` are averaged over heads;
2. the residual connection is accounted for by adding the identity and re-normalising each row,
   ``A_l = (mean_h W_l + I) / rowsum`` (= ``0.5 mean_h W_l + 0.5 I``, the paper's Eq. for rollout);
3. the blocks are multiplied in order, ``R = A_L ... A_2 A_1``;
4. the class-token row of ``R``, over the patch tokens (the prefix tokens -- class token, register
   tokens -- dropped), is the relevance of each patch to the embedding.

The patch values go back to the image through the patch embedding's geometry: patch ``(i, j)``
covers the pixels ``[i s, i s + p) x [j s, j s + p)`` (patch size ``p``, stride ``s``); every pixel
takes the mean of the patches that cover it, so overlapping patches (TransReID's stride 12 for 16-pixel
patches, vireid's ``vit_synth`` stride 4 for 8-pixel ones) blend smoothly, and the last rows/columns
that no patch sees (``drop_remainder``) repeat their neighbours. Each map is scaled to 0..1.

Side-information embeddings (SIE) are added to the tokens before the first block and change the
attention only through it; the jigsaw patch module (JPM) runs a copy of the last block on token
groups for its local features -- the rollout follows the global branch (the class token through
every block), which is the embedding's first and largest part. The map does not depend on a target
(it is not class-discriminative, unlike Grad-CAM), so ``--target`` is ignored for it.

A model offers rollout with a ``cam_attention(modality)`` method returning a dict: ``attentions``
(the attention modules in forward order, for images of that modality), ``prefix`` (tokens before
the patches), ``patch`` and ``stride`` (the patch embedding's). The modules may be timm ``Attention``
(``qkv`` projection, TransReID / timm ViTs) or ``torch.nn.MultiheadAttention`` (open_clip); the
probabilities are recomputed from each module's input, captured by a forward pre-hook, so the
model's own (fused) attention kernel is left untouched. A module that runs more than once in a
forward pass (a block shared by another branch) is read at its first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vireid.errors import VireidError

#: ``vireid visualize cam --method``: auto = rollout for models that offer it, else Grad-CAM.
CAM_METHODS = ("auto", "rollout", "gradcam")


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rollout ``[B, N, N]`` of attention probabilities ``[B, heads, N, N]`` given in forward order.

    ``A_l = (mean_h W_l + I) / rowsum`` and ``R = A_L ... A_1`` (Abnar & Zuidema 2020, §3).
    """
    if not attentions:
        raise VireidError("attention rollout needs at least one attention block")
    first = attentions[0]
    b, n = first.shape[0], first.shape[-1]
    eye = torch.eye(n, dtype=torch.float64, device=first.device)
    result = eye.expand(b, n, n)
    for weights in attentions:
        a = weights.double().mean(dim=1) + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


def attention_probs(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """Attention probabilities ``[B, heads, N, N]`` of ``module`` for the inputs it was called with."""
    if isinstance(module, nn.MultiheadAttention):
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs.get("key", q)
        v = args[2] if len(args) > 2 else kwargs.get("value", q)
        _, weights = module(q, k, v, need_weights=True, average_attn_weights=False,
                            attn_mask=kwargs.get("attn_mask"), key_padding_mask=kwargs.get("key_padding_mask"))
        return weights
    if hasattr(module, "qkv") and hasattr(module, "num_heads"):  # timm Attention (ViT, TransReID)
        x = args[0] if args else kwargs["x"]
        b, n, _ = x.shape
        heads = int(module.num_heads)
        qkv = module.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        q, k = module.q_norm(q), module.k_norm(k)
        scale = float(getattr(module, "scale", q.shape[-1] ** -0.5))
        logits = (q * scale) @ k.transpose(-2, -1)
        mask = kwargs.get("attn_mask")
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        return logits.softmax(dim=-1)
    raise VireidError(f"attention rollout cannot read the attention of {type(module).__name__}; use --method gradcam")


def capture_attentions(model: nn.Module, modules: Sequence[nn.Module], images: torch.Tensor,
                       modalities: torch.Tensor, extras: dict) -> list[torch.Tensor]:
    """Run the model once (no gradients) and return each module's attention probabilities, in ``modules`` order."""
    captured: dict[int, tuple[tuple, dict]] = {}
    hooks = []

    def make_hook(index: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.setdefault(index, (args, dict(kwargs)))  # the first call: the class token's own path
        return hook

    for index, module in enumerate(modules):
        hooks.append(module.register_forward_pre_hook(make_hook(index), with_kwargs=True))
    try:
        with torch.no_grad():
            model(images, modalities, **extras)
    finally:
        for h in hooks:
            h.remove()
    missing = [i for i in range(len(modules)) if i not in captured]
    if missing:
        raise VireidError(f"attention block {missing[0]} of {len(modules)} did not run in the forward pass; "
                          "use --method gradcam")
    with torch.no_grad():
        return [attention_probs(modules[i], *captured[i]) for i in range(len(modules))]


def patch_map_to_image(values: torch.Tensor, patch: int, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Patch values ``[B, h, w]`` -> pixel map ``[B, H, W]``: each pixel the mean of the patches covering it."""
    b = values.shape[0]
    kernel = torch.ones(1, 1, patch, patch, dtype=values.dtype, device=values.device)
    total = F.conv_transpose2d(values[:, None], kernel, stride=stride)
    count = F.conv_transpose2d(torch.ones_like(values[:1, None]), kernel, stride=stride)
    pixels = total / count
    covered_h, covered_w = pixels.shape[-2:]
    height, width = size
    pixels = pixels[..., :height, :width]
    if covered_h < height or covered_w < width:  # pixels no patch covers (drop_remainder): repeat the edge
        pixels = F.pad(pixels, (0, max(0, width - covered_w), 0, max(0, height - covered_h)), mode="replicate")
    return pixels.reshape(b, height, width)


def _scaled(maps: torch.Tensor) -> np.ndarray:
    flat = maps.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp_min(1e-12)
    return scaled.reshape(maps.shape).float().cpu().numpy().astype(np.float32)


def has_rollout(model: nn.Module, modality: int = 0) -> bool:
    """Whether ``model`` offers attention rollout (a ``cam_attention`` that names attention modules)."""
    spec = model.cam_attention(modality) if hasattr(model, "cam_attention") else None
    return bool(spec and spec.get("attentions"))


def rollout_cams(model: nn.Module, images: torch.Tensor, modalities: torch.Tensor | Sequence[int],
                 extras: dict | None = None) -> np.ndarray:
    """Attention-rollout maps ``[B, H, W]`` (float32, 0..1 per image) of normalised images ``[B, 3, H, W]``."""
    device = next(model.parameters()).device
    images = images.to(device)
    mods = torch.as_tensor(modalities, dtype=torch.long).to(device)
    extras = {k: torch.as_tensor(v).to(device) for k, v in (extras or {}).items()}
    height, width = int(images.shape[2]), int(images.shape[3])
    out = np.zeros((images.shape[0], height, width), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for code in sorted(set(mods.tolist())):
            spec: dict[str, Any] | None = model.cam_attention(code) if hasattr(model, "cam_attention") else None
            if not spec or not spec.get("attentions"):
                raise VireidError(f"{type(model).__name__} has no attention blocks to roll out; use --method gradcam")
            idx = torch.nonzero(mods == code).flatten()
            probs = capture_attentions(model, list(spec["attentions"]), images[idx], mods[idx],
                                       {k: v[idx] for k, v in extras.items()})
            rollout = attention_rollout(probs)
            patch, stride, prefix = int(spec["patch"]), int(spec["stride"]), int(spec["prefix"])
            grid = ((height - patch) // stride + 1, (width - patch) // stride + 1)
            relevance = rollout[:, 0, prefix:]
            if relevance.shape[1] != grid[0] * grid[1]:
                raise VireidError(f"the attention has {relevance.shape[1]} patch tokens but the patch grid of a "
                                  f"{height}x{width} image is {grid[0]}x{grid[1]}; use --method gradcam")
            pixels = patch_map_to_image(relevance.reshape(-1, *grid), patch, stride, (height, width))
            out[idx.cpu().numpy()] = _scaled(pixels)
    finally:
        model.train(was_training)
    return out


__all__ = ["CAM_METHODS", "attention_probs", "attention_rollout", "capture_attentions", "has_rollout",
           "patch_map_to_image", "rollout_cams"]
