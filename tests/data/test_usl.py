"""Unsupervised / semi-supervised training: Jaccard + DBSCAN pseudo-labels, cluster memory, association,
determinism across processes, the clear errors, and a tiny run through the trainer and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, _register_tiny_cnn, tiny_overrides
from vireid.data.pseudo_labels import (
    ClusteringError,
    associate,
    canonical_labels,
    dbscan_labels,
    hungarian_pairs,
    jaccard_graph,
    label_quality,
    labelled_identities,
    pairwise_precision_recall,
)
from vireid.errors import ConfigError
from vireid.modeling.losses.cluster_memory import ClusterMemoryLoss, memory_update


def _blobs(sizes, dim=16, spread=0.15, seed=0, far=()):
    """Tight blobs around random unit directions, then ``far`` isolated points."""
    rng = np.random.default_rng(seed)
    parts = []
    for size in sizes:
        centre = rng.normal(size=dim)
        parts.append(centre / np.linalg.norm(centre) + spread / np.sqrt(dim) * rng.normal(size=(size, dim)))
    for _ in far:
        parts.append(rng.normal(size=(1, dim)) * 3)
    return np.concatenate(parts).astype(np.float32)


def _dense_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """A literal per-image loop of the k-reciprocal Jaccard distance (Zhong et al. Eq. 6, 7, 10, 11) with
    Cluster-Contrast's weights exp(-(2 - 2 cos)), dense, for small sets."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    cos = np.round(x.astype(np.float64) @ x.T.astype(np.float64), 6)
    rank = np.lexsort((np.tile(np.arange(n), (n, 1)), -cos), axis=1)
    rank = np.array([np.concatenate(([i], [j for j in r if j != i])) for i, r in enumerate(rank)])

    def recip(i, k):
        fwd = rank[i, : k + 1]
        return np.array([j for j in fwd if i in rank[j, : k + 1]])

    v = np.zeros((n, n))
    half = int(np.around(k1 / 2))
    for i in range(n):
        own = recip(i, k1)
        expanded = list(own)
        for c in own:
            cand = recip(c, half)
            if len(np.intersect1d(cand, own)) > 2 / 3 * len(cand):
                expanded.extend(cand)
        expanded = np.unique(expanded)
        w = np.exp(-(2 - 2 * cos[i, expanded]))
        v[i, expanded] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    out = np.ones((n, n))
    for i in range(n):
        shared = np.minimum(v[i], v).sum(axis=1)
        out[i] = 1 - shared / (2 - shared)
    return np.clip(out, 0, None)


def test_sparse_jaccard_equals_a_dense_per_image_loop():
    x = _blobs([7, 6, 5], seed=3, spread=0.6)
    def dense_of(graph):  # missing pairs are at distance 1; stored zeros (identical rows of V) count
        coo = graph.tocoo()
        out = np.ones(graph.shape)
        out[coo.row, coo.col] = coo.data
        return out, (coo.row, coo.col)

    dense, _ = dense_of(jaccard_graph(x, k1=5, k2=3, max_distance=1.0))
    expected = _dense_jaccard(x, 5, 3)
    assert (expected[:7, :7] < 1).all() and (expected[:7, 7:] == 1).all()  # the first blob shares neighbours
    np.testing.assert_allclose(dense, expected, atol=2e-6)
    # only pairs within max_distance are kept (bounded memory), with the same values
    near = jaccard_graph(x, k1=5, k2=3, max_distance=0.5)
    values, where = dense_of(near)
    assert near.data.max() <= 0.5 and len(where[0]) == int((expected <= 0.5).sum())
    np.testing.assert_allclose(values[where], expected[where], atol=2e-6)


def test_dbscan_labels_on_a_hand_made_set():
    # three blobs of 9 images and two isolated images, in a shuffled order
    x = _blobs([9, 9, 9], far=(0, 1), seed=1)
    truth = np.array([0] * 9 + [1] * 9 + [2] * 9 + [-1, -1])
    order = np.random.default_rng(5).permutation(len(x))
    labels = dbscan_labels(x[order], eps=0.6, min_samples=3, k1=8, k2=2)
    # clusters numbered by their first image in the given order, outliers -1
    expected: dict = {}
    for t in truth[order]:
        if t >= 0 and t not in expected:
            expected[t] = len(expected)
    np.testing.assert_array_equal(labels, [expected.get(t, -1) for t in truth[order]])
    np.testing.assert_array_equal(canonical_labels(np.array([5, 5, -1, 2, 7, 2])), [0, 0, -1, 1, 2, 1])
    t = truth[order]
    q = label_quality(labels, np.where(t < 0, 100 + np.arange(len(t)), t))
    assert q == {"nmi": 1.0, "ari": 1.0, "pair_precision": 1.0, "pair_recall": 1.0}
    # two identities merged into one cluster: precision drops, recall stays
    p, r = pairwise_precision_recall(np.array([0, 0, 0, 0]), np.array([1, 1, 2, 2]))
    assert (p, r) == (pytest.approx(2 / 6), 1.0)


