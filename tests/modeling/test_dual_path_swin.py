"""Dual-path Swin / NPU-ReID paper: modality augmentation (MAG), multi-masking triplet (MMT), dual-path Swin;
and every shipped config validates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vireid.data.modality_augmentation import ModalityPatchExchange, pair_modalities, sample_regions
from vireid.data.transforms import BatchContext, add_configured_steps, build_train_transform
from vireid.errors import ConfigError
from vireid.modeling.losses.multi_masking import MultiMaskingTripletLoss

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "vireid" / "configs"


def test_pairs_follow_identity_and_order():
    labels = torch.tensor([5, 5, 7, 7, 7, 5, 5, 7, 9])
    mods = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    vis, ir = pair_modalities(labels, mods)
    pairs = sorted(zip(vis.tolist(), ir.tolist()))
    # 1st/2nd visible of id 5 <-> 1st/2nd infrared of id 5; 1st visible of 7 <-> the only infrared of 7
    assert pairs == [(0, 5), (1, 6), (2, 7)]
    assert pair_modalities(torch.tensor([1, 1]), torch.tensor([0, 0]))[0].numel() == 0


def test_region_sampling_matches_the_papers_formula():
    gen = torch.Generator().manual_seed(0)
    boxes = sample_regions(2000, 100, 50, (0.1, 0.1), (2.0, 2.0), gen)
    h = (boxes[:, 2] - boxes[:, 0]).float()
    w = (boxes[:, 3] - boxes[:, 1]).float()
    # unclipped boxes: h = sqrt(S A r) = sqrt(5000*0.1*2) ~ 31.6, w = sqrt(S A / r) ~ 15.8
    inside = (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < 100) & (boxes[:, 3] < 50)
    assert inside.sum() > 100
    assert (h[inside] - math.sqrt(1000)).abs().max() <= 1.0 and (w[inside] - math.sqrt(250)).abs().max() <= 1.0
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 100).all() and (boxes[:, 3] <= 50).all()


@pytest.mark.parametrize("size", [(224, 224), (64, 32), (288, 144)])
def test_mag_exchanged_area_stays_in_the_sampled_range(size):
    """The exchanged area must stay in [A_l, A_h] of the image: boxes clipped at the border made the mean
    exchanged share 0.157 where the sampled A implies (0.02 + 0.4) / 2 = 0.21."""
    height, width = size
    boxes = sample_regions(4000, height, width, (0.02, 0.4), (0.3, 1 / 0.3), torch.Generator().manual_seed(0))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= height).all() and (boxes[:, 3] <= width).all()
    share = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double() / (height * width)
    assert share.min() >= 0.02 and share.max() <= 0.4
    assert share.mean().item() == pytest.approx(0.21, abs=0.006)
    # aspect ratios outside what fits (a 0.4 share at r = 3.33 is taller than a square image) keep the area
    tall = sample_regions(200, 40, 40, (0.4, 0.4), (3.33, 3.33), torch.Generator().manual_seed(1))
    tall_share = ((tall[:, 2] - tall[:, 0]) * (tall[:, 3] - tall[:, 1])).double() / 1600
    assert torch.allclose(tall_share, torch.full_like(tall_share, 0.4), atol=0.01) and (tall[:, 2] <= 40).all()


def test_mag_runs_first_in_the_pipeline_as_in_the_paper(tiny_synth_root, tmp_path):
    transform = build_train_transform(16, 8)
    add_configured_steps(transform, [{"type": "modality_patch_exchange", "p": 1.0}])
    assert transform.names()[:2] == ["modality_patch_exchange", "pad_crop_flip"]  # before crop and flip
    from conftest import tiny_overrides
    from vireid.config import load_config
    from vireid.data.build import build_train_transform_from_config

    for name in ("mag_mmt_synth", "dual_path_swin_synth", "dual_path_swin_sysu"):
        cfg = load_config(CONFIGS / f"{name}.yaml", tiny_overrides(tiny_synth_root, tmp_path))
        assert build_train_transform_from_config(cfg).names()[0] == "modality_patch_exchange", name


def test_mag_exchanges_the_same_region_between_partners():
    b, h, w = 8, 20, 10
    images = torch.zeros(b, 3, h, w, dtype=torch.uint8)
    for i in range(b):
        images[i] = i * 10 + 1  # every image a distinct constant
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    mods = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    step = ModalityPatchExchange(p=1.0, area=(0.1, 0.3), aspect=(0.5, 2.0))
    out = step(images, mods, torch.Generator().manual_seed(1), context=BatchContext(labels=labels))
    vis, ir = step.last_pairs
    assert sorted(zip(vis.tolist(), ir.tolist())) == [(0, 4), (1, 5), (2, 6), (3, 7)]
    for (v, t), (y1, x1, y2, x2) in zip(zip(vis.tolist(), ir.tolist()), step.last_boxes.tolist()):
        region = torch.zeros(h, w, dtype=torch.bool)
        region[y1:y2, x1:x2] = True
        assert region.any()
        assert (out[v][:, region] == images[t][:, region]).all() and (out[v][:, ~region] == images[v][:, ~region]).all()
        assert (out[t][:, region] == images[v][:, region]).all() and (out[t][:, ~region] == images[t][:, ~region]).all()
    none = ModalityPatchExchange(p=0.0)(images, mods, torch.Generator().manual_seed(1), context=BatchContext(labels=labels))
    assert torch.equal(none, images)


def test_mag_from_config_in_the_pipeline_and_errors():
    transform = build_train_transform(16, 8)
    add_configured_steps(transform, [{"type": "modality_patch_exchange", "before": "normalize", "p": 1.0}])
    assert transform.names()[:3] == ["pad_crop_flip", "modality_patch_exchange", "normalize"]
    images = torch.randint(0, 255, (4, 3, 16, 8), dtype=torch.uint8)
    out = transform(images, torch.tensor([0, 0, 1, 1]), torch.Generator().manual_seed(0),
                    context=BatchContext(labels=torch.tensor([3, 4, 3, 4])))
    assert out.shape == (4, 3, 16, 8) and out.dtype == torch.float32
    with pytest.raises(ConfigError, match="labels"):
        ModalityPatchExchange()(images, torch.tensor([0, 0, 1, 1]), torch.Generator())
    with pytest.raises(ConfigError, match="area"):
        ModalityPatchExchange(area=(0.5, 0.1))


def _hand_mmt(x, labels, mods, m1, m2, lam):
    n = len(labels)
    total_n, total_p, count_n, count_p = 0.0, 0.0, 0, 0
    for a in range(n):
        pos = [float((x[a] - x[j]).norm()) for j in range(n) if mods[j] != mods[a] and labels[j] == labels[a]]
        neg = [float((x[a] - x[j]).norm()) for j in range(n) if mods[j] != mods[a] and labels[j] != labels[a]]
        if pos and neg:
            total_n += max(0.0, max(pos) - min(neg) + m1)
            count_n += 1
        if pos:
            total_p += lam * max(0.0, max(pos) - min(pos) - m2)
            count_p += 1
    return total_n / count_n + total_p / count_p


def test_mmt_equals_hand_computation_and_ignores_same_modality_samples():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.5, 0.5], [2.0, 2.0], [1.0, 3.0], [4.0, 0.0]],
                     requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    mods = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    loss_fn = MultiMaskingTripletLoss(margin=0.3, compress_margin=0.1, compress_weight=0.5, normalize=False)
    loss = loss_fn(x, labels, mods)
    assert loss.item() == pytest.approx(_hand_mmt(x.detach(), labels, mods, 0.3, 0.1, 0.5), abs=1e-5)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # a same-modality sample of another identity placed on the anchor changes nothing (masked out)
    y = torch.cat([x.detach(), x.detach()[:1]])
    base = loss_fn(x.detach(), labels, mods)
    with_intruder = loss_fn(y, torch.cat([labels, torch.tensor([9])]), torch.cat([mods, torch.tensor([0])]))
    # the intruder is an extra anchor (no cross-modality positive: not counted) and a negative only for infrared anchors
    assert with_intruder.item() >= base.item() - 1e-6
    neg_only = MultiMaskingTripletLoss(positive_term=False, normalize=False)(x.detach(), labels, mods)
    pos_only = MultiMaskingTripletLoss(negative_term=False, compress_weight=0.5, compress_margin=0.1,
                                       normalize=False)(x.detach(), labels, mods)
    assert (neg_only + pos_only).item() == pytest.approx(
        _hand_mmt(x.detach(), labels, mods, 0.3, 0.1, 0.5), abs=1e-5)
    summed = MultiMaskingTripletLoss(reduction="sum")(x.detach(), labels, mods)
    assert summed.item() > MultiMaskingTripletLoss()(x.detach(), labels, mods).item()
    # the default works on L2-normalised features: the same hand computation on the unit vectors
    unit = torch.nn.functional.normalize(x.detach(), dim=1)
    assert MultiMaskingTripletLoss()(x.detach(), labels, mods).item() == pytest.approx(
        _hand_mmt(unit, labels, mods, 0.3, 0.1, 1.0), abs=1e-5)


def _two_identity_batch():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 32, generator=gen) + 2.0 * torch.randn(1, 32, generator=gen)
    labels = torch.tensor([0, 0, 1, 1]).repeat(4)
    mods = torch.tensor([0] * 8 + [1] * 8)
    return x, labels, mods


def test_mmt_defaults_are_a_real_constraint_not_lowered_by_shrinking_the_features():
    """With m2 = 0 on raw features, MMTP could always be lowered by shrinking every feature (it is
    scale-homogeneous, and the BNNeck cross-entropy does not see the pre-BN scale)."""
    x, labels, mods = _two_identity_batch()
    for kwargs in ({}, {"negative_term": False}, {"positive_term": False}):
        loss_fn = MultiMaskingTripletLoss(**kwargs)
        full = loss_fn(x, labels, mods).item()
        assert full > 0.01, kwargs
        assert loss_fn(0.01 * x, labels, mods).item() == pytest.approx(full, rel=1e-4), kwargs
    # the old behaviour, kept reachable, shows the failure the defaults avoid
    old = MultiMaskingTripletLoss(negative_term=False, compress_margin=0.0, normalize=False)
    assert old(0.01 * x, labels, mods).item() < 0.02 * old(x, labels, mods).item()


def test_mmtp_switches_off_inside_m2_and_pulls_only_the_hardest_positive():
    # visible anchor a with two infrared positives: p_easy at cosine distance ~0.2, p_hard a bit further
    a = torch.tensor([1.0, 0.0, 0.0])
    p_easy = torch.tensor([0.98, 0.2, 0.0])
    p_hard = torch.tensor([0.95, 0.25, 0.1])
    x = torch.stack([a, p_easy, p_hard]).requires_grad_(True)
    labels, mods = torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 1])
    loss_fn = MultiMaskingTripletLoss(negative_term=False)
    unit = torch.nn.functional.normalize(x.detach(), dim=1)
    spread = float((unit[0] - unit[2]).norm() - (unit[0] - unit[1]).norm())
    assert 0 < spread < loss_fn.compress_margin  # the spread is tolerated: the term is off
    assert loss_fn(x, labels, mods).item() == 0.0
    far = x.detach().clone()
    far[2] = torch.tensor([0.3, 0.9, 0.3])  # now far beyond m2
    far.requires_grad_(True)
    loss = loss_fn(far, labels, mods)
    assert loss.item() > 0
    loss.backward()
    assert far.grad[1].abs().max() == 0  # the easiest positive is the reference, not pushed away
    assert far.grad[2].abs().max() > 0  # the hardest one is pulled in
    with pytest.raises(ConfigError, match="modality"):
        loss_fn(x, labels)


def test_dual_path_swin_splits_stages_and_trains():
    from vireid.modeling.methods.dual_path_swin import DualPathSwin

    model = DualPathSwin(num_classes=4, img_size=(32, 32), specific_stages=3)
    branches = model.backbone.modality_branches
    assert len(branches) == 2 and len(model.backbone.shared_stages) == 2  # stem + stages 1-2 | stages 3-4
    with torch.no_grad():  # the copies start equal; make the visible path differ
        for p in branches[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(4, 3, 32, 32)
    mods = torch.tensor([0, 0, 1, 1])
    out = model(x, mods)
    assert out["features"].shape == (4, 768) and out["logits"].shape == (4, 4)
    out["logits"].sum().backward()
    model.eval()
    with torch.no_grad():
        a = model(x[:1], torch.tensor([0]))
        b = model(x[:1], torch.tensor([1]))
    assert a.shape == (1, 768) and not torch.allclose(a, b)  # the two paths differ
    shared = DualPathSwin(num_classes=4, img_size=(32, 32), specific_stages=0).eval()
    with torch.no_grad():
        assert torch.allclose(shared(x[:1], torch.tensor([0])), shared(x[:1], torch.tensor([1])))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    from vireid.config import load_config
    from vireid.engine.trainer import validate_config

    validate_config(load_config(path))


def test_mag_mmt_config_trains_end_to_end(tmp_path, tiny_synth_root):
    from conftest import tiny_overrides
    from vireid.workflows.train_run import run_training
    from vireid.config import load_config

    cfg = load_config(CONFIGS / "mag_mmt_synth.yaml", tiny_overrides(tiny_synth_root, tmp_path) + ["train.epochs=1"])
    summary = run_training(cfg, tmp_path / "run")
    assert summary["test"] and all(math.isfinite(r["mean"]["mAP"]) for r in summary["test"])
    assert "mmt" in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_mag_mmt_grid_rows_place_mag_and_configure_mmt_as_marked(tmp_path, tiny_synth_root):
    from conftest import tiny_overrides
    from vireid.workflows.ablation.command import resolve_grid_config
    from vireid.config import load_config
    from vireid.data.build import build_train_transform_from_config
    from vireid.workflows.ablation import load_grid, row_overrides
    from vireid.engine.trainer import build_losses

    path = CONFIGS / "ablations" / "mag_mmt_synth.yaml"
    grid = load_grid(path)
    for row in grid.rows:
        cfg = load_config(resolve_grid_config(grid.config, path),
                          tiny_overrides(tiny_synth_root, tmp_path) + row_overrides(grid, row, [], tmp_path))
        names = build_train_transform_from_config(cfg).names()
        mag = {"-": None, "first": 0, "late": names.index("normalize") - 1}[row.marks["MAG"]]
        assert ("modality_patch_exchange" in names) == (mag is not None), row.name
        if mag is not None:
            assert names.index("modality_patch_exchange") == mag, row.name
        losses = build_losses(cfg, 4, 8)
        mmt = losses["mmt"] if "mmt" in losses else None
        assert (mmt is not None) == (row.marks["MMT form"] != "-"), row.name
        if mmt is not None:
            assert mmt.normalize == (row.marks["MMT form"] == "unit"), row.name
            assert mmt.compress_margin == (0.1 if row.marks["MMT form"] == "unit" else 0.0), row.name
