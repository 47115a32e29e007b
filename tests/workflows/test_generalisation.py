"""Cross-dataset protocols: a tiny SYSU-MM01-layout run evaluated on another dataset's test protocol
(vireid eval --data, vireid generalisation and generalisation_table)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
from vireid.cli import app
from vireid.errors import VireidError


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory):
    """A second tiny synthetic dataset in the RegDB layout (other people, other seed)."""
    from vireid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("regdb") / "regdb"
    generate_dataset(root, ids=8, format="regdb", images_per_camera=2, height=64, width=32, seed=3, workers=1,
                     progress=False)
    return root


@pytest.fixture(scope="module")
def sysu_root2(tmp_path_factory):
    """A second tiny SYSU-MM01-layout dataset: the same identity numbers, other people."""
    from vireid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("sysu2") / "sysu2"
    generate_dataset(root, ids=12, format="sysu-mm01", images_per_camera=2, height=64, width=32, seed=5,
                     workers=1, progress=False)
    return root


def test_generalisation_table_cli_and_python(tiny_trained_run, regdb_root, tmp_path):
    from vireid.workflows.generalisation import generalisation_table

    before = sorted(p.name for p in tiny_trained_run.iterdir())
    out = tmp_path / "table"
    result = CliRunner().invoke(app, ["generalisation", str(tiny_trained_run), "--data", f"regdb:{regdb_root}",
                                      "--trials", "1", "--no-flip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "generalisation.json").read_text())
    assert [(r["domain"], r["protocol"]) for r in rows] == [
        ("in-domain", "sysu-all-single"), ("in-domain", "sysu-indoor-single"),
        ("cross-domain", "regdb-v2t"), ("cross-domain", "regdb-t2v")]
    assert all(r["trained_on"].startswith("synthetic:") for r in rows)
    assert rows[2]["data"] == f"regdb:{regdb_root}"
    for r in rows:
        assert all(0 <= r[k] <= 100 for k in ("rank1", "mAP", "mINP")) and r["mAP"] > 0
    table = (out / "generalisation.md").read_text()
    assert "| cross-domain | regdb-t2v |" in table and "| in-domain | sysu-all-single |" in table
    assert sorted(p.name for p in tiny_trained_run.iterdir()) == before  # nothing written into the run

    # The Python function: -p picks the protocols that fit each dataset; the same figures as the CLI.
    py = generalisation_table([tiny_trained_run], [f"regdb:{regdb_root}"], protocols=("regdb-t2v", "sysu-all-single"),
                              trials=1, flip=False, device="cpu")
    assert [(r.domain, r.protocol) for r in py] == [("in-domain", "sysu-all-single"), ("cross-domain", "regdb-t2v")]
    assert py[1].mAP == pytest.approx(rows[3]["mAP"]) and py[0].rank1 == pytest.approx(rows[0]["rank1"])

    for args, message in (
        (["--data", "llcm-v2:/x"], "format 'llcm-v2' is unknown"),
        (["--data", f"regdb:{tmp_path / 'missing'}"], "does not exist"),
        (["--data", "regdb"], "is not FORMAT:ROOT"),
        (["--data", f"regdb:{regdb_root}", "-p", "llcm-v2i"], "'llcm-v2i' fits none of the data"),
    ):
        result = CliRunner().invoke(app, ["generalisation", str(tiny_trained_run), *args])
        assert result.exit_code != 0 and isinstance(result.exception, VireidError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)


def test_eval_on_another_dataset_calibrates_on_its_own_identities(tiny_trained_run, sysu_root2, regdb_root, tmp_path):
    """``vireid eval RUN --data sysu-mm01:ROOT2``: ROOT2's validation identity numbers mean other people,
    so they are not refused as 'trained on' (they were, before: no threshold was calibrated)."""
    import shutil

    import torch

    from vireid.engine.checkpoint import load_checkpoint

    run = tmp_path / "run"  # a run without a stored threshold, so that the evaluation calibrates one
    run.mkdir()
    shutil.copy(tiny_trained_run / "config.yaml", run / "config.yaml")
    ckpt = load_checkpoint(tiny_trained_run / "best.pt")
    ckpt.pop("verification", None)
    ckpt["config"]["data"]["root"] = str(tmp_path / "moved")  # the training data is gone: --data still works
    torch.save(ckpt, run / "best.pt")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(run), "--data", f"sysu-mm01:{sysu_root2}", "-p",
                                      "sysu-all-single", "--trials", "1", "--no-flip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "were trained on" not in result.output
    verification = json.loads((out / "verification.json").read_text())
    assert verification["calibration"] is not None and verification["calibration"]["split"] == "val"
    results = json.loads((out / "test_results.json").read_text())
    assert results[0]["settings"]["data"] == f"sysu-mm01:{sysu_root2}"

    result = CliRunner().invoke(app, ["eval", str(run), "--data", f"regdb:{regdb_root}", "-p",
                                      "regdb-t2v", "--no-flip"])
    assert result.exit_code == 0, result.output
    assert "| regdb-t2v |" in result.output

    from vireid.workflows.eval_data import DataChoice
    from vireid.workflows.evaluate_run import evaluate_run

    py = evaluate_run(run, choice=DataChoice(data=f"regdb:{regdb_root}"), protocols=("regdb-t2v",), flip=False,
                      device="cpu", progress=False, quiet=True, verification=False)
    assert [r.name for r in py] == ["regdb-t2v"] and py[0].settings["data"] == f"regdb:{regdb_root}"
    assert 0 < py[0].mean["mAP"] <= 100

    result = CliRunner().invoke(app, ["generalisation", str(run), "--data", f"regdb:{regdb_root}"])
    assert result.exit_code != 0 and isinstance(result.exception, VireidError)
    assert "is not there for its in-domain row" in str(result.exception) and "--no-in-domain" in str(result.exception)
