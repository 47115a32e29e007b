"""Verification by a similarity threshold: ROC / EER / TAR@FAR maths, pair scores, calibration stored
in the checkpoint at the end of training, ``vireid verify``, ``vireid calibrate`` and the eval report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers the commands)
from conftest import REPO, tiny_overrides
from vireid.cli import app
from vireid.config import load_config
from vireid.errors import VireidError
from vireid.evaluation.verification import (
    cross_modality_pair_scores,
    equal_error_rate,
    rates_at_threshold,
    roc_curve,
    summarize_verification,
    tar_at_far,
)

CONFIG = REPO / "configs" / "baseline_synth.yaml"
CONTRACT = {"metric": str, "threshold": float, "eer": float, "far_target": float, "tar_at_far": float,
            "split": str, "num_pairs": int}


# ----------------------------------------------------------------------------- maths


def test_roc_is_the_rates_at_every_distinct_score_with_ties():
    rng = np.random.default_rng(0)
    genuine = np.round(rng.normal(0.6, 0.2, 400), 2)  # rounding makes many ties, also across classes
    impostor = np.round(rng.normal(0.1, 0.2, 3000), 2)
    roc = roc_curve(genuine, impostor)
    distinct = np.unique(np.r_[genuine, impostor])[::-1]
    np.testing.assert_array_equal(roc.thresholds[1:], distinct)
    assert roc.far[0] == 0.0 and roc.tar[0] == 0.0 and roc.far[-1] == 1.0 and roc.tar[-1] == 1.0
    # brute force: the rates of "score >= t" for every distinct score t
    np.testing.assert_allclose(roc.tar[1:], (genuine[None, :] >= distinct[:, None]).mean(axis=1))
    np.testing.assert_allclose(roc.far[1:], (impostor[None, :] >= distinct[:, None]).mean(axis=1))
    k = len(roc.far) // 3
    assert rates_at_threshold(genuine, impostor, roc.thresholds[k]) == pytest.approx((roc.tar[k], roc.far[k]))


def test_eer_and_tar_at_far_on_a_hand_made_example():
    genuine = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    impostor = np.array([0.75, 0.5, 0.4, 0.3, 0.1])
    roc = roc_curve(genuine, impostor)
    eer, threshold = equal_error_rate(roc)
    # at t = 0.6: FRR = 1/5 (0.2 rejected), FAR = 1/5 (0.75 accepted) -> the curves cross there
    assert eer == pytest.approx(0.2) and threshold == pytest.approx(0.6)
    tar, thr, achieved = tar_at_far(roc, 0.0)  # no impostor may pass: only scores above 0.75
    assert (tar, thr, achieved) == (pytest.approx(0.4), pytest.approx(0.8), 0.0)
    tar, thr, achieved = tar_at_far(roc, 0.2)  # one impostor of five may pass: down to 0.6
    assert (tar, thr, achieved) == (pytest.approx(0.8), pytest.approx(0.6), pytest.approx(0.2))
    # all impostors above all genuine: nothing can be accepted at FAR 0, threshold above every score
    tar, thr, _ = tar_at_far(roc_curve(np.array([0.1]), np.array([0.9])), 0.0)
    assert tar == 0.0 and thr > 0.9


def test_pair_scores_all_pairs_and_seeded_sample():
    rng = np.random.default_rng(1)
    a, b = torch.randn(30, 8), torch.randn(40, 8)
    pa, pb = rng.integers(0, 6, 30), rng.integers(0, 6, 40)
    scores = cross_modality_pair_scores(a, pa, b, pb, max_impostors=None)
    sims = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    same = pa[:, None] == pb[None, :]
    np.testing.assert_allclose(np.sort(scores.genuine), np.sort(sims.numpy()[same]), rtol=1e-6)
    np.testing.assert_allclose(np.sort(scores.impostor), np.sort(sims.numpy()[~same]), rtol=1e-6)
    assert scores.num_pairs == 30 * 40 and not scores.sampled

    sampled = cross_modality_pair_scores(a, pa, b, pb, max_impostors=500, seed=3)
    again = cross_modality_pair_scores(a, pa, b, pb, max_impostors=500, seed=3)
    assert sampled.sampled and sampled.impostor.shape == (500,) and sampled.total_impostors == int((~same).sum())
    np.testing.assert_array_equal(sampled.impostor, again.impostor)
    np.testing.assert_array_equal(sampled.genuine, scores.genuine)  # genuine pairs are always all kept
    # every sampled score is an impostor similarity (none of a genuine pair)
    nearest = np.abs(sampled.impostor[:, None] - sims.numpy()[~same][None, :]).min(axis=1)
    assert nearest.max() < 1e-5
    # the sample estimates the FAR of the full impostor set
    full_far = rates_at_threshold(scores.genuine, scores.impostor, 0.3)[1]
    assert rates_at_threshold(sampled.genuine, sampled.impostor, 0.3)[1] == pytest.approx(full_far, abs=0.06)


def test_summary_holds_the_contract_keys():
    rng = np.random.default_rng(2)
    a, b = torch.randn(50, 16), torch.randn(60, 16)
    scores = cross_modality_pair_scores(a, rng.integers(0, 5, 50), b, rng.integers(0, 5, 60))
    record = summarize_verification(scores, 0.05, split="val")
    for key, kind in CONTRACT.items():
        assert isinstance(record[key], kind), key
    assert record["metric"] == "cosine" and record["num_pairs"] == 50 * 60
    op = record["operating_point"]
    assert op["far"] <= 0.05 and op["tar"] == pytest.approx(record["tar_at_far"])
    eer_record = summarize_verification(scores, 0.05, criterion="eer")
    assert eer_record["threshold"] == eer_record["threshold_eer"]


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained_run(tiny_synth_root, tmp_path_factory):
    """A one-epoch tiny run trained through ``run_training`` (which calibrates at the end)."""
    from vireid.workflows.train_run import run_training

    out = tmp_path_factory.mktemp("verify")
    cfg = load_config(CONFIG, tiny_overrides(tiny_synth_root, out, **{"train.epochs": 1, "sampler.epoch_length": 3}))
    summary = run_training(cfg, out / "run", evaluate=False)
    return out / "run", summary


def _pair(root: Path, same: bool) -> tuple[Path, Path]:
    """An infrared (cam3) and a visible (cam1) image of a validation identity (same or another one)."""
    val_ids = [int(v) for v in (root / "exp" / "val_id.txt").read_text().strip().split(",")]
    ir = next((root / "cam3" / f"{val_ids[0]:04d}").iterdir())
    other = val_ids[0] if same else val_ids[1]
    return ir, sorted((root / "cam1" / f"{other:04d}").iterdir())[0]


def test_calibration_is_stored_with_the_model_and_verify_uses_it(trained_run, tiny_synth_root):
    from vireid.workflows.calibration import embed_records
    from vireid.inference.loading import load_embedder
    from vireid.engine.trainer import load_model_from_checkpoint

    run, summary = trained_run
    assert summary["verification"]["split"] == "val"
    ckpt = torch.load(run / "best.pt", weights_only=True)
    record = ckpt["verification"]
    for key, kind in CONTRACT.items():
        assert isinstance(record[key], kind), key
    assert record["far_target"] == 0.01 and record["num_pairs"] > 0
    assert json.loads((run / "verification.json").read_text())["calibration"]["threshold"] == record["threshold"]
    embedder = load_embedder(run)
    assert embedder.verification["threshold"] == record["threshold"]

    from vireid.data.records import ImageRecord

    model, cfg, _ = load_model_from_checkpoint(run)
    runner = CliRunner()
    for same in (True, False):
        a, b = _pair(tiny_synth_root, same)
        res = runner.invoke(app, ["verify", "--checkpoint", str(run), str(a), str(b), "--json"])
        assert res.exit_code == 0, res.output
        answer = json.loads(res.output)
        feats = embedder.embed_paths([a, b], ["infrared", "visible"])
        assert answer["similarity"] == pytest.approx(float(feats[0] @ feats[1]), abs=1e-6)
        assert answer["same_person"] == (answer["similarity"] >= record["threshold"])
        assert answer["threshold"] == record["threshold"]
        # the calibration embeds images exactly as verify does (same preprocessing, same model)
        recs = [ImageRecord(str(a), 0, 3, "infrared"), ImageRecord(str(b), 0, 1, "visible")]
        calib_feats = torch.nn.functional.normalize(embed_records(model, recs, cfg, "cpu"), dim=1)
        assert float(calib_feats[0] @ calib_feats[1]) == pytest.approx(answer["similarity"], abs=1e-5)

    a, b = _pair(tiny_synth_root, True)
    res = runner.invoke(app, ["verify", "--checkpoint", str(run), str(a), str(b), "--threshold", "-1"])
    assert res.exit_code == 0 and res.output.splitlines()[-1].startswith("same person: similarity")
    assert "image A (" in res.output and "guessed: grey-level image" in res.output  # the modality decision is printed


def test_verify_errors_are_one_clear_sentence(trained_run, tiny_synth_root, tmp_path):
    run, _ = trained_run
    a, b = _pair(tiny_synth_root, True)
    runner = CliRunner()
    res = runner.invoke(app, ["verify", "--checkpoint", str(run), str(tmp_path / "missing.jpg"), str(b)])
    assert isinstance(res.exception, VireidError) and "image A" in str(res.exception) and "does not exist" in str(res.exception)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    res = runner.invoke(app, ["verify", "--checkpoint", str(run), str(a), str(bad)])
    assert isinstance(res.exception, VireidError) and "cannot be decoded" in str(res.exception)
    res = runner.invoke(app, ["verify", "--checkpoint", str(run), str(a), str(b), "--modality-b", "sonar"])
    assert isinstance(res.exception, VireidError) and "sonar" in str(res.exception)
    uncalibrated = tmp_path / "plain.pt"
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt.pop("verification")
    torch.save(ckpt, uncalibrated)
    res = runner.invoke(app, ["verify", "--checkpoint", str(uncalibrated), str(a), str(b)])
    assert isinstance(res.exception, VireidError) and "vireid calibrate" in str(res.exception)


def test_calibrate_command_and_eval_report(trained_run, tmp_path):
    import shutil

    run, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", str(copy), "--far", "0.1", "--criterion", "eer", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    record = torch.load(copy / "best.pt", weights_only=True)["verification"]
    assert record["far_target"] == 0.1 and record["criterion"] == "eer"
    assert record["threshold"] == record["threshold_eer"]
    assert (copy / "calibration_roc.png").stat().st_size > 5000  # eval's roc.png is not calibrate's to replace
    assert not (copy / "roc.png").exists()

    res = runner.invoke(app, ["eval", str(copy), "--protocol", "sysu-all-single", "--trials", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "verification (cosine similarity" in res.output and "test at the calibrated threshold" in res.output
    report = json.loads((copy / "verification.json").read_text())
    assert report["calibration"]["threshold"] == record["threshold"]
    assert 0.0 <= report["test"]["eer"] <= 1.0 and report["test"]["split"] == "test"
    at = report["test_at_calibrated_threshold"]
    assert at["threshold"] == record["threshold"] and 0.0 <= at["far"] <= 1.0
    assert (copy / "roc.png").stat().st_size > 5000

    res = runner.invoke(app, ["calibrate", str(copy), "--split", "nope"])
    assert isinstance(res.exception, VireidError) and "split" in str(res.exception)
