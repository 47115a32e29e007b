"""Transfer to a new scene: ``vireid train --init-from`` fine-tunes a synthetic-data model on the real
SYSU-MM01 images of ``shared/data/real-mini`` with a new identity classifier, frozen early stages and
a lower backbone learning rate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers the commands)
from conftest import REAL_MINI, REPO
from vireid.cli import app
from vireid.config import load_config
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.transfer import (
    freeze_stages,
    initialise_from_checkpoint,
    scale_backbone_lr,
    stage_backbone,
    transfer_config,
)
from vireid.errors import ConfigError, VireidError

CONFIG = REPO / "configs" / "baseline_synth.yaml"


@pytest.fixture(scope="module")
def source_run(tiny_trained_run) -> Path:
    """A one-epoch source model on the tiny synthetic set (14 training identities): the session's
    ``tiny_trained_run``, which these tests only read (fine-tuning writes its own run folder)."""
    return tiny_trained_run


@pytest.fixture(scope="module")
def real_scene(tmp_path_factory) -> Path:
    """The real-mini SYSU-MM01 images split into identities 1-2 train, 3 validation, 4-5 test."""
    root = tmp_path_factory.mktemp("real") / "sysu"
    shutil.copytree(REAL_MINI, root)
    (root / "exp" / "train_id.txt").write_text("1,2\n")
    (root / "exp" / "val_id.txt").write_text("3\n")
    (root / "exp" / "test_id.txt").write_text("4,5\n")
    return root


def test_fine_tune_synthetic_model_on_real_images(source_run, real_scene, tmp_path):
    run = tmp_path / "ft"
    args = ["train", "--init-from", str(source_run), "--run-dir", str(run), "--freeze", "2",
            "data.format=sysu-mm01", f"data.root={real_scene}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.options={train_includes_val: false}",
            "sampler.num_ids=2", "sampler.num_per_modality=2", "sampler.epoch_length=2", "train.epochs=1",
            "optim.backbone_lr_mult=0.1", "eval.trials=1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "initialised from" in res.output and "14 -> 2 identities" in res.output
    # one validation identity gives no impostor pairs: training still succeeds, without a threshold
    assert "verification threshold not calibrated" in res.output
    assert "sysu-all-single" in res.output  # evaluated on the real test identities

    src = load_checkpoint(source_run / "best.pt")
    ft = load_checkpoint(run / "last.pt")
    cfg = ft["config"]
    assert cfg["train"]["init_from"] == str(source_run.resolve()) and cfg["train"]["freeze_stages"] == 2
    assert cfg["data"]["format"] == "sysu-mm01" and cfg["eval"]["protocols"] == []  # reset for the new data
    assert cfg["data"]["options"] == {"train_includes_val": False}
    assert cfg["model"] == src["config"]["model"]  # the source's architecture
    assert ft["num_classes"] == 2 and ft["model"]["classifier.fc.weight"].shape[0] == 2
    assert src["model"]["classifier.fc.weight"].shape[0] == 14

    frozen = [k for k in ft["model"] if k.startswith(("backbone.modality_branches.", "backbone.shared_stages.0."))]
    trained = [k for k in ft["model"] if k.startswith("backbone.shared_stages.2.") and k.endswith("weight")]
    assert frozen and trained
    for key in frozen:  # stem (per modality) and stage 1: weights and BatchNorm statistics unchanged
        assert torch.equal(ft["model"][key], src["model"][key]), key
    assert any(not torch.equal(ft["model"][k], src["model"][k]) for k in trained)

    # the backbone group starts at lr * 0.1, the new head at lr
    groups = ft["optimizer"]["param_groups"]
    lrs = sorted({g["initial_lr"] for g in groups})
    assert lrs == pytest.approx([0.1 * cfg["optim"]["lr"], cfg["optim"]["lr"]])


def test_transfer_config_defaults(source_run, real_scene):
    cfg = transfer_config(source_run, ["data.format=sysu-mm01", f"data.root={real_scene}"])
    assert cfg.name == "tiny_ft" and cfg.train.init_from == str(source_run)
    assert cfg.eval.protocols == [] and cfg.data.options == {}
    assert cfg.data.height == 64 and cfg.model.params["backbone"] == "resnet10t"
    same_data = transfer_config(source_run, ["name=again", "train.epochs=3"])
    assert same_data.name == "again" and same_data.train.epochs == 3
    assert same_data.eval.protocols == ["sysu-all-single", "sysu-indoor-single"]


def test_architecture_mismatch_is_a_config_error(source_run):
    from vireid.engine.trainer import build_model

    cfg = load_config(CONFIG, ["model.params.backbone=resnet10t", "model.params.specific_stages=2"])
    model = build_model(cfg, 5)
    with pytest.raises(ConfigError, match="does not fit the configured model"):
        initialise_from_checkpoint(model, source_run, 5)
    # the right architecture loads everything but the classifier
    ok = build_model(load_config(CONFIG, ["model.params.backbone=resnet10t"]), 5)
    report = initialise_from_checkpoint(ok, source_run, 5)
    assert report["reinitialised"] == ["classifier.fc.weight"] and report["source_num_classes"] == 14


def test_freeze_and_backbone_lr_groups():
    from vireid.engine.trainer import build_model

    cfg = load_config(CONFIG, ["model.params.backbone=resnet10t", "model.params.specific_stages=1"])
    model = build_model(cfg, 4)
    modules = freeze_stages(model, 2)
    backbone = stage_backbone(model)
    assert len(modules) == 3  # stem of each modality + the shared stage 1
    assert all(not p.requires_grad for m in modules for p in m.parameters())
    assert all(p.requires_grad for p in backbone.shared_stages[1].parameters())
    groups = scale_backbone_lr(model.param_groups(0.01), model, 0.01, 0.1)
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name == {"backbone": pytest.approx(0.001), "head": 0.01}
    with pytest.raises(ConfigError, match="freeze_stages"):
        freeze_stages(model, 9)


def test_cli_errors(source_run, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--init-from", str(tmp_path / "nothing"), f"output_dir={tmp_path}"])
    assert isinstance(res.exception, VireidError) and "does not exist" in str(res.exception)
    res = runner.invoke(app, ["train", "--resume", str(source_run), "--init-from", str(source_run)])
    assert isinstance(res.exception, VireidError) and "--init-from" in str(res.exception)
    res = runner.invoke(app, ["train", "--config", "baseline_synth", "--freeze", "9", f"output_dir={tmp_path}",
                              f"data.root={tmp_path / 'data'}"])
    assert isinstance(res.exception, ConfigError) and "train.freeze_stages" in str(res.exception)
    assert not (tmp_path / "data").exists()  # rejected before any data is generated
