"""The training engine end to end on a tiny synthetic set: learning, run folder, exact resume,
NaN handling, atomic checkpoints, DDP with gloo and config errors from the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO, tiny_cnn, tiny_overrides
from vireid.config import load_config
from vireid.engine.checkpoint import atomic_torch_save, load_checkpoint
from vireid.engine.trainer import Trainer, TrainingDiverged, lr_factor
from vireid.errors import ConfigError, VireidError
from vireid.modeling import LOSSES

CONFIG = REPO / "configs" / "baseline_synth.yaml"


def make_cfg(root: Path, out: Path, **extra):
    return load_config(CONFIG, tiny_overrides(root, out, **extra))


def precision_cfg(root: Path, out: Path, amp: str, **extra):
    """The tiny config in ``train.amp`` = ``amp``; bf16 runs use the two-convolution ``test_tiny_cnn``
    (conftest), since a ResNet step in bf16 takes seconds on CPUs without bf16 units."""
    cfg = make_cfg(root, out, **extra, **{"train.amp": amp})
    return tiny_cnn(cfg) if amp == "bf16" else cfg


def assert_ran_in(trainer, amp: str) -> None:
    """The forward passes of ``trainer`` really ran in ``amp`` (bf16: autocast and channels_last)."""
    if amp == "bf16":
        assert trainer.precision.dtype == torch.bfloat16
        assert trainer.core_model.seen_dtypes == {torch.bfloat16} and trainer.core_model.seen_channels_last


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_lr_schedule_warmup_multistep_cosine():
    cfg = load_config(None, ["sched.warmup_epochs=10", "sched.warmup_start_factor=0.1", "sched.milestones=[20,50]"])
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 5) == pytest.approx(0.55)
    assert lr_factor(cfg, 10) == 1.0 and lr_factor(cfg, 19.9) == 1.0
    assert lr_factor(cfg, 20) == pytest.approx(0.1) and lr_factor(cfg, 50) == pytest.approx(0.01)
    cos = load_config(None, ["sched.name=cosine", "sched.warmup_epochs=0", "train.epochs=10"])
    assert lr_factor(cos, 0) == pytest.approx(1.0)
    assert lr_factor(cos, 5) == pytest.approx(0.5)
    assert lr_factor(cos, 10) == pytest.approx(0.0)


def _train_identity_map(trainer) -> float:
    """Infrared -> visible mAP among the training identities' own images.

    A one-minute CPU run moves this reliably (generalisation to unseen identities needs the
    demo's minutes of training); it still measures cross-modality retrieval, not classification.
    """
    from types import SimpleNamespace

    from vireid.inference.extract import validation_metrics

    data = SimpleNamespace(val_records=trainer.data.train_records, val_cache=trainer.data.train_loader.cache)
    return validation_metrics(trainer.core_model, data, trainer.device)["mAP"]


def test_tiny_model_learns_and_leaves_a_run_folder(tiny_synth_root, tmp_path):
    cfg = make_cfg(tiny_synth_root, tmp_path, **{"train.epochs": 8, "sampler.epoch_length": 10,
                                                 "sampler.num_ids": 8, "sampler.num_per_modality": 4})
    run_dir = tmp_path / "run"
    trainer = Trainer(cfg, run_dir)
    initial = _train_identity_map(trainer)
    summary = trainer.fit()
    final = _train_identity_map(trainer)
    trainer.close()
    assert final > initial + 0.10 and final > 1.5 * initial, (initial, final)
    assert summary["best_val_mAP"] > 0
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "train_summary.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    kinds = {json.loads(line)["kind"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert {"step", "epoch", "val"} <= kinds
    best = load_checkpoint(run_dir / "best.pt")
    assert best["state"]["best_epoch"] == summary["best_epoch"]
    # how it trained is part of the run's record (tables that reuse a run report it, not today's machine)
    written = json.loads((run_dir / "train_summary.json").read_text())
    assert written["precision"] == trainer.precision.describe().removeprefix("precision: ")
    assert written["device"] == "cpu" and written["threads"] == torch.get_num_threads()

    from vireid.workflows.train_run import evaluate_checkpoint
    from vireid.viz.curves import plot_training_curves

    png = plot_training_curves(run_dir)
    assert png.stat().st_size > 5000
    results = evaluate_checkpoint(run_dir, rerank=[False, True], progress=False)
    assert [r.name for r in results] == ["sysu-all-single", "sysu-indoor-single"] * 2
    assert [bool(r.settings["rerank"]) for r in results] == [False, False, True, True]
    assert (run_dir / "test_results.md").is_file()

    # several models are pooled into one mean ± std only when they are trials of one config (the 10 RegDB
    # splits; vireid.workflows.evaluate_run.poolable, tests/workflows/test_own_data.py); the same model twice is not 2 trials
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app

    out = CliRunner().invoke(app, ["eval", str(run_dir), str(run_dir / "best.pt"), "--protocol", "sysu-all-single", "--trials", "2"])
    assert out.exit_code == 0, out.output
    assert "mean ± std over 2 models" not in out.output
    rows = out.output.split("one row per model (not pooled")[1]
    assert [line.count("| sysu-all-single |") for line in rows.splitlines() if "sysu-all-single" in line] == [1, 1]
    assert all("| 2 |" in line for line in rows.splitlines() if "sysu-all-single" in line)  # each model's own 2 trials


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_resume_after_crash_gives_the_same_weights(tiny_synth_root, tmp_path, amp):
    """Determinism and exact resume, in fp32 and in bf16 autocast."""
    extra = {"train.epochs": 3, "sampler.epoch_length": 4}
    straight = tmp_path / "straight"
    t = Trainer(precision_cfg(tiny_synth_root, tmp_path, amp, **extra), straight)
    t.fit()
    assert_ran_in(t, amp)
    t.close()

    crashed = tmp_path / "crashed"
    t = Trainer(precision_cfg(tiny_synth_root, tmp_path, amp, **extra), crashed)
    calls = {"n": 0}
    original = t._compute_losses

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, batch 2
            raise KeyboardInterrupt("simulated kill")
        return original(*args, **kwargs)

    t._compute_losses = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    t.close()
    assert load_checkpoint(crashed / "last.pt")["state"]["epoch"] == 1  # at most the current epoch is lost

    resumed = Trainer(load_config(crashed / "config.yaml"), crashed, resume=True)
    resumed.fit()
    assert_ran_in(resumed, amp)
    resumed.close()
    a, b = final_weights(straight), final_weights(crashed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@LOSSES.register("test_nan_after")
class NanAfterSteps(nn.Module):
    """Test-only loss: zero for ``steps`` calls, then NaN."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.calls = 0

    def forward(self, inputs, labels, modalities=None):
        self.calls += 1
        value = float("nan") if self.calls > self.steps else 0.0
        return inputs.sum() * 0.0 + value


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tiny_synth_root, tmp_path, amp):
    cfg = precision_cfg(tiny_synth_root, tmp_path, amp, **{"train.epochs": 3, "sampler.epoch_length": 4})
    cfg.losses["nan_probe"] = {"type": "test_nan_after", "input": "logits", "params": {"steps": 6}}
    run_dir = tmp_path / "nan"
    trainer = Trainer(cfg, run_dir)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at epoch 2, step 7 .*last.pt keeps the last good epoch"):
        trainer.fit()
    assert_ran_in(trainer, amp)
    trainer.close()
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_atomic_save_keeps_old_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"model": {"w": torch.ones(3)}, "config": {}}, path)

    def exploding_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(VireidError, match=r"cannot write .*last\.pt \(disk full\)"):
        atomic_torch_save({"model": {"w": torch.zeros(3)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "vireid", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_config_errors_come_before_any_data_work(tmp_path):
    from vireid.engine.trainer import validate_config

    root = tmp_path / "never-made"
    for bad, message in [
        ("model.params.backbon=resnet18", "unknown config key 'model.params.backbon'"),
        ("model.method=nonexistent", "config key 'model.method': unknown method 'nonexistent'"),
        ("losses.triplet.params.margn=0.2", "unknown config key 'losses.triplet.params.margn'"),
        ("data.options.trail=2", "unknown config key 'data.options.trail'"),
        ("data.format=market1501", "config key 'data.format' is 'market1501'"),
    ]:
        cfg = load_config(CONFIG, [f"data.root={root}", bad])
        with pytest.raises(ConfigError, match=re.escape(message)):
            Trainer(cfg, tmp_path / "run")
        with pytest.raises(ConfigError):
            validate_config(cfg)
    assert not root.exists() and not (tmp_path / "run").exists()


def test_cli_rejects_unknown_key_and_wrong_type(tmp_path):
    res = _cli("train", "--config", "baseline_synth", "optim.lrr=0.1", f"output_dir={tmp_path}")
    assert res.returncode == 2
    assert "unknown config key 'optim.lrr'" in res.stderr and "Traceback" not in res.stderr
    res = _cli("train", "--config", "baseline_synth", "train.epochs=many", f"output_dir={tmp_path}")
    assert res.returncode == 2 and "'train.epochs' expects an integer" in res.stderr
    res = _cli("train", "--config", "baseline_synth", "model.params.backbon=resnet18", f"output_dir={tmp_path}",
               f"data.root={tmp_path / 'data'}")
    assert res.returncode == 2 and "unknown config key 'model.params.backbon'" in res.stderr
    assert not (tmp_path / "data").exists()  # rejected before any data is generated


def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    """Two gloo ranks on data that does not exist yet: rank 0 generates it and writes the disk image
    cache while rank 1 waits, then rank 1 reads them (one dataset, one cache file, no leftovers)."""
    run_dir = tmp_path / "ddp"
    root, cache = tmp_path / "fresh-synth", tmp_path / "cache"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vireid.cli", "train", "--config", "baseline_synth", "--run-dir", str(run_dir), "--no-eval",
        *tiny_overrides(root, tmp_path, **{"train.epochs": 1, "sampler.epoch_length": 3, "train.threads": 1,
                                           "data.cache_dir": str(cache)}),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["sampler"]["world_size"] == 2
    assert ckpt["state"]["step"] == 3
    assert json.loads((root / "synth_meta.json").read_text())["complete"] is True
    assert len(list(cache.glob("*.npy"))) == 2 and not list(cache.glob("*.tmp"))  # train + validation images


@pytest.mark.parametrize("flip", [False, True])
def test_validation_chooses_the_epoch_on_the_embeddings_the_test_uses(tiny_synth_root, tmp_path, flip):
    """With eval.flip the test averages each embedding with its mirror image's; validation must then score the
    same embeddings, or the best epoch is chosen on features the test never sees."""
    from types import SimpleNamespace

    from vireid.inference.extract import validation_metrics

    cfg = make_cfg(tiny_synth_root, tmp_path, **{"train.epochs": 1, "sampler.epoch_length": 2, "eval.flip": flip})
    trainer = Trainer(cfg, tmp_path / "run")
    data = SimpleNamespace(val_records=trainer.data.train_records, val_cache=trainer.data.train_loader.cache)
    trainer.data.val_records, trainer.data.val_cache = data.val_records, data.val_cache
    got = trainer.validate()
    expected = validation_metrics(trainer.core_model, data, trainer.device, flip=flip, precision=trainer.precision)
    other = validation_metrics(trainer.core_model, data, trainer.device, flip=not flip, precision=trainer.precision)
    assert got == expected and got != other
