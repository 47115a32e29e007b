"""Pooling, non-local blocks (and their placement in shared stages) and heads."""

from __future__ import annotations

import math

import pytest
import torch

import vireid  # noqa: F401
from vireid.errors import ConfigError
from vireid.modeling import HEADS, MODULES
from vireid.modeling.backbones import TwoStreamBackbone
from vireid.modeling.heads import BNNeck, LinearClassifier, build_neck
from vireid.modeling.modules import NonLocalBlock, add_non_local, build_pooling, resolve_non_local

# one channel, 2x2 map holding 1, 2, 3, 4
MAP = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_gem_pooling_by_hand() -> None:
    gem = MODULES.build("gem", p=3.0)
    # ((1 + 8 + 27 + 64) / 4) ** (1/3) = 25 ** (1/3)
    assert gem(MAP).item() == pytest.approx(25 ** (1 / 3), abs=1e-5)
    assert build_pooling("gem", p=1.0)(MAP).item() == pytest.approx(2.5, abs=1e-6)
    assert build_pooling("avg")(MAP).item() == pytest.approx(2.5)
    assert build_pooling("max")(MAP).item() == pytest.approx(4.0)
    assert gem(torch.randn(3, 5, 4, 2)).shape == (3, 5)
    # negative inputs are clamped to eps before the power
    assert gem(-MAP).item() == pytest.approx(1e-6, rel=1e-3)


def test_gem_learnable_p_gets_a_gradient_and_fixed_p_does_not() -> None:
    learnable = build_pooling("gem", p=3.0, learnable=True)
    learnable(MAP).sum().backward()
    assert isinstance(learnable.p, torch.nn.Parameter) and learnable.p.grad is not None
    fixed = build_pooling("gem", p=3.0)
    assert not any(True for _ in fixed.parameters())
    assert "p" in fixed.state_dict()
    with pytest.raises(ConfigError, match="pooling"):
        build_pooling("median")
    with pytest.raises(ConfigError, match="gem_p"):
        build_pooling("gem", p=0.0)


def test_non_local_starts_as_identity_and_then_mixes_all_positions() -> None:
    torch.manual_seed(0)
    block = NonLocalBlock(8, reduction=2)
    x = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(block(x), x)
    with torch.no_grad():
        block.W[1].weight.fill_(1.0)
    block.eval()
    base = block(x)
    moved = x.clone()
    moved[:, :, 0, 0] += 5.0  # change one corner position
    delta = (block(moved) - base)[:, :, 3, 2]  # the opposite corner responds (non-local)
    assert delta.abs().max() > 1e-4
    assert block.inter_channels == 4


def test_non_local_dot_product_normalises_by_positions() -> None:
    # theta = phi = g = identity on 1 channel, W = identity conv, BN weight 1 bias 0 in eval (running stats 0/1)
    block = NonLocalBlock(1, reduction=1).eval()
    with torch.no_grad():
        for conv in (block.theta, block.phi, block.g, block.W[0]):
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        block.W[1].weight.fill_(1.0)
    # y_i = sum_j (x_i x_j) x_j / N = x_i * (1+4+9+16) / 4 = 7.5 x_i ; z = x + BN(y) ~= 8.5 x (BN eps aside)
    expected = MAP * (1 + 7.5 / math.sqrt(1 + 1e-5))
    torch.testing.assert_close(block(MAP), expected, rtol=1e-5, atol=1e-5)
    gaussian = NonLocalBlock(4, mode="embedded_gaussian")
    assert gaussian(torch.randn(1, 4, 3, 3)).shape == (1, 4, 3, 3)
    with pytest.raises(ConfigError, match="mode"):
        NonLocalBlock(4, mode="cosine")


def test_agw_placement_after_last_blocks_of_shared_stages() -> None:
    # resnet34 has resnet50's block counts [3, 4, 6, 3]
    backbone = TwoStreamBackbone("resnet34", specific_stages=1)
    placed = add_non_local(backbone, "agw")
    assert placed == {2: [2, 3], 3: [3, 4, 5]}
    stage2 = [name for name, _ in backbone.shared_stage(2).named_children()]
    assert stage2 == ["0", "1", "2", "non_local_after_2", "3", "non_local_after_3"]
    blocks = [m for m in backbone.modules() if isinstance(m, NonLocalBlock)]
    assert [b.in_channels for b in blocks] == [128, 128, 256, 256, 256]
    out = backbone(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    assert out.shape == (2, 512, 4, 2)


def test_non_local_spec_forms_and_errors() -> None:
    assert resolve_non_local(None) == {}
    assert resolve_non_local("agw") == {2: 2, 3: 3}
    assert resolve_non_local({"layer3": [0, -1], "stage4": 1}) == {3: [0, -1], 4: 1}
    backbone = TwoStreamBackbone("resnet18", specific_stages=3)
    with pytest.raises(ConfigError, match="not shared"):
        add_non_local(backbone, "agw")  # stage 2 is modality-specific here
    assert add_non_local(backbone, {"stage3": [-1]}) == {3: [1]}
    with pytest.raises(ConfigError, match="out of range"):
        add_non_local(backbone, {"stage4": [7]})
    with pytest.raises(ConfigError, match="stage"):
        resolve_non_local({"conv5": 1})
    with pytest.raises(ConfigError, match="non_local"):
        resolve_non_local("everywhere")


def test_bnneck_bias_frozen_at_zero_and_classifier_init() -> None:
    neck = HEADS.build("bnneck", 16)
    assert isinstance(neck, BNNeck) and not neck.bn.bias.requires_grad
    classifier = LinearClassifier(16, 50)
    assert classifier.fc.bias is None
    assert classifier.weight.std().item() == pytest.approx(0.001, rel=0.1)
    optimizer = torch.optim.SGD([p for p in neck.parameters() if p.requires_grad], lr=1.0)
    loss = classifier(neck(torch.randn(8, 16) + 3.0)).pow(2).sum()
    loss.backward()
    optimizer.step()
    assert neck.bn.bias.abs().sum().item() == 0.0
    assert neck.bn.weight.grad is not None
    assert isinstance(build_neck("none", 16)(torch.ones(2, 16)), torch.Tensor)
    with pytest.raises(ConfigError, match="neck"):
        build_neck("layernorm", 16)
