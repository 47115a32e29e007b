"""The user's path on their own data (issue 12 §1, issue 11 §3): evaluate, calibrate, picture and
report a trained run on a manifest of real crops with documented commands only; runs are never
modified by evaluation; nothing is generated at evaluation; several models are pooled only when
they are trials of one config; feature/index folders know their model; one modality policy;
test-time flip; run logs; the Python front door of the README."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import REAL_MINI, REPO, copy_run

INFRARED_CAMS = (3, 6)


def write_manifest(folder: Path, split: dict[int, str] | None = None, only: str | None = None) -> Path:
    """``folder/manifest.csv`` over the real SYSU-MM01 sample crops (5 identities, 6 cameras), with
    modality spellings of users (``ir``, ``rgb``); ``split`` maps camera -> split column value."""
    folder.mkdir(parents=True, exist_ok=True)
    head = "path,identity,camera,modality" + (",split" if split else "")
    lines = [head]
    for path in sorted(REAL_MINI.glob("cam*/*/*.png")):
        cam = int(path.parts[-3][3:])
        if split and cam not in split:
            continue
        if only and split and split[cam] != only:
            continue
        row = f"{path},id{path.parent.name},cam{cam},{'ir' if cam in INFRARED_CAMS else 'rgb'}"
        lines.append(row + (f",{split[cam]}" if split else ""))
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def cli(*args: str, ok: bool = True):
    from vireid.cli import _register, app

    _register()
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture()
def run(tiny_trained_run, tmp_path) -> Path:
    return copy_run(tiny_trained_run, tmp_path / "run")


def test_eval_own_manifest_without_split_column_writes_nothing_into_the_run(run, tmp_path):
    manifest = write_manifest(tmp_path / "mine")
    before = snapshot(run)
    res = cli("eval", run, "--data", f"csv:{manifest}")
    assert "20 infrared queries, 40 visible images" in res.output
    assert re.search(r"\| tiny \| given \|", res.output) and "pass --out DIR" in res.output
    assert snapshot(run) == before  # nothing written or replaced in the run
    out = tmp_path / "eval-mine"
    cli("eval", run, "--images", manifest, "--query", "nir", "--gallery", "vis", "--out", out)
    entries = json.loads((out / "test_results.json").read_text())
    assert entries[0]["settings"]["query"] == "infrared" and entries[0]["settings"]["gallery"] == "visible"
    assert entries[0]["settings"]["data"].startswith("csv:")
    assert {"test_results.md", "verification.json", "roc.png"} <= {p.name for p in out.iterdir()}
    assert snapshot(run) == before
    # the --out folder is what vireid visualize cmc reads
    cli("visualize", "cmc", out, "--out", tmp_path / "cmc.png")
    assert (tmp_path / "cmc.png").is_file()


def test_eval_same_modality_query_gallery_skips_the_query_itself(run, tmp_path):
    manifest = write_manifest(tmp_path / "mine")
    res = cli("eval", run, "--data", f"csv:{manifest}", "--query", "visible", "--gallery", "rgb")
    row = next(line for line in res.output.splitlines() if "| given |" in line)
    rank1 = float(row.split("|")[7].split("±")[0])
    assert rank1 < 100.0  # with the query itself in the gallery every query would be its own first match


def test_gallery_only_and_split_less_manifests_extract_index_search(run, tmp_path):
    gallery_only = write_manifest(tmp_path / "gal", split={1: "gallery", 2: "gallery", 3: "gallery"})
    feats = tmp_path / "feats"
    cli("extract", "-c", run, "-i", gallery_only, "-o", feats)
    assert (feats / "features.safetensors").is_file()
    from vireid.retrieval.features import FeatureSet

    info = FeatureSet.load(feats).info
    assert info["fingerprint"].startswith("sha256:") and info["flip"] is False
    cli("index", feats, "-o", tmp_path / "index")
    query = REAL_MINI / "cam6" / "0001" / "0001.png"
    res = cli("search", "--index", tmp_path / "index", "--checkpoint", run, "-x", "-k", "2", query)
    assert "query 0001.png: infrared (guessed: grey-level image)" in res.output
    # evaluating a gallery-only manifest says what it needs
    from vireid.errors import DatasetError

    bad = cli("eval", run, "--data", f"csv:{gallery_only}", ok=False)
    assert isinstance(bad.exception, DatasetError) and "--query infrared --gallery visible" in str(bad.exception)
    # a manifest without a split column
    cli("extract", "-c", run, "-i", write_manifest(tmp_path / "plain"), "-o", tmp_path / "feats2")


def test_index_refuses_another_model_unless_forced(run, tmp_path):
    from vireid.engine.checkpoint import atomic_torch_save, load_checkpoint

    other = tmp_path / "other"
    other.mkdir()
    ckpt = load_checkpoint(run / "best.pt")
    name = next(k for k, v in ckpt["model"].items() if v.dtype.is_floating_point)
    ckpt["model"][name] = ckpt["model"][name] + 0.01
    atomic_torch_save(ckpt, other / "best.pt")
    cli("extract", "-c", run, "-i", write_manifest(tmp_path / "mine"), "-o", tmp_path / "feats")
    cli("index", tmp_path / "feats", "-o", tmp_path / "index")
    query = REAL_MINI / "cam1" / "0002" / "0001.png"
    refused = cli("search", "--index", tmp_path / "index", "--checkpoint", other, query, ok=False)
    assert refused.exit_code != 0 and "built with another model" in str(refused.exception)
    assert "--force" in str(refused.exception)
    forced = cli("search", "--index", tmp_path / "index", "--checkpoint", other, "--force", query)
    assert "warning: the index was built with another model" in forced.output


def test_eval_keeps_other_protocols_and_never_writes_the_checkpoint(run, tmp_path):
    from vireid.engine.checkpoint import atomic_torch_save, load_checkpoint

    best = run / "best.pt"
    ckpt = load_checkpoint(best)
    ckpt.pop("verification", None)  # a model without a stored threshold: eval computes one for its report only
    best.unlink()
    atomic_torch_save(ckpt, best)
    cli("eval", run)
    before = best.read_bytes()
    cli("eval", run, "-p", "sysu-indoor-single", "--flip")
    names = [(e["name"], e["settings"]["flip"]) for e in json.loads((run / "test_results.json").read_text())]
    assert ("sysu-all-single", False) in names and ("sysu-indoor-single", True) in names
    assert "| sysu-all-single |" in (run / "test_results.md").read_text()
    assert best.read_bytes() == before
    assert "verification" not in load_checkpoint(best)


def test_read_only_run_is_evaluated_and_nothing_is_written(run, monkeypatch, capsys):
    import vireid.workflows.evaluate_run as run_eval
    from vireid.workflows.train_run import evaluate_checkpoint

    monkeypatch.setattr(run_eval, "writable", lambda folder: False)  # the checks run as root, where chmod stops nothing
    before = snapshot(run)
    results = evaluate_checkpoint(run, protocols=("sysu-all-single",), progress=False)
    assert results and "is read-only" in capsys.readouterr().out
    assert snapshot(run) == before


def test_missing_data_is_one_sentence_never_generated(run, tmp_path, monkeypatch):
    from vireid.errors import DatasetError

    nowhere = tmp_path / "moved-away"
    res = cli("eval", run, "--data-root", nowhere, ok=False)
    assert isinstance(res.exception, DatasetError) and "--data-root" in str(res.exception)
    assert "vireid synth" not in str(res.exception) and not nowhere.exists()
    # a relative data.root is found beside the run folder, from any current folder
    from vireid.engine.checkpoint import atomic_torch_save, load_checkpoint

    ckpt = load_checkpoint(run / "best.pt")
    (run / "data").symlink_to(Path(ckpt["config"]["data"]["root"]))
    ckpt["config"]["data"]["root"] = "data"
    (run / "best.pt").unlink()
    atomic_torch_save(ckpt, run / "best.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli("eval", run, "-p", "sysu-all-single")
    assert list(elsewhere.iterdir()) == []  # no synthetic dataset generated in the current folder


def test_several_models_pool_only_trials_of_one_config(run, tmp_path):
    from vireid.engine.checkpoint import atomic_torch_save, load_checkpoint
    from vireid.workflows.evaluate_run import poolable

    twin = copy_run(run, tmp_path / "twin")
    # (the command line's one-row-per-model table: tests/engine/test_engine.py::test_tiny_model_learns_and_leaves_a_run_folder)
    assert poolable([run, twin]) == (False, "they are not different trials (data.options.trial) of one config")
    trials = []
    for t in (1, 2):
        folder = tmp_path / f"t{t}"
        folder.mkdir()
        ckpt = load_checkpoint(run / "best.pt")
        ckpt["config"]["name"] = f"split{t}"
        ckpt["config"]["data"]["options"] = {**ckpt["config"]["data"]["options"], "trial": t}
        atomic_torch_save(ckpt, folder / "best.pt")
        trials.append(folder / "best.pt")
    assert poolable(trials)[0]
    ckpt = load_checkpoint(trials[1])
    ckpt["config"]["optim"]["lr"] = 1.0  # another experiment, not another trial
    atomic_torch_save(ckpt, trials[1])
    assert poolable(trials) == (False, "their configs differ beyond the trial")


def test_calibrate_out_leaves_the_run_and_verify_uses_same_modality_threshold(run, tmp_path):
    manifest = write_manifest(tmp_path / "mine")
    before = snapshot(run)
    cal = tmp_path / "cal"
    res = cli("calibrate", run, "--data", f"csv:{manifest}", "--out", cal)
    assert "checkpoint unchanged" in res.output and "visible x visible: threshold" in res.output
    assert snapshot(run) == before
    record = json.loads((cal / "calibration.json").read_text())["calibration"]
    assert record["data"].startswith("csv:") and set(record["same_modality"]) == {"visible", "infrared"}
    assert (cal / "calibration_roc.png").is_file()
    a, b = REAL_MINI / "cam1" / "0001" / "0001.png", REAL_MINI / "cam2" / "0001" / "0001.png"
    out = json.loads(cli("verify", "-m", run, a, b, "--calibration", cal / "calibration.json", "--json").output)
    assert out["pair"] == "visible x visible" and out["modalities_guessed"] == [True, True]
    assert out["threshold"] == pytest.approx(record["same_modality"]["visible"]["threshold"])
    grey = REAL_MINI / "cam3" / "0001" / "0001.png"
    told = json.loads(cli("verify", "-m", run, grey, b, "--modality-a", "vis", "--calibration", cal, "--json").output)
    assert any("grey-level" in note and "given as visible" in note for note in told["notes"])
    # calibrating the run itself keeps eval's roc.png
    (run / "roc.png").write_bytes(b"eval's picture")
    cli("calibrate", run)
    assert (run / "roc.png").read_bytes() == b"eval's picture" and (run / "calibration_roc.png").is_file()


def test_flip_averages_mirror_embeddings_and_is_a_config_key(run):
    import vireid

    model = vireid.load(run)
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(REAL_MINI / "cam1" / "0001" / "0001.png").convert("RGB"))
    plain = model.embed(image, modality="visible")
    flipped = model.embed(image, modality="visible", flip=True)
    mirror = model.embed(np.ascontiguousarray(image[:, ::-1]), modality="visible")
    raw = model._embed_batch
    x = model.preprocess(torch.as_tensor(model.resize(image))[None])
    with torch.no_grad():
        expected = torch.nn.functional.normalize((raw(x, torch.zeros(1, dtype=torch.long))
                                                  + raw(torch.flip(x, dims=[3]), torch.zeros(1, dtype=torch.long))) / 2,
                                                 dim=1)
    assert np.allclose(flipped, expected.numpy(), atol=1e-5)
    assert not np.allclose(flipped, plain, atol=1e-4) and not np.allclose(flipped, mirror, atol=1e-4)
    from vireid.config import load_config

    assert load_config(None, ["eval.flip=true"]).eval.flip is True


def test_modality_spellings_are_one_table():
    from vireid.data.modality import parse
    from vireid.inference.embedder import modality_codes
    from vireid.errors import VireidError

    assert modality_codes(["vis", "rgb", "ir", "nir", "thermal", "infrared", "visible"], 7).tolist() == [0, 0, 1, 1, 1, 1, 0]
    assert parse(None) == "auto" and parse("IR") == "infrared"
    with pytest.raises(VireidError, match="unknown"):
        parse("uv")


def test_run_log_starts_with_the_summary(tiny_trained_run):
    from vireid.engine.precision import resolve_precision

    text = (tiny_trained_run / "log.txt").read_text()
    auto = resolve_precision("auto", "cpu")  # the run's train.amp: bf16 on a CPU with bf16 units, else fp32
    kind = "fp32" if auto.dtype is None else "bf16 autocast"
    assert "run folder:" in text and "device: cpu" in text and f"precision: {kind}" in text
    assert re.search(r"train +\d+ identities +\d+ visible \+ +\d+ infrared images", text)
    assert "M parameters" in text and "epoch 1/1" in text


def test_readme_python_front_door_runs(tiny_trained_run, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- front-door -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README's vireid.load example is marked with <!-- front-door -->"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(tiny_trained_run)
    shutil.copytree(REAL_MINI, tmp_path / "data" / "mine")
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    assert namespace["emb"].shape[0] == 2 and namespace["model"].last_modalities == ["infrared", "visible"]


def test_make_setup_filters_only_pips_ignored_location_warnings():
    import subprocess

    makefile = (REPO / "Makefile").read_text()
    flt = re.search(r"^PIP_FILTER := (.+)$", makefile, re.M).group(1)
    assert "-o pipefail" in makefile and makefile.count("| $(PIP_FILTER)") == 2
    noise = ("WARNING: Location 'file:///opt/pypi-more/simple/typer/' is ignored: it is neither a file nor a directory.\n"
             "ERROR: No matching distribution found for no-such-package\n")
    out = subprocess.run(["bash", "-c", flt], input=noise, capture_output=True, text=True, check=True).stdout
    assert out == "ERROR: No matching distribution found for no-such-package\n"


def test_ctrl_c_prints_how_to_resume_and_is_logged(tmp_path, monkeypatch, capsys):
    import types

    import vireid.engine.run_logging as run_logging
    import vireid.engine.trainer as trainer_module
    from vireid.workflows.train_run import run_training
    from vireid.config import load_config

    class Interrupted:
        def __init__(self, cfg, folder, resume=False):
            self.dist = types.SimpleNamespace(is_main=True)

        def fit(self):
            print("epoch 1/9 ...")
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(trainer_module, "Trainer", Interrupted)
    monkeypatch.setattr(run_logging, "run_summary", lambda trainer: "run folder: (summary)")
    folder = tmp_path / "run"
    cfg = load_config(None, [f"data.root={tmp_path / 'data'}"])
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, folder)
    hint = f"continue with: vireid train --resume {folder}"
    assert hint in capsys.readouterr().out
    log = (folder / "log.txt").read_text()
    assert "run folder: (summary)" in log and "epoch 1/9" in log and hint in log
