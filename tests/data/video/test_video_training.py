"""Tracklet sampling wired into training data (data.format synthetic-vcm, sampler.seq_len), end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, TINY_VCM_OVERRIDES, tiny_cnn, tiny_overrides

from vireid.errors import ConfigError


def _cfg(root, tmp_path, **extra):
    from vireid.plugins import user_config

    values = {**TINY_VCM_OVERRIDES, "sampler.num_ids": 3, "sampler.seq_len": 4, "sampler.tracklets_per_id": 1, **extra}
    return user_config(REPO / "configs" / "baseline_synth.yaml", tiny_overrides(root, tmp_path, **values))


def test_training_batches_hold_whole_tracklets_and_a_run_trains_and_evaluates(tiny_vcm_root, tmp_path):
    from vireid.data.build import build_train_data
    from vireid.workflows.train_run import run_training

    cfg = _cfg(tiny_vcm_root, tmp_path, **{"data.extras": "{tracklets: dataset}"})
    data = build_train_data(cfg, progress=False)
    loader = data.train_loader
    assert type(loader.batch_sampler).__name__ == "TrackletSampler"
    batch = next(iter(loader))
    # synthetic-vcm holds a fifth of the 4 training identities out for validation, tracklets and all
    assert data.num_classes == 3 and {r.orig_pid for r in data.val_records} & {r.orig_pid for r in data.train_records} == set()
    assert len(data.val_records) == 64 and all(r.tracklet >= 0 for r in data.val_records)
    assert batch.images.shape == (2 * 3 * 1 * 4, 3, 64, 32)  # 2 modalities x P=3 x K=1 x T=4
    tracklets = batch.extras["tracklets"].reshape(6, 4)
    assert (tracklets == tracklets[:, :1]).all() and len(set(tracklets[:, 0].tolist())) == 6
    records = [data.train_records[i] for i in batch.indices.tolist()]
    assert [r.tracklet for r in records] == batch.extras["tracklets"].tolist()
    assert batch.modalities.tolist() == [0] * 12 + [1] * 12
    frames = np.asarray([int(r.path[-8:-4]) for r in records]).reshape(6, 4)
    assert (np.diff(frames, axis=1) > 0).all()  # temporal order (8 frames, T=4: one from each pair)

    # an image model trains on the frames, validates on the held-out identities' frames and is evaluated on the
    # given (infrared -> visible) frames
    cfg = tiny_cnn(_cfg(tiny_vcm_root, tmp_path, **{"train.epochs": 1, "sampler.epoch_length": 2, "train.threads": 1,
                                                    "train.eval_every": 1, "eval.protocols": "[]"}))
    run_training(cfg, tmp_path / "run", evaluate=True)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(entry.get("kind") == "val" and 0 <= entry["mAP"] <= 1 for entry in logged)
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    # the video layout's default protocols: tracklet to tracklet, both directions (vireid.evaluation.tracklets)
    assert [r["name"] for r in results] == ["vcm-i2v", "vcm-v2i"]
    assert all(0 <= r["mean"]["mAP"] <= 100 for r in results)


def test_tracklet_settings_on_still_images_or_without_seq_len_are_one_sentence(tiny_vcm_root, tiny_synth_root,
                                                                                  tmp_path):
    from vireid.data.build import build_train_data
    from vireid.plugins import user_config

    still = user_config(REPO / "configs" / "baseline_synth.yaml",
                        tiny_overrides(tiny_synth_root, tmp_path, **{"sampler.seq_len": 4}))
    with pytest.raises(ConfigError, match="'sampler.seq_len' is 4 .* still images without tracklet ids"):
        build_train_data(still, progress=False)
    with pytest.raises(ConfigError, match="'data.extras.tracklets' .* sampler.seq_len is 0"):
        build_train_data(_cfg(tiny_vcm_root, tmp_path, **{"sampler.seq_len": 0, "data.extras": "{tracklets: dataset}"}),
                         progress=False)
    for key, value, message in (("sampler.frame_sampling", "dense", "must be one of restricted, evenly"),
                                ("sampler.seq_len", -1, "sampler.seq_len"),
                                ("sampler.tracklets_per_id", 0, "sampler.tracklets_per_id")):
        with pytest.raises(ConfigError, match=message):
            _cfg(tiny_vcm_root, tmp_path, **{key: value})
