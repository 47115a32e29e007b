"""Joints for pose-guided methods (PDFENet): MediaPipe -> MPII mapping, pose-cache files, joints of
records in the cached images' frame, `vireid pose-cache` (synthetic and a stand-in MediaPipe)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vireid.data.pose import (
    MEDIAPIPE_LANDMARKS,
    MPII_JOINTS,
    UPPER_NECK_FRACTION,
    MediaPipePoseEstimator,
    PoseCache,
    build_pose_cache,
    default_pose_cache_path,
    load_record_joints,
    mediapipe_to_mpii,
    read_pose_cache,
    scale_joints,
    write_pose_cache,
)
from vireid.errors import ConfigError, DatasetError, VireidError

MP = {name: i for i, name in enumerate(MEDIAPIPE_LANDMARKS)}
J = {name: i for i, name in enumerate(MPII_JOINTS)}


def _landmarks() -> np.ndarray:
    """33 hand-made landmarks: landmark i at (i, 100 + 2i) with score i / 40."""
    i = np.arange(33, dtype=np.float32)
    return np.stack([i, 100 + 2 * i, i / 40], axis=1)


def test_mediapipe_mapping_direct_joints_keep_the_person_sides():
    out = mediapipe_to_mpii(_landmarks())
    lm = _landmarks()
    assert out.shape == (16, 3) and out.dtype == np.float32
    pairs = {"r-ankle": "right_ankle", "r-knee": "right_knee", "r-hip": "right_hip", "l-hip": "left_hip",
             "l-knee": "left_knee", "l-ankle": "left_ankle", "r-wrist": "right_wrist", "r-elbow": "right_elbow",
             "r-shoulder": "right_shoulder", "l-shoulder": "left_shoulder", "l-elbow": "left_elbow",
             "l-wrist": "left_wrist"}
    for mpii, mp in pairs.items():
        np.testing.assert_array_equal(out[J[mpii]], lm[MP[mp]])


def test_mediapipe_mapping_derived_joints():
    lm = _landmarks()
    out = mediapipe_to_mpii(lm)

    def mid(a, b):
        return (lm[MP[a], :2] + lm[MP[b], :2]) / 2

    np.testing.assert_allclose(out[J["pelvis"], :2], mid("left_hip", "right_hip"))
    thorax = mid("left_shoulder", "right_shoulder")
    np.testing.assert_allclose(out[J["thorax"], :2], thorax)
    neck = thorax + UPPER_NECK_FRACTION * (mid("mouth_left", "mouth_right") - thorax)
    np.testing.assert_allclose(out[J["upper-neck"], :2], neck, rtol=1e-6)
    np.testing.assert_allclose(out[J["head-top"], :2], 2 * mid("left_ear", "right_ear") - neck, rtol=1e-6)
    # derived scores: the weakest landmark used
    assert out[J["pelvis"], 2] == pytest.approx(min(lm[MP["left_hip"], 2], lm[MP["right_hip"], 2]))
    used = [MP[n] for n in ("left_shoulder", "right_shoulder", "mouth_left", "mouth_right", "left_ear", "right_ear")]
    assert out[J["head-top"], 2] == pytest.approx(lm[used, 2].min())


def test_mediapipe_mapping_upright_person_puts_head_above_neck_above_thorax():
    lm = np.zeros((33, 3), np.float32)
    lm[:, 2] = 1.0
    lm[[MP["left_shoulder"], MP["right_shoulder"]], :2] = [[60, 40], [40, 40]]
    lm[[MP["mouth_left"], MP["mouth_right"]], :2] = [[52, 25], [48, 25]]
    lm[[MP["left_ear"], MP["right_ear"]], :2] = [[56, 18], [44, 18]]
    out = mediapipe_to_mpii(np.stack([lm, lm]))  # batch dimensions are kept
    assert out.shape == (2, 16, 3)
    y = out[0, :, 1]
    assert y[J["head-top"]] < y[J["upper-neck"]] < y[J["thorax"]]
    assert y[J["head-top"]] == pytest.approx(2 * 18 - (40 + 0.7 * (25 - 40)))
    with pytest.raises(ValueError, match="33"):
        mediapipe_to_mpii(np.zeros((17, 3)))


def test_scale_joints_maps_pixel_centres():
    joints = np.array([[[0.0, 0.0, 1.0], [39.0, 99.0, 0.5], [19.5, 49.5, 1.0]]], np.float32)  # corners, centre
    out = scale_joints(joints, np.array([[100, 40]]), height=50, width=20)
    np.testing.assert_allclose(out[0, 0, :2], [-0.25, -0.25])  # first pixel centre of a 2x downscale
    np.testing.assert_allclose(out[0, 1, :2], [19.25, 49.25])
    np.testing.assert_allclose(out[0, 2, :2], [9.5, 24.5])  # the image centre stays the centre
    np.testing.assert_array_equal(out[..., 2], joints[..., 2])


def test_pose_cache_roundtrip_is_sorted_atomic_and_searchable(tmp_path):
    cache = PoseCache(np.array(["b.jpg", "a.jpg"]), np.arange(96, dtype=np.float32).reshape(2, 16, 3),
                      np.array([[10, 4], [20, 8]], np.int32), np.array([True, False]), {"estimator": "x"})
    path = write_pose_cache(tmp_path / "p.npz", cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]  # no temporary left behind
    back = read_pose_cache(path)
    assert list(back.paths) == ["a.jpg", "b.jpg"] and back.meta == {"estimator": "x"}
    np.testing.assert_array_equal(back.joints[1], cache.joints[0])
    rows, found = back.lookup(["b.jpg", "c.jpg", "a.jpg"])
    assert found.tolist() == [True, False, True] and rows[[0, 2]].tolist() == [1, 0]
    with pytest.raises(DatasetError, match="vireid pose-cache"):
        read_pose_cache(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="not a vireid pose cache"):
        read_pose_cache(tmp_path / "bad.npz")


def _records(root: Path):
    from vireid.data.datasets import build_dataset

    ds = build_dataset("sysu-mm01", root, train_includes_val=False)
    return list(ds.train)[:10] + list(ds.test)[:5]


def _data_cfg(root, joints, height=64, width=32, fmt="sysu-mm01"):
    return SimpleNamespace(root=str(root), joints=joints, height=height, width=width, format=fmt)


def test_synthetic_joints_of_records_in_the_cached_frame(tiny_synth_root):
    from vireid.data.synth import load_joints

    records = _records(tiny_synth_root)
    stored = load_joints(tiny_synth_root)
    expected = np.stack([stored[str(Path(r.path).relative_to(tiny_synth_root))] for r in records])
    same = load_record_joints(records, _data_cfg(tiny_synth_root, "synthetic"))
    assert isinstance(same, torch.Tensor) and same.shape == (15, 16, 3) and same.dtype == torch.float32
    np.testing.assert_allclose(same.numpy(), expected, atol=1e-5)  # generator size == cache size
    doubled = load_record_joints(records, _data_cfg(tiny_synth_root, "auto", height=128, width=64))
    np.testing.assert_allclose(doubled[..., :2].numpy(), (expected[..., :2] + 0.5) * 2 - 0.5, atol=1e-4)
    np.testing.assert_array_equal(doubled[..., 2].numpy(), expected[..., 2])


def test_joint_sources_fail_with_clear_messages(tiny_synth_root, tmp_path):
    records = _records(tiny_synth_root)
    real_root = tmp_path / "SYSU"
    real_root.mkdir()
    with pytest.raises(DatasetError, match=r"neither synthetic joints nor a pose cache.*vireid pose-cache"):
        load_record_joints(records, _data_cfg(real_root, "auto"))
    with pytest.raises(ConfigError, match="data.joints"):
        load_record_joints(records, _data_cfg(tiny_synth_root, str(tmp_path / "nope.npz")))
    with pytest.raises(DatasetError, match="not a vireid synth folder"):
        load_record_joints(records, _data_cfg(real_root, "synthetic"))
    # a pose cache that lacks some images names how many, the first, and the command
    partial = tmp_path / "partial.npz"
    build_pose_cache(tiny_synth_root, "sysu-mm01", out=partial, estimator="synthetic", progress=False)
    cache = read_pose_cache(partial)
    keep = np.ones(len(cache), bool)
    first = str(Path(records[3].path).relative_to(tiny_synth_root))
    keep[np.flatnonzero(cache.paths == first)] = False
    write_pose_cache(partial, PoseCache(cache.paths[keep], cache.joints[keep], cache.sizes[keep], cache.detected[keep],
                                        {**cache.meta, "complete": False}))
    with pytest.raises(DatasetError, match=rf"1 of 15 images have no joints in .*partial.npz, first {first}.*resumes"):
        load_record_joints(records, _data_cfg(tiny_synth_root, str(partial)))


def test_pose_cache_command_synthetic_and_resume(tiny_synth_root, tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app
    from vireid.data.synth import load_joints

    out_file = tmp_path / "synth.pose.npz"
    res = CliRunner().invoke(app, ["pose-cache", str(tiny_synth_root), "--estimator", "synthetic", "--out",
                                   str(out_file), "--no-progress"])
    assert res.exit_code == 0, res.output
    stored = load_joints(tiny_synth_root)
    assert f"{len(stored)} images ({len(stored)} new)" in res.output
    cache = read_pose_cache(out_file)
    assert cache.meta["complete"] and cache.meta["estimator"] == "synthetic"
    np.testing.assert_array_equal(cache.joints, np.stack([stored[p] for p in cache.paths]))
    assert (cache.sizes == [64, 32]).all() and cache.detected.all()
    # a file given as data.joints gives the same joints as the synthetic source
    records = _records(tiny_synth_root)
    from_file = load_record_joints(records, _data_cfg(tiny_synth_root, str(out_file), height=96, width=48))
    direct = load_record_joints(records, _data_cfg(tiny_synth_root, "synthetic", height=96, width=48))
    assert torch.equal(from_file, direct)
    again = CliRunner().invoke(app, ["pose-cache", str(tiny_synth_root), "--estimator", "synthetic", "--out",
                                     str(out_file), "--no-progress"])
    assert "(0 new)" in again.output
    other = CliRunner().invoke(app, ["pose-cache", str(tiny_synth_root), "--estimator", "mediapipe", "--out",
                                     str(out_file), "--no-progress"])
    assert other.exit_code != 0 and "estimator 'synthetic'" in str(other.exception or other.output)


def test_default_pose_cache_lies_beside_the_dataset(tmp_path):
    assert default_pose_cache_path(tmp_path / "SYSU-MM01") == tmp_path / "SYSU-MM01.pose.npz"
    assert default_pose_cache_path(str(tmp_path / "RegDB") + "/") == tmp_path / "RegDB.pose.npz"


def test_missing_mediapipe_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import fails as when it is not installed
    with pytest.raises(VireidError, match=r"pip install 'vireid\[pose\]'.*numpy<2"):
        MediaPipePoseEstimator()


class _FakePose:
    """Stands in for ``mediapipe.solutions.pose.Pose``: finds the white blob of the canvas and returns
    every landmark at its centre (score 0.9); no white pixel -> no person."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def process(self, canvas):
        side = canvas.shape[0]
        hits = np.argwhere(canvas.min(axis=2) > 250)
        if hits.size == 0:
            return SimpleNamespace(pose_landmarks=None)
        y, x = hits.mean(axis=0) + 0.5  # pixel centre, in edge units as MediaPipe normalises
        point = SimpleNamespace(x=x / side, y=y / side, visibility=0.9)
        return SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=[point] * 33))

    def close(self):
        pass


