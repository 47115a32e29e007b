"""Fixtures of the video (tracklet) data tests: one tiny synthetic HITSZ-VCM-layout dataset per session."""

from __future__ import annotations

from pathlib import Path

import pytest

#: 8 ids x 2 modalities x 2 cameras x 2 tracklets x 8 frames at 64x32 (512 frames, under a second to make)
TINY_VCM = dict(ids=8, format="hitsz-vcm", images_per_camera=2, frames_per_tracklet=8, height=64, width=32, seed=0)


@pytest.fixture(scope="session")
def tiny_vcm_root(tmp_path_factory) -> Path:
    from vireid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("vcm") / "tiny"
    generate_dataset(root, workers=1, progress=False, **TINY_VCM)
    return root
