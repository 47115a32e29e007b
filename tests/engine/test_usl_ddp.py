"""Unsupervised training across ranks (issue 16: clustering must not change with the number of GPUs): usl_synth
under DDP with two gloo processes gathers every training feature, clusters once and gives every rank the same
pseudo-labels and memories, equal to those one process computes from the same features."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides

WORKER = '''
import sys
from pathlib import Path

import numpy as np

tests, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(tests))
from conftest import REPO, _register_tiny_cnn  # noqa: E402

_register_tiny_cnn()
from vireid.config import load_config  # noqa: E402
from vireid.engine.trainer import Trainer  # noqa: E402
from vireid.modeling.losses.cluster_memory import ClusterMemoryLoss  # noqa: E402

real = ClusterMemoryLoss.recluster


def recluster(self, trainer, features, epoch):
    stats = real(self, trainer, features, epoch)
    loader = trainer.data.train_loader
    np.savez(out / f"rank{trainer.dist.rank}_epoch{epoch}.npz", features=features.numpy(),
             slots=loader.labels.numpy(), modalities=loader.modalities.numpy(),
             truth=np.asarray([r.pid for r in trainer.data.train_records]), world=trainer.dist.world_size,
             visible=self.memories[0].numpy(), infrared=self.memories[1].numpy())
    return stats


ClusterMemoryLoss.recluster = recluster
cfg = load_config(REPO / "src" / "vireid" / "configs" / "usl_synth.yaml", sys.argv[3:])
trainer = Trainer(cfg, out / "run")
try:
    trainer.fit()
finally:
    trainer.close()
'''

PARAMS = {"eps": 0.6, "min_samples": 2, "k1": 6, "k2": 2, "cross_start_epoch": 1}


def test_usl_under_ddp_gives_every_rank_the_single_process_pseudo_labels(tiny_synth_root, tmp_path):
    from vireid.modeling.losses.cluster_memory import ClusterMemoryLoss

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    overrides = tiny_overrides(tiny_synth_root, tmp_path, **{
        **{f"losses.cluster_memory.params.{k}": v for k, v in PARAMS.items()},
        "sampler.num_ids": 2, "sampler.epoch_length": 2, "train.epochs": 2, "train.threads": 1,
        "train.eval_every": 0, "train.select_best": "last",
    }) + ["model.method=test_tiny_cnn", "model.params={}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(REPO / "tests"), str(tmp_path), *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    loss = ClusterMemoryLoss(**PARAMS)
    for epoch in (0, 1):  # epoch 1: after training steps, when each rank's BatchNorm statistics have moved
        ranks = [np.load(tmp_path / f"rank{r}_epoch{epoch}.npz") for r in (0, 1)]
        assert [int(r["world"]) for r in ranks] == [2, 2]
        first, second = ranks
        assert first["features"].shape == (len(first["truth"]), 16)  # every training image, gathered
        for key in ("features", "slots", "visible", "infrared"):
            assert np.array_equal(first[key], second[key]), (epoch, key)
        single = loss.pseudo_labels(torch.from_numpy(first["features"]), first["modalities"], first["truth"],
                                    labelled_fraction=0.0, seed=0, num_ids=2)
        assert np.array_equal(single["slots"], first["slots"]) and (first["slots"] >= 0).sum() > 0
        assert np.allclose(single["visible"].numpy(), first["visible"], atol=1e-6)


def _fake_trainer(rank: int, features: torch.Tensor, modalities: np.ndarray, truth: np.ndarray):
    """What ClusterMemoryLoss.recluster reads of a trainer, as rank ``rank`` of two."""
    from types import SimpleNamespace

    from vireid.config import load_config

    cfg = load_config(REPO / "src" / "vireid" / "configs" / "usl_synth.yaml", ["sampler.num_ids=2"])

    class Loader:
        labels = None
        batch_sampler = None

        def __init__(self):
            self.modalities = torch.as_tensor(modalities)

        def __len__(self):
            return 3

    data = SimpleNamespace(train_loader=Loader(), train_records=[SimpleNamespace(pid=int(p)) for p in truth])
    dist = SimpleNamespace(enabled=True, is_main=rank == 0, rank=rank, world_size=2)
    return SimpleNamespace(cfg=cfg, data=data, dist=dist)


def test_only_rank_0_clusters_and_its_labels_or_error_reach_every_rank(monkeypatch):
    """Rank 0 computes the pseudo-labels and broadcasts them; another rank never clusters, takes what it
    receives, and stops with rank 0's clustering error (one sentence) when there is one."""
    import torch.distributed as tdist

    from vireid.data.pseudo_labels import ClusteringError
    from vireid.modeling.losses.cluster_memory import ClusterMemoryLoss

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=gen)
    truth = np.repeat(np.arange(4), 6)
    features = torch.nn.functional.normalize(centres[truth] + 0.05 * torch.randn(24, 16, generator=gen), dim=1)
    modalities = np.tile([0, 0, 0, 1, 1, 1], 4)
    loss = ClusterMemoryLoss(**PARAMS)
    sent: list = []
    calls: list[int] = []
    real = ClusterMemoryLoss.pseudo_labels
    monkeypatch.setattr(ClusterMemoryLoss, "pseudo_labels", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "broadcast_object_list", lambda message, src=0: (
        sent.append(list(message)) if message[0] is not None else message.__setitem__(0, sent[-1][0])))

    stats = loss.recluster(_fake_trainer(0, features, modalities, truth), features, 0)  # rank 0: clusters, sends
    assert len(calls) == 1 and sent[-1][0][0] == "labels" and stats["clusters_visible"] >= 2
    rank0_memory = loss.memories[0].clone()
    other = ClusterMemoryLoss(**PARAMS)
    trainer1 = _fake_trainer(1, features, modalities, truth)
    other.recluster(trainer1, torch.zeros_like(features), 0)  # rank 1: receives, never clusters
    assert len(calls) == 1 and torch.equal(other.memories[0], rank0_memory)
    assert np.array_equal(trainer1.data.train_loader.labels.numpy(), sent[-1][0][1]["slots"])

    bad = ClusterMemoryLoss(**{**PARAMS, "min_samples": 99})
    with pytest.raises(ClusteringError, match="found no cluster"):
        bad.recluster(_fake_trainer(0, features, modalities, truth), features, 0)
    assert sent[-1][0][0] == "error"  # rank 0 sent its error before raising it
    with pytest.raises(ClusteringError, match="found no cluster"):
        ClusterMemoryLoss(**PARAMS).recluster(_fake_trainer(1, features, modalities, truth), features, 0)