@pytest.fixture
def fake_mediapipe(monkeypatch):
    pose_module = types.ModuleType("mediapipe.python.solutions.pose")
    pose_module.Pose = _FakePose
    names = ["mediapipe", "mediapipe.python", "mediapipe.python.solutions"]
    modules = {n: types.ModuleType(n) for n in names}
    modules["mediapipe"].__version__ = "fake"
    modules["mediapipe"].python = modules["mediapipe.python"]
    modules["mediapipe.python"].solutions = modules["mediapipe.python.solutions"]
    modules["mediapipe.python.solutions"].pose = pose_module
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.pose", pose_module)


def test_mediapipe_estimator_maps_landmarks_back_to_original_pixels(fake_mediapipe):
    est = MediaPipePoseEstimator(target_height=220, pad_fraction=0.25)
    image = np.zeros((110, 40, 3), np.uint8)
    image[29:32, 11:14] = 255  # the "person" the fake estimator finds, centred on pixel (x 12, y 30)
    joints, detected = est.estimate(image)
    assert detected and joints.shape == (16, 3)
    np.testing.assert_allclose(joints[J["l-wrist"], :2], [12, 30], atol=0.3)  # back in the 110x40 frame
    np.testing.assert_allclose(joints[J["thorax"], :2], [12, 30], atol=0.3)
    assert joints[0, 2] == pytest.approx(0.9)
    empty, found = est.estimate(np.zeros((110, 40, 3), np.uint8))
    assert not found and not empty.any()


