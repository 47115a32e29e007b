"""Modality-aware re-ranking: fast torch version vs the literal loop twin, and protocol use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vireid.evaluation import rerank as rerank_module
from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.rerank import k_reciprocal_rerank
from vireid.evaluation.rerank_modality import RerankError, modality_rerank, modality_rerank_loop, rerank_settings


def _case(nq, ng, dim, seed, shift=2.0):
    torch.manual_seed(seed)
    n = nq + ng
    ids = torch.randint(0, max(2, n // 6), (n,))
    mods = torch.randint(0, 2, (n,))
    feats = torch.randn(int(ids.max()) + 1, dim)[ids] + 0.7 * torch.randn(n, dim) + shift * mods[:, None].float()
    q, g = feats[:nq], feats[nq:]
    return (pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g), mods[:nq], mods[nq:]), ids


@pytest.mark.parametrize(
    ("nq", "ng", "k_intra", "k_cross", "k2", "lam"),
    [
        (5, 7, 20, 10, 6, 0.3),  # k larger than each modality
        (30, 50, 20, 10, 6, 0.3),
        (40, 60, 5, 3, 3, 0.5),  # odd k: round half to even
        (20, 30, 7, 1, 1, 0.0),  # k_cross 1 (empty half set), k2 1, pure Jaccard
        (3, 4, 20, 30, 30, 1.0),
    ],
)
def test_fast_matches_loop(nq, ng, k_intra, k_cross, k2, lam, monkeypatch):
    monkeypatch.setattr(rerank_module, "_CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(rerank_module, "_PAIR_CHUNK", 2048)
    args, _ = _case(nq, ng, 8, nq * 100 + ng)
    fast = modality_rerank(*args, k_intra=k_intra, k_cross=k_cross, k2=k2, lambda_value=lam)
    loop = modality_rerank_loop(*args, k_intra=k_intra, k_cross=k_cross, k2=k2, lambda_value=lam)
    assert fast.shape == (nq, ng) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, loop, atol=1e-5, rtol=0)


def test_single_modality_is_zhong_with_k1_equal_k_intra():
    args, _ = _case(20, 30, 8, 3)
    same = torch.zeros(20, dtype=torch.long), torch.zeros(30, dtype=torch.long)
    np.testing.assert_allclose(modality_rerank(*args[:3], *same, k_intra=7, k2=3),
                               k_reciprocal_rerank(*args[:3], k1=7, k2=3), atol=1e-6)


def test_settings_and_bad_parameters():
    assert rerank_settings(True) == {"k1": 20, "k2": 6, "lambda_value": 0.3}
    assert rerank_settings("modality", {"k_cross": 4})["k_cross"] == 4
    with pytest.raises(RerankError, match="unknown re-ranking"):
        rerank_settings("fancy")
    with pytest.raises(RerankError, match="no parameter 'k1'"):
        rerank_settings("modality", {"k1": 3})
    args, _ = _case(4, 5, 4, 0)
    with pytest.raises(RerankError, match="one modality code"):
        modality_rerank(*args[:3], args[3][:2], args[4])


def test_config_eval_rerank_accepts_a_method_and_rejects_unknown_ones():
    from pathlib import Path

    from vireid.config import load_config
    from vireid.engine.trainer import validate_config

    config = Path(__file__).resolve().parents[2] / "configs" / "baseline_synth.yaml"
    cfg = load_config(config, ["eval.rerank=modality"])
    validate_config(cfg)
    assert cfg.eval.rerank == "modality"
    with pytest.raises(RerankError, match="unknown re-ranking 'fancy'"):
        validate_config(load_config(config, ["eval.rerank=fancy"]))


def test_fast_matches_loop_with_exact_ties():
    # Duplicated integer points: exact distance ties, also at the k-th neighbour of each list.
    rng = np.random.default_rng(5)
    points = torch.as_tensor(rng.integers(0, 3, (36, 2)), dtype=torch.float32)
    mods = torch.as_tensor(rng.integers(0, 2, 36))
    q, g = points[:12], points[12:]
    args = (pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g), mods[:12], mods[12:])
    for k_intra, k_cross, k2 in [(4, 2, 3), (6, 3, 2), (20, 10, 6)]:
        fast = modality_rerank(*args, k_intra=k_intra, k_cross=k_cross, k2=k2)
        loop = modality_rerank_loop(*args, k_intra=k_intra, k_cross=k_cross, k2=k2)
        np.testing.assert_allclose(fast, loop, atol=1e-5, rtol=0)
