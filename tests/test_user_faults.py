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


# ----------------------------------------------------------------------------- 2. decompression bombs


def _png(width: int, height: int, *, real: bool) -> bytes:
    """A PNG of ``width`` x ``height``: ``real`` = a complete 1-bit image (decodable, a few KB), else only a
    header claiming that size (the 48 KB 400-megapixel kind)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    depth, colour = (1, 0) if real else (8, 2)
    raw = (b"\0" + b"\0" * ((width + 7) // 8)) * height if real else b"\0" * 64
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def test_decoding_caps_pixels_with_one_sentence_before_decoding(tmp_path, monkeypatch):
    from vireid.data.images import decode_image

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20_000, 20_000, real=False))  # 400 megapixels claimed
    with pytest.raises(DatasetError) as err:
        decode_image(bomb)
    assert str(bomb) in one_sentence(str(err.value)) and "40 megapixels, resize it" in str(err.value)
    big = tmp_path / "big.png"
    big.write_bytes(_png(12_000, 12_000, real=True))  # 144 megapixels that really decode
    with pytest.raises(DatasetError, match=r"big\.png is 12000x12000 pixels; the limit is 40 megapixels, resize it"):
        decode_image(big)
    small = tmp_path / "small.png"
    small.write_bytes(_png(100, 60, real=True))
    assert decode_image(small).shape == (60, 100, 3)
    monkeypatch.setenv("VIREID_MAX_PIXELS", "5000")  # the cap is configurable
    with pytest.raises(DatasetError, match=r"100x60 pixels; the limit is 0.005 megapixels"):
        decode_image(small)


def test_datasets_check_lists_a_bomb_and_goes_on(tmp_path):
    from PIL import Image

    root = tmp_path / "mine"
    for split, ids in (("train", (1, 2)), ("query", (5,)), ("gallery", (5, 6))):
        for modality, cam in (("visible", "1"), ("infrared", "2")):
            for pid in ids:
                path = root / split / modality / cam / str(pid) / "x.png"
                path.parent.mkdir(parents=True)
                Image.new("RGB", (8, 16)).save(path)
    bomb = root / "gallery" / "visible" / "1" / "6" / "x.png"
    bomb.write_bytes(_png(20_000, 20_000, real=False))
    broken = root / "train" / "infrared" / "2" / "1" / "x.png"
    broken.write_bytes(b"not an image")
    result = runner.invoke(app, ["datasets", "check", str(root), "-f", "folder", "--json", "--workers", "1"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["num_images"] == 10 and len(report["problems"]) == 2
    assert any(str(bomb) in p and "megapixels" in p for p in report["problems"])
    assert any(str(broken) in p for p in report["problems"])