def test_memory_update_mean_and_hard():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])  # cluster 0: two images, cluster 1: one
    labels = torch.tensor([0, 0, 1])
    mean = memory_update(memory, feats, labels, momentum=0.5, mode="mean")
    x0 = (torch.tensor([0.0, 1.0]) + torch.tensor([1.0, 1.0]) / 2**0.5) / 2
    expect0 = torch.nn.functional.normalize(0.5 * torch.tensor([1.0, 0.0]) + 0.5 * x0, dim=0)
    expect1 = torch.nn.functional.normalize(torch.tensor([0.5, 0.5]), dim=0)
    assert torch.allclose(mean[0], expect0) and torch.allclose(mean[1], expect1)
    assert torch.equal(memory, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # a copy: the old one is left for backward
    hard = memory_update(memory, feats, labels, momentum=0.5, mode="hard")  # cluster 0: [0, 1] is the hardest
    assert torch.allclose(hard[0], torch.nn.functional.normalize(torch.tensor([0.5, 0.5]), dim=0))


def test_cluster_memory_loss_intra_then_cross():
    loss = ClusterMemoryLoss(temperature=0.1, momentum=0.0, cross_start_epoch=1)
    vis = torch.eye(3, 4)
    ir = torch.eye(3, 4)[[2, 0, 1]]  # infrared cluster j is visible cluster (j + 2) % 3
    weights = torch.zeros(3, 3)
    weights[[0, 1, 2], [1, 2, 0]] = 1.0
    loss.set_memories(vis, ir, weights)
    feats = torch.eye(3, 4).repeat(2, 1).requires_grad_()
    labels = torch.tensor([0, 1, 2, 1, 2, 0])
    mods = torch.tensor([0, 0, 0, 1, 1, 1])
    loss.epoch = 0
    intra = loss(feats, labels, mods)
    intra.backward()
    assert feats.grad is not None and intra.item() > 0
    loss.set_memories(vis, ir, weights)
    loss.epoch = 1
    both = loss(feats.detach(), labels, mods)
    assert both.item() > intra.item()  # the cross-modality term is added from cross_start_epoch on
    assert torch.allclose(loss.memories[0], vis)  # momentum 0: the memory takes the (normalised) batch features
    with pytest.raises(ConfigError, match="temperature"):
        ClusterMemoryLoss(temperature=0.0)
    with pytest.raises(ConfigError, match="no memory yet"):
        ClusterMemoryLoss()(feats, labels, mods)


def test_hungarian_association_on_a_known_cost_matrix():
    # greedy (the best pair first: 0.9 at (0, 0)) gives 0.9 + 0.1 + 0.8 = 1.8; the optimum is 0.8 * 3 = 2.4
    sim = np.array([[0.9, 0.8, 0.0], [0.8, 0.1, 0.0], [0.0, 0.0, 0.8]])
    pairs = hungarian_pairs(sim)
    np.testing.assert_array_equal(pairs, [[0, 1], [1, 0], [2, 2]])
    # through associate(): centroids whose cosine similarities are the matrix above, plus an extra
    # visible cluster that joins the group of its most similar infrared cluster
    cv = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0.1, 0, 0, 1.0]])
    ci = torch.tensor([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    assoc = associate(cv, ci)
    np.testing.assert_array_equal(assoc.pairs, [[0, 1], [1, 0], [2, 2]])
    np.testing.assert_array_equal(assoc.groups_visible, [0, 1, 2, 0])
    np.testing.assert_array_equal(assoc.groups_infrared, [1, 0, 2])
    assert assoc.cost == pytest.approx(0.0)
    assert torch.equal(assoc.weights[3], torch.zeros(3))  # unmatched: no cross-modality target
    soft = associate(cv, ci, mode="soft", soft_topk=2)
    assert torch.allclose(soft.weights.sum(dim=1), torch.ones(4))
    assert int((soft.weights > 0).sum(dim=1).max()) == 2
    fixed = associate(cv, ci, fixed=1)  # semi-supervised: slot 0 is one labelled identity in both memories
    assert fixed.pairs[0].tolist() == [0, 0] and float(fixed.weights[0, 0]) == 1.0


def test_labelled_identities_are_a_seeded_fraction():
    pids = np.repeat(np.arange(50), 3)
    ten = labelled_identities(pids, 0.1, seed=0)
    assert len(ten) == 5 and np.array_equal(ten, labelled_identities(pids, 0.1, seed=0))
    assert not np.array_equal(ten, labelled_identities(pids, 0.1, seed=1))
    assert len(labelled_identities(pids, 0.0, seed=0)) == 0


_CLUSTER = """
import json
import numpy as np
from vireid.data.pseudo_labels import dbscan_labels
rng = np.random.default_rng(7)
centres = rng.normal(size=(20, 32))
x = np.repeat(centres, 10, axis=0) + 0.9 * rng.normal(size=(200, 32))
labels = dbscan_labels(x, eps=0.55, min_samples=4, k1=20, k2=6).tolist()
"""


def test_clustering_is_identical_in_two_processes():
    # this process (its thread settings) and a fresh interpreter with a different thread count
    scope: dict = {}
    exec(_CLUSTER, scope)  # noqa: S102 - the fixed snippet above
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO / "src")}
    code = _CLUSTER + "print(json.dumps(labels))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    other = json.loads(done.stdout.strip().splitlines()[-1])
    labels = np.array(scope["labels"])
    assert other == scope["labels"]
    assert labels.max() >= 5 and (labels >= 0).sum() > 50  # a real clustering, not a trivial one


