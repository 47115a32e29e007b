"""Structured channel pruning: exact surgery, real savings, save/load, fine-tuning, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from vireid.errors import VireidError


def _baseline(arch: str, specific_stages: int = 1) -> nn.Module:
    from vireid.modeling.methods.baseline import BaselineReID

    torch.manual_seed(0)
    model = BaselineReID(num_classes=6, backbone=arch, specific_stages=specific_stages, non_local=None, img_size=(64, 32))
    _randomise_norms(model)
    return model.eval()


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that pruning errors would show in the outputs."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _silence_weakest(model: nn.Module, amount: float) -> None:
    """Make the channels pruning will remove contribute exactly nothing: zero filters (lowest L1
    norm) and zero BN scale/shift of every tensor between producer and consumer."""
    from vireid.modeling.pruning import find_channel_groups, kept_channel_count

    with torch.no_grad():
        for group in find_channel_groups(model):
            drop = group.channels - kept_channel_count(group.channels, amount, multiple=1)
            index = torch.arange(drop)
            group.producer.weight[index] = 0
            if group.producer.bias is not None:
                group.producer.bias[index] = 0
            for norm in group.norms:
                norm.weight[index] = 0
                norm.bias[index] = 0
                if isinstance(norm, nn.BatchNorm2d):
                    norm.running_mean[index] = 0


@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small_050", "efficientnet_lite0", "resnet26"])
def test_removing_silent_channels_keeps_the_outputs(arch: str) -> None:
    """Pruning channels that contribute nothing leaves the embedding unchanged (surgery is exact) for
    basic blocks, bottlenecks and inverted residuals with squeeze-excitation and depthwise convolutions."""
    from vireid.modeling.pruning import find_channel_groups, prune_model

    model = _baseline(arch)
    _silence_weakest(model, 0.3)
    images, mods = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        before = model(images, mods)
    params_before = sum(p.numel() for p in model.parameters())
    spec = prune_model(model, 0.3, criterion="l1", multiple=1)
    with torch.no_grad():
        after = model(images, mods)
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-4), (before - after).abs().max()
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert all(spec["kept"][k] < spec["original"][k] for k in spec["kept"] if spec["original"][k] > 3)
    groups = find_channel_groups(model)
    assert groups and all(g.channels == spec["kept"][g.name] for g in groups)


def test_pruning_reduces_flops_and_weights_shapes() -> None:
    from vireid.modeling.pruning import prune_model
    from vireid.modeling.flops import count_forward_flops

    model = _baseline("resnet10t")
    flops = count_forward_flops(model, (64, 32))
    spec = prune_model(model, 0.5, multiple=8)
    assert count_forward_flops(model, (64, 32)) < 0.8 * flops
    block = model.backbone.shared_stages[0][0]  # layer1's BasicBlock: 64 inner channels -> 32
    assert block.conv1.weight.shape[0] == 32 and block.bn1.num_features == 32 and block.conv2.weight.shape[1] == 32
    assert all(v % 8 == 0 for v in spec["kept"].values())


def test_bn_criterion_keeps_largest_scales() -> None:
    from vireid.modeling.pruning import channel_importance, find_channel_groups, shrink_group

    model = _baseline("mobilenetv3_small_050")
    group = find_channel_groups(model)[0]
    scores = channel_importance(group, "bn")
    assert torch.equal(scores, group.norms[0].weight.detach().abs())
    keep = torch.topk(scores, 3).indices
    expected = group.norms[0].weight.detach()[keep.sort().values].clone()
    shrink_group(group, keep)
    assert torch.equal(group.norms[0].weight.detach(), expected)
    assert group.channelwise[0].groups == 3 and group.channelwise[0].weight.shape[0] == 3


def test_mlp_hidden_units_are_pruned() -> None:
    from timm.layers import Mlp

    from vireid.modeling.pruning import find_channel_groups, prune_model

    block = nn.Sequential(Mlp(8, hidden_features=16)).eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        block[0].fc1.weight[:4] = 0
        block[0].fc1.bias[:4] = 0  # GELU(0) = 0: these units contribute nothing
        before = block(x)
    prune_model(block, 0.25, multiple=1)
    assert block[0].fc1.out_features == 12 and block[0].fc2.in_features == 12
    assert torch.allclose(block(x), before, atol=1e-6)
    assert find_channel_groups(block)[0].name == "0/fc1"


def test_kept_channel_count_rounding() -> None:
    from vireid.modeling.pruning import kept_channel_count

    assert kept_channel_count(64, 0.3) == 45
    assert kept_channel_count(64, 0.3, multiple=8) == 48
    assert kept_channel_count(4, 0.99, multiple=8) == 4  # never more than there are, never zero
    assert kept_channel_count(16, 0.99) == 1


def test_bad_amount_and_unprunable_model_are_clear_errors() -> None:
    from vireid.modeling.pruning import prune_model

    with pytest.raises(VireidError, match="between 0 and 1"):
        prune_model(_baseline("resnet10t"), 1.5)
    with pytest.raises(VireidError, match="no block"):
        prune_model(nn.Sequential(nn.Conv2d(3, 4, 3)), 0.3)


@pytest.fixture(scope="module")
def trained_run(tiny_trained_run: Path) -> Path:
    """A one-epoch tiny run (resnet10t, 64x32) on the session's synthetic data: the session's
    ``tiny_trained_run`` (read only here: pruning writes its outputs elsewhere)."""
    return tiny_trained_run


def test_prune_checkpoint_saves_loads_and_fine_tunes(trained_run: Path, tmp_path: Path) -> None:
    from vireid.engine.checkpoint import load_checkpoint
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.workflows.prune import prune_checkpoint

    run = trained_run
    summary = prune_checkpoint(run, tmp_path / "pruned", 0.4, progress=False)
    assert summary.params_after < summary.params_before and summary.flops_after < summary.flops_before
    raw = torch.load(tmp_path / "pruned" / "best.pt", map_location="cpu", weights_only=True)
    assert raw["pruning"]["amount"] == pytest.approx(0.4) and "optimizer" not in raw
    assert (tmp_path / "pruned" / "best.pt").stat().st_size < (run / "best.pt").stat().st_size
    model, cfg, _ = load_model_from_checkpoint(tmp_path / "pruned", "cpu")
    assert sum(p.numel() for p in model.parameters()) == summary.params_after
    x, m = torch.randn(2, 3, 64, 32), torch.tensor([0, 1])
    original, _, _ = load_model_from_checkpoint(run, "cpu")
    with torch.no_grad():
        assert model(x, m).shape == original(x, m).shape

    with pytest.raises(VireidError, match="already holds"):
        prune_checkpoint(run, tmp_path / "pruned", 0.4, progress=False)

    tuned = prune_checkpoint(run, tmp_path / "tuned", 0.4, finetune_epochs=1, lr=1e-4, progress=False)
    assert tuned.finetune["epochs"] == 1 and math.isclose(tuned.finetune["lr"], 1e-4)
    ckpt = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert ckpt["pruning"]["kept"] == raw["pruning"]["kept"]
    tuned_model, _, _ = load_model_from_checkpoint(tmp_path / "tuned", "cpu")
    assert sum(p.numel() for p in tuned_model.parameters()) == summary.params_after
    with torch.no_grad():
        assert torch.isfinite(tuned_model(x, m)).all()


def test_prune_cli_reports_savings(trained_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers every command)
    from vireid.cli import app

    run = trained_run
    result = CliRunner().invoke(app, ["prune", str(run), "--amount", "0.25", "--criterion", "bn", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "fewer" in result.output and (tmp_path / "p" / "best.pt").is_file()
    bad = CliRunner().invoke(app, ["prune", str(run), "--criterion", "random", "--out", str(tmp_path / "q")])
    assert bad.exit_code != 0
