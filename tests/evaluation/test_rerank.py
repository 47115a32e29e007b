"""k-reciprocal re-ranking: fast torch version vs the literal loop, a hand-checkable case, and
that it helps on clustered data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vireid  # noqa: F401
from vireid.evaluation import evaluate_ranking
from vireid.evaluation import rerank as rerank_module
from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.rerank import k_reciprocal_rerank, k_reciprocal_rerank_loop


def _distances(features: torch.Tensor, nq: int):
    q, g = features[:nq], features[nq:]
    return pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g)


@pytest.mark.parametrize(
    ("nq", "ng", "dim", "k1", "k2", "lam"),
    [
        (5, 7, 4, 20, 6, 0.3),  # k1 larger than the whole set
        (30, 50, 8, 20, 6, 0.3),
        (40, 60, 8, 5, 3, 0.5),  # odd k1: round(k1 / 2) = 2 (half to even, as numpy.around)
        (20, 30, 4, 7, 1, 0.0),  # k2 = 1 skips query expansion; lambda 0: pure Jaccard
        (3, 4, 2, 20, 30, 1.0),  # k2 larger than the set; lambda 1: original distance only
        (90, 150, 16, 20, 6, 0.3),
    ],
)
def test_fast_matches_loop(nq, ng, dim, k1, k2, lam, monkeypatch):
    # Small chunks so the chunked paths (top-k, reciprocal tests, Jaccard pairs) run several blocks.
    monkeypatch.setattr(rerank_module, "_CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(rerank_module, "_PAIR_CHUNK", 2048)
    torch.manual_seed(nq * 1000 + ng)
    ids = torch.randint(0, max(2, (nq + ng) // 6), (nq + ng,))
    features = torch.randn(int(ids.max()) + 1, dim)[ids] + 0.7 * torch.randn(nq + ng, dim)
    q_g, q_q, g_g = _distances(features, nq)
    fast = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    loop = k_reciprocal_rerank_loop(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    assert fast.shape == (nq, ng) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, loop, atol=1e-5, rtol=0)


def test_fast_matches_loop_with_exact_ties():
    # Integer-valued (duplicated) points create exact distance ties, also at the k-th neighbour.
    rng = np.random.default_rng(5)
    points = torch.as_tensor(rng.integers(0, 3, (36, 2)), dtype=torch.float32)
    q_g, q_q, g_g = _distances(points, 12)
    for k1, k2 in [(4, 3), (6, 2), (20, 6)]:
        fast = k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2)
        loop = k_reciprocal_rerank_loop(q_g, q_q, g_g, k1=k1, k2=k2)
        np.testing.assert_allclose(fast, loop, atol=1e-5, rtol=0)


def test_hand_checkable_two_clusters():
    # 1-D points: query 0 at 0.0; gallery a = 0.1 (its cluster) and b = 10.0 (the other cluster, with
    # a second query at 10.1). k1 = 1, k2 = 1: each point's 1-reciprocal set is itself plus its
    # mutual nearest neighbour: {q0, a} and {q1, b}. Expansion sets (half = round(0.5) = 0 -> only the
    # point itself) add nothing new. V[q0] = softmax-like weights over {q0, a} and V[a] likewise over
    # {a, q0}: they overlap completely, so Jaccard(q0, a) = 0 and Jaccard(q0, b) = 1.
    x = torch.tensor([[0.0], [10.1], [0.1], [10.0]])
    q_g, q_q, g_g = (torch.cdist(a, b) for a, b in ((x[:2], x[2:]), (x[:2], x[:2]), (x[2:], x[2:])))
    out = k_reciprocal_rerank(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.0)
    # V[q0] = [e^0, e^-o] / (1 + e^-o) over (q0, a) with o = O[q0, a]; V[a] over (a, q0) with
    # o' = O[a, q0]. Overlap = sum of minima; both rows hold the same two weights when o == o'.
    d = x[:, 0]
    dist = (d[:, None] - d[None, :]).abs() ** 2
    colmax = dist.max(dim=0).values
    o_q0_a = float(dist[2, 0] / colmax[0])
    o_a_q0 = float(dist[0, 2] / colmax[2])
    v_q0 = np.array([1.0, np.exp(-o_q0_a)]) / (1.0 + np.exp(-o_q0_a))  # (q0, a)
    v_a = np.array([np.exp(-o_a_q0), 1.0]) / (1.0 + np.exp(-o_a_q0))  # (q0, a)
    overlap = np.minimum(v_q0, v_a).sum()
    expected_jaccard = 1.0 - overlap / (2.0 - overlap)
    assert out[0, 0] == pytest.approx(expected_jaccard, abs=1e-6)
    assert out[0, 1] == pytest.approx(1.0, abs=1e-6)  # no shared neighbour with the far cluster
    assert out[1, 1] < 0.05 and out[1, 0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out, k_reciprocal_rerank_loop(q_g, q_q, g_g, k1=1, k2=1, lambda_value=0.0), atol=1e-6)
    # lambda = 1 returns the normalised squared original distance.
    orig = k_reciprocal_rerank(q_g, q_q, g_g, k1=1, k2=1, lambda_value=1.0)
    assert orig[0, 1] == pytest.approx(float(dist[3, 0] / colmax[0]), rel=1e-6)


def test_rerank_improves_map_on_clustered_data():
    # 20 identities x 16 noisy images, split alternately into query and gallery: each image's
    # neighbourhood is dominated by its identity, which re-ranking exploits (+0.09..0.11 mAP on
    # seeds 0-2; the assertion leaves margin).
    torch.manual_seed(0)
    num_ids, per_id = 20, 16
    centers = torch.randn(num_ids, 16)
    ids = torch.arange(num_ids).repeat_interleave(per_id)
    features = centers[ids] + 1.0 * torch.randn(len(ids), 16)
    side = torch.arange(num_ids * per_id) % 2
    query, gallery = (side == 1).nonzero().flatten(), (side == 0).nonzero().flatten()
    qf, gf = features[query], features[gallery]
    q_g, q_q, g_g = pairwise_distance(qf, gf), pairwise_distance(qf, qf), pairwise_distance(gf, gf)
    before = evaluate_ranking(q_g, ids[query], ids[gallery])["mAP"]
    after = evaluate_ranking(k_reciprocal_rerank(q_g, q_q, g_g, k1=10, k2=4), ids[query], ids[gallery])["mAP"]
    assert after > before + 0.05


def test_bad_shapes_and_parameters_raise():
    with pytest.raises(ValueError, match="q_q"):
        k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)), k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)), lambda_value=2.0)


def test_bench_rerank_quick_writes_only_the_given_doc(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    real_doc = repo / "docs" / "benchmarks.md"
    before = real_doc.read_text() if real_doc.exists() else None
    doc = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "bench_rerank.py"), "--quick", "--doc", str(doc)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = doc.read_text()
    assert "<!-- BEGIN bench_rerank -->" in text and "agree to 1e-5" in text and "peak RSS" in text
    modality = text.split("<!-- BEGIN bench_rerank_modality -->")[1]
    assert "`modality_rerank`" in modality and "agree to 1e-5" in modality
    assert (real_doc.read_text() if real_doc.exists() else None) == before
