"""Multi-modal fusion (the survey §4.1/§4.2): fusion modules, paired data and sampling, the fusion method,
fused evaluation, the CLI and the results-table script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vireid  # noqa: F401  (torchvision guard before anything else)
from vireid.data.paired import (
    PairedIdentitySampler,
    PairedPadCropFlip,
    moment_key,
    pair_registered_records,
    pair_slots,
)
from vireid.data.records import ImageRecord
from vireid.data.synth import generate_dataset, load_joints
from vireid.errors import ConfigError, DatasetError
from vireid.evaluation.fusion_eval import evaluate_fusion, fusion_distance, split_moments
from vireid.modeling.methods.multimodal_fusion import FusionReID, paired_members, single_members
from vireid.modeling.modules.fusion_layers import AttentionFusion, EarlyFusion, LateFusion, rank_vote

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paired_root(tmp_path_factory) -> Path:
    """A tiny synthetic RegDB-layout dataset: 8 identities x 3 registered moments, 64x32."""
    root = tmp_path_factory.mktemp("paired") / "regdb"
    generate_dataset(root, 8, format="regdb", images_per_camera=3, height=64, width=32, seed=0, workers=1,
                     progress=False)
    return root


# ----------------------------------------------------------------------------- modules


def test_early_fusion_is_channel_concat_then_1x1_mix_starting_at_the_mean() -> None:
    torch.manual_seed(0)
    maps = torch.randn(3, 2, 4, 5, 6)
    mask = torch.tensor([[True, True], [True, False], [False, True]])
    maps[1, 1] = float("nan")  # an absent input may hold anything
    fusion = EarlyFusion(4, 2)
    out = fusion(maps, mask)
    assert out.shape == (3, 4, 5, 6)
    torch.testing.assert_close(out[0], maps[0].mean(dim=0))  # identity-block init: the mean of present maps
    torch.testing.assert_close(out[1], maps[1, 0])
    torch.testing.assert_close(out[2], maps[2, 1])
    with torch.no_grad():
        fusion.mix.weight.normal_()
    w = fusion.mix.weight.view(4, 8)
    expected = torch.einsum("oc,chw->ohw", w, maps[0].reshape(8, 5, 6))  # W * concat(x_v, x_i)
    torch.testing.assert_close(fusion(maps, mask)[0], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least one modality"):
        fusion(maps, torch.tensor([[True, True], [False, False], [True, True]]))


def test_late_fusion_weighted_average_renormalises_over_present_modalities() -> None:
    emb = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    late = LateFusion(2, weights=[3.0, 1.0], normalize=False)
    torch.testing.assert_close(late(emb, mask), torch.tensor([[0.75, 0.5], [3.0, 0.0]]))
    unit = LateFusion(2, weights=[1.0, 1.0])(emb, mask)  # L2-normalised inputs, equal weights
    torch.testing.assert_close(unit, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    scores = torch.tensor([[[1.0, 2.0, 3.0], [3.0, 0.0, 0.0]]])
    torch.testing.assert_close(late.fuse_scores(scores, torch.ones(1, 2, dtype=torch.bool)),
                               torch.tensor([[1.5, 1.5, 2.25]]))
    with pytest.raises(ConfigError, match="weights"):
        LateFusion(2, weights=[1.0])
    with pytest.raises(ConfigError, match="mode"):
        LateFusion(2, mode="majority")


def test_late_fusion_vote_is_weighted_borda_count_with_average_tie_break() -> None:
    # modality 0 ranks A > B > C, modality 1 ranks B > C > A
    scores = torch.tensor([[[3.0, 2.0, 1.0], [0.0, 9.0, 5.0]]])
    both = torch.ones(1, 2, dtype=torch.bool)
    equal = LateFusion(2, mode="vote").fuse_scores(scores, both)
    assert equal.argsort(descending=True).tolist() == [[1, 0, 2]]  # points A 1, B 1.5, C 0.5
    leaning = LateFusion(2, weights=[0.8, 0.2], mode="vote").fuse_scores(scores, both)
    assert leaning.argsort(descending=True).tolist() == [[0, 1, 2]]  # A .8, B .6, C .1
    # a tie in points (A > B for one ballot, B > A for the other) goes to the better average score
    tie = torch.tensor([[[1.0, 0.0], [0.0, 5.0]]])
    assert rank_vote(tie, torch.full((1, 2), 0.5), tie.mean(dim=1)).argmax().item() == 1
    # one present ballot: the vote is that ballot's ranking
    only = LateFusion(2, mode="vote").fuse_scores(scores, torch.tensor([[False, True]]))
    assert only.argsort(descending=True).tolist() == [[1, 2, 0]]


@pytest.mark.parametrize("granularity", ["modality", "channel"])
def test_attention_weights_sum_to_one_over_present_modalities_and_depend_on_input(granularity: str) -> None:
    torch.manual_seed(1)
    att = AttentionFusion(8, 3, hidden=16, granularity=granularity)
    emb = torch.randn(5, 3, 8)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    alpha = att.weights(emb, mask)
    if granularity == "modality":
        assert alpha.shape == (5, 3)
        torch.testing.assert_close(alpha[0], torch.full((3,), 1 / 3))  # zero-initialised scorer: uniform start
    else:
        assert alpha.shape == (5, 3, 8)
    with torch.no_grad():
        att.score.weight.normal_(std=1.0)
    alpha = att.weights(emb, mask)
    full = alpha if alpha.dim() == 3 else alpha.unsqueeze(2)
    torch.testing.assert_close(full.sum(dim=1), torch.ones(5, full.shape[2]))
    assert bool((full[~mask] == 0).all())
    emb2 = emb.clone()
    emb2[0] = torch.randn(3, 8) * 3
    assert not torch.allclose(att.weights(emb2, mask)[0], alpha[0])  # input-dependent
    torch.testing.assert_close(att.weights(emb2, mask)[1:], alpha[1:])  # per set
    fused = att(emb, mask)
    torch.testing.assert_close(fused, (full * emb).sum(dim=1))
    assert att.last_weights is not None and att.last_weights.shape == alpha.shape


# ----------------------------------------------------------------------------- paired data


def test_paired_generator_renders_registered_moments_deterministically(paired_root: Path, tmp_path: Path) -> None:
    joints = load_joints(paired_root)
    visible = sorted(p for p in joints if p.startswith("Visible/"))
    assert len(visible) == 8 * 3
    for path in visible:
        twin = path.replace("Visible/", "Thermal/").replace("_v_", "_t_")
        np.testing.assert_array_equal(joints[path], joints[twin])  # same pose, same position, same occluder
    again = generate_dataset(tmp_path / "again", 8, format="regdb", images_per_camera=3, height=64, width=32, seed=0,
                             workers=2, progress=False)
    for path in visible[:6]:
        for rel in (path, path.replace("Visible/", "Thermal/").replace("_v_", "_t_")):
            assert (again / rel).read_bytes() == (paired_root / rel).read_bytes()


def test_depth_camera_adds_registered_depth_images_and_leaves_the_rest_unchanged(paired_root: Path,
                                                                                 tmp_path: Path) -> None:
    from vireid.data.datasets import build_dataset
    from vireid.data.images import decode_image

    root = generate_dataset(tmp_path / "depth", 4, format="regdb", images_per_camera=3, height=64, width=32, seed=0,
                            workers=1, progress=False, depth=True)
    for folder in ("Visible", "Thermal"):  # identities 1..4 of the same seed: the same bytes as without depth
        for path in sorted((root / folder).rglob("*.bmp")):
            assert path.read_bytes() == (paired_root / path.relative_to(root)).read_bytes()
    ds = build_dataset("regdb", root, trial=1, paired=True)
    assert ds.test_depth is not None and len(ds.test_depth) == len(ds.test_pairs)
    joints = load_joints(root)
    for (v, _), depth_path in zip(ds.test_pairs, ds.test_depth):
        assert moment_key(depth_path) == moment_key(ds.test[v].path)
        rel = str(Path(depth_path).relative_to(root))
        np.testing.assert_array_equal(joints[rel], joints[str(Path(ds.test[v].path).relative_to(root))])
        depth = decode_image(depth_path)[..., 0].astype(int)
        x, y, seen = joints[rel][6]  # the pelvis: on the person, nearer (brighter) than the wall at the top
        if seen:
            patch = depth[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
            assert patch.max() > depth[:5].mean() + 40
    assert build_dataset("regdb", paired_root, trial=1, paired=True).test_depth is None
    with pytest.raises(ConfigError, match="regdb layout"):
        generate_dataset(tmp_path / "x", 4, format="sysu-mm01", depth=True, progress=False)


def test_regdb_paired_reader_returns_moment_pairs(paired_root: Path) -> None:
    from vireid.data.datasets import build_dataset

    plain = build_dataset("regdb", paired_root, trial=1)
    assert plain.train_pairs is None and plain.test_pairs is None
    ds = build_dataset("regdb", paired_root, trial=1, paired=True)
    for records, pairs in ((ds.train, ds.train_pairs), (ds.test, ds.test_pairs)):
        assert pairs.shape == (len(records) // 2, 2)
        assert sorted(pairs.reshape(-1).tolist()) == list(range(len(records)))
        for v, i in pairs:
            assert records[v].modality == "visible" and records[i].modality == "infrared"
            assert records[v].pid == records[i].pid
            assert moment_key(records[v].path) == moment_key(records[i].path)


def test_pairing_by_name_then_by_position_else_a_clear_error() -> None:
    def rec(path: str, pid: int, modality: str) -> ImageRecord:
        return ImageRecord(path, pid, 1 if modality == "visible" else 2, modality)

    by_name = [rec("V/1/a_v_002_1.bmp", 1, "visible"), rec("V/1/a_v_001_1.bmp", 1, "visible"),
               rec("T/1/a_t_001_1.bmp", 1, "infrared"), rec("T/1/a_t_002_1.bmp", 1, "infrared")]
    assert pair_registered_records(by_name).tolist() == [[0, 3], [1, 2]]
    by_position = [rec("V/2/x.png", 2, "visible"), rec("V/2/y.png", 2, "visible"),
                   rec("T/2/p.png", 2, "infrared"), rec("T/2/q.png", 2, "infrared")]
    assert pair_registered_records(by_position).tolist() == [[0, 2], [1, 3]]
    with pytest.raises(DatasetError, match="identity 2 of the test split has 2 visible and 1 infrared"):
        pair_registered_records(by_position[:3], "test")


def test_paired_sampler_puts_the_two_images_of_a_moment_at_rows_i_and_pk_plus_i() -> None:
    num_ids, moments = 6, 5
    pids = np.repeat(np.arange(num_ids), 2 * moments)
    mods = np.tile(np.r_[np.zeros(moments, int), np.ones(moments, int)], num_ids)
    rng = np.random.default_rng(0)
    pairs = []
    for p in range(num_ids):  # registered pairs in shuffled order within each identity
        base = p * 2 * moments
        pairs += [(base + k, base + moments + j) for k, j in enumerate(rng.permutation(moments))]
    pairs = np.asarray(pairs)
    pair_set = {tuple(x) for x in pairs.tolist()}
    sampler = PairedIdentitySampler(pids, mods, pairs, num_ids=3, num_per_modality=2, seed=4, epoch_length=7)
    plan = sampler.plan_epoch(0)
    assert plan.shape == (7, 12)
    for row in plan:
        vis, ir = row[:6], row[6:]
        assert all((int(v), int(i)) in pair_set for v, i in zip(vis, ir))
        assert len(set(pids[vis[::2]].tolist())) == 3 and (mods[vis] == 0).all() and (mods[ir] == 1).all()
    np.testing.assert_array_equal(plan, PairedIdentitySampler(pids, mods, pairs, num_ids=3, num_per_modality=2,
                                                              seed=4, epoch_length=7).plan_epoch(0))
    with pytest.raises(DatasetError, match="joins images of identities"):
        PairedIdentitySampler(pids, mods, np.array([[0, 15]]), num_ids=3, num_per_modality=2)


def test_paired_pad_crop_flip_moves_both_images_of_a_pair_alike() -> None:
    torch.manual_seed(0)
    visible = torch.randint(0, 255, (4, 3, 16, 8), dtype=torch.uint8)
    batch = torch.cat([visible, visible])
    mods = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert pair_slots(mods, 8).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    step = PairedPadCropFlip(pad=3, flip=0.5)
    out = step(batch, mods, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out[:4], out[4:])
    assert not torch.equal(out[:4], visible)  # it did move something
    assert step.last_flipped is not None and step.last_flipped[:4].tolist() == step.last_flipped[4:].tolist()


# ----------------------------------------------------------------------------- method


@pytest.mark.parametrize("strategy", ["early", "late", "attention"])
def test_fusion_method_outputs_and_set_embeddings(strategy: str) -> None:
    torch.manual_seed(0)
    model = FusionReID(num_classes=5, strategy=strategy, backbone="resnet10t", img_size=(32, 16),
                       specific_stages=0 if strategy == "early" else None)
    images = torch.randn(8, 3, 32, 16)
    mods = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    out = model(images, mods)
    for key in ("features", "bn_features", "logits", "fused_features", "fused_bn_features", "fused_logits"):
        assert out[key].shape[0] == 8
    torch.testing.assert_close(out["fused_features"][:4], out["fused_features"][4:])  # row i and i+4: one pair
    sum(v.float().mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.eval()
    single = model(images, mods)
    sets = torch.tensor([[0, 4], [1, 5], [2, -1], [-1, 7]])
    emb = model.embed_sets(images, mods, sets)
    assert emb.shape == (4, model.embed_dim)
    torch.testing.assert_close(emb[2], single[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb[3], single[7], rtol=1e-4, atol=1e-5)
    weights = model.modality_weights(images, mods, sets)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    assert weights[2].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="its own modality"):
        model.embed_sets(images, mods, torch.tensor([[4, 0]]))


def test_members_helpers_and_unpaired_batches() -> None:
    codes = torch.tensor([1, 0, 0, 1])
    assert single_members(codes).tolist() == [[-1, 0], [1, -1], [2, -1], [-1, 3]]
    assert paired_members(codes).tolist() == [[1, 0], [2, 3]]
    with pytest.raises(vireid.errors.VireidError, match="pairs"):
        paired_members(torch.tensor([0, 0, 1]))
    with pytest.raises(ConfigError, match="strategy"):
        FusionReID(num_classes=3, strategy="middle", backbone="resnet10t")


# ----------------------------------------------------------------------------- evaluation


def test_split_moments_halves_every_identity_without_overlap() -> None:
    pids = np.repeat(np.arange(5), 4)
    splits = split_moments(pids, trials=3, seed=1)
    assert len(splits) == 3
    for q, g in splits:
        assert not set(q) & set(g) and len(q) + len(g) == 20
        assert np.bincount(pids[q], minlength=5).tolist() == [2] * 5
    assert not all(np.array_equal(splits[0][0], s[0]) for s in splits[1:])


def test_fused_evaluation_ranks_and_fuses_scores() -> None:
    # identity k: visible images near e_k, infrared near e_(k+5) (a modality gap), fused = their sum
    rng = np.random.default_rng(0)
    ids, moments = 5, 4
    eye = np.eye(10, dtype=np.float32)
    pids = np.repeat(np.arange(ids), moments)
    vis = eye[pids] + 0.05 * rng.standard_normal((len(pids), 10)).astype(np.float32)
    ir = eye[pids + 5] + 0.05 * rng.standard_normal((len(pids), 10)).astype(np.float32)
    feats = torch.as_tensor(np.concatenate([vis, ir]))
    pairs = np.stack([np.arange(len(pids)), len(pids) + np.arange(len(pids))], axis=1)
    fused = feats[pairs[:, 0]] + feats[pairs[:, 1]]
    rows = evaluate_fusion(feats, pairs, pids, fused=fused, trials=2)
    table = {(r["query"], r["gallery"]): r for r in rows}
    assert len(rows) == 9
    for same in (("fused", "fused"), ("visible", "visible"), ("infrared", "infrared"), ("fused", "visible")):
        assert table[same]["rank1"] == 1.0 and table[same]["mAP"] == 1.0
    assert table["infrared", "visible"]["rank1"] < 1.0  # no shared direction across the gap
    q, g = split_moments(pids, 1)[0]
    average = fusion_distance("fused", "visible", q, g, feats, pairs, fusion="average", weights=(0.5, 0.5))
    from vireid.evaluation.distance import pairwise_distance

    expected = 0.5 * pairwise_distance(feats[pairs[q, 0]], feats[pairs[g, 0]]) + \
        0.5 * pairwise_distance(feats[pairs[q, 1]], feats[pairs[g, 0]])
    torch.testing.assert_close(average, expected)
    voted = evaluate_fusion(feats, pairs, pids, queries=["fused"], galleries=["fused"], fusion="vote", trials=2)
    assert voted[0]["fusion"] == "vote" and voted[0]["rank1"] == 1.0
    with pytest.raises(ConfigError, match="fused embeddings are missing"):
        evaluate_fusion(feats, pairs, pids, queries=["fused"], galleries=["fused"], trials=1)


# ----------------------------------------------------------------------------- end to end


def test_table_script_quick_trains_every_strategy_and_cli_evaluates_fused_queries(tmp_path: Path, monkeypatch,
                                                                                   capsys) -> None:
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    sys.path.insert(0, str(REPO / "benchmarks"))
    import fusion_table

    doc = tmp_path / "results.md"
    monkeypatch.setattr(sys, "argv", ["fusion_table.py", "--quick", "--out", str(tmp_path / "runs"), "--doc", str(doc),
                                      "--threads", "1"])
    fusion_table.main()
    text = doc.read_text()
    assert "## Multi-modal fusion (the survey §4.2)" in text and "--quick" in text
    for label in ("two-stream baseline", "early fusion", "late fusion", "attention fusion"):
        assert f"| {label} |" in text
    assert text.count("| late fusion |") == 2  # average and vote

    run = tmp_path / "runs" / "attention_fusion"
    result = CliRunner().invoke(app, ["eval-fusion", str(run), "--query", "fused", "--gallery", "fused",
                                      "--gallery", "infrared", "--trials", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "| attention_fusion | fused | infrared | embedding |" in result.output
    saved = json.loads((run / "fusion_results.json").read_text())
    assert [(r["query"], r["gallery"]) for r in saved] == [("fused", "fused"), ("fused", "infrared")]
    bad = CliRunner().invoke(app, ["eval-fusion", str(run), "--gallery", "thermal"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
    baseline = tmp_path / "runs" / "two_stream_baseline"
    bad = CliRunner().invoke(app, ["eval-fusion", str(baseline), "--fusion", "embedding"])
    assert isinstance(bad.exception, ConfigError) and "no fused embedding" in str(bad.exception)
