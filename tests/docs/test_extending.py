"""docs/extending.md, run as a user would: its plug-in file and config are written out exactly as
the page shows them, trained and evaluated through the ``vireid`` command (in a fresh process, from
another working directory for ``eval``); and the ``plugins`` key's errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides
from vireid.errors import ConfigError

PAGE = REPO / "docs" / "extending.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)


def _write_page_files(folder: Path) -> None:
    """Each python/yaml block starts with ``# <file name>``: write it there."""
    for block in _blocks("python") + _blocks("yaml"):
        name = block.splitlines()[0].lstrip("# ").strip()
        (folder / name).write_text(block)


def _vireid(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vireid", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_pages_plugin_trains_and_evaluates_through_the_cli(tmp_path, tiny_synth_root):
    work = tmp_path / "project"
    work.mkdir()
    _write_page_files(work)
    assert (work / "my_reid.py").is_file() and (work / "se_synth.yaml").is_file()
    commands = [line.split() for line in _blocks("bash")[0].strip().splitlines()]
    assert commands[0][:3] == ["vireid", "train", "--config"] and commands[1][:2] == ["vireid", "eval"]

    tiny = tiny_overrides(tiny_synth_root, Path("runs"), name="se_synth", **{"train.epochs": 1, "sampler.epoch_length": 2})
    train = _vireid(commands[0][1:] + tiny, cwd=work)
    assert train.returncode == 0, train.stderr[-3000:]
    run = work / "runs" / "se_synth"
    metrics = (run / "metrics.jsonl").read_text()
    assert "mean_gap" in metrics  # the plug-in's loss term was trained
    saved = (run / "config.yaml").read_text()
    assert str(work / "my_reid.py") in saved  # stored absolute

    import torch

    state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["model"]
    assert any(key.startswith("se.") for key in state)  # the plug-in's method was built

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = _vireid(["eval", str(run)], cwd=elsewhere)  # the stored plug-in is not imported without the flag
    assert refused.returncode == 2 and str(work / "my_reid.py") in refused.stderr and "--trust-plugins" in refused.stderr
    assert commands[1][3:] == ["--trust-plugins"]
    evaluate = _vireid(["eval", str(run), *commands[1][3:]], cwd=elsewhere)  # the page's command, from another folder
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    results = json.loads((run / "test_results.json").read_text())
    assert results and all(0.0 <= r["mean"]["mAP"] <= 100.0 for r in results)


def test_plugin_keys_are_checked_against_the_method_and_its_base(tmp_path):
    from vireid.engine.trainer import validate_config
    from vireid.plugins import user_config

    _write_page_files(tmp_path)
    config = tmp_path / "se_synth.yaml"
    validate_config(user_config(config, ["model.params.se_reduction=4", "model.params.gem_p=2"]))
    with pytest.raises(ConfigError, match=r"model\.params\.se_reduce'.*se_reduction"):
        validate_config(user_config(config, ["model.params.se_reduce=4"]))


def test_plugin_errors_are_one_sentence(tmp_path, monkeypatch):
    from vireid.config import load_config
    from vireid.plugins import user_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"plugin file .*missing\.py .*does not exist"):
        user_config(None, ["plugins=[./missing.py]"])
    with pytest.raises(ConfigError, match=r"plugin module 'no_such_lab_module' .*not installed or not on PYTHONPATH"):
        user_config(None, ["plugins=[no_such_lab_module]"])
    (tmp_path / "broken.py").write_text("raise RuntimeError('oops')\n")
    with pytest.raises(ConfigError, match=r"broken\.py .*failed while importing: RuntimeError: oops"):
        user_config(None, ["plugins=[broken.py]"])
    (tmp_path / "clash.py").write_text(
        "from vireid.modeling.registries import METHODS\n\n@METHODS.register('baseline')\nclass Mine:\n    pass\n"
    )
    with pytest.raises(ConfigError, match=r"clash\.py .*'baseline' is already registered"):
        user_config(None, ["plugins=[clash.py]"])
    # a base config by shipped name, and a clear error for one that is neither beside nor shipped
    (tmp_path / "mine.yaml").write_text("_base_: agw_sysu\n")
    assert load_config(tmp_path / "mine.yaml").model.method == "baseline"
    (tmp_path / "bad.yaml").write_text("_base_: agw_sysuu\n")
    with pytest.raises(ConfigError, match=r"_base_ 'agw_sysuu' is neither a file beside it nor a shipped config"):
        load_config(tmp_path / "bad.yaml")


def test_the_pages_side_input_and_protocol_run_through_the_cli(tmp_path, tiny_synth_root):
    """Sections 4 and 5: a mask kind and a method that refuses to run without it, trained and evaluated
    (the mask reaches the model in training, validation, calibration and evaluation), then the run
    evaluated with the page's protocol spec, imported with --plugins."""
    work = tmp_path / "project"
    work.mkdir()
    _write_page_files(work)
    assert (work / "my_mask.py").is_file() and (work / "masked_synth.yaml").is_file() and (work / "my_protocol.py").is_file()
    blocks = _blocks("bash")
    train_cmd, eval_cmd = (line.split() for line in blocks[1].strip().splitlines())
    protocol_cmd = blocks[2].strip().split()
    assert train_cmd[:4] == ["vireid", "train", "--config", "masked_synth.yaml"] and eval_cmd[:3] == ["vireid", "eval", "runs/masked_synth"]
    assert protocol_cmd[:3] == ["vireid", "eval", "runs/masked_synth"] and "sysu-camera3-single" in protocol_cmd

    tiny = tiny_overrides(tiny_synth_root, Path("runs"), name="masked_synth",
                          **{"train.epochs": 1, "sampler.epoch_length": 2, "eval.trials": 1})
    train = _vireid(train_cmd[1:] + tiny, cwd=work)  # trains, then evaluates and calibrates (the page's eval, too)
    assert train.returncode == 0, train.stderr[-3000:]
    run = work / "runs" / "masked_synth"
    assert "masked_synth" in (run / "config.yaml").read_text() and "foreground" in (run / "config.yaml").read_text()
    assert {r["name"] for r in json.loads((run / "test_results.json").read_text())} >= {"sysu-all-single"}

    evaluate = _vireid(protocol_cmd[1:], cwd=work)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    (result,) = [r for r in json.loads((run / "test_results.json").read_text()) if r["name"] == "sysu-camera3-single"]
    assert result["settings"]["trials"] == 3 and result["settings"]["draw"] == "seeded"
    queries = [p for p in (tiny_synth_root / "cam3").rglob("*.jpg")]
    assert 0 < result["trials"][0]["num_query"] < len(queries)  # the test identities' camera-3 images only
