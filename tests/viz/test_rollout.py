"""Attention rollout (vireid.viz.rollout) and the CAM method choice for transformers (vireid.viz.cam):
the rollout against a loop reference, the captured attention against the modules' own softmax, the
overlapping-patch geometry, and the ViT / CLIP models' rollout and Grad-CAM hook points. Tiny models only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_vit as shared_tiny_vit
from vireid.errors import VireidError

def tiny_vit(**params):
    """The shared tiny ViT (tests/conftest.py), in evaluation mode."""
    return shared_tiny_vit(**params).eval()


def tiny_clip(clip_model: str = "tiny-vit"):
    from vireid.modeling import build_method

    torch.manual_seed(0)
    return build_method("clip_reid", num_classes=6, clip_model=clip_model, img_size=(64, 32)).eval()


def _loop_rollout(stack: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema's rollout, element by element: mean over heads, + I, row-normalise, multiply in order."""
    b, heads, n, _ = stack[0].shape
    out = np.zeros((b, n, n))
    for s in range(b):
        result = np.eye(n)
        for weights in stack:
            a = np.zeros((n, n))
            for i in range(n):
                for j in range(n):
                    a[i, j] = sum(weights[s, h, i, j] for h in range(heads)) / heads + (1.0 if i == j else 0.0)
                a[i] /= a[i].sum()
            nxt = np.zeros((n, n))
            for i in range(n):
                for j in range(n):
                    nxt[i, j] = sum(a[i, k] * result[k, j] for k in range(n))
            result = nxt
        out[s] = result
    return out


def test_rollout_matches_a_loop_reference_on_a_hand_made_stack():
    from vireid.viz.rollout import attention_rollout

    gen = torch.Generator().manual_seed(0)
    stack = [torch.randn(2, 3, 5, 5, generator=gen).softmax(-1) for _ in range(3)]
    rollout = attention_rollout(stack)
    np.testing.assert_allclose(rollout.numpy(), _loop_rollout([w.numpy() for w in stack]), atol=1e-12)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, 5, dtype=torch.float64))  # rows stay distributions
    # one block whose heads all attend to token 0: every row becomes 0.5 * e_0 + 0.5 * e_i
    onto_first = torch.zeros(1, 2, 3, 3)
    onto_first[..., 0] = 1.0
    expected = 0.5 * torch.eye(3, dtype=torch.float64)
    expected[:, 0] += 0.5
    assert torch.allclose(attention_rollout([onto_first])[0], expected)
    with pytest.raises(VireidError, match="at least one attention block"):
        attention_rollout([])


def test_captured_attention_equals_the_modules_own_softmax():
    """timm's Attention (read at its non-fused softmax) and nn.MultiheadAttention (its need_weights output)."""
    from timm.models.vision_transformer import Attention

    from vireid.viz.rollout import capture_attentions

    torch.manual_seed(0)
    attn = Attention(16, num_heads=4, qkv_bias=True).eval()
    attn.fused_attn = False
    seen = {}
    attn.attn_drop.register_forward_hook(lambda _m, inp, _o: seen.setdefault("p", inp[0].detach()))
    wrapper = lambda x, _mods: attn(x)  # noqa: E731 - the (images, modalities) signature capture_attentions calls
    x = torch.randn(2, 7, 16)
    (probs,) = capture_attentions(wrapper, [attn], x, torch.zeros(2, dtype=torch.long), {})
    assert probs.shape == (2, 4, 7, 7) and torch.allclose(probs, seen["p"], atol=1e-6)

    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    (probs,) = capture_attentions(lambda x, _m: mha(x, x, x, need_weights=False)[0], [mha], x,
                                  torch.zeros(2, dtype=torch.long), {})
    q, k, _ = (x @ mha.in_proj_weight.T + mha.in_proj_bias).chunk(3, dim=-1)
    q, k = (t.reshape(2, 7, 4, 4).transpose(1, 2) for t in (q, k))
    assert torch.allclose(probs, ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1), atol=1e-6)


