"""``vireid datasets formats`` / ``vireid datasets check`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from vireid.cli import app

from conftest import REAL_MINI  # noqa: E402
runner = CliRunner()


def write_image(path: Path, grey: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L" if grey else "RGB", (8, 16)).save(path)
    return path


def make_folder_dataset(root: Path) -> Path:
    for split, ids in (("train", (1, 2)), ("query", (5,)), ("gallery", (5, 6))):
        for modality, cam in (("visible", "1"), ("infrared", "2")):
            for pid in ids:
                write_image(root / split / modality / cam / str(pid) / "x.jpg", grey=modality == "infrared")
    return root


def test_formats_lists_every_reader():
    result = runner.invoke(app, ["datasets", "formats"])
    assert result.exit_code == 0, result.output
    for name in ("sysu-mm01", "regdb", "llcm", "folder", "csv"):
        assert name in result.output
    assert "trial" in result.output and "split_dir" in result.output


def test_check_real_sysu_crops():
    result = runner.invoke(app, ["datasets", "check", str(REAL_MINI), "--format", "sysu-mm01", "--workers", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    test_rows = [line.split() for line in lines if line.split()[:1] in (["test"], ["visible"], ["infrared"])]
    assert ["test", "all", "5", "60"] in test_rows
    assert ["visible", "5", "40", "1:10", "2:10", "4:10", "5:10"] in test_rows
    assert ["infrared", "5", "20", "3:10", "6:10"] in test_rows
    assert "OK: 60 images decoded, no problems" in result.output
    assert "no training split" in result.output


def test_check_json_reports_corrupt_image_and_exit_code(tmp_path):
    root = make_folder_dataset(tmp_path / "mine")
    bad = root / "gallery" / "visible" / "1" / "6" / "x.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    result = runner.invoke(app, ["datasets", "check", str(root), "-f", "folder", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False and report["num_images"] == 10
    assert len(report["problems"]) == 1 and str(bad) in report["problems"][0]
    assert report["summary"]["splits"]["query"]["ids"] == 1
    assert report["summary"]["protocol_family"] == "given"

    quick = runner.invoke(app, ["datasets", "check", str(root), "-f", "folder", "--no-decode"])
    assert quick.exit_code == 0, quick.output  # --no-decode only stats the files
    assert "OK: 10 images found" in quick.output

    bad.write_bytes(b"")
    quick = runner.invoke(app, ["datasets", "check", str(root), "-f", "folder", "--no-decode"])
    assert quick.exit_code == 1 and "0 bytes" in quick.output and "FAILED: 1 problem(s)" in quick.output


def test_check_structural_error_exits_1_with_one_sentence(tmp_path):
    result = runner.invoke(app, ["datasets", "check", str(tmp_path / "absent"), "-f", "llcm"])
    assert result.exit_code == 1
    assert "problem: LLCM root" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output

    as_json = runner.invoke(app, ["datasets", "check", str(tmp_path / "absent"), "-f", "llcm", "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.output)["ok"] is False


def test_check_option_validation(tmp_path):
    root = make_folder_dataset(tmp_path / "mine")
    wrong = runner.invoke(app, ["datasets", "check", str(root), "-f", "folder", "--trial", "2"])
    assert wrong.exit_code == 2 and "--trial does not apply to format folder" in wrong.output
    unknown = runner.invoke(app, ["datasets", "check", str(root), "-f", "market1501"])
    assert unknown.exit_code == 2 and "unknown format 'market1501'" in unknown.output


def test_check_regdb_trial_from_split_dir(tmp_path):
    root = tmp_path / "regdb"
    for pid in range(1, 5):
        write_image(root / "Visible" / str(pid) / "v.bmp")
        write_image(root / "Thermal" / str(pid) / "t.bmp", grey=True)
    splits = tmp_path / "splits"
    splits.mkdir()
    train = np.array([[1, 2]] * 10, dtype=np.uint16)
    test = np.array([[3, 4]] * 10, dtype=np.uint16)
    train[1], test[1] = [3, 4], [1, 2]
    scipy.io.savemat(splits / "RegDB_split.mat", {"TrainIdx": train, "TestIdx": test})
    result = runner.invoke(app, ["datasets", "check", str(root), "-f", "regdb", "--trial", "2", "--split-dir", str(splits), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["summary"]["splits"]["train"]["images"] == 4
    assert report["summary"]["splits"]["test"]["modalities"]["infrared"]["cameras"] == {"2": 2}

    bad_trial = runner.invoke(app, ["datasets", "check", str(root), "-f", "regdb", "--trial", "12", "--split-dir", str(splits)])
    assert bad_trial.exit_code == 2 and "trial must be an integer from 1 to 10" in bad_trial.output
