"""DFW+SLN parts against their equations on hand-made tensors: DFW (eqs. 1-3), SLN, the overlap
penalty (eqs. 4-5), the partwise loss wrapper, the dfw_sln method, and a tiny train + eval run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conftest import REPO, tiny_overrides
from vireid.errors import ConfigError
from vireid.modeling import LOSSES, METHODS
from vireid.modeling.flops import count_forward_flops, count_parameters
from vireid.modeling.losses import CrossEntropyLabelSmooth, HeteroCenterTripletLoss
from vireid.modeling.losses.overlap import OverlapPenaltyLoss, cell_centers, channel_gem, region_centers
from vireid.modeling.losses.partwise import PartwiseLoss
from vireid.modeling.losses.triplet import BatchHardTripletLoss
from vireid.modeling.methods.baseline import BaselineReID
from vireid.modeling.methods.dfw_sln import DFWSLNReID
from vireid.modeling.modules.dfw import DynamicFeatureWeakening, dfw_response, weakening_matrix
from vireid.modeling.modules.sln import SegmentedLearningNetwork

# One image, two channels, a 2x2 map.
#   channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, 6], [1, 0]]
#   eq. 1: mean_c = [[0.5, 4], [2, 2]], max_c = [[1, 6], [3, 4]]  ->  f = [[1.5, 10], [5, 6]]
#   mean(f) = 22.5 / 4 = 5.625  ->  high-response = {10, 6}, e = 2/4 = 0.5
X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 6.0], [1.0, 0.0]]]])
F_EXPECTED = torch.tensor([[[[1.5, 10.0], [5.0, 6.0]]]])


# ----------------------------------------------------------------------------------------- DFW
def test_dfw_response_is_channel_mean_plus_channel_max():
    torch.testing.assert_close(dfw_response(X), F_EXPECTED)


def test_weakening_matrices_by_hand():
    f = F_EXPECTED
    # M_D1: threshold mean (5.625), fixed alpha on {10, 6}
    torch.testing.assert_close(weakening_matrix(f, "d1", alpha=0.2), torch.tensor([[[[1.0, 0.2], [1.0, 0.2]]]]))
    # M_D3: threshold mean, factor e = 0.5
    torch.testing.assert_close(weakening_matrix(f, "d3", alpha=0.2), torch.tensor([[[[1.0, 0.5], [1.0, 0.5]]]]))
    # M_D2: f rescaled to [0, 1] = [[0, 1], [3.5/8.5, 4.5/8.5]] = [[0, 1], [0.41, 0.53]]
    #   beta 0.5 -> high {10, 6}, e = 0.5;  beta 0.4 -> high {10, 5, 6}, e = 0.75
    torch.testing.assert_close(weakening_matrix(f, "d2", beta=0.5), torch.tensor([[[[1.0, 0.5], [1.0, 0.5]]]]))
    torch.testing.assert_close(weakening_matrix(f, "d2", beta=0.4), torch.tensor([[[[1.0, 0.75], [0.75, 0.75]]]]))
    # per image: a second image with a different share of high response gets its own e
    two = torch.cat([f, torch.tensor([[[[0.0, 0.0], [0.0, 4.0]]]])])
    m = weakening_matrix(two, "d3")
    torch.testing.assert_close(m[1], torch.tensor([[[1.0, 1.0], [1.0, 0.25]]]))
    with pytest.raises(ConfigError):
        weakening_matrix(f, "d4")


def test_dfw_weakens_the_dominant_region_relative_to_the_rest():
    """A constructed map: a bright 2x2 blob (every channel 4) on a dim background (1). DFW must leave the
    blob *weaker relative to the background* than it came in: the weakening factor of eq. 2 is the
    blob's share of the background's gain. (The literal x * sigmoid(f M) gave the blob the larger gate:
    sigmoid(0.5 * 8) = 0.98 vs sigmoid(2) = 0.88.)"""
    x = torch.ones(1, 3, 4, 4)
    x[..., :2, :2] = 4.0
    blob = torch.zeros(4, 4, dtype=torch.bool)
    blob[:2, :2] = True
    for mode, factor in (("d1", 0.5), ("d3", 0.25), ("d2", 0.25)):  # e = 4 / 16 of the map is high-response
        block = DynamicFeatureWeakening(mode, alpha=0.5, beta=0.5)
        assert block.reading == "scale"
        gain = (block(x) / x)[0, 0]
        assert torch.allclose(gain[blob], torch.tensor(factor)) and torch.allclose(gain[~blob], torch.tensor(1.0))
        torch.testing.assert_close(block.attention(x)[0, 0], gain)
        out = block(x)[0, 0]
        assert out[blob].mean() / out[~blob].mean() == pytest.approx(4.0 * factor)  # the contrast shrinks by the factor
    old = DynamicFeatureWeakening("d1", alpha=0.5, reading="sigmoid_gate")
    gate = old.attention(x)[0, 0]
    assert gate[blob].mean() > gate[~blob].mean()  # the literal reading gates the blob *more* than the rest
    with pytest.raises(ConfigError, match="reading"):
        DynamicFeatureWeakening("d1", reading="gate")
    assert tiny_method(dfw_reading="sigmoid_gate").dfw["2"].reading == "sigmoid_gate"


def test_dfw_reading_travels_with_the_weights_and_old_checkpoints_keep_the_sigmoid_gate():
    trained_old = DynamicFeatureWeakening("d1", reading="sigmoid_gate").state_dict()
    del trained_old["reading_code"]  # a checkpoint written before DFW had readings
    block = DynamicFeatureWeakening("d1")  # today's default config
    block.load_state_dict(trained_old)
    assert block.reading == "sigmoid_gate"  # evaluated as it was trained
    fresh = DynamicFeatureWeakening("d1", reading="sigmoid_gate")
    fresh.load_state_dict(DynamicFeatureWeakening("d1").state_dict())
    assert fresh.reading == "scale"


def test_dfw_output_eq3_and_gradients():
    block = DynamicFeatureWeakening("d1", alpha=0.2, reading="sigmoid_gate")
    x = X.clone().requires_grad_(True)
    out = block(x)
    gate = torch.sigmoid(F_EXPECTED * torch.tensor([[[[1.0, 0.2], [1.0, 0.2]]]]))
    torch.testing.assert_close(block.attention(X), gate)
    torch.testing.assert_close(out, X * gate)
    # the high-response positions are gated by sigmoid(alpha f) < sigmoid(f)
    assert gate[0, 0, 0, 1] < torch.sigmoid(torch.tensor(10.0)) and gate[0, 0, 0, 0] == torch.sigmoid(torch.tensor(1.5))
    # the matrix is built from comparisons: no gradient through it, even when f has one
    f = dfw_response(x)
    assert f.requires_grad and not weakening_matrix(f, "d3").requires_grad
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # analytic gradient check (away from the thresholds M is constant)
    torch.manual_seed(0)
    xd = torch.rand(2, 3, 3, 4, dtype=torch.double, requires_grad=True)
    for mode in ("d1", "d2", "d3"):
        for reading in ("scale", "sigmoid_gate"):
            assert torch.autograd.gradcheck(DynamicFeatureWeakening(mode, 0.3, 0.6, reading=reading), (xd,))
    assert sum(p.numel() for p in block.parameters()) == 0
    with pytest.raises(ConfigError):
        DynamicFeatureWeakening("d1", alpha=1.5)


# ----------------------------------------------------------------------------------------- SLN
def test_sln_parallel_independent_copies():
    torch.manual_seed(0)
    stage = nn.Conv2d(2, 3, 1)
    sln = SegmentedLearningNetwork(stage, num_branches=3)
    x = torch.randn(4, 2, 5, 3)
    out = sln(x)
    assert out.shape == (3, 4, 3, 5, 3)
    torch.testing.assert_close(out[0], stage(x))
    torch.testing.assert_close(out[1], out[2])  # same start weights...
    with torch.no_grad():
        sln.branches[1].weight.add_(1.0)  # ...but separate parameters
    out = sln(x)
    assert not torch.allclose(out[1], out[2]) and torch.allclose(out[0], out[2])
    assert count_parameters(sln) == 3 * count_parameters(stage)
    with pytest.raises(ConfigError):
        SegmentedLearningNetwork(stage, num_branches=0)


# -------------------------------------------------------------------------------- overlap loss
def peaked_maps(peaks, height=2, width=2, channels=1, value=1000.0):
    """[N_sub, B, C, h, w] zero maps with one strong peak per (sub-network, image)."""
    num, batch = len(peaks), len(peaks[0])
    maps = torch.zeros(num, batch, channels, height, width)
    for s, row in enumerate(peaks):
        for b, (i, j) in enumerate(row):
            maps[s, b, :, i, j] = value
    return maps


def test_channel_gem_and_cell_centres_by_hand():
    x = torch.tensor([[[[1.0]], [[3.0]]]])  # C = 2 at one position
    torch.testing.assert_close(channel_gem(x, p=3.0), torch.tensor([[[(14.0) ** (1 / 3)]]]))
    # 2x2 map on a 288x144 reference: cells of 144x72 pixels, centres at 72/216 and 36/108
    expected = torch.tensor([[72.0, 36.0], [72.0, 108.0], [216.0, 36.0], [216.0, 108.0]])
    torch.testing.assert_close(cell_centers(2, 2, (288, 144)), expected)
    # 18x9 at 288x144 (ResNet layer4, last stride 1): 16-pixel cells
    assert cell_centers(18, 9, (288, 144))[10].tolist() == [8.0 + 16.0, 8.0 + 16.0]


def test_overlap_penalty_hard_values_eq5():
    loss = OverlapPenaltyLoss(separation=100.0, center="straight_through")
    # image 0: peaks (0,0) and (0,1): d = 72 -> 100 - 72 = 28;  image 1: (0,0) and (1,1): d = 161 -> 0
    maps = peaked_maps([[(0, 0), (0, 0)], [(0, 1), (1, 1)]])
    torch.testing.assert_close(loss(maps, torch.zeros(2)), torch.tensor(28.0 / 2))
    # three sub-networks: pairs (0,1) d=72, (0,2) d=144, (1,2) d=161 -> mean of [28, 0, 0]
    three = peaked_maps([[(0, 0)], [(0, 1)], [(1, 0)]])
    torch.testing.assert_close(loss(three, torch.zeros(1)), torch.tensor(28.0 / 3))
    # one sub-network: no pair, zero loss that stays in the graph
    single = peaked_maps([[(0, 0)]]).requires_grad_(True)
    zero = loss(single, torch.zeros(1))
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError):
        loss(torch.zeros(2, 3, 4, 4), torch.zeros(3))


def test_soft_argmax_centre_by_hand_and_size_invariance():
    # one channel, map [[1, 0], [0, 0]]: z = [10, ~0, ~0, ~0] at T = 0.1 (zeros are clamped to 1e-6)
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    centre = region_centers(channel_gem(maps.unsqueeze(1)), (288, 144), temperature=0.1)
    low = 1e-6 / 1.0 / 0.1
    w = torch.softmax(torch.tensor([10.0, low, low, low], dtype=torch.double), 0)
    coords = torch.tensor([[72.0, 36.0], [72.0, 108.0], [216.0, 36.0], [216.0, 108.0]], dtype=torch.double)
    torch.testing.assert_close(centre[0].double(), w @ coords, rtol=1e-5, atol=1e-4)
    # the same relative peak on a 4x4 map lands at the same reference-pixel position (S keeps its meaning)
    big = torch.zeros(1, 1, 4, 4)
    big[..., 0:2, 0:2] = 1.0  # the top-left quarter, as the 2x2 map's top-left cell
    hard_small = region_centers(torch.tensor([[[5.0, 0.0], [0.0, 0.0]]]), mode="straight_through")
    soft_big = region_centers(channel_gem(big), temperature=0.01)
    torch.testing.assert_close(soft_big, hard_small, atol=1e-3, rtol=0)


def test_overlap_gradient_moves_the_centres_apart():
    torch.manual_seed(0)
    loss = OverlapPenaltyLoss(separation=100.0, reference_size=(288, 144), center="soft")
    maps = (torch.rand(2, 3, 4, 6, 3) + 0.1).requires_grad_(True)
    before = loss(maps, torch.zeros(3))
    assert before.item() > 0
    before.backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0
    with torch.no_grad():
        moved = (maps - 0.05 * maps.grad / maps.grad.abs().max()).clamp(min=1e-3)
        c0, c1 = loss.centers(maps), loss.centers(moved)
    d0 = (c0[0] - c0[1]).norm(dim=-1)
    d1 = (c1[0] - c1[1]).norm(dim=-1)
    assert (d1 > d0).all()
    assert loss(moved, torch.zeros(3)).item() < before.item()
    # straight-through: exact argmax value, soft-argmax gradient
    st = OverlapPenaltyLoss(center="straight_through")
    maps.grad = None
    st(maps, torch.zeros(3)).backward()
    assert maps.grad.abs().sum() > 0


def test_overlap_default_centre_is_the_argmax_so_the_hinge_switches_off():
    """The paper takes "the position of the maximum response" as the centre. On broad responses (a trained
    network's maps are far from one-hot) the soft-argmax sits near the middle of the map whatever the
    peak, so two sub-networks whose maxima are far apart still pay the hinge."""
    maps = torch.full((2, 1, 1, 8, 4), 0.8)  # 8x4 cells on 288x144: 36-pixel cells
    maps[0, 0, 0, 0, 1] = 1.0  # sub-network 0 peaks in the top row
    maps[1, 0, 0, 7, 2] = 1.0  # sub-network 1 in the bottom row: 7 cells = 252 px apart (> S = 100)
    default = OverlapPenaltyLoss()
    assert default.center == "straight_through"
    hard = default.centers(maps)
    assert (hard[0] - hard[1]).norm().item() == pytest.approx(math.hypot(252.0, 36.0))
    assert default(maps, torch.zeros(1)).item() == 0.0
    soft = OverlapPenaltyLoss(center="soft")
    gap = (soft.centers(maps)[0] - soft.centers(maps)[1]).norm().item()
    assert gap < 100.0 and soft(maps, torch.zeros(1)).item() == pytest.approx(100.0 - gap, rel=1e-4)
    # close maxima: the straight-through hinge is on and its gradient (the soft-argmax's) is not zero
    near = maps.clone()
    near[1, 0, 0, 7, 2] = 0.8
    near[1, 0, 0, 1, 1] = 1.0  # one cell below the other peak
    near.requires_grad_(True)
    value = default(near, torch.zeros(1))
    assert value.item() == pytest.approx(100.0 - 36.0)
    value.backward()
    assert near.grad.abs().sum() > 0


def test_overlap_straight_through_has_a_gradient_when_the_maxima_coincide():
    """The two sub-networks start as copies of layer4, so their maxima coincide at first. The hinge is then
    fully on (S - 0) and must still push: the gradient is the soft-argmax *distance's*, whose direction the
    (slightly different) soft centres give -- a zero gap between the hard centres has no direction."""
    maps = torch.full((2, 1, 1, 8, 4), 0.5)
    maps[:, 0, 0, 3, 1] = 1.0  # the same peak cell
    maps[0, 0, 0, 0, :] = 0.7  # sub-network 0 also responds on the top row, 1 on the bottom row
    maps[1, 0, 0, 7, :] = 0.7
    maps.requires_grad_(True)
    loss = OverlapPenaltyLoss()(maps, torch.zeros(1))
    assert loss.item() == pytest.approx(100.0)
    loss.backward()
    assert maps.grad.abs().sum() > 0
    with torch.no_grad():  # a small step along the gradient moves the soft centres apart
        moved = maps - 0.01 * maps.grad / maps.grad.abs().max()
        soft = OverlapPenaltyLoss(center="soft")
        before, after = soft.centers(maps), soft.centers(moved)
    assert (after[0] - after[1]).norm() > (before[0] - before[1]).norm()


def test_overlap_config_errors():
    for bad in ({"separation": -1}, {"temperature": 0}, {"center": "hard"}, {"reference_size": [288]}):
        with pytest.raises(ConfigError):
            OverlapPenaltyLoss(**bad)


# ------------------------------------------------------------------------------ partwise loss
def test_partwise_loss_is_the_mean_of_per_part_losses():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    mods = torch.tensor([0, 1, 0, 1, 0, 1])
    logits = torch.randn(2, 6, 3)
    feats = torch.randn(3, 6, 8)
    ce = PartwiseLoss("cross_entropy", {"epsilon": 0.1}, num_classes=3)
    ref = CrossEntropyLabelSmooth(3, 0.1)
    torch.testing.assert_close(ce(logits, labels), (ref(logits[0], labels) + ref(logits[1], labels)) / 2)
    tri = LOSSES.build("partwise", loss="triplet", params={"margin": 0.3})
    bh = BatchHardTripletLoss(0.3)
    torch.testing.assert_close(tri(feats, labels), torch.stack([bh(f, labels) for f in feats]).mean())
    hc = PartwiseLoss("hetero_center_triplet")
    torch.testing.assert_close(hc(feats, labels, mods), torch.stack([HeteroCenterTripletLoss()(f, labels, mods) for f in feats]).mean())
    # differs from stacking the parts into one batch (which would mix parts in the triplets)
    assert not torch.allclose(tri(feats, labels), bh(feats.flatten(0, 1), labels.repeat(3)))
    with pytest.raises(ConfigError):
        PartwiseLoss("no_such_loss")
    with pytest.raises(ConfigError):
        PartwiseLoss("triplet", {"marginn": 0.3})
    with pytest.raises(ValueError):
        tri(feats[:, :4], labels)


# ------------------------------------------------------------------------------------- method
IMAGES = torch.randn(4, 3, 64, 32)
MODS = torch.tensor([0, 0, 1, 1])
LABELS = torch.tensor([0, 1, 0, 1])


def tiny_method(**kwargs) -> DFWSLNReID:
    torch.manual_seed(0)
    params = dict(num_classes=5, backbone="resnet10t", img_size=(64, 32))
    params.update(kwargs)
    return METHODS.build("dfw_sln", **params)


def test_method_outputs_embedding_and_gradients():
    model = tiny_method()
    assert model.backbone.specific_stages == 2 and model.dfw_after_stages == [2, 3]
    assert isinstance(model.backbone.shared_stages[-1], SegmentedLearningNetwork)
    model.train()
    out = model(IMAGES, MODS)
    c = model.part_dim
    assert out["part_maps"].shape[:3] == (2, 4, c) and out["part_logits"].shape == (2, 4, 5)
    assert out["features"].shape == (4, 2 * c) and out["bn_features"].shape == (4, 2 * c)
    torch.testing.assert_close(out["features"][:, c:], out["part_features"][1])
    torch.testing.assert_close(out["logits"], out["part_logits"].mean(0))
    terms = [
        PartwiseLoss("cross_entropy", num_classes=5)(out["part_logits"], LABELS),
        PartwiseLoss("triplet")(out["part_features"], LABELS),
        HeteroCenterTripletLoss()(out["features"], LABELS, MODS),
        0.5 * OverlapPenaltyLoss()(out["part_maps"], LABELS),
    ]
    sum(terms).backward()
    sln = model.backbone.shared_stages[-1]
    # (timm zero-initialises each residual block's last BN scale, so only some tensors get a gradient at step 0)
    for branch in list(sln.branches) + list(model.backbone.modality_branches):
        assert sum(p.grad.abs().sum() for p in branch.parameters() if p.grad is not None) > 0
    for head in model.classifiers:
        assert head.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        emb = model(IMAGES, MODS)
        heads = model.forward_head(model.forward_features(IMAGES, MODS))
    assert emb.shape == (4, model.embed_dim) and model.embed_dim == 2 * c
    torch.testing.assert_close(emb, heads["bn_features"])


def test_one_branch_without_dfw_is_the_baseline():
    ours = tiny_method(num_branches=1, dfw_after_stages=[])
    torch.manual_seed(1)
    base = BaselineReID(num_classes=5, backbone="resnet10t", specific_stages=2, non_local=None, img_size=(64, 32))
    state = {}
    for key, value in base.state_dict().items():
        key = key.replace("backbone.shared_stages.2.", "backbone.shared_stages.2.branches.0.")
        key = key.replace("neck.", "necks.0.").replace("classifier.", "classifiers.0.")
        state[key] = value
    ours.load_state_dict(state)
    for mode in (True, False):
        ours.train(mode)
        base.train(mode)
        a, b = ours(IMAGES, MODS), base(IMAGES, MODS)
        if mode:
            for key in ("features", "bn_features", "logits"):
                torch.testing.assert_close(a[key], b[key])
            assert OverlapPenaltyLoss()(a["part_maps"], LABELS).item() == 0.0
        else:
            torch.testing.assert_close(a, b)


def test_dfw_changes_the_features_and_cost_is_one_more_last_stage():
    plain = tiny_method(dfw_after_stages=[])
    weakened = tiny_method()
    weakened.load_state_dict(plain.state_dict())
    plain.eval(), weakened.eval()
    with torch.no_grad():
        assert not torch.allclose(plain(IMAGES, MODS), weakened(IMAGES, MODS))
    one = tiny_method(num_branches=1)
    two = tiny_method(num_branches=2)
    stage4 = one.backbone.shared_stages[-1].branches[0]
    extra = count_parameters(stage4) + count_parameters(one.necks[0]) + count_parameters(one.classifiers[0])
    assert count_parameters(two) - count_parameters(one) == extra
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        x = one.backbone.forward_shared(one.backbone.forward_specific(IMAGES[:1], 0), 2, 4)
        with FlopCounterMode(display=False) as counter:
            stage4(x)
    stage_flops = counter.get_total_flops()
    diff = count_forward_flops(two, (64, 32)) - count_forward_flops(one, (64, 32))
    classifier_flops = 2 * one.part_dim * 5  # one more bias-free linear layer, batch 1
    assert diff == stage_flops + classifier_flops


def test_method_config_errors():
    with pytest.raises(ConfigError):
        tiny_method(dfw_after_stages=[4])
    with pytest.raises(ConfigError):
        tiny_method(dfw_after_stages=[1])  # stage 1 is modality-specific here
    with pytest.raises(ConfigError):
        tiny_method(specific_stages=5)
    with pytest.raises(ConfigError):
        tiny_method(dfw_mode="d9")


# --------------------------------------------------------------------------------- end to end
def test_configs_validate():
    from vireid.config import load_config
    from vireid.engine.trainer import validate_config

    sysu = load_config(REPO / "configs" / "dfw_sln_sysu.yaml")
    regdb = load_config(REPO / "configs" / "dfw_sln_regdb.yaml")
    synth = load_config(REPO / "configs" / "dfw_sln_synth.yaml")
    for cfg in (sysu, regdb, synth):
        validate_config(cfg)
        assert cfg.model.method == "dfw_sln" and cfg.losses["overlap"]["params"]["separation"] == 100.0
    assert (sysu.sampler.num_ids, sysu.sampler.num_per_modality) == (6, 6)
    assert (regdb.sampler.num_ids, regdb.sampler.num_per_modality) == (8, 4)
    assert sysu.losses["overlap"]["weight"] == 0.5 and regdb.losses["overlap"]["weight"] == 1.0
    assert sysu.optim.name == "sgd" and sysu.optim.lr == 0.1 and sysu.train.epochs == 60
    assert sysu.augment.random_erasing > 0 and (sysu.data.height, sysu.data.width) == (288, 144)
    assert regdb.model.params["dfw_alpha"] == 0.2 and sysu.model.params["dfw_alpha"] == 0.5


def test_train_and_eval_through_the_cli(tiny_synth_root, tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
    from vireid.cli import app

    extra = {"train.epochs": 1, "train.threads": 1, "train.eval_every": 0}
    args = ["train", "--config", "dfw_sln_synth", "--no-eval", *tiny_overrides(tiny_synth_root, tmp_path, name="dfw", **extra)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "dfw"
    history = json.loads((run / "train_summary.json").read_text())["history"]
    assert all(math.isfinite(h["overlap"]) and h["overlap"] >= 0 for h in history)
    assert {"part_id", "part_triplet", "hetero_center", "overlap"} <= set(history[0])
    result = CliRunner().invoke(app, ["eval", str(run), "--protocol", "sysu-all-single", "--trials", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads((run / "test_results.json").read_text())
    assert rows[0]["name"] == "sysu-all-single" and 0.0 < rows[0]["mean"]["mAP"] <= 100.0
    from vireid.engine.trainer import load_model_from_checkpoint

    model, _, _ = load_model_from_checkpoint(run)
    assert isinstance(model, DFWSLNReID) and model.embed_dim == 2 * model.part_dim


def test_ablation_grid_rows_set_the_marked_dfw_reading_and_overlap_centre(tmp_path):
    from vireid.config import load_config
    from vireid.workflows.ablation import load_grid, row_overrides
    from vireid.engine.trainer import build_losses, validate_config

    grid = load_grid(REPO / "configs" / "ablations" / "dfw_sln_synth.yaml")
    for row in grid.rows:
        cfg = load_config(REPO / "configs" / "dfw_sln_synth.yaml", row_overrides(grid, row, [], tmp_path))
        validate_config(cfg)
        if row.marks["DFW"]:
            assert cfg.model.params.get("dfw_reading", "scale") == row.marks["DFW reading"], row.name
        if row.marks["L_op"]:
            center = build_losses(cfg, 4, 8)["overlap"].center
            assert center == {"argmax": "straight_through", "soft": "soft"}[row.marks["centre"]], row.name
