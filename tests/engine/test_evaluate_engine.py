"""Test-set evaluation wiring: protocol choice per dataset family, the official draw file lookup,
and evaluation from precomputed features on the real SYSU-MM01 crops."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import REAL_MINI
from vireid.data.datasets import build_dataset
from vireid.workflows.evaluate_model import evaluate_features, find_rand_perm_cam, protocols_for
from vireid.errors import ConfigError

OFFICIAL = REAL_MINI.parent.parent / "splits" / "sysu-mm01" / "rand_perm_cam.mat"


@pytest.fixture(scope="module")
def real_mini():
    return build_dataset("sysu-mm01", REAL_MINI, require_train=False)


def test_default_protocols_follow_the_dataset_family(real_mini):
    assert protocols_for(real_mini) == ["sysu-all-single", "sysu-indoor-single"]
    with pytest.raises(ConfigError, match="does not fit a sysu dataset"):
        protocols_for(real_mini, ["regdb-v2t"])
    with pytest.raises(ConfigError, match="unknown protocol 'sysu-everything'"):
        protocols_for(real_mini, ["sysu-everything"])


def test_official_draw_file_is_found_in_the_dataset_or_named(real_mini, tmp_path):
    with pytest.raises(ConfigError, match=r"rand_perm_cam.mat .*exp/rand_perm_cam.mat.*--rand-perm-cam"):
        find_rand_perm_cam(real_mini)
    assert find_rand_perm_cam(real_mini, OFFICIAL) == OFFICIAL
    root = tmp_path / "sysu"
    shutil.copytree(REAL_MINI, root)
    shutil.copy(OFFICIAL, root / "exp" / "rand_perm_cam.mat")
    copied = build_dataset("sysu-mm01", root, require_train=False)
    assert find_rand_perm_cam(copied) == root / "exp" / "rand_perm_cam.mat"


def test_real_crops_with_identity_features_score_perfectly(real_mini):
    # features that encode the identity: every protocol must give 100 % rank-1 and mAP
    pids = torch.tensor([r.orig_pid for r in real_mini.test])
    feats = torch.nn.functional.one_hot(pids, 8).float() + 0.01 * torch.randn(len(pids), 8, generator=torch.Generator().manual_seed(0))
    results = evaluate_features(feats, real_mini, protocols_for(real_mini), trials=3, draw="seeded", method="oracle")
    for r in results:
        assert r.mean["rank1"] == pytest.approx(100.0) and r.mean["mAP"] == pytest.approx(100.0)
        assert r.settings["method"] == "oracle" and r.settings["draw"] == "seeded"
        assert all(t["num_query"] == 20 for t in r.trials)  # the 20 infrared crops of cams 3 and 6
