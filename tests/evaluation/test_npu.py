"""NPU-ReID (dual-path Swin paper): synthetic layout, reader, training split and evaluation protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.evaluation import PROTOCOLS, evaluate_ranking, run_protocol
from vireid.evaluation.npu import npu_gallery_cameras, npu_gallery_draws
from vireid.evaluation.protocols import ProtocolError


@pytest.fixture(scope="module")
def npu_root(tmp_path_factory) -> Path:
    from vireid.data.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("npu") / "npu", ids=10, format="npu-reid", images_per_camera=3,
                            height=32, width=16, workers=1, progress=False)


def test_synthetic_layout_and_reader(npu_root):
    from vireid.data.datasets import build_dataset

    assert sorted(p.name for p in npu_root.glob("cam*")) == [f"cam{c}" for c in range(1, 9)]
    thermal = next((npu_root / "cam2").rglob("*.jpg"))
    assert Image.open(thermal).mode == "L"  # one channel, as the paper's thermal cameras
    ds = build_dataset("npu-reid", npu_root, train_includes_val=False)
    cams = {r.camid: r.modality for r in ds.test}
    assert cams == {1: VISIBLE, 2: INFRARED, 3: VISIBLE, 4: INFRARED, 5: VISIBLE, 6: INFRARED, 7: VISIBLE, 8: INFRARED}
    assert {r.orig_pid for r in ds.train}.isdisjoint({r.orig_pid for r in ds.test})
    assert ds.protocol_family == "npu" and len(ds.val) > 0


def _pool(ids=3, per_cam=4) -> list[ImageRecord]:
    records = []
    for pid in range(1, ids + 1):
        for cam in range(1, 9):
            modality = VISIBLE if cam % 2 else INFRARED
            records += [ImageRecord(f"cam{cam}/{pid:04d}/{k:04d}.jpg", pid, cam, modality, pid) for k in range(per_cam)]
    return records


def test_gallery_scopes_and_shots():
    pool = _pool()
    assert npu_gallery_cameras(INFRARED, "all") == (2, 4, 6, 8)
    assert npu_gallery_cameras(INFRARED, "indoor") == (2, 4)
    assert npu_gallery_cameras(VISIBLE, "outdoor") == (5, 7)
    single = npu_gallery_draws(pool, INFRARED, "indoor", 1, [0, 1], gallery="per_camera")
    assert all(len(g) == 3 * 2 for g in single)  # per camera: one per identity and indoor thermal camera
    assert {pool[i].camid for i in single[0]} == {2, 4}
    multi = npu_gallery_draws(pool, VISIBLE, "all", 10, [0], gallery="per_camera")[0]
    assert len(multi) == 3 * 4 * 4  # at most 10 per (id, camera): all 4 here
    assert not np.array_equal(*npu_gallery_draws(pool, INFRARED, "all", 1, [0, 1]))  # trials differ
    with pytest.raises(ProtocolError, match="scope"):
        npu_gallery_cameras(INFRARED, "rooftop")


def test_protocol_matches_direct_ranking():
    pool = _pool()
    rng = np.random.default_rng(0)
    feats = torch.as_tensor(rng.normal(size=(len(pool), 8)), dtype=torch.float32)
    res = run_protocol("npu-t2v-outdoor-single", feats, pool, trials=2)
    pids = np.array([r.orig_pid for r in pool])
    cams = np.array([r.camid for r in pool])
    q = np.flatnonzero(np.array([r.modality for r in pool]) == INFRARED)
    for t in range(2):
        g = npu_gallery_draws(pool, VISIBLE, "outdoor", 1, [t])[0]
        f = torch.nn.functional.normalize(feats, dim=1)
        dist = torch.cdist(f[q], f[g])
        ref = evaluate_ranking(dist, pids[q], pids[g], cams[q], cams[g], cam_rule="same-camera", dedup_cmc=True)
        assert res.trials[t]["mAP"] == pytest.approx(100 * ref["mAP"], abs=1e-4)
        assert res.trials[t]["rank1"] == pytest.approx(100 * ref["cmc"][0], abs=1e-4)
        assert res.trials[t]["num_gallery"] == 3  # one image of each person
    names = [n for n in PROTOCOLS.names() if n.startswith("npu-")]
    assert len(names) == 12


def test_gallery_draws_one_or_ten_images_of_a_person_by_default():
    """§3: "1 or 10 images of a person are randomly selected to form the gallery set" -- per person over
    the scope's cameras, not per (person, camera) as SYSU-MM01 does."""
    pool = _pool(ids=3, per_cam=4)  # 4 thermal cameras x 4 images = 16 thermal images per person
    for scope, cameras in (("all", {2, 4, 6, 8}), ("indoor", {2, 4})):
        single = npu_gallery_draws(pool, INFRARED, scope, 1, range(20))
        assert all(sorted(pool[i].orig_pid for i in g) == [1, 2, 3] for g in single)
        assert {pool[i].camid for g in single for i in g} == cameras  # any camera of the scope may be drawn
        multi = npu_gallery_draws(pool, INFRARED, scope, 10, [0])[0]
        per_person = np.bincount([pool[i].orig_pid for i in multi])[1:]
        assert per_person.tolist() == [min(10, 4 * len(cameras))] * 3 and len(set(multi.tolist())) == len(multi)
    res = run_protocol("npu-v2t-all-multi", torch.randn(len(pool), 4), pool, trials=1)
    assert res.trials[0]["num_gallery"] == 30 and res.settings["gallery"] == "per_person"
    old = run_protocol("npu-v2t-all-multi", torch.randn(len(pool), 4), pool, trials=1, gallery="per_camera")
    assert old.trials[0]["num_gallery"] == 3 * 4 * 4 and old.settings["gallery"] == "per_camera"
    with pytest.raises(ProtocolError, match="gallery"):
        run_protocol("npu-v2t-all-single", torch.randn(len(pool), 4), pool, gallery="per_image")


