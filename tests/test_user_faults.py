"""Faults a user's work must survive (issue 12, section 2): each test failed on the code before its fix.

Opening a stored model never runs plugin code the user did not name; decompression bombs are one
sentence everywhere; two trainings never share a run folder; a crash leaves a consistent best/last
pair and no temporary leftovers; bad config values and bad checkpoints are one sentence; the server
survives slow clients; calibration batches of unequal size quantize.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import REPO, copy_run, tiny_overrides
from vireid.cli import app
from vireid.errors import ConfigError, DatasetError, VireidError

runner = CliRunner()
CONFIG = REPO / "configs" / "baseline_synth.yaml"


def one_sentence(message: str) -> str:
    assert "Traceback" not in message and "\n" not in message.strip(), message
    assert ". " not in message.rstrip("."), f"more than one sentence: {message!r}"
    return message


# ----------------------------------------------------------------------------- 1. plugins


def _run_naming_plugin(tiny_trained_run: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the tiny run whose stored config names a plugin file that leaves a marker when imported."""
    run = copy_run(tiny_trained_run, tmp_path / "run")
    marker = tmp_path / "plugin-ran.txt"
    plugin = tmp_path / "lab_code.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(tiny_trained_run / name, map_location="cpu", weights_only=True)
        ckpt["config"]["plugins"] = [str(plugin)]
        (run / name).unlink()
        torch.save(ckpt, run / name)
    return run, plugin, marker


def test_opening_a_stored_model_never_imports_its_plugins_without_the_flag(tiny_trained_run, tiny_synth_root, tmp_path, monkeypatch):
    from vireid.engine.embedder import load_embedder
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.engine.transfer import transfer_config

    run, plugin, marker = _run_naming_plugin(tiny_trained_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    for load in (lambda: load_model_from_checkpoint(run), lambda: load_embedder(run), lambda: transfer_config(run)):
        with pytest.raises(ConfigError) as err:
            load()
        message = one_sentence(str(err.value))
        assert str(plugin) in message and "--trust-plugins" in message and "--plugins" in message
        assert not marker.exists()
    for args in (["eval", str(run)], ["train", "--resume", str(run)], ["extract", "-c", str(run), "-i", str(tiny_synth_root), "-o", str(tmp_path / "feats")]):
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigError) and "--trust-plugins" in str(result.exception), args
        assert not marker.exists()
    # the user's own copy (--plugins) is imported instead of the stored path; --trust-plugins imports the stored one
    from vireid.plugins import plugin_flags

    mine = tmp_path / "my_copy.py"
    mine.write_text("VALUE = 1\n")
    with plugin_flags([str(mine)]):
        load_model_from_checkpoint(run)
    assert not marker.exists()
    with plugin_flags(trust=True):
        model, cfg, _ = load_model_from_checkpoint(run)
    assert marker.read_text() == "ran" and cfg.plugins == [str(plugin)]
