"""Tracklet-to-tracklet protocols ``vcm-i2v`` / ``vcm-v2i`` against a plain loop reference on a tiny pool
(frames averaged per tracklet, euclidean distances, the "same identity and camera" rule, AP / CMC / mINP
per query), both directions, with re-ranking, and their one-sentence refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vireid.builtins  # noqa: F401
from vireid.data.records import ImageRecord
from vireid.evaluation.protocols import PROTOCOLS, ProtocolError, run_protocol
from vireid.evaluation.tracklets import single_frame_pool, tracklet_pool

# (tracklet, pid, camera, modality, frame features): infrared cameras 3/6, visible 1/2/3
TRACKLETS = [
    (10, 1, 3, "infrared", [[0.0, 0.0], [0.2, 0.0]]),
    (11, 2, 3, "infrared", [[2.0, 2.0], [2.2, 2.0], [2.0, 2.3]]),
    (12, 3, 6, "infrared", [[4.0, 0.0]]),
    (20, 1, 1, "visible", [[0.5, 0.5], [0.7, 0.5]]),
    (21, 1, 3, "visible", [[0.1, 0.0], [0.1, 0.1]]),  # pid 1 on the query's camera 3: skipped for that query
    (22, 2, 2, "visible", [[3.5, 0.0], [3.5, 0.4]]),
    (23, 3, 1, "visible", [[2.1, 2.1], [2.1, 1.9]]),
    (24, 2, 1, "visible", [[2.6, 2.4]]),
]


def pool_and_features():
    records, rows = [], []
    for tid, pid, cam, mod, frames in TRACKLETS:
        for f, row in enumerate(frames):
            records.append(ImageRecord(f"{mod}/{tid}/{f}.jpg", pid, cam, mod, tracklet=tid))
            rows.append(row)
    return records, torch.tensor(rows)


def loop_reference(query_mod: str, normalize: bool):
    """Mean of each tracklet's frames (L2-normalised when ``normalize``), euclidean distance, per query: drop
    gallery items of the same identity and camera, rank, then CMC (plain), AP and INP, averaged over queries
    that keep a match."""
    means = {tid: np.mean(np.asarray(frames), axis=0) for tid, _, _, _, frames in TRACKLETS}
    if normalize:
        means = {tid: m / np.linalg.norm(m) if np.linalg.norm(m) > 0 else m for tid, m in means.items()}
    queries = [t for t in TRACKLETS if t[3] == query_mod]
    gallery = [t for t in TRACKLETS if t[3] != query_mod]
    rank1, aps, inps = [], [], []
    for tid, pid, cam, _, _ in queries:
        kept = [g for g in gallery if not (g[1] == pid and g[2] == cam)]
        ranked = sorted(kept, key=lambda g: math.dist(means[tid], means[g[0]]))
        hits = [g[1] == pid for g in ranked]
        if not any(hits):
            continue
        positions = [i for i, h in enumerate(hits) if h]
        rank1.append(1.0 if hits[0] else 0.0)
        aps.append(sum((k + 1) / (p + 1) for k, p in enumerate(positions)) / len(positions))
        inps.append(len(positions) / (positions[-1] + 1))
    return 100 * np.mean(rank1), 100 * np.mean(aps), 100 * np.mean(inps), len(rank1)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("name, query_mod", [("vcm-i2v", "infrared"), ("vcm-v2i", "visible")])
def test_tracklet_protocol_matches_the_loop_reference(name, query_mod, normalize):
    records, feats = pool_and_features()
    result = run_protocol(name, feats, records, normalize=normalize)
    rank1, mAP, mINP, valid = loop_reference(query_mod, normalize)
    assert result.mean["rank1"] == pytest.approx(rank1)
    assert result.mean["mAP"] == pytest.approx(mAP)
    assert result.mean["mINP"] == pytest.approx(mINP)
    assert result.trials[0]["num_valid_queries"] == valid
    assert result.settings["unit"] == "tracklet" and result.settings["num_frames"] == len(records)
    assert result.trials[0]["num_query"] == sum(t[3] == query_mod for t in TRACKLETS)


def test_hand_computed_infrared_to_visible():
    """By hand (visible means: 20 (0.6, 0.5), 21 (0.1, 0.05), 22 (3.5, 0.2), 23 (2.1, 2.0), 24 (2.6, 2.4)):
    query 10 (mean (0.1, 0), pid 1, camera 3) skips 21 (pid 1, camera 3) and ranks 20 (pid 1) first: AP 1;
    query 11 (mean (2.07, 2.1), pid 2) ranks 23 (pid 3), 24 (pid 2), 20, 22 (pid 2): AP (1/2 + 2/4) / 2 = 1/2;
    query 12 ((4, 0), pid 3) ranks 22 (0.54), 23 (pid 3, 2.76), 24 (2.78): AP 1/2.
    Rank-1 1/3, mAP (1 + 1/2 + 1/2) / 3."""
    records, feats = pool_and_features()
    result = run_protocol("vcm-i2v", feats, records, normalize=False)
    assert result.mean["rank1"] == pytest.approx(100 / 3)
    assert result.mean["mAP"] == pytest.approx(100 * (1 + 0.5 + 0.5) / 3)


def test_frames_are_averaged_per_tracklet_and_rerank_runs_on_tracklets():
    records, feats = pool_and_features()
    pooled, tracklet_records, group = tracklet_pool(feats, records)
    assert pooled.shape == (len(TRACKLETS), 2) and [r.tracklet for r in tracklet_records] == [t[0] for t in TRACKLETS]
    assert torch.allclose(pooled[1], torch.tensor([6.2 / 3, 6.3 / 3])) and group.tolist()[:5] == [0, 0, 1, 1, 1]
    plain = run_protocol("vcm-v2i", feats, records)
    reranked = run_protocol("vcm-v2i", feats, records, rerank=True)
    assert reranked.settings["rerank"] and 0 <= reranked.mean["mAP"] <= 100
    assert reranked.trials[0]["num_query"] == plain.trials[0]["num_query"] == 5


def test_single_frame_pool_ranks_frames():
    records, feats = pool_and_features()
    frames = run_protocol("vcm-i2v", feats, single_frame_pool(records))
    assert frames.trials[0]["num_query"] == 6 and frames.settings["num_tracklets"] == len(records)


def test_registered_for_the_vcm_family_and_refusals_are_one_sentence():
    assert PROTOCOLS.get("vcm-i2v").protocol_family == "vcm"
    records, feats = pool_and_features()
    mixed = list(records)
    mixed[1] = ImageRecord("infrared/10/1.jpg", 5, 3, "infrared", tracklet=10)
    with pytest.raises(ProtocolError, match="tracklet 10 mixes frames of identity 1 .* and 5 .*; the frames of one "
                                            "tracklet must share identity, camera and modality"):
        run_protocol("vcm-i2v", feats, mixed)
    with pytest.raises(ProtocolError, match="features have shape"):
        run_protocol("vcm-i2v", feats[:3], records)
    with pytest.raises(ProtocolError, match="has no option 'trials'"):
        run_protocol("vcm-i2v", feats, records, trials=3)


def test_tracklet_protocols_fit_any_data_with_tracklet_ids_and_refuse_still_images():
    from types import SimpleNamespace

    from vireid.errors import ConfigError
    from vireid.workflows.evaluate_model import protocols_for

    records, _ = pool_and_features()
    own = SimpleNamespace(protocol_family="given", test=records)  # e.g. your own tracklet folders or CSV
    assert protocols_for(own, ["vcm-i2v", "vcm-v2i"]) == ["vcm-i2v", "vcm-v2i"]
    assert protocols_for(SimpleNamespace(protocol_family="vcm", test=records)) == ["vcm-i2v", "vcm-v2i"]
    still = SimpleNamespace(protocol_family="given", test=single_frame_pool(records))
    with pytest.raises(ConfigError, match="protocol 'vcm-i2v' does not fit a given dataset"):
        protocols_for(still, ["vcm-i2v"])
