"""PDFENet: joint heatmaps, ADMG (eqs. 1-5), IDI (eqs. 6-8), momentum modality
classifiers (eqs. 13-14), CMCE (eqs. 9-15), center contrast (eqs. 16-17), the method and its
ablations, and a tiny `vireid train` + `vireid eval` run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vireid.errors import ConfigError
from vireid.modeling import LOSSES, METHODS
from vireid.modeling.heads import CosineClassifier, MomentumModalityClassifiers
from vireid.modeling.losses.cmce import CenterContrastLoss, CrossModalityCrossEntropy
from vireid.modeling.modules.admg import (
    MID_JOINTS,
    MPII_JOINTS,
    PRIOR_POSE,
    TOP_JOINTS,
    AdaptiveDetailMaskGeneration,
    joint_heatmaps,
    joint_indices,
    part_stripe,
    prior_joints,
)
from vireid.modeling.modules.idi import InterDetailInteraction

# ----------------------------------------------------------------------------- heatmaps


def test_heatmap_is_a_gaussian_in_grid_cells_scaled_by_visibility():
    # 16x8 image, stride 4 -> 4x2 grid; cell (row 1, col 0) has its centre at pixel (x 1.5, y 5.5)
    joints = torch.tensor([[[1.5, 5.5, 1.0], [5.5, 13.5, 0.5], [3.0, 3.0, 0.0]]])
    heat = joint_heatmaps(joints, (16, 8), (4, 2), sigma=1.0, stride=4)
    assert heat.shape == (1, 3, 4, 2)
    assert heat[0, 0, 1, 0] == pytest.approx(1.0)
    assert heat[0, 0, 2, 0] == pytest.approx(math.exp(-0.5))  # one cell away: exp(-1 / 2σ²)
    assert heat[0, 0, 2, 1] == pytest.approx(math.exp(-1.0))  # diagonal: d² = 2
    assert heat[0, 1].max() == pytest.approx(0.5) and heat[0, 1, 3, 1] == pytest.approx(0.5)
    assert not heat[0, 2].any()  # invisible joint: no heat


def test_heatmap_is_max_pooled_to_the_feature_map():
    joints = torch.tensor([[[1.5, 5.5, 1.0]]])
    fine = joint_heatmaps(joints, (16, 8), (4, 2), sigma=0.5, stride=4)
    coarse = joint_heatmaps(joints, (16, 8), (2, 1), sigma=0.5, stride=4)
    assert coarse.shape == (1, 1, 2, 1)
    assert torch.allclose(coarse, F.max_pool2d(fine, 2))


def test_prior_pose_and_joint_names():
    prior = prior_joints(3, (64, 32))
    assert prior.shape == (3, 16, 3) and (prior[..., 2] == 1).all()
    head, ankle = MPII_JOINTS.index("head-top"), MPII_JOINTS.index("r-ankle")
    assert prior[0, head, 1] < prior[0, ankle, 1]  # upright
    assert prior[0, head, 0] == pytest.approx(PRIOR_POSE[head][0] * 32 - 0.5)
    assert joint_indices(TOP_JOINTS) == [7, 8, 9, 13, 12] and joint_indices(MID_JOINTS) == [3, 14, 11, 15]
    with pytest.raises(ConfigError, match="unknown MPII joint"):
        joint_indices(["nose"])


def test_part_stripes_cover_the_map_in_thirds():
    fmap = torch.arange(24.0).view(1, 1, 24, 1)
    assert [part_stripe(fmap, k).shape[2] for k in range(3)] == [8, 8, 8]
    assert part_stripe(fmap, 2)[0, 0, 0, 0] == 16
    small = torch.arange(4.0).view(1, 1, 4, 1)
    assert part_stripe(small, 2).flatten().tolist() == [3.0]


# ----------------------------------------------------------------------------- ADMG


def test_admg_equations_on_hand_made_tensors():
    admg = AdaptiveDetailMaskGeneration(channels=2, group_sizes=(2, 1))
    with torch.no_grad():  # credibility = sigmoid(bias): 0.5, 0.25 (top) and 0.8 (mid)
        admg.credibility.weight.zero_()
        admg.credibility.bias.copy_(torch.logit(torch.tensor([0.5, 0.25, 0.8])))
    fmap = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]], requires_grad=True)  # [1,2,2,2]
    heat = torch.zeros(1, 3, 2, 2)
    heat[0, 0, 0, 0] = 1.0
    heat[0, 1, 0, 1] = 1.0
    heat[0, 2, 1, :] = torch.tensor([0.5, 1.0])
    masks, cred = admg(fmap, heat)
    assert torch.allclose(cred, torch.tensor([[0.5, 0.25, 0.8]]))
    assert torch.allclose(masks[0, 0], torch.tensor([[0.5, 0.25], [0.0, 0.0]]))  # eq. 2: W_top H_top
    assert torch.allclose(masks[0, 1], torch.tensor([[0.0, 0.0], [0.4, 0.8]]))  # eq. 3
    maps = admg.detail_maps(fmap, masks)  # eqs. 4-5
    assert maps.shape == (2, 1, 2, 2, 2)
    assert torch.allclose(maps[0, 0, 0], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    assert torch.allclose(maps[1, 0, 1], torch.tensor([[0.0, 0.0], [0.0, 0.8]]))
    pooled = admg.pooled_details(fmap, masks)
    assert torch.allclose(pooled, maps.mean(dim=(3, 4)).transpose(0, 1))
    # eq. 1 reads GAP([F; H]): changing a heatmap changes the credibilities through W_1
    torch.nn.init.normal_(admg.credibility.weight)
    heat.requires_grad_(True)
    masks, cred = admg(fmap, heat)
    admg.pooled_details(fmap, masks).sum().backward()
    assert fmap.grad is not None and fmap.grad.abs().sum() > 0
    assert admg.credibility.weight.grad.abs().sum() > 0
    assert admg.credibility.weight.shape == (3, 2 + 3)  # (C + S) -> S
    with pytest.raises(ValueError, match="heatmaps"):
        admg(fmap, torch.zeros(1, 2, 2, 2))


# ----------------------------------------------------------------------------- IDI


def test_idi_equations_against_a_plain_computation():
    torch.manual_seed(0)
    idi = InterDetailInteraction(channels=8, reduction=4)
    details = torch.randn(2, 3, 8, requires_grad=True)
    out = idi(details)
    q, k, v = idi.query(details), idi.key(details), idi.value(details)
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1)  # eq. 6
    purified = attn @ v
    w2, w3 = idi.weight[0], idi.weight[2]
    weight = torch.relu(purified @ w2.weight.T + w2.bias) @ w3.weight.T + w3.bias  # eq. 7, C -> C/4 -> 1
    assert w2.out_features == 2 and w3.out_features == 1
    assert torch.allclose(out, weight * purified, atol=1e-6)  # eq. 8
    assert torch.allclose(idi.attention(details).sum(-1), torch.ones(2, 3))
    out.sum().backward()
    assert details.grad.abs().sum() > 0 and idi.query.weight.grad.abs().sum() > 0


def test_idi_with_identity_projections_mixes_the_details_by_similarity():
    idi = InterDetailInteraction(channels=2, reduction=1)
    with torch.no_grad():
        for layer in (idi.query, idi.key, idi.value):
            layer.weight.copy_(torch.eye(2) * 10)
            layer.bias.zero_()
        idi.weight[0].weight.zero_(), idi.weight[0].bias.zero_()
        idi.weight[2].weight.zero_(), idi.weight[2].bias.fill_(2.0)  # W_d = 2 for every detail
    details = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    out = idi(details)
    # strongly peaked attention: detail 1 looks only at itself, details 0 and 2 share their value
    assert torch.allclose(out[0, 1], torch.tensor([0.0, 20.0]), atol=1e-3)
    assert torch.allclose(out[0, 0], torch.tensor([20.0, 0.0]), atol=1e-3)


# ----------------------------------------------------------------------------- classifiers


def test_momentum_modality_classifiers_pick_own_and_cross_and_follow_slowly():
    torch.manual_seed(0)
    head = MomentumModalityClassifiers(4, 3, momentum=0.7, kind="linear", std=1.0)
    with torch.no_grad():
        head.momentum_weight.copy_(torch.randn(2, 3, 4))
    x = torch.randn(4, 4, requires_grad=True)
    mods = torch.tensor([0, 1, 1, 0])
    own, cross = head(x, mods)
    w, wm = head.weight.detach(), head.momentum_weight
    expected_own = torch.stack([x[i].detach() @ w[m].T for i, m in enumerate(mods.tolist())])
    expected_cross = torch.stack([x[i].detach() @ wm[1 - m].T for i, m in enumerate(mods.tolist())])
    assert torch.allclose(own, expected_own, atol=1e-6) and torch.allclose(cross, expected_cross, atol=1e-6)
    assert own.requires_grad and cross.requires_grad  # the momentum prediction's gradient reaches the feature
    before = head.momentum_weight.clone()
    head.update_momentum()
    assert torch.allclose(head.momentum_weight, 0.7 * before + 0.3 * w)  # eqs. 13-14


def test_cmce_cross_gradient_reaches_the_features_and_detached_variant_keeps_it_out():
    """Eqs. 13-14 stop gradients into the momentum classifiers' weights only: p^IV = cls_M^I(f^V) still depends
    on f^V, so CMCE's soft-label term moves the visible feature towards what the infrared classifier sees."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, requires_grad=True)
    mods = torch.tensor([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    grads = {}
    for detach in (False, True):
        head = MomentumModalityClassifiers(4, 3, kind="cosine", detach_cross=detach)
        with torch.no_grad():  # the momentum copies differ from the online classifiers, as after training
            head.momentum_weight.copy_(torch.randn(2, 3, 4))
        own, cross = head(x, mods)
        assert cross.requires_grad != detach
        # the cross-modal part of the gradient alone: d/dx of the soft-label entropy term through p^IV
        if not detach:
            (g,) = torch.autograd.grad(cross.sum(), x, retain_graph=True)
            assert (g.abs().sum(dim=1) > 0).all()  # every sample, both modalities
        loss = CrossModalityCrossEntropy(3, lambda_m=1.0, lambda_id=0.0)(torch.stack([own, cross], 1), labels, mods)
        (grads[detach],) = torch.autograd.grad(loss, x)
        assert head.momentum_weight.grad is None  # θ_M only follows θ_C (eqs. 13-14)
    assert not torch.allclose(grads[False], grads[True], atol=1e-6)  # the detached variant loses that gradient
    assert "detach_cross=True" in repr(MomentumModalityClassifiers(4, 3, detach_cross=True))
    model = METHODS.get("pdfenet")(num_classes=6, backbone="resnet10t", img_size=(64, 32), details=[], idi=False,
                                   detach_cross=True)
    assert model.classifier.detach_cross


def test_cosine_classifiers_give_scaled_cosines():
    head = CosineClassifier(3, 2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    logits = head(torch.tensor([[2.0, 0.0, 0.0]]))
    assert torch.allclose(logits, torch.tensor([[10.0, 10.0 / math.sqrt(2)]]))
    modal = MomentumModalityClassifiers(3, 2, kind="cosine", scale=10.0)
    own, _ = modal(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    assert own.abs().max() <= 10.0 + 1e-5
    with pytest.raises(ConfigError):
        MomentumModalityClassifiers(3, 2, momentum=1.0)


# ----------------------------------------------------------------------------- losses


def test_cmce_matches_equations_9_to_15():
    torch.manual_seed(1)
    logits = torch.randn(4, 2, 5, requires_grad=True)
    labels = torch.tensor([0, 3, 0, 3])
    mods = torch.tensor([0, 0, 0, 1])  # three visible samples, one infrared
    loss_fn = CrossModalityCrossEntropy(num_classes=5, lambda_m=2.5, lambda_id=0.5)
    loss = loss_fn(logits, labels, mods)
    log_own = F.log_softmax(logits[:, 0], 1)
    soft = F.softmax(logits[:, 1], 1)
    cross = -(soft * log_own).sum(1)
    ident = -log_own[torch.arange(4), labels]
    expected = 2.5 * (cross[:3].mean() + cross[3]) + 0.5 * (ident[:3].mean() + ident[3])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[:, 0].abs().sum() > 0 and logits.grad[:, 1].abs().sum() > 0  # the soft labels too
    # a single-modality batch counts only that modality; K is checked
    one = loss_fn(logits.detach()[:3], labels[:3], mods[:3])
    assert one.item() == pytest.approx((2.5 * cross[:3].mean() + 0.5 * ident[:3].mean()).item(), rel=1e-6)
    with pytest.raises(ValueError, match="modality_logits"):
        loss_fn(torch.zeros(4, 5), labels, mods)
    assert LOSSES.get("cmce") is CrossModalityCrossEntropy


def test_cmce_kl_soft_label_loss_removes_the_confidence_shortcut():
    """Eq. 9 as printed, H(p^IV, p^VV), is lowest for a one-hot soft label (on the own prediction's top identity,
    right or wrong), lower than for a soft label equal to the own prediction: it rewards confidence, the shortcut
    the features took in the synthetic ablation. The KL form is lowest (0) when the two predictions agree and
    gives the own-modality prediction the same gradient."""
    labels, mods = torch.tensor([0, 1]), torch.tensor([0, 1])
    own = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    ce, kl = (CrossModalityCrossEntropy(3, lambda_m=1.0, lambda_id=0.0, soft_label_loss=form) for form in
              ("cross_entropy", "kl"))

    def loss(fn, soft_logits):
        return fn(torch.stack([own, soft_logits], 1), labels, mods).item()

    one_hot = 12.0 * own  # the same top identity as the own prediction, near-certain
    assert loss(ce, one_hot) < loss(ce, own) - 0.3  # cross entropy: more confidence pays off
    assert loss(kl, own) == pytest.approx(0.0, abs=1e-6)  # KL: agreement is the minimum ...
    assert loss(kl, one_hot) > 0.1  # ... and extra confidence costs
    # the own-modality gradient is the same for both forms (a detached soft label trains as before)
    logits = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(2))
    grads = []
    for fn in (ce, kl):
        x = logits.clone().requires_grad_(True)
        fn(x, torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 1])).backward()
        grads.append(x.grad[:, 0])
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    with pytest.raises(ConfigError, match="soft_label_loss"):
        CrossModalityCrossEntropy(3, soft_label_loss="js")


def test_cmce_soft_label_agrees_with_identity_when_classifiers_agree():
    logits = torch.full((2, 2, 3), -10.0)
    logits[:, :, 1] = 10.0  # both predictions certain of class 1
    loss_fn = CrossModalityCrossEntropy(num_classes=3)
    assert loss_fn(logits, torch.tensor([1, 1]), torch.tensor([0, 1])).item() < 1e-6


def test_center_contrast_pulls_to_batch_centres_and_pushes_centres_apart():
    features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([5, 5, 9, 9])
    pull_only = CenterContrastLoss(margin=0.0)(features, labels)
    assert pull_only.item() == pytest.approx((1 + 1 + 0 + 0) / 4)  # ||f - C_p||, C_5 = (1, 0), C_9 = (0, 1)
    loss = CenterContrastLoss(margin=2.0)(features, labels)
    assert loss.item() == pytest.approx(0.5 + (2.0 - math.sqrt(2)), rel=1e-5)  # both ordered pairs alike
    loss.backward()
    assert features.grad.abs().sum() > 0
    far = CenterContrastLoss(margin=1.0)(features * 10, labels)  # centres 14 apart: no push
    assert far.item() == pytest.approx(5.0, rel=1e-5)
    single = CenterContrastLoss(margin=1.0)(features[:2], labels[:2])  # one identity: pull only
    assert single.item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the method


def _model(**params):
    return METHODS.get("pdfenet")(num_classes=6, backbone="resnet10t", img_size=(64, 32), **params)


def _batch(n: int = 4):
    torch.manual_seed(0)
    images = torch.randn(2 * n, 3, 64, 32)
    mods = torch.tensor([0] * n + [1] * n)
    joints = prior_joints(2 * n, (64, 32)).clone() + torch.tensor([1.0, 2.0, 0.0])
    return images, mods, joints


def test_pdfenet_outputs_and_embedding():
    model = _model()
    images, mods, joints = _batch()
    out = model(images, mods, joints=joints)
    c = model.backbone.out_channels
    assert model.embed_dim == 4 * c
    assert out["features"].shape == out["bn_features"].shape == (8, 4 * c)
    assert out["modality_logits"].shape == (8, 2, 6) and out["logits"].shape == (8, 6)
    assert out["detail_features"].shape == (8, 3, c) and out["joint_credibility"].shape == (8, 9)
    assert out["detail_masks"].shape[:2] == (8, 2)
    assert torch.equal(out["logits"], out["modality_logits"][:, 0])
    loss = CrossModalityCrossEntropy(6)(out["modality_logits"], torch.arange(8) % 6, mods) + \
        CenterContrastLoss()(out["features"], torch.arange(8) % 4)
    loss.backward()
    for name in ("admg.credibility.weight", "idi.query.weight", "classifier.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    for part in (model.backbone.modality_branches[0], model.backbone.modality_branches[1], model.backbone.shared_stages):
        assert sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None) > 0
    before = model.classifier.momentum_weight.clone()
    with torch.no_grad():  # one plain SGD step on the online classifiers, then the trainer's hook
        model.classifier.weight -= 100.0 * model.classifier.weight.grad
    model.on_after_step()
    assert torch.allclose(model.classifier.momentum_weight, 0.7 * before + 0.3 * model.classifier.weight.detach())
    assert not torch.equal(before, model.classifier.momentum_weight)
    model.eval()
    emb = model(images, mods, joints=joints)
    assert emb.shape == (8, 4 * c)
    assert torch.allclose(emb, model(images, mods, joints=joints))


def test_pdfenet_without_joints_uses_the_prior_pose():
    model = _model().eval()
    images, mods, _ = _batch()
    prior = prior_joints(8, (64, 32))
    without = model(images, mods)
    assert torch.allclose(without, model(images, mods, joints=prior), atol=1e-6)
    lost = torch.zeros(8, 16, 3)  # no person found: every joint invisible -> the prior again
    assert torch.allclose(without, model(images, mods, joints=lost), atol=1e-6)
    assert torch.allclose(model(images, 1)[4:], without[4:], atol=1e-5)  # one modality code for the batch
    with pytest.raises(ValueError, match="joints must have shape"):
        model(images, mods, joints=torch.zeros(8, 3))


def test_pdfenet_joints_move_the_masks():
    model = _model().eval()
    images, mods, joints = _batch()
    low = joints.clone()
    low[..., 1] += 20  # every joint 20 pixels lower
    a = model.forward_head(model.forward_features(images, mods), joints, mods)["detail_masks"]
    b = model.forward_head(model.forward_features(images, mods), low, mods)["detail_masks"]
    rows = torch.arange(a.shape[2], dtype=torch.float32).view(1, 1, -1, 1)
    centre_a = (a * rows).sum((2, 3)) / a.sum((2, 3))
    centre_b = (b * rows).sum((2, 3)) / b.sum((2, 3))
    assert (centre_b > centre_a).all()


@pytest.mark.parametrize(
    "params, dim",
    [
        ({"details": [], "idi": False, "classifier": "shared", "classifier_kind": "linear"}, 1),  # baseline
        ({"details": ["part", "part", "part"]}, 4),  # Table 5 "P P P"
        ({"details": ["admg", "part", "part"], "idi": False}, 4),
        ({"details": ["admg", "admg", "admg"], "pooling": "gem"}, 4),  # "A A A", pooled maps
        ({"classifier": "shared"}, 4),  # without CMCE
    ],
)
def test_pdfenet_ablations_build_and_run(params, dim):
    model = _model(**params)
    images, mods, joints = _batch(2)
    out = model(images, mods, joints=joints)
    assert out["bn_features"].shape == (4, dim * model.backbone.out_channels)
    assert out["logits"].shape == (4, 6)
    assert ("modality_logits" in out) == (params.get("classifier", "modality") == "modality")
    model.on_after_step()


def test_pdfenet_config_errors():
    with pytest.raises(ConfigError, match="details"):
        _model(details=["admg", "pcb", "part"])
    with pytest.raises(ConfigError, match="idi"):
        _model(details=[])
    with pytest.raises(ConfigError, match="classifier"):
        _model(classifier="arcface")


# ----------------------------------------------------------------------------- end to end


def test_configs_follow_the_paper():
    from conftest import REPO
    from vireid.config import load_config

    sysu, regdb, synth = (load_config(REPO / "configs" / f"pdfenet_{n}.yaml") for n in ("sysu", "regdb", "synth"))
    for cfg in (sysu, regdb):
        assert (cfg.data.height, cfg.data.width) == (384, 128) and cfg.data.joints == "auto"
        assert (cfg.sampler.num_ids, cfg.sampler.num_per_modality) == (8, 4)
        assert cfg.optim.name == "adam" and cfg.optim.lr == 2e-4 and cfg.optim.weight_decay == 5e-4
        assert cfg.sched.milestones == [80, 120] and cfg.sched.gamma == 0.1 and cfg.train.epochs == 240
        assert cfg.model.params["momentum"] == 0.7 and cfg.model.params["backbone"] == "resnet50"
        assert cfg.loss_terms()["cmce"].params == {"lambda_m": 2.5, "lambda_id": 0.5}
    assert regdb.data.format == "regdb" and regdb.eval.protocols == ["regdb-v2t", "regdb-t2v"]
    assert synth.data.joints == "synthetic" and synth.model.params["backbone"] == "resnet10t"
    assert synth.model.method == "pdfenet" and synth.model.params["details"] == ["admg", "admg", "part"]


def test_ablation_grid_rows_build_and_compute_their_losses(tmp_path):
    from conftest import REPO
    from vireid.config import load_config
    from vireid.workflows.ablation import load_grid, row_overrides
    from vireid.engine.trainer import build_losses, build_model, validate_config

    grid = load_grid(REPO / "configs" / "ablations" / "pdfenet_synth.yaml")
    assert [r.name for r in grid.rows] == ["baseline", "admg", "cmce", "cmce_detached", "cmce_kl", "admg_cmce",
                                          "pdfenet", "pdfenet_detached", "pdfenet_kl", "ppp", "app", "aaa"]
    images, mods, joints = _batch(2)
    labels = torch.tensor([0, 1, 0, 1])
    for row in grid.rows:
        cfg = load_config(REPO / "configs" / "pdfenet_synth.yaml", row_overrides(grid, row, [], tmp_path))
        validate_config(cfg)
        model = build_model(cfg, 6)
        losses = build_losses(cfg, 6, model.embed_dim)
        out = model(images, mods, joints=joints)
        for name, term in cfg.loss_terms().items():
            value = losses[name](out[term.input], labels, mods)
            assert torch.isfinite(value), (row.name, name)
        assert ("cmce" in losses) == bool(row.marks["CMCE"]), row.name
        assert (model.idi is not None) == bool(row.marks["IDI"]), row.name
        if row.marks["CMCE"]:
            assert model.classifier.detach_cross == (row.marks["soft label"] == "detached"), row.name
            assert losses["cmce"].soft_label_loss == ("kl" if row.marks["soft label"] == "grad, KL" else "cross_entropy")


def test_train_and_eval_through_the_cli(tiny_synth_root, tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from conftest import REPO, tiny_overrides
    from vireid.cli import app
    from vireid.engine.trainer import load_model_from_checkpoint

    extra = {"name": "pdf", "train.epochs": 1, "sampler.epoch_length": 3, "train.threads": 1, "train.eval_every": 0,
             "train.select_best": "last"}
    res = CliRunner().invoke(app, ["train", "--config", "pdfenet_synth", "--no-eval",
                                   *tiny_overrides(tiny_synth_root, tmp_path, **extra)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = tmp_path / "pdf"
    history = json.loads((run / "train_summary.json").read_text())["history"]
    assert all(math.isfinite(h["cmce"]) and h["cmce"] > 0 and h["center_contrast"] >= 0 for h in history)
    model, cfg, _ = load_model_from_checkpoint(run)
    assert cfg.model.method == "pdfenet" and cfg.data.joints == "synthetic"
    assert not torch.equal(model.classifier.momentum_weight, model.classifier.weight.detach())  # it followed
    res = CliRunner().invoke(app, ["eval", str(run), "--protocol", "sysu-all-single", "--trials", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = json.loads((run / "test_results.json").read_text())
    assert rows[0]["name"] == "sysu-all-single" and 0.0 < rows[0]["mean"]["mAP"] <= 100.0
    # benchmarks/cmce_soft_labels.py reads a trained CMCE run's soft labels back (as a user runs it)
    import os
    import re
    import subprocess
    import sys

    doc = tmp_path / "results.md"
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cmce_soft_labels.py"), "--runs", str(tmp_path),
                          "--rows", "pdf", "--batches", "2", "--doc", str(doc)], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = re.search(r"\| pdf \| with gradient \| ([0-9.]+) \(uniform: ([0-9.]+)\) \| ([0-9.]+) \| (\d+) % \| (\d+) % \|",
                    doc.read_text())
    assert row, doc.read_text()
    entropy, uniform, max_p = (float(row.group(i)) for i in (1, 2, 3))
    assert 0.0 <= entropy <= uniform + 1e-6 and uniform > 1.0  # ln K of the training identities
    assert 0.0 < max_p <= 1.0
