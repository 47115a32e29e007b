"""The new evaluation options as a user runs them: vireid eval with a mixed protocol and modality
re-ranking, vireid robustness and vireid compare on a tiny trained run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
from vireid.cli import app


def test_eval_robustness_and_compare_from_the_cli(tiny_trained_run, tmp_path):
    from conftest import copy_run

    run = copy_run(tiny_trained_run, tmp_path / "run")
    result = CliRunner().invoke(app, ["eval", str(run), "-p", "sysu-all-mixed", "--rerank-method", "modality",
                                      "--trials", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((run / "test_results.json").read_text())
    assert [(r["name"], bool(r["settings"]["rerank"])) for r in rows] == [
        ("sysu-all-mixed", False), ("sysu-all-mixed/visible", False), ("sysu-all-mixed/infrared", False),
        ("sysu-all-mixed", True), ("sysu-all-mixed/visible", True), ("sysu-all-mixed/infrared", True)]
    assert rows[3]["settings"]["rerank"]["method"] == "modality" and "| modality |" in result.output

    out = tmp_path / "robust"
    result = CliRunner().invoke(app, ["robustness", str(run), "-p", "sysu-all-single", "--corruptions", "fog,jpeg",
                                      "--severities", "1,5", "--apply", "gallery", "--trials", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "robustness.json").read_text())
    assert [(r["corruption"], r["severity"]) for r in report["rows"]] == [("fog", 1), ("fog", 5), ("jpeg", 1), ("jpeg", 5)]
    assert (out / "robustness.png").stat().st_size > 0 and "| **mean** |" in (out / "robustness.md").read_text()
    assert 0 < report["clean"]["mAP"] <= 100 and report["summary"]["clean_mAP"] == report["clean"]["mAP"]

    result = CliRunner().invoke(app, ["compare", str(run), str(run), "-p", "sysu-all-single", "--trials", "1",
                                      "--resamples", "200", "--json", str(tmp_path / "cmp.json")])
    assert result.exit_code == 0, result.output
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["difference"] == 0.0 and not cmp["significant"] and "within noise" in result.output

    for args, message in ((["robustness", str(run), "--severities", "0"], "outside 1..5"),
                          (["robustness", str(run), "--apply", "sideways"], "--apply 'sideways' is unknown"),
                          (["compare", str(run), str(run), "--metric", "auc"], "--metric 'auc' is unknown")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and message in str(result.exception)