def test_overlapping_patches_average_back_to_pixels():
    from vireid.viz.rollout import patch_map_to_image

    values = torch.tensor([[[1.0], [3.0]]])  # a 2 x 1 grid of 4-pixel patches at stride 2
    pixels = patch_map_to_image(values, patch=4, stride=2, size=(6, 4))
    assert pixels[0, :, 0].tolist() == [1, 1, 2, 2, 3, 3] and bool((pixels[0] == pixels[0, :, :1]).all())
    # a pixel row no patch covers (TransReID's drop_remainder) repeats the last covered one
    assert patch_map_to_image(values, patch=4, stride=2, size=(7, 4))[0, :, 0].tolist() == [1, 1, 2, 2, 3, 3, 3]


def test_vit_rollout_follows_each_modalitys_blocks():
    from vireid.viz.cam import compute_cams, resolve_method
    from vireid.viz.rollout import rollout_cams

    model = tiny_vit(jpm=True, specific_stages=2)
    spec = model.cam_attention(1)
    assert spec["attentions"] == [model.backbone.modality_branches[1][1].attn, model.backbone.shared_stages[0].attn]
    assert (spec["prefix"], spec["patch"], spec["stride"]) == (1, 8, 4)
    assert resolve_method(model) == "rollout" and resolve_method(model, layer="backbone.token_grid") == "gradcam"
    x = torch.randn(1, 3, 64, 32).expand(2, -1, -1, -1)
    maps = rollout_cams(model, x, [0, 1])
    assert maps.shape == (2, 64, 32) and maps.dtype == np.float32 and maps.min() == 0.0 and maps.max() == 1.0
    assert not np.allclose(maps[0], maps[1])  # the same image through the visible and the infrared blocks
    shared = tiny_vit(sie_modality=False)  # one shared ViT: the modality changes nothing
    shared_maps = rollout_cams(shared, x, [0, 1])
    np.testing.assert_allclose(shared_maps[0], shared_maps[1], atol=1e-6)
    assert compute_cams(model, x, [0, 1], "norm").shape == (2, 64, 32)  # Grad-CAM still works on request


def test_clip_vit_gets_rollout_and_a_last_block_gradcam_layer():
    from vireid.viz.cam import compute_cams, explain_images, resolve_method, target_layers

    model = tiny_clip()
    encoder = model.image_encoder
    x = torch.randn(2, 3, 64, 32)
    # the encoder's own block loop (with the Grad-CAM hook point) gives open_clip's transformer output
    v = encoder.visual
    tokens = v.conv1(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([v.class_embedding.expand(2, 1, -1), tokens], 1) + v.positional_embedding
    with torch.no_grad():
        reference = v.ln_post(v.transformer(v.ln_pre(tokens))[:, 0])
        assert torch.allclose(encoder(x)[0], reference, atol=1e-5)
    assert target_layers(model, 0) == [encoder.token_grid]  # was: none, so Grad-CAM explained conv1
    assert resolve_method(model) == "rollout" and len(model.cam_attention(0)["attentions"]) == 2
    pixels = np.random.default_rng(0).integers(0, 255, (2, 64, 32, 3), dtype=np.uint8)
    maps = explain_images(model, pixels, [0, 1])
    assert maps.shape == (2, 64, 32) and maps.max() == 1.0
    grad = compute_cams(model, x, [0, 1], "norm")
    assert grad.shape == (2, 64, 32) and float(grad.max()) > 0
    rn = tiny_clip("tiny-rn")
    assert resolve_method(rn) == "gradcam" and target_layers(rn, 0) == [rn.image_encoder.visual.layer4]
    with pytest.raises(VireidError, match="no transformer attention to roll out; use --method gradcam"):
        resolve_method(rn, "rollout")
    with pytest.raises(VireidError, match="CAM method 'attention' is unknown; use one of auto, rollout, gradcam"):
        resolve_method(model, "attention")
    with pytest.raises(VireidError, match="drop --layer or use --method gradcam"):
        resolve_method(model, "rollout", layer="image_encoder.token_grid")
