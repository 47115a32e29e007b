"""The AGW-style baseline method: outputs, embedding, gradients, config-friendly signature, param groups."""

from __future__ import annotations

import inspect

import pytest
import torch

import vireid  # noqa: F401
import timm
from vireid.modeling import METHODS, BaselineReID, build_method
from vireid.modeling.flops import count_forward_flops, count_parameters
from vireid.modeling.losses import CrossEntropyLabelSmooth, WeightedRegularizedTripletLoss
from vireid.modeling.modules import NonLocalBlock

IMAGES = torch.randn(4, 3, 64, 32)
MODALITIES = torch.tensor([0, 0, 1, 1])
LABELS = torch.tensor([0, 1, 0, 1])


@pytest.fixture(scope="module")
def model() -> BaselineReID:
    torch.manual_seed(0)
    return BaselineReID(num_classes=5, backbone="resnet18", specific_stages=1, non_local="agw")


def test_train_outputs_and_eval_embedding(model: BaselineReID) -> None:
    model.train()
    out = model(IMAGES, MODALITIES)
    assert set(out) == {"features", "bn_features", "logits"}
    assert out["features"].shape == (4, 512) and out["bn_features"].shape == (4, 512)
    assert out["logits"].shape == (4, 5)
    assert model.embed_dim == 512
    model.eval()
    with torch.no_grad():
        embedding = model(IMAGES, MODALITIES)
        heads = model.forward_head(model.forward_features(IMAGES, MODALITIES))
    assert embedding.shape == (4, 512)
    torch.testing.assert_close(embedding, heads["bn_features"])
    # pooled features of a ReLU network are non-negative and BN changes them
    assert (heads["features"] >= 0).all()
    assert not torch.allclose(heads["features"], heads["bn_features"])
    model.train()


def test_losses_backpropagate_to_both_branches_and_classifier(model: BaselineReID) -> None:
    model.train()
    model.zero_grad()
    out = model(IMAGES, MODALITIES)
    loss = CrossEntropyLabelSmooth(5)(out["logits"], LABELS) + WeightedRegularizedTripletLoss()(out["features"], LABELS)
    loss.backward()
    for branch in model.backbone.modality_branches:
        assert branch[0].conv1.weight.grad.abs().sum() > 0
    assert model.classifier.fc.weight.grad.abs().sum() > 0
    assert model.neck.bn.bias.grad is None  # BNNeck shift is frozen
    non_local = [m for m in model.modules() if isinstance(m, NonLocalBlock)]
    assert len(non_local) == 4  # resnet18: 2 blocks in layer2 and layer3, AGW counts clipped to 2
    assert all(b.W[1].weight.grad is not None for b in non_local)


def test_signature_is_plain_keywords_with_defaults_and_hints() -> None:
    params = inspect.signature(BaselineReID.__init__).parameters
    names = [n for n in params if n != "self"]
    assert names[0] == "num_classes" and params["num_classes"].default is inspect.Parameter.empty
    for name in names[1:]:
        p = params[name]
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        assert p.default is not inspect.Parameter.empty, name
        assert p.annotation is not inspect.Parameter.empty, name
    assert params["specific_stages"].default == 1 and params["last_stride"].default == 1
    assert params["pooling"].default == "gem" and params["gem_p"].default == 3.0


def test_registry_build_and_options() -> None:
    model = build_method("baseline", num_classes=3, backbone="resnet18", non_local=None, pooling="avg", neck="none")
    assert isinstance(model, BaselineReID) and METHODS.get("baseline") is BaselineReID
    assert not any(isinstance(m, NonLocalBlock) for m in model.modules())
    model.eval()
    with torch.no_grad():
        out = model.forward_head(model.forward_features(IMAGES, 1))
    torch.testing.assert_close(out["features"], out["bn_features"])  # no neck
    torch.testing.assert_close(out["features"], model.backbone(IMAGES, 1).mean(dim=(2, 3)))  # avg pooling


def test_param_groups_cover_every_parameter_once(model: BaselineReID) -> None:
    groups = model.param_groups(0.1, pretrained_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(0.01) and groups[1]["lr"] == pytest.approx(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) and set(ids) == set(trainable)
    assert id(model.classifier.fc.weight) in {id(p) for p in groups[1]["params"]}


def test_swin_and_mobile_backbones_in_the_baseline() -> None:
    swin = BaselineReID(num_classes=4, backbone="swin_tiny_patch4_window7_224", specific_stages=3,
                        non_local=None, pooling="avg", img_size=(64, 32))
    assert swin(IMAGES[:2], MODALITIES[:2])["logits"].shape == (2, 4)
    mobile = BaselineReID(num_classes=4, backbone="mobilenetv2_100", non_local=None)
    mobile.eval()
    assert mobile(IMAGES, MODALITIES).shape == (4, 1280)


def test_resnet50_two_stream_parameter_count_and_flops() -> None:
    model = BaselineReID(num_classes=395, backbone="resnet50", specific_stages=1, non_local="agw")
    reference = timm.create_model("resnet50", num_classes=0)
    stem_copy = count_parameters(reference.conv1) + count_parameters(reference.bn1)
    non_local = sum(count_parameters(m) for m in model.modules() if isinstance(m, NonLocalBlock))
    neck_and_classifier = 2 * 2048 + 2048 * 395
    assert count_parameters(model) == count_parameters(reference) + stem_copy + non_local + neck_and_classifier
    flops_1 = count_forward_flops(model, image_size=(64, 32), batch_size=1)
    flops_2 = count_forward_flops(model, image_size=(64, 32), batch_size=2)
    assert flops_1 > 0 and flops_2 == pytest.approx(2 * flops_1, rel=1e-3)
    assert model.training  # count_forward_flops restores the mode
