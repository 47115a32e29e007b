"""Ranking metrics (hand-computed cases + fast vs loop agreement) and pairwise distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vireid  # noqa: F401  (installs the torchvision guard first)
from vireid.evaluation import evaluate_ranking, evaluate_ranking_loop
from vireid.evaluation import metrics as metrics_module
from vireid.evaluation.distance import pairwise_distance

def _fast_by_sorting(*args, **kwargs):
    """The fast path forced onto its sort-based strategy (used for many matches per query)."""
    saved = metrics_module._COUNTING_MAX_MATCHES
    metrics_module._COUNTING_MAX_MATCHES = 0
    try:
        return evaluate_ranking(*args, **kwargs)
    finally:
        metrics_module._COUNTING_MAX_MATCHES = saved


BOTH = pytest.mark.parametrize(
    "evaluate", [evaluate_ranking, _fast_by_sorting, evaluate_ranking_loop], ids=["fast", "fast-sorting", "loop"]
)


def _close(result: dict, cmc: list[float], m_ap: float, m_inp: float, valid: int) -> None:
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-12)
    assert result["mAP"] == pytest.approx(m_ap, abs=1e-12)
    assert result["mINP"] == pytest.approx(m_inp, abs=1e-12)
    assert result["num_valid_queries"] == valid


@BOTH
def test_ties_are_broken_by_gallery_index(evaluate):
    # Both gallery images at distance 1: the wrong identity (index 0) ranks first.
    r = evaluate(np.array([[1.0, 1.0]]), [1], [2, 1], max_rank=2)
    _close(r, [0.0, 1.0], 0.5, 0.5, 1)
    # Swapping the gallery order puts the correct one first.
    r = evaluate(np.array([[1.0, 1.0]]), [1], [1, 2], max_rank=2)
    _close(r, [1.0, 1.0], 1.0, 1.0, 1)


@BOTH
def test_multi_shot_gallery_with_ties(evaluate):
    # Sorted (stable): idx3 (d0, id1), idx0 (d1, id2), idx1 (d1, id1), idx2 (d2, id3)
    # -> correct at positions 1 and 3: AP = (1/1 + 2/3) / 2 = 5/6, mINP = 2/3.
    r = evaluate(np.array([[1.0, 1.0, 2.0, 0.0]]), [1], [2, 1, 3, 1], max_rank=4)
    _close(r, [1.0, 1.0, 1.0, 1.0], 5 / 6, 2 / 3, 1)


@BOTH
def test_query_without_match_is_excluded(evaluate):
    dist = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    # Query 0 (id 1): ranking 2, 1, 1 -> first at 2, AP = (1/2 + 2/3)/2 = 7/12, mINP = 2/3.
    # Query 1 (id 9) has no match and must not dilute the averages.
    r = evaluate(dist, [1, 9], [2, 1, 1], max_rank=3)
    _close(r, [0.0, 1.0, 1.0], 7 / 12, 2 / 3, 1)


@BOTH
def test_no_valid_query_raises(evaluate):
    with pytest.raises(ValueError, match="no query has a correct match"):
        evaluate(np.zeros((2, 2)), [5, 6], [1, 2])
    # The SYSU rule removes the only correct match (cam 2) of a cam-3 query.
    with pytest.raises(ValueError, match="no query has a correct match"):
        evaluate(np.zeros((1, 2)), [1], [1, 2], [3], [2, 1], cam_rule="sysu")


@BOTH
def test_unknown_cam_rule_raises(evaluate):
    with pytest.raises(ValueError, match="unknown cam_rule"):
        evaluate(np.zeros((1, 1)), [1], [1], [1], [1], cam_rule="market")
    with pytest.raises(ValueError, match="needs q_camids"):
        evaluate(np.zeros((1, 1)), [1], [1], cam_rule="sysu")


@BOTH
def test_sysu_rule_removes_every_cam2_image_for_cam3_queries(evaluate):
    # Gallery by distance: (id1, cam2), (id2, cam2), (id2, cam1), (id1, cam1).
    g_pids, g_cams = [1, 2, 2, 1], [2, 2, 1, 1]
    dist = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]])
    # Query 0 (cam 3): filtered ranking id2(cam1), id1(cam1) -> first at 2, AP 1/2, mINP 1/2.
    # (If only the same identity's cam-2 image were removed it would be at 3.)
    # Query 1 (cam 6): nothing removed: id1, id2, id2, id1 -> first at 1, AP (1 + 2/4)/2, mINP 2/4.
    r = evaluate(dist, [1, 1], g_pids, [3, 6], g_cams, cam_rule="sysu", max_rank=4)
    _close(r, [0.5, 1.0, 1.0, 1.0], (0.5 + 0.75) / 2, 0.5, 2)
    # Without the rule query 0 also ranks its cam-2 match first.
    r = evaluate(dist, [1, 1], g_pids, [3, 6], g_cams, cam_rule=None, max_rank=4)
    _close(r, [1.0, 1.0, 1.0, 1.0], 0.75, 0.5, 2)


@BOTH
def test_same_camera_rule_removes_only_same_identity_same_camera(evaluate):
    # Gallery by distance: (id1, cam1) removed; (id2, cam1) stays; then (id1, cam2), (id2, cam2).
    dist = np.array([[0.0, 1.0, 2.0, 3.0]])
    r = evaluate(dist, [1], [1, 2, 1, 2], [1], [1, 1, 2, 2], cam_rule="same-camera", max_rank=3)
    _close(r, [0.0, 1.0, 1.0], 0.5, 0.5, 1)


@BOTH
def test_dedup_cmc_counts_each_identity_once(evaluate):
    # Ranked identities 2, 2, 3, 1, 1: plain first match at 4; de-duplicated (2, 3, 1) at 3.
    # mAP/mINP stay on the full ranking: AP = (1/4 + 2/5)/2 = 0.325, mINP = 2/5.
    dist = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    g = [2, 2, 3, 1, 1]
    plain = evaluate(dist, [1], g, max_rank=5)
    _close(plain, [0, 0, 0, 1, 1], 0.325, 0.4, 1)
    dedup = evaluate(dist, [1], g, dedup_cmc=True, max_rank=5)
    _close(dedup, [0, 0, 1, 1, 1], 0.325, 0.4, 1)


@BOTH
def test_dedup_after_camera_filter(evaluate):
    # Ranked (id, cam): (4, 2) removed by the SYSU rule for a cam-3 query, then (3, 1), (3, 4), (1, 4).
    # Filtered ranking 3, 3, 1: plain first match at 3; de-duplicated (3, 1) at 2 -- the removed
    # identity 4 must not count as an identity ranked earlier (that would give 3).
    dist = np.array([[0.0, 1.0, 2.0, 3.0]])
    kwargs = dict(cam_rule="sysu", max_rank=4)
    r = evaluate(dist, [1], [4, 3, 3, 1], [3], [2, 1, 4, 4], dedup_cmc=True, **kwargs)
    _close(r, [0, 1, 1, 1], 1 / 3, 1 / 3, 1)
    r = evaluate(dist, [1], [4, 3, 3, 1], [3], [2, 1, 4, 4], dedup_cmc=False, **kwargs)
    _close(r, [0, 0, 1, 1], 1 / 3, 1 / 3, 1)


@BOTH
def test_max_rank_longer_than_gallery_carries_forward(evaluate):
    r = evaluate(np.array([[0.0, 1.0]]), [1], [2, 1], max_rank=5)
    _close(r, [0.0, 1.0, 1.0, 1.0, 1.0], 0.5, 0.5, 1)
    assert r["cmc"].shape == (5,)


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(3)
    dist = rng.random((7, 11)).astype(np.float32)
    q, g = rng.integers(0, 3, 7), rng.integers(0, 3, 11)
    a = evaluate_ranking(dist, q, g)
    b = evaluate_ranking(torch.from_numpy(dist), torch.from_numpy(q), torch.from_numpy(g))
    np.testing.assert_array_equal(a["cmc"], b["cmc"])
    assert a["mAP"] == b["mAP"] and a["mINP"] == b["mINP"]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        evaluate_ranking(np.zeros((2, 3)), [1, 2], [1, 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strategy", ["counting", "sorting"])
@pytest.mark.parametrize("cam_rule", [None, "sysu", "same-camera"])
@pytest.mark.parametrize("dedup", [False, True])
def test_fast_matches_loop_on_random_data_with_ties(dtype, strategy, cam_rule, dedup, monkeypatch):
    # Tiny chunks so several query chunks are exercised; both ranking strategies are checked.
    monkeypatch.setattr(metrics_module, "_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(metrics_module, "_COUNTING_MAX_MATCHES", 10_000 if strategy == "counting" else 0)
    rng = np.random.default_rng(11)
    for trial in range(12):
        nq, ng = int(rng.integers(1, 25)), int(rng.integers(1, 40))
        # Integer-valued distances create many exact ties; half the trials use continuous values.
        # Negative values, -0.0 next to +0.0 (equal: a tie) and NaN-free; the float32 fast path
        # orders by integer keys, which must reproduce the stable sort exactly.
        if trial % 2 == 0:
            dist = rng.integers(-2, 3, (nq, ng)).astype(dtype)
            dist[rng.random((nq, ng)) < 0.2] = -0.0
        else:
            dist = (rng.random((nq, ng)) - 0.3).astype(dtype)
        q, g = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
        qc, gc = rng.integers(1, 7, nq), rng.integers(1, 7, ng)
        kwargs = dict(cam_rule=cam_rule, dedup_cmc=dedup, max_rank=8)
        try:
            expected = evaluate_ranking_loop(dist, q, g, qc, gc, **kwargs)
        except ValueError:
            with pytest.raises(ValueError):
                evaluate_ranking(dist, q, g, qc, gc, **kwargs)
            continue
        got = evaluate_ranking(dist, q, g, qc, gc, **kwargs)
        np.testing.assert_allclose(got["cmc"], expected["cmc"], atol=1e-6)
        assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
        assert got["mINP"] == pytest.approx(expected["mINP"], abs=1e-6)
        assert got["num_valid_queries"] == expected["num_valid_queries"]


def test_pairwise_distance_matches_direct_formulas():
    torch.manual_seed(0)
    q, g = torch.randn(5, 8), torch.randn(7, 8)
    direct = torch.cdist(q.double(), g.double())
    got = pairwise_distance(q, g, metric="euclidean", normalize=False, chunk_size=2)
    assert got.dtype == torch.float32 and got.shape == (5, 7)
    torch.testing.assert_close(got.double(), direct, atol=1e-5, rtol=1e-5)
    qn, gn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    torch.testing.assert_close(pairwise_distance(q, g), torch.cdist(qn, gn), atol=1e-5, rtol=1e-5)
    cos = pairwise_distance(q, g, metric="cosine", chunk_size=3)
    torch.testing.assert_close(cos, 1 - qn @ gn.T, atol=1e-6, rtol=1e-6)
    # Identical vectors: distance 0, never NaN from a slightly negative squared norm.
    same = pairwise_distance(q, q)
    assert torch.isfinite(same).all() and same.diagonal().abs().max() < 1e-3


def test_pairwise_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown distance metric"):
        pairwise_distance(torch.zeros(1, 2), torch.zeros(1, 2), metric="manhattan")
    with pytest.raises(ValueError, match="dims"):
        pairwise_distance(torch.zeros(1, 2), torch.zeros(1, 3))