SMALL = {"target_height": 32}  # small canvases keep the stand-in estimator fast


def test_pose_cache_with_an_estimator_reads_images_and_resumes(fake_mediapipe, tiny_synth_root, tmp_path, monkeypatch):
    out_file = tmp_path / "mp.npz"
    first = build_pose_cache(tiny_synth_root, "sysu-mm01", out=out_file, estimator="mediapipe", save_every=50,
                             estimator_options=SMALL, progress=False)
    cache = read_pose_cache(out_file)
    assert first.new == first.images == len(cache) and cache.meta["complete"]
    assert (cache.sizes == [64, 32]).all()
    assert cache.meta["settings"]["mediapipe"] == "fake"
    # interrupted half-way: what was done is kept, the next run only does the rest
    calls = {"n": 0}
    original = _FakePose.process

    def flaky(self, canvas):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        return original(self, canvas)

    monkeypatch.setattr(_FakePose, "process", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_pose_cache(tiny_synth_root, "sysu-mm01", out=out_file, estimator="mediapipe", overwrite=True,
                         estimator_options=SMALL, progress=False)
    partial = read_pose_cache(out_file)
    assert len(partial) == 30 and not partial.meta["complete"]
    monkeypatch.setattr(_FakePose, "process", original)
    resumed = build_pose_cache(tiny_synth_root, "sysu-mm01", out=out_file, estimator="mediapipe",
                               estimator_options=SMALL, progress=False)
    assert resumed.new == first.images - 30 and resumed.images == first.images
    assert read_pose_cache(out_file).meta["complete"]
    # two worker processes (each with its own estimator) give the same file
    parallel = tmp_path / "mp2.npz"
    build_pose_cache(tiny_synth_root, "sysu-mm01", out=parallel, estimator="mediapipe", workers=2,
                     estimator_options=SMALL, progress=False)
    a, b = read_pose_cache(out_file), read_pose_cache(parallel)
    assert (a.paths == b.paths).all() and np.array_equal(a.joints, b.joints) and (a.detected == b.detected).all()