def test_clear_errors_for_no_cluster_one_cluster_and_an_empty_modality():
    x = _blobs([6, 6], seed=2)
    with pytest.raises(ClusteringError, match="found no cluster.*raise eps, lower min_samples"):
        dbscan_labels(x, eps=0.6, min_samples=50, k1=5, k2=2)
    with pytest.raises(ClusteringError, match="found a single cluster.*lower eps"):
        dbscan_labels(x, eps=1.0, min_samples=2, k1=11, k2=2)
    with pytest.raises(ClusteringError, match="infrared modality has no training image"):
        dbscan_labels(np.zeros((0, 8)), modality="infrared")
    from vireid.config import load_config
    from vireid.engine.trainer import validate_config

    with pytest.raises(ConfigError, match="data.labelled_fraction.*no loss term trains on pseudo-labels"):
        validate_config(load_config("src/vireid/configs/baseline_synth.yaml", ["data.labelled_fraction=0.5"]))
    with pytest.raises(ConfigError, match="data.labelled_fraction"):
        load_config(REPO / "src/vireid/configs/usl_synth.yaml", ["data.labelled_fraction=1.5"])


def _usl_tiny(root: Path, out: Path, **extra) -> list[str]:
    values = {"losses.cluster_memory.params.eps": 0.6, "losses.cluster_memory.params.min_samples": 2,
              "losses.cluster_memory.params.k1": 6, "losses.cluster_memory.params.k2": 2,
              "losses.cluster_memory.params.cross_start_epoch": 1, "sampler.num_ids": 2,
              "sampler.epoch_length": 2, "train.eval_every": 0, "eval.protocols": "[sysu-all-single]"}
    values.update(extra)
    _register_tiny_cnn()  # the two-convolution test model (conftest): the clustering, not the network, is tested
    return tiny_overrides(root, out, **values) + ["model.method=test_tiny_cnn", "model.params={}"]


def test_usl_and_semi_runs_through_the_cli(tiny_synth_root, tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
    from vireid.cli import app
    from vireid.engine.run_logging import read_metrics

    run = tmp_path / "usl"
    args = ["train", "-c", "usl_synth", "--run-dir", str(run),
            *_usl_tiny(tiny_synth_root, tmp_path, **{"train.threads": 1})]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pseudo-labels (epoch 1):" in result.output and "pseudo-labels (epoch 2):" in result.output
    records = [r for r in read_metrics(run) if r["kind"] == "cluster"]
    assert [r["epoch"] for r in records] == [0, 1]
    for key in ("clusters_visible", "clusters_infrared", "outliers", "association_cost", "nmi", "ari",
                "pair_precision", "pair_recall"):
        assert key in records[0], key
    assert records[0]["labelled_identities"] == 0
    assert json.loads((run / "test_results.json").read_text())[0]["name"] == "sysu-all-single"
    assert (run / "curves.png").is_file()
    # semi-supervised: 30 % of the 12 training identities (4) keep their labels, one epoch
    semi = tmp_path / "semi"
    result = CliRunner().invoke(app, ["train", "-c", "semi_synth", "--run-dir", str(semi), "--no-eval",
                                      *_usl_tiny(tiny_synth_root, tmp_path, **{"train.epochs": 1, "train.threads": 1,
                                                                              "data.labelled_fraction": 0.3})])
    assert result.exit_code == 0, result.output
    record = next(r for r in read_metrics(semi) if r["kind"] == "cluster")
    assert record["labelled_identities"] == 4
    # a clustering that finds nothing: one sentence, no traceback
    bad = CliRunner().invoke(app, ["train", "-c", "usl_synth", "--run-dir", str(tmp_path / "bad"), "--no-eval",
                                   *_usl_tiny(tiny_synth_root, tmp_path, **{"train.epochs": 1,
                                                                           "losses.cluster_memory.params.min_samples": 99})])
    # (vireid's entry point prints a VireidError as one line without a traceback; CliRunner hands it back)
    assert bad.exit_code != 0 and isinstance(bad.exception, ClusteringError)
    message = str(bad.exception)
    assert "found no cluster" in message and "raise eps, lower min_samples" in message
    assert "\n" not in message and ". " not in message.rstrip(".")  # one sentence
