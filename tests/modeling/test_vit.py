"""The TransReID-style ViT (vireid.modeling.backbones.vit, vireid.modeling.methods.vit): overlapping patches,
position-embedding interpolation, SIE, JPM, the two-stream split, layer-wise lr decay, export, pruning refusal,
CAM and a training run through the trainer. Tiny ViTs (2 blocks, 32-d) keep it to seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_VIT as TINY, tiny_vit  # noqa: F401  (TINY: the timm comparison below)
from vireid.errors import ConfigError, VireidError

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- shapes and tokens
@pytest.mark.parametrize(("size", "stride", "grid"), [((64, 32), 4, (15, 7)), ((48, 40), 8, (6, 5)), ((40, 72), 8, (5, 9))])
def test_shapes_at_non_square_sizes(size, stride, grid):
    model = tiny_vit(img_size=size, stride=stride, jpm=True)
    assert model.backbone.grid_size == grid
    assert model.backbone.pos_embed.shape == (1, 1 + grid[0] * grid[1], 32)
    x = torch.randn(3, 3, *size)
    out = model(x, torch.tensor([0, 1, 1]))
    assert out["features"].shape == (3, 32) and out["logits"].shape == (3, 6)
    assert out["part_features"].shape == (4, 3, 32) and out["part_logits"].shape == (4, 3, 6)
    model.eval()
    assert model(x, torch.tensor([0, 1, 1])).shape == (3, 32 * 5)  # global + 4 local features (TransReID)
    assert tiny_vit(img_size=size, stride=stride).eval()(x, 1).shape == (3, 32)


def test_overlapping_patch_token_count_matches_transreid():
    from vireid.modeling.backbones.vit import patch_grid

    # TransReID's *_stride configs: 16-pixel patches at stride 12 on 256x128 -> 21 x 10 = 210 patches
    assert patch_grid(256, 128, 16, 12, drop_remainder=True) == (21, 10)
    assert patch_grid(224, 224, 16, 16) == (14, 14)
    model = tiny_vit(backbone="vit_small_patch16_224", vit_kwargs={"depth": 1}, img_size=(256, 128), stride=12,
                     drop_remainder=True)
    tokens = model.backbone.forward_tokens(torch.randn(1, 3, 256, 128), 0)
    assert tokens.shape == (1, 1 + 210, 384)
    assert model.backbone.shared_stages[0].proj.stride == (12, 12)


def test_input_sizes_that_do_not_fit_the_stride_are_one_sentence():
    with pytest.raises(ConfigError) as err:
        tiny_vit(backbone="vit_small_patch16_224", vit_kwargs={"depth": 1}, img_size=(256, 128), stride=12)
    message = str(err.value)
    assert "width 128" in message and "124 or 136" in message and "drop_remainder" in message and "\n" not in message
    with pytest.raises(ConfigError, match="smaller than one 8-pixel patch"):
        tiny_vit(img_size=(64, 6))
    with pytest.raises(ConfigError, match="stride must be between 1 and the patch size 8"):
        tiny_vit(stride=9)
    with pytest.raises(ConfigError, match="not a VisionTransformer"):
        tiny_vit(backbone="resnet18", vit_kwargs={})
    with pytest.raises(ConfigError, match="specific_stages must be between 0 and 2"):
        tiny_vit(specific_stages=3)
    with pytest.raises(ConfigError, match="embedding must be one of"):
        tiny_vit(embedding="pool")
    model = tiny_vit().eval()
    with pytest.raises(ConfigError, match="height 63 does not fit"):
        model(torch.randn(1, 3, 63, 32), 0)


# ----------------------------------------------------------------------------- position embedding
def test_pretrained_224_weights_are_interpolated_to_the_stride_grid(tmp_path):
    import timm
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY)  # 28 x 28 grid at 224
    weights = tmp_path / "vit224.pth"
    torch.save(source.state_dict(), weights)
    model = tiny_vit(pretrained=str(weights))
    pos = model.backbone.pos_embed.detach()
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=[15, 7], old_size=[28, 28], num_prefix_tokens=1)
    assert pos.shape == (1, 1 + 15 * 7, 32)
    torch.testing.assert_close(pos, expected)
    torch.testing.assert_close(pos[:, 0], source.pos_embed.detach()[:, 0])  # the class token's entry is kept as is
    torch.testing.assert_close(model.backbone.last_block.mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)


def test_position_embedding_follows_another_input_size_at_run_time():
    model = tiny_vit().eval()
    with torch.no_grad():
        model.backbone.pos_embed.zero_()
        ramp = torch.arange(15, dtype=torch.float32).view(15, 1, 1).expand(15, 7, 32).reshape(1, 105, 32)
        model.backbone.pos_embed[:, 1:] = ramp  # a position embedding that grows linearly down the image
    pos = model.backbone.pos_embed_for((29, 7))  # 120 x 32 images
    assert pos.shape == (1, 1 + 29 * 7, 32)
    rows = pos[0, 1:, 0].view(29, 7)[:, 3]
    rows = rows.detach()
    assert torch.all(rows[1:] >= rows[:-1] - 1e-4) and abs(float(rows[0])) < 0.3 and abs(float(rows[-1]) - 14) < 0.3
    assert model(torch.randn(2, 3, 120, 32), 0).shape == (2, 32)


# ----------------------------------------------------------------------------- SIE
def test_modality_embedding_changes_the_output_and_zero_weight_removes_it():
    x = torch.randn(2, 3, 64, 32)
    with_sie = tiny_vit(sie_weight=3.0).eval()
    with torch.no_grad():
        assert not torch.allclose(with_sie(x, 0), with_sie(x, 1), atol=1e-5)
    without = tiny_vit(sie_weight=0.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(without(x, 0), without(x, 1))
        # the embedding enters as tokens + pos + w * S[m]: zeroing the table equals weight 0
        with_sie.backbone.modality_embed.zero_()
        torch.testing.assert_close(with_sie(x, 0), with_sie(x, 1))
    assert tiny_vit(sie_modality=False).backbone.modality_embed is None


def test_camera_embedding_needs_camera_ids():
    model = tiny_vit(sie_cameras=6).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        a = model(x, 0, cameras=torch.tensor([0, 0]))
        b = model(x, 0, cameras=torch.tensor([3, 3]))
    assert not torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ConfigError, match="got no camera ids"):
        model(x, 0)


# ----------------------------------------------------------------------------- JPM
def test_jpm_shift_and_shuffle_by_hand():
    from vireid.modeling.methods.vit import jpm_rearrange

    patches = torch.arange(8, dtype=torch.float32).view(1, 8, 1)
    # shift 2: [2 3 4 5 6 7 0 1]; 2 groups [[2 3 4 5] [6 7 0 1]] interleaved -> [2 6 3 7 4 0 5 1]
    assert jpm_rearrange(patches, 2, 2).flatten().tolist() == [2, 6, 3, 7, 4, 0, 5, 1]
    assert jpm_rearrange(patches, 0, 1).flatten().tolist() == list(range(8))
    # 7 patches, 2 groups: the token before the last is repeated once (TransReID's fallback)
    odd = torch.arange(7, dtype=torch.float32).view(1, 7, 1)
    assert jpm_rearrange(odd, 1, 2).flatten().tolist() == [1, 5, 2, 6, 3, 0, 4, 6]
    # TransReID's shuffle_unit(features, shift=5, group=2, begin=1) on [cls, p0..p7]: the patches from
    # index begin-1+shift = 4 on, then patches 0..3, grouped -> our shift of 4 patches
    features = torch.arange(9, dtype=torch.float32).view(1, 9, 1)  # 0 = class token, 1..8 = p0..p7
    transreid = torch.cat([features[:, 5:], features[:, 1:5]], dim=1).view(1, 2, 4, 1).transpose(1, 2).reshape(1, 8, 1)
    torch.testing.assert_close(jpm_rearrange(features[:, 1:], 4, 2), transreid)


def test_each_local_branch_sees_only_its_group_of_patches():
    from vireid.modeling.methods.vit import jpm_rearrange

    model = tiny_vit(jpm=True, jpm_shift=4, jpm_groups=2, jpm_branches=4).eval()
    n = 105
    tokens = torch.randn(1, 1 + n, 32)
    base = model.local_features(tokens)
    order = jpm_rearrange(torch.arange(n, dtype=torch.float32).view(1, n, 1), 4, 2).flatten().long().tolist()
    length = n // 4
    for patch in (0, 17, 60, 100):
        changed = tokens.clone()
        changed[0, 1 + patch] += torch.randn(32)  # not a constant: LayerNorm would remove that
        after = model.local_features(changed)
        moved = [k for k in range(4) if not torch.equal(after[k], base[k])]
        position = order.index(patch)
        expected = [position // length] if position < 4 * length else []
        assert moved == expected, (patch, moved, expected)
    changed = tokens.clone()
    changed[0, 0] += torch.randn(32)  # the class token is in front of every part
    assert all(not torch.equal(a, b) for a, b in zip(model.local_features(changed), base))


def test_jpm_losses_follow_transreid_weighting():
    import torch.nn.functional as F

    from vireid.config import load_config
    from vireid.engine.trainer import build_losses

    cfg = load_config(REPO / "configs" / "vit_synth.yaml")
    model = tiny_vit(jpm=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    modalities = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    out = model(torch.randn(8, 3, 64, 32), modalities)
    losses = build_losses(cfg, 6, 32)
    terms = {name: cfg.loss_terms()[name].weight * losses[name](out[cfg.loss_terms()[name].input], labels, modalities)
             for name in losses}
    ce = F.cross_entropy(out["logits"], labels, label_smoothing=0.1)
    part_ce = torch.stack([F.cross_entropy(p, labels, label_smoothing=0.1) for p in out["part_logits"]]).mean()
    torch.testing.assert_close(terms["cross_entropy"] + terms["part_id"], 0.5 * ce + 0.5 * part_ce)
    assert set(terms) == {"cross_entropy", "triplet", "part_id", "part_triplet"}
    assert all(torch.isfinite(v) for v in terms.values())


# ----------------------------------------------------------------------------- two-stream split
def test_specific_stages_copy_leading_stages_per_modality():
    model = tiny_vit(specific_stages=2)
    vis, ir = model.backbone.modality_branches
    assert len(vis) == 2 and len(model.backbone.shared_stages) == 1  # patch embedding + block 0 per modality
    assert vis[0].proj.weight is not ir[0].proj.weight
    torch.testing.assert_close(vis[0].proj.weight, ir[0].proj.weight)  # copies start equal
    assert model.backbone.last_block is model.backbone.shared_stages[0]
    out = model(torch.randn(2, 3, 64, 32), torch.tensor([0, 0]))
    (out["features"].sum()).backward()
    assert vis[0].proj.weight.grad is not None and ir[0].proj.weight.grad is None  # visible batch: infrared unused
    assert model.backbone.last_block.attn.qkv.weight.grad is not None
    shared = tiny_vit(specific_stages=0)
    assert len(shared.backbone.modality_branches) == 0 and len(shared.backbone.shared_stages) == 3
    # a mixed batch equals the same samples run one modality at a time
    model.eval()
    x = torch.randn(4, 3, 64, 32)
    mixed = model(x, torch.tensor([0, 1, 1, 0]))
    torch.testing.assert_close(mixed[[0, 3]], model(x[[0, 3]], 0))
    torch.testing.assert_close(mixed[[1, 2]], model(x[[1, 2]], 1))


# ----------------------------------------------------------------------------- layer-wise lr decay
def test_layer_wise_lr_decay_groups():
    model = tiny_vit(jpm=True, specific_stages=1)
    groups = model.param_groups(0.01, layer_decay=0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    by_layer = {g["layer"]: g for g in groups}
    assert sorted(by_layer) == [0, 1, 2, 3]  # embeddings, block 0, block 1 (+ JPM copy), norm + heads
    for layer, group in by_layer.items():
        assert group["lr"] == pytest.approx(0.01 * 0.5 ** (3 - layer))
    names = {id(p): n for n, p in model.named_parameters()}
    layer0 = {names[id(p)] for p in by_layer[0]["params"]}
    assert {"backbone.cls_token", "backbone.pos_embed", "backbone.modality_embed",
            "backbone.modality_branches.0.0.proj.weight"} <= layer0
    assert id(model.local_block[0].attn.qkv.weight) in {id(p) for p in by_layer[2]["params"]}
    assert id(model.classifier.fc.weight) in {id(p) for p in by_layer[3]["params"]}
    assert [g["lr"] for g in model.param_groups(0.01)] == [0.01, 0.01]


def test_layer_decay_config_key_reaches_the_optimizer_and_is_refused_for_cnns():
    from conftest import tiny_overrides
    from torch import nn

    from vireid.config import load_config
    from vireid.engine.trainer import build_model, build_optimizer

    cfg = load_config(REPO / "configs" / "vit_synth.yaml", ["optim.layer_decay=0.8"])
    model = build_model(cfg, 10)
    optimizer = build_optimizer(cfg, model, nn.ModuleDict())
    lrs = sorted({round(g["lr"], 10) for g in optimizer.param_groups})
    assert lrs == sorted(round(0.001 * 0.8 ** k, 10) for k in range(6))  # 4 blocks: layers 0..5
    cnn = load_config(REPO / "configs" / "baseline_synth.yaml",
                      tiny_overrides(Path("unused"), Path("unused"), **{"optim.layer_decay": 0.8}))
    with pytest.raises(ConfigError, match="optim.layer_decay"):
        build_optimizer(cnn, build_model(cnn, 10), nn.ModuleDict())


def test_freeze_stages_and_backbone_lr_mult_work_on_the_vit():
    from vireid.engine.transfer import freeze_stages, scale_backbone_lr

    model = tiny_vit(specific_stages=1)
    frozen = freeze_stages(model, 2)  # stage 0 (both patch embeddings) and stage 1 (block 0)
    assert [type(m).__name__ for m in frozen] == ["PatchEmbedStage", "PatchEmbedStage", "Block"]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    groups = scale_backbone_lr(model.param_groups(0.1), model, 0.1, 0.5)
    assert {g["name"]: g["lr"] for g in groups} == {"backbone": 0.05, "head": 0.1}


# ----------------------------------------------------------------------------- deployment
def test_pruning_refuses_vit_with_one_sentence():
    from vireid.modeling.pruning import prune_model

    with pytest.raises(VireidError) as err:
        prune_model(tiny_vit(), 0.5)
    assert "does not support ViT models" in str(err.value) and "\n" not in str(err.value)


def test_bf16_autocast_forward_is_finite():
    model = tiny_vit(jpm=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    assert all(torch.isfinite(v.float()).all() for v in out.values())


def test_grad_cam_on_the_last_block_input():
    from vireid.viz.cam import compute_cams

    model = tiny_vit(jpm=True, specific_stages=1).eval()
    maps = compute_cams(model, torch.randn(2, 3, 64, 32), [0, 1], "norm")
    assert maps.shape == (2, 64, 32) and float(maps.max()) > 0.0


@pytest.fixture(scope="module")
def vit_run(tiny_synth_root, tmp_path_factory) -> Path:
    """vit_synth shrunk to a tiny ViT, trained one short epoch through the trainer."""
    from conftest import tiny_overrides

    from vireid.workflows.train_run import run_training
    from vireid.config import load_config

    out = tmp_path_factory.mktemp("vit-run")
    overrides = tiny_overrides(tiny_synth_root, out, **{
        "train.epochs": 1, "train.threads": 1, "model.params.backbone": "vit_tiny_patch16_224",
        "model.params.vit_kwargs": "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
        "optim.layer_decay": 0.9, "train.eval_every": 0, "train.select_best": "last", "sampler.epoch_length": 3,
    })
    cfg = load_config(REPO / "configs" / "vit_synth.yaml", overrides)
    run_training(cfg, out / "run", evaluate=False)
    return out / "run"


def test_trainer_runs_the_vit_recipe_and_the_checkpoint_reloads(vit_run):
    import json

    from vireid.engine.trainer import load_model_from_checkpoint

    summary = json.loads((vit_run / "train_summary.json").read_text())
    assert summary["epochs"] == 1 and all(
        torch.isfinite(torch.tensor(summary["history"][0][k])) for k in ("loss", "part_id", "part_triplet"))
    model, cfg, ckpt = load_model_from_checkpoint(vit_run / "best.pt")
    assert cfg.model.method == "vit" and model.jpm and ckpt["embed_dim"] == 32
    assert model(torch.randn(2, 3, 64, 32), torch.tensor([0, 1])).shape == (2, 32 * 5)


def test_camera_sie_trains_and_evaluates_with_the_cameras_side_input(tiny_synth_root, tmp_path):
    """data.extras.cameras carries each record's camera number through the loaders to the camera SIE, in
    training and in evaluation; a number outside the table and a missing side input are one sentence."""
    import json

    from conftest import tiny_overrides

    from vireid.data.build import build_train_data
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.plugins import user_config
    from vireid.workflows.train_run import run_training

    overrides = tiny_overrides(tiny_synth_root, tmp_path, **{
        "train.epochs": 1, "train.threads": 1, "model.params.backbone": "vit_tiny_patch16_224",
        "model.params.vit_kwargs": "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
        "model.params.sie_cameras": 7, "data.extras": "{cameras: dataset}",
        "train.eval_every": 0, "train.select_best": "last", "sampler.epoch_length": 2, "eval.trials": 1,
    })
    cfg = user_config(REPO / "configs" / "vit_synth.yaml", overrides)
    data = build_train_data(cfg)
    cameras = data.train_loader.extras["cameras"]
    assert cameras.tolist() == [r.camid for r in data.train_records] and set(cameras.tolist()) <= set(range(1, 7))
    run_training(cfg, tmp_path / "run", evaluate=True)
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert results and all(0 <= r["mean"]["mAP"] <= 100 for r in results)
    model, _, _ = load_model_from_checkpoint(tmp_path / "run" / "best.pt")
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x, 0, cameras=torch.tensor([1, 1])), model(x, 0, cameras=torch.tensor([2, 2])))
    with pytest.raises(ConfigError, match=r"camera number 7 is outside .*sie_cameras: 7"):
        model(x, 0, cameras=torch.tensor([7, 1]))
    with pytest.raises(ConfigError, match=r"data\.extras: \{cameras: dataset\}"):
        model(x, 0)
    with pytest.raises(ConfigError, match="cameras: dataset"):
        build_train_data(user_config(REPO / "configs" / "vit_synth.yaml", [*overrides, "data.extras={cameras: somewhere}"]))


def test_onnx_export_matches_pytorch(vit_run, tmp_path):
    from vireid.export.onnx import export_checkpoint, load_onnx_embedder

    report = export_checkpoint(vit_run / "best.pt", tmp_path / "vit.onnx")
    assert report.max_abs_diff <= 1e-4 and report.embed_dim == 32 * 5
    assert "mixed" in report.checks
    assert load_onnx_embedder(tmp_path / "vit.onnx").dim == 160


def test_visualize_cam_draws_attention_rollout_for_a_vit_run(vit_run, tiny_synth_root, tmp_path, monkeypatch):
    """``vireid visualize cam`` on a ViT run picks attention rollout by itself; --method gradcam still works."""
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    import vireid.viz.cam as cam
    from vireid.cli import app

    calls = []
    real = cam.rollout_cams
    monkeypatch.setattr(cam, "rollout_cams", lambda *a, **k: calls.append(1) or real(*a, **k))
    images = [str(next((tiny_synth_root / c).rglob("*.jpg"))) for c in ("cam1", "cam3")]
    runner = CliRunner()
    for method, used in (("auto", 1), ("gradcam", 0)):
        out = tmp_path / f"{method}.png"
        calls.clear()
        result = runner.invoke(app, ["visualize", "cam", str(vit_run), "--image", images[0], "--image", images[1],
                                     "--modality", "visible", "--modality", "infrared", "--out", str(out),
                                     "--device", "cpu", "--method", method])
        assert result.exit_code == 0, result.output
        assert len(calls) == used and np.asarray(Image.open(out).convert("RGB")).std() > 5
    bad = runner.invoke(app, ["visualize", "cam", str(vit_run), "--image", images[0], "--modality", "visible",
                              "--out", str(tmp_path / "x.png"), "--method", "rollout", "--layer", "backbone.token_grid"])
    assert isinstance(bad.exception, VireidError) and "drop --layer" in str(bad.exception)


def test_camera_range_is_checked_once_per_loader_not_in_forward(tiny_synth_root, tmp_path, monkeypatch):
    """The camera SIE's range check (a .max(), a device sync on an accelerator) runs on whole loaders' cameras
    (training loader, each evaluated pool), never inside forward; a too-small table still stops in one sentence
    before the first step."""
    from conftest import tiny_overrides

    from vireid.data.extras import check_model_extras
    from vireid.modeling.backbones.vit import ViTBackbone
    from vireid.plugins import user_config
    from vireid.workflows.train_run import run_training

    checked: list[int] = []
    forwards: list[int] = []
    real_check, real_forward = ViTBackbone.check_cameras, ViTBackbone.forward_tokens
    monkeypatch.setattr(ViTBackbone, "check_cameras", lambda self, c: checked.append(len(c)) or real_check(self, c))
    monkeypatch.setattr(ViTBackbone, "forward_tokens", lambda self, *a, **k: forwards.append(1) or real_forward(self, *a, **k))
    model = tiny_vit(sie_cameras=4).eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 32), 0, cameras=torch.tensor([1, 3]))
    assert checked == [] and len(forwards) == 1  # forward reads nothing back
    with pytest.raises(ConfigError, match=r"camera number 4 is outside .*sie_cameras: 4"):
        check_model_extras(model, {"cameras": torch.tensor([0, 4, 1])})
    with pytest.raises(ConfigError, match="camera number -1 is outside"):
        check_model_extras(model, {"cameras": torch.tensor([-1, 2])})

    overrides = tiny_overrides(tiny_synth_root, tmp_path, **{
        "train.epochs": 1, "train.threads": 1, "model.params.backbone": "vit_tiny_patch16_224",
        "model.params.vit_kwargs": "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
        "model.params.sie_cameras": 7, "data.extras": "{cameras: dataset}",
        "train.eval_every": 1, "train.select_best": "last", "sampler.epoch_length": 3,
    })
    checked.clear(), forwards.clear()
    run_training(user_config(REPO / "configs" / "vit_synth.yaml", overrides), tmp_path / "run", evaluate=False)
    # whole pools only: the training loader (252 images) first, then the validation pool (90 images) each time it
    # is embedded (validation, verification threshold); many more forwards than checks
    assert checked[0] == 252 and set(checked[1:]) == {90} and len(forwards) > len(checked)
    small = [o.replace("sie_cameras=7", "sie_cameras=3") for o in overrides]
    with pytest.raises(ConfigError, match=r"camera number 6 is outside .*sie_cameras: 3"):
        run_training(user_config(REPO / "configs" / "vit_synth.yaml", small), tmp_path / "small", evaluate=False)
