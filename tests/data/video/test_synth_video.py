"""Synthetic tracklets (vireid synth --format hitsz-vcm): walks of consecutive frames, read by the real reader."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.data.datasets import build_dataset
from vireid.data.synth import generate_dataset
from vireid.data.synth.video import VCM_CAMERAS, walk_poses, walk_rng
from vireid.errors import ConfigError

from conftest import synth_bytes_digest


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_the_real_reader_reads_the_synthetic_layout(tiny_vcm_root):
    ds = build_dataset("hitsz-vcm", tiny_vcm_root, min_seq_len=0)
    # 8 ids: 4 train + 4 test, each 2 modalities x 2 cameras x 2 tracklets x 8 frames
    assert ds.num_train_ids == 4 and len(ds.train) == 4 * 8 * 8 and len(ds.test) == 4 * 8 * 8
    summary = ds.summary()
    assert summary["splits"]["train"]["tracklets"] == 32 and summary["splits"]["test"]["tracklets"] == 32
    assert summary["directions"]["infrared-to-visible"] == {"query_tracklets": 16, "gallery_tracklets": 16}
    q, g = ds.directions["infrared-to-visible"]
    assert {r.modality for r in q} == {"infrared"} and {r.modality for r in g} == {"visible"}
    assert {r.camid for r in ds.test} == set(VCM_CAMERAS) and ds.notes == []
    meta = json.loads((tiny_vcm_root / "synth_meta.json").read_text())
    assert meta["arguments"]["frames_per_tracklet"] == 8 and meta["counts"]["query_tracklets"] == 16


def test_a_walk_advances_its_pose_and_changes_its_frames(tiny_vcm_root):
    ds = build_dataset("hitsz-vcm", tiny_vcm_root, min_seq_len=0)
    frames = [r for r in ds.train if r.tracklet == ds.train[0].tracklet]
    pixels = [np.asarray(Image.open(r.path), dtype=np.int16) for r in frames]
    assert len(frames) == 8 and all(np.abs(a - b).mean() > 0.5 for a, b in zip(pixels, pixels[1:]))
    camera = VCM_CAMERAS[1]
    poses = walk_poses(walk_rng(0, 1, 1, 1), camera, 12, 64, 32)
    steps = [(b.phase - a.phase) % (2 * math.pi) for a, b in zip(poses, poses[1:])]
    assert all(abs(s - steps[0]) < 1e-6 and 0.5 < s < 1.0 for s in steps)  # the gait phase advances evenly
    assert len({p.view for p in poses}) == 1  # one walking direction
    drift = [b.center_x - a.center_x for a, b in zip(poses, poses[1:])]
    assert len({round(d, 6) for d in drift}) == 1  # a steady drift across the crop
    # over many walks: some pass an occluder that comes and goes, and the drift is not always zero
    occluded = [[p.occluder is not None for p in walk_poses(walk_rng(0, pid, 3, 1), VCM_CAMERAS[3], 8, 64, 32)]
                for pid in range(1, 41)]
    assert any(any(o) and not all(o) for o in occluded) and any(not any(o) for o in occluded)
    assert walk_poses(walk_rng(0, 1, 1, 1), camera, 12, 64, 32) == poses  # seeded


def test_same_seed_same_bytes_and_default_layouts_unchanged(tmp_path, tiny_vcm_root):
    again = generate_dataset(tmp_path / "again", ids=8, format="hitsz-vcm", images_per_camera=2,
                             frames_per_tracklet=8, height=64, width=32, seed=0, workers=2, progress=False)
    assert _digest(again) == _digest(tiny_vcm_root)
    # the default layouts' bytes (but the later side files), pinned before the video layout existed (same
    # arguments, any machine with this Pillow): the video generator draws from its own generators only
    pinned = {
        "sysu-mm01": "d531fe90e0abb612f276b105b056d7dffd5e09582aca6297113b9f69fa5b6b92",
        "regdb": "fc2909482d408f87abf6c002442f51c43b4afc8f63748505bd7df07867f45956",
    }
    for fmt, digest in pinned.items():
        root = generate_dataset(tmp_path / fmt, ids=4, format=fmt, images_per_camera=1, height=64, width=32, seed=5,
                                workers=1, progress=False)
        assert synth_bytes_digest(root) == digest, fmt


def test_bad_video_arguments_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="--frames 0 must be at least 1"):
        generate_dataset(tmp_path / "x", ids=4, format="hitsz-vcm", frames_per_tracklet=0, progress=False)
    with pytest.raises(ConfigError, match="depth images need"):
        generate_dataset(tmp_path / "y", ids=4, format="hitsz-vcm", depth=True, progress=False)


def test_cli_synth_writes_the_video_layout(tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    out = tmp_path / "cli"
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(out), "--ids", "4", "--format", "hitsz-vcm",
                                 "--images-per-camera", "1", "--height", "32", "--width", "16", "--workers", "1",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "info" / "query_IDX.txt").is_file()
    # 12 frames by default: the reader's default min_seq_len (the reference's 12) keeps every synthetic tracklet
    ds = build_dataset("hitsz-vcm", out)
    assert len(ds.train) == 2 * 4 * 12 and {len([r for r in ds.train if r.tracklet == t]) for t in range(8)} == {12}
    check = runner.invoke(app, ["datasets", "check", str(out), "--format", "hitsz-vcm", "--no-decode"])
    assert check.exit_code == 0, check.output
    assert "tracklets: 8" in check.output and "infrared-to-visible: 4 query tracklets, 4 gallery tracklets" in check.output