def test_eval_config_chooses_the_npu_gallery_draw():
    from types import SimpleNamespace

    from vireid.config import load_config
    from vireid.workflows.evaluate_model import evaluate_features
    from vireid.errors import ConfigError

    pool = _pool(ids=3, per_cam=4)
    feats = torch.randn(len(pool), 4)
    dataset = SimpleNamespace(test=pool)
    default = evaluate_features(feats, dataset, ["npu-t2v-all-single"], trials=1)[0]
    per_camera = evaluate_features(feats, dataset, ["npu-t2v-all-single"], trials=1, npu_gallery="per_camera")[0]
    assert default.trials[0]["num_gallery"] == 3 and per_camera.trials[0]["num_gallery"] == 3 * 4
    configs = Path(__file__).resolve().parents[2] / "src/vireid/configs"
    assert load_config(configs / "dual_path_swin_npu.yaml").eval.npu_gallery == "per_person"
    assert load_config(configs / "dual_path_swin_npu.yaml", ["eval.npu_gallery=per_camera"]).eval.npu_gallery == "per_camera"
    with pytest.raises(ConfigError, match="npu_gallery"):
        load_config(configs / "dual_path_swin_npu.yaml", ["eval.npu_gallery=per_image"])


def test_npu_recipe_trains_on_all_480_training_persons(npu_root):
    """§3: "During training, all images of the 480 persons in training dataset ... can be sampled"; the
    reader lists the 480 as train_id.txt + val_id.txt (360 + 120), so the recipe must not hold out val."""
    from vireid.config import load_config
    from vireid.data.build import prepare_dataset

    configs = Path(__file__).resolve().parents[2] / "src/vireid/configs"
    for name in ("dual_path_swin_npu", "mag_mmt_npu_synth"):
        cfg = load_config(configs / f"{name}.yaml", [f"data.root={npu_root}", "data.cache_dir=null", "data.synth.ids=10",
                                                      "data.synth.images_per_camera=3", "data.synth.height=32",
                                                      "data.synth.width=16"])
        assert cfg.data.options["train_includes_val"] is True and cfg.train.select_best == "last", name
        if name == "mag_mmt_npu_synth":
            ds = prepare_dataset(cfg.data, progress=False)
            split = npu_root / "exp"
            listed = {int(v) for f in ("train_id.txt", "val_id.txt") for v in (split / f).read_text().split(",") if v.strip()}
            assert {r.orig_pid for r in ds.train} == listed and {r.orig_pid for r in ds.val} <= listed


def test_same_camera_rule_skips_the_query_camera():
    # a gallery image of the query's identity from the query's own camera must not count
    pool = [ImageRecord("a", 1, 2, INFRARED, 1), ImageRecord("b", 1, 2, VISIBLE, 1), ImageRecord("c", 2, 1, VISIBLE, 2),
            ImageRecord("d", 1, 3, VISIBLE, 1)]
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    ref = evaluate_ranking(torch.cdist(feats[:1], feats[1:]), np.array([1]), np.array([1, 2, 1]), np.array([2]),
                           np.array([2, 1, 3]), cam_rule="same-camera", dedup_cmc=True)
    assert ref["cmc"][0] == 0.0  # the identical same-camera image is skipped; the wrong id ranks first


def test_npu_config_trains_and_evaluates(tmp_path, npu_root):
    from conftest import tiny_overrides
    from vireid.workflows.train_run import run_training
    from vireid.config import load_config

    overrides = tiny_overrides(npu_root, tmp_path) + [
        "data.synth.ids=10", "data.synth.images_per_camera=3", "data.synth.height=32", "data.synth.width=16",
        "data.height=32", "data.width=16", "train.epochs=1", "sampler.num_ids=3",
    ]
    cfg = load_config(Path(__file__).resolve().parents[2] / "src/vireid/configs/mag_mmt_npu_synth.yaml", overrides)
    summary = run_training(cfg, tmp_path / "run")
    assert [r["name"] for r in summary["test"]] == cfg.eval.protocols
    assert all(0 <= r["mean"]["mAP"] <= 100 for r in summary["test"])
    assert all(r["settings"]["gallery"] == "per_person" for r in summary["test"])
    # `vireid eval --npu-gallery per_camera` switches the draw of a trained run
    import json

    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    args = ["eval", str(tmp_path / "run"), "--protocol", "npu-v2t-all-single", "--trials", "1"]
    res = CliRunner().invoke(app, [*args, "--npu-gallery", "per_camera"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = json.loads((tmp_path / "run" / "test_results.json").read_text())
    # eval -p X replaces X's rows only (the other protocols' rows of the training run stay)
    assert [r["settings"]["gallery"] for r in rows if r["name"] == "npu-v2t-all-single"] == ["per_camera"]
    assert {r["name"] for r in rows} == set(cfg.eval.protocols)
    res = CliRunner().invoke(app, [*args, "--npu-gallery", "per_image"])
    assert res.exit_code != 0 and "per_person" in str(res.exception)  # a ConfigError: one sentence, no traceback
