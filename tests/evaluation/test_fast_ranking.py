"""Batched multi-trial ranking and the certified bf16 screen of the protocol runners.

The batched ranker is held against the per-query loop; the certified path against the fp32 path
(results must be identical whether the screen decided every comparison or fell back)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import vireid  # noqa: F401  (installs the torchvision guard first)
from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.evaluation import distance as distance_module
from vireid.evaluation import evaluate_ranking_loop
from vireid.evaluation import metrics as metrics_module
from vireid.evaluation.protocols import runner as protocols_module
from vireid.evaluation.distance import accumulation_factor, bf16_screen, prepare_screen
from vireid.evaluation.metrics import TrialTable, evaluate_ranking_trials, undecided_comparisons
from vireid.evaluation.protocols import ProtocolError, llcm_protocol, regdb_protocol, sysu_protocol

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def _assert_same(got: dict, expected: dict) -> None:
    np.testing.assert_allclose(got["cmc"], expected["cmc"], atol=1e-9)
    assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-9)
    assert got["mINP"] == pytest.approx(expected["mINP"], abs=1e-9)
    assert got["num_valid_queries"] == expected["num_valid_queries"]


# ---------------------------------------------------------------------------------------------
# Batched ranking of several trials
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["grouped", "keys"])
@pytest.mark.parametrize("cam_rule", [None, "sysu", "same-camera"])
@pytest.mark.parametrize("dedup", [False, True])
def test_trials_match_the_loop_per_trial(layout, cam_rule, dedup, monkeypatch):
    # Tiny chunks (several query chunks) and both the grouped float32 pass and the int64-key pass.
    monkeypatch.setattr(metrics_module, "_CHUNK_ELEMENTS", 200)
    monkeypatch.setattr(metrics_module, "_GROUPED_MAX_MATCHES", 8 if layout == "grouped" else 0)
    rng = np.random.default_rng(5)
    for case in range(10):
        nq, nu = int(rng.integers(1, 30)), int(rng.integers(2, 40))
        if case % 3 == 0:  # integer values: many exact ties (and -0.0 next to +0.0)
            dist = rng.integers(-2, 3, (nq, nu)).astype(np.float32)
            dist[rng.random((nq, nu)) < 0.2] = -0.0
        elif case % 3 == 1:
            dist = (rng.random((nq, nu)) - 0.3).astype(np.float32)
        else:  # a few infinite distances take the exact key pass
            dist = rng.random((nq, nu)).astype(np.float32)
            dist[rng.random((nq, nu)) < 0.1] = np.inf
        q, g = rng.integers(0, 6, nq), rng.integers(0, 6, nu)
        qc, gc = rng.integers(1, 7, nq), rng.integers(1, 7, nu)
        # trials of different sizes, overlapping columns, each in its own (shuffled) order
        trials = [rng.permutation(nu)[: int(rng.integers(1, nu + 1))] for _ in range(int(rng.integers(1, 5)))]
        kwargs = dict(cam_rule=cam_rule, dedup_cmc=dedup, max_rank=6)
        expected = []
        for cols in trials:
            try:
                expected.append(evaluate_ranking_loop(dist[:, cols], q, g[cols], qc, gc[cols], **kwargs))
            except ValueError:
                expected.append(None)
        if any(e is None for e in expected):
            with pytest.raises(ValueError, match="no query"):
                evaluate_ranking_trials(torch.from_numpy(dist), q, g, trials, qc, gc, **kwargs)
            continue
        got = evaluate_ranking_trials(torch.from_numpy(dist), q, g, trials, qc, gc, **kwargs)
        assert len(got) == len(trials)
        for g_result, e_result in zip(got, expected):
            _assert_same(g_result, e_result)


def test_trials_of_float64_distances_and_bad_columns():
    rng = np.random.default_rng(0)
    dist = rng.random((6, 9))
    q, g = rng.integers(0, 3, 6), rng.integers(0, 3, 9)
    g[:3] = [0, 1, 2]
    trials = [np.array([0, 1, 2, 5]), np.array([8, 7, 2, 1, 0])]
    got = evaluate_ranking_trials(dist, q, g, trials)
    for cols, result in zip(trials, got):
        _assert_same(result, evaluate_ranking_loop(dist[:, cols], q, g[cols]))
    with pytest.raises(ValueError, match="column 9"):
        evaluate_ranking_trials(dist, q, g, [np.array([0, 9])])
    with pytest.raises(ValueError, match="empty gallery"):
        evaluate_ranking_trials(dist, q, g, [np.array([], dtype=np.int64)])


# ---------------------------------------------------------------------------------------------
# The bf16 screen's bound
# ---------------------------------------------------------------------------------------------


def _clustered(n: int, dim: int, seed: int, spread: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, dim, generator=gen)
    return centres[torch.randint(0, 5, (n,), generator=gen)] + spread * torch.randn(n, dim, generator=gen)


@pytest.mark.parametrize("kind", ["random", "clustered", "positive"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_screen_bound_holds_against_fp32_and_exact_products(kind, metric):
    dim = 300
    if kind == "random":
        q, g = torch.randn(70, dim), torch.randn(90, dim)
    elif kind == "clustered":
        q, g = _clustered(70, dim, 1), _clustered(90, dim, 2)
    else:  # all-positive features: no cancellation, the accumulation terms are largest
        q, g = torch.rand(70, dim) ** 3, torch.rand(90, dim) ** 3
    screen = prepare_screen(q, g, metric=metric)
    z, w = bf16_screen(screen)
    qn, gn = screen.q, screen.g
    if metric == "cosine":
        s_hat = -z
    else:
        s_hat = 0.5 * ((qn * qn).sum(1)[:, None] + (gn * gn).sum(1)[None, :]) - z
    eps = w - distance_module.SCREEN_MARGIN
    fp32 = qn @ gn.T
    exact = qn.double() @ gn.double().T
    assert bool(((s_hat - fp32).abs() <= eps).all())
    assert bool(((s_hat.double() - exact).abs() <= eps.double()).all())
    # not vacuous: a few bf16 unit roundoffs at most for unit vectors
    assert float(eps.max()) < 4 * 2.0**-8
    # the screen's ordering agrees with the fp32 distances wherever it claims to decide
    d32 = distance_module.pairwise_distance(q, g, metric=metric)
    decided = (z[:, :, None] - z[:, None, :]) > (w[:, :, None] + w[:, None, :])
    assert bool((d32[:, :, None] > d32[:, None, :])[decided].all())


def test_screen_rejects_unnormalised_euclidean_and_huge_dimensions():
    with pytest.raises(ValueError, match="normalised"):
        prepare_screen(torch.randn(2, 4), torch.randn(3, 4), metric="euclidean", normalize=False)
    assert accumulation_factor(2048) == pytest.approx(2048 * 2.0**-24, rel=1e-3)
    with pytest.raises(ValueError, match="too large"):
        accumulation_factor(1 << 23)


# ---------------------------------------------------------------------------------------------
# Certified protocol runs equal the fp32 path
# ---------------------------------------------------------------------------------------------


def _sysu_pool(num_ids: int, per_folder: int, seed: int = 0) -> list[ImageRecord]:
    pool = [
        ImageRecord(f"cam{cam}/{pid:04d}/{k:04d}.jpg", pid, cam, INFRARED if cam in (3, 6) else VISIBLE)
        for pid in range(1, num_ids + 1)
        for cam in range(1, 7)
        for k in range(1, per_folder + 1)
    ]
    random.Random(seed).shuffle(pool)
    return pool


def _identity_features(pool, dim: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(r.pid for r in pool) + 1, dim, generator=gen)
    pids = torch.tensor([r.pid for r in pool])
    return centres[pids] + noise * torch.randn(len(pool), dim, generator=gen)


def _same_result(a, b) -> None:
    for ta, tb in zip(a.trials, b.trials):
        for key in METRICS:
            assert ta[key] == pytest.approx(tb[key], abs=1e-6)
        assert ta["num_valid_queries"] == tb["num_valid_queries"]


@pytest.fixture()
def small_screen_blocks(monkeypatch):
    """Probe and blocks of a few rows, so the block-wise screen is exercised on small pools."""
    monkeypatch.setattr(protocols_module, "_PROBE_ROWS", 7)
    monkeypatch.setattr(protocols_module, "_SCREEN_BLOCK_ROWS", 13)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_separable_features_are_certified_and_equal_fp32(metric, small_screen_blocks):
    pool = _sysu_pool(num_ids=12, per_folder=4)
    feats = _identity_features(pool, dim=64, noise=0.05, seed=0)
    fp32 = sysu_protocol(feats, pool, trials=4, metric=metric, precision="fp32")
    certified = sysu_protocol(feats, pool, trials=4, metric=metric, precision="certified")
    assert certified.settings["precision"]["path"] == "bf16-certified"
    assert certified.settings["precision"]["screened_rows"] == certified.settings["num_query"]
    assert fp32.settings["precision"] == {"requested": "fp32", "path": "fp32", "reason": "requested"}
    _same_result(certified, fp32)
    assert certified.mean["rank1"] == pytest.approx(100.0)


@pytest.mark.parametrize("noise", [0.5, 2.0, 8.0])
def test_hard_features_fall_back_and_equal_fp32(noise, small_screen_blocks):
    pool = _sysu_pool(num_ids=15, per_folder=5)
    feats = _identity_features(pool, dim=96, noise=noise, seed=3)
    fp32 = sysu_protocol(feats, pool, trials=5, precision="fp32")
    certified = sysu_protocol(feats, pool, trials=5, precision="certified")
    _same_result(certified, fp32)
    if noise == 8.0:  # near-random features: neighbours closer than the bound, fp32 computed
        assert certified.settings["precision"]["path"] == "fp32"
        assert "bf16 error bound" in certified.settings["precision"]["reason"]


def test_near_ties_are_never_decided_by_the_screen(small_screen_blocks):
    # Gallery images that are exact copies or differ in the 7th digit: the fp32 path's ordering of
    # them (its rounding and the gallery order) must be reproduced, so the screen must not decide.
    pool = _sysu_pool(num_ids=6, per_folder=3)
    feats = _identity_features(pool, dim=48, noise=0.02, seed=1)
    gen = torch.Generator().manual_seed(2)
    visible = [i for i, r in enumerate(pool) if r.modality == VISIBLE]
    for a, b in zip(visible[::2], visible[1::2]):
        feats[b] = feats[a] * (1 + 1e-7 * torch.randn(1, generator=gen))
    fp32 = sysu_protocol(feats, pool, trials=6, precision="fp32")
    certified = sysu_protocol(feats, pool, trials=6, precision="certified")
    _same_result(certified, fp32)
    # and the screen flags such a pair directly
    q, u = feats[[visible[0]]], feats[[visible[0], visible[1]]]
    screen = prepare_screen(q, u)
    z, w = bf16_screen(screen)
    table = TrialTable.build(np.array([pool[visible[0]].pid]), np.array([pool[visible[0]].pid, 999]),
                             [np.array([0, 1])], None, None, None, torch.device("cpu"))  # fmt: skip
    assert int(undecided_comparisons(z, w, table)[0]) >= 1


def test_llcm_and_regdb_certified_equal_fp32(small_screen_blocks):
    rng = np.random.default_rng(0)
    pool = []
    for pid in range(1, 9):
        for cam in (1, 2, 3, 4):
            modality = VISIBLE if cam <= 2 else INFRARED
            pool += [ImageRecord(f"{modality}/cam{cam}/{pid:04d}/{k}.jpg", pid, cam, modality) for k in range(3)]
    order = rng.permutation(len(pool))
    pool = [pool[i] for i in order]
    for noise in (0.05, 3.0):
        feats = _identity_features(pool, dim=40, noise=noise, seed=4)
        for run in (
            lambda p: llcm_protocol(feats, pool, "infrared-to-visible", trials=3, precision=p),
            lambda p: regdb_protocol(feats, pool, "visible-to-thermal", precision=p),
        ):
            _same_result(run("certified"), run("fp32"))


def test_precision_choice_is_validated_and_recorded(monkeypatch):
    pool = _sysu_pool(num_ids=4, per_folder=2)
    feats = _identity_features(pool, dim=16, noise=0.05, seed=0)
    with pytest.raises(ProtocolError, match="precision"):
        sysu_protocol(feats, pool, trials=1, precision="bf16")
    plain = sysu_protocol(feats, pool, trials=1, normalize=False, precision="certified")
    assert plain.settings["precision"]["path"] == "fp32" and "un-normalised" in plain.settings["precision"]["reason"]
    reranked = sysu_protocol(feats, pool, trials=1, rerank=True, rerank_params={"k1": 3, "k2": 1}, precision="certified")
    assert reranked.settings["precision"]["path"] == "fp32" and "re-ranking" in reranked.settings["precision"]["reason"]
    auto = sysu_protocol(feats, pool, trials=1)
    assert auto.settings["precision"]["path"] == "fp32" and auto.settings["precision"]["requested"] == "auto"
    forced = sysu_protocol(feats, pool, trials=1, precision="certified")
    assert forced.settings["precision"]["path"] == "bf16-certified"


def test_bf16_detection_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(distance_module, "_cpu_has_bf16_units", lambda: True)
    assert distance_module.bf16_matmul_is_fast("cpu")
    assert not distance_module.bf16_matmul_is_fast("meta")
    monkeypatch.setattr(distance_module, "_cpu_has_bf16_units", lambda: False)
    assert not distance_module.bf16_matmul_is_fast("cpu")
