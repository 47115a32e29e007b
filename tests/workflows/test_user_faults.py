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
    from vireid.inference.loading import load_embedder
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


# ----------------------------------------------------------------------------- 7. config values


@pytest.mark.parametrize("override, key", [
    ("optim.lr=.nan", "optim.lr"), ("optim.lr=-0.1", "optim.lr"), ("optim.betas=[0.9,1.5]", "optim.betas"),
    ("seed=99999999999999999999", "seed"), ("train.epochs=0", "train.epochs"), ("train.epochs=-3", "train.epochs"),
    ("name=../../x", "name"), ("sched.gamma=.inf", "sched.gamma"),
])
def test_bad_config_values_are_refused_at_config_time(override, key):
    from vireid.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, [override])
    assert f"config key {key!r} must be" in one_sentence(str(err.value))


def test_yaml_exponent_numbers_read_as_numbers_and_duplicate_keys_are_refused(tmp_path):
    from vireid.config import load_config

    mine = tmp_path / "mine.yaml"
    mine.write_text("_base_: baseline_synth\noptim:\n  name: adam\n  lr: 2e-4\n  weight_decay: 5E-4\n")
    cfg = load_config(mine, ["optim.momentum=1e-1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum) == (2e-4, 5e-4, 0.1)
    mine.write_text("_base_: baseline_synth\noptim:\n  lr: 0.01\n  momentum: 0.9\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(mine)
    assert "key 'lr' appears twice (lines 3 and 5)" in one_sentence(str(err.value))


# ----------------------------------------------------------------------------- 4-6, 8, 9. run folders and checkpoints


def _tiny_cfg(tiny_synth_root: Path, out: Path, **extra):
    from vireid.config import load_config

    return load_config(CONFIG, tiny_overrides(tiny_synth_root, out, **{"train.epochs": 1, "train.threads": 1, **extra}))


def _real_copy(run: Path, dst: Path) -> Path:
    """A copy of a run folder with its checkpoints as real files (they get rewritten)."""
    import shutil

    copy_run(run, dst)
    for name in ("best.pt", "last.pt"):
        (dst / name).unlink()
        shutil.copy(run / name, dst / name)
    return dst


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_training_on_one_folder_is_refused_and_a_stale_lock_is_removed(tiny_synth_root, tmp_path, capsys):
    import socket

    from vireid.engine.trainer import Trainer

    folder = tmp_path / "run"
    first = Trainer(_tiny_cfg(tiny_synth_root, tmp_path), folder)
    try:
        with pytest.raises(VireidError) as err:
            Trainer(_tiny_cfg(tiny_synth_root, tmp_path), folder)
        message = one_sentence(str(err.value))
        assert f"run folder {folder} is in use by another training" in message and "--run-dir" in message
    finally:
        first.close()
    assert not (folder / ".vireid-lock").exists()  # released on exit
    (folder / ".vireid-lock").write_text(f"{_dead_pid()} {socket.gethostname()}\n")  # a crashed training's lock
    capsys.readouterr()
    second = Trainer(_tiny_cfg(tiny_synth_root, tmp_path), folder)
    second.close()
    assert "removed the stale lock" in capsys.readouterr().out


def test_a_new_run_never_takes_over_an_unrelated_folder(tiny_synth_root, tmp_path):
    from vireid.engine.trainer import Trainer

    folder = tmp_path / "my-project"
    folder.mkdir()
    (folder / "config.yaml").write_text("my: own settings\n")
    (folder / "metrics.jsonl").write_text("{\"mine\": 1}\n")
    (folder / "notes.txt").write_text("keep me\n")
    with pytest.raises(VireidError) as err:
        Trainer(_tiny_cfg(tiny_synth_root, tmp_path), folder)
    assert "does not hold a vireid run (notes.txt)" in one_sentence(str(err.value))
    assert (folder / "config.yaml").read_text() == "my: own settings\n" and (folder / "metrics.jsonl").is_file()


def test_resume_repairs_best_pt_trims_metrics_and_removes_leftovers(tiny_trained_run, tiny_synth_root, tmp_path):
    from vireid.config import load_config
    from vireid.engine.checkpoint import load_checkpoint
    from vireid.engine.trainer import Trainer

    run = _real_copy(tiny_trained_run, tmp_path / "run")
    last = load_checkpoint(run / "last.pt")
    step, done = last["state"]["step"], last["state"]["epoch"]
    assert last["state"]["best_epoch"] == done
    stale = dict(last, state={**last["state"], "epoch": done - 1})
    torch.save(stale, run / "best.pt")  # killed between last.pt and best.pt: best.pt one epoch behind
    leftover = run / f".last.pt.tmp{_dead_pid()}"
    leftover.write_bytes(b"half a checkpoint")
    with open(run / "metrics.jsonl", "a") as fh:  # logged after last.pt, before the kill
        fh.write(json.dumps({"kind": "step", "epoch": done, "step": step + 1, "loss": 1.0}) + "\n")
        fh.write('{"kind": "step", "epo')
    trainer = Trainer(load_config(run / "config.yaml"), run, resume=True)
    summary = trainer.fit()
    trainer.close()
    assert load_checkpoint(run / "best.pt")["state"]["epoch"] == summary["best_epoch"] == done
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["step"] <= step for line in lines)
    assert not leftover.exists()
    (run / "best.pt").unlink()  # the kill came before best.pt was first written
    Trainer(load_config(run / "config.yaml"), run, resume=True).close()
    assert load_checkpoint(run / "best.pt")["state"]["epoch"] == done


def test_resume_and_nan_messages_when_no_checkpoint_exists_yet(tiny_synth_root, tmp_path):
    from vireid.engine.trainer import Trainer, TrainingDiverged

    folder = tmp_path / "run"
    trainer = Trainer(_tiny_cfg(tiny_synth_root, tmp_path), folder)
    trainer._compute_losses = lambda *args, **kwargs: {"ce": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    trainer.close()
    assert "no checkpoint was saved" in str(err.value) and "last.pt" not in str(err.value)
    result = runner.invoke(app, ["train", "--resume", str(folder)])
    assert isinstance(result.exception, VireidError)
    assert f"run {folder} has no checkpoint yet" in one_sentence(str(result.exception))


def test_killed_feature_and_index_writes_leave_nothing_behind(tmp_path):
    from vireid.retrieval.features import atomic_dir

    for name in ("feats", "idx"):
        stale = tmp_path / f".{name}.tmp{_dead_pid()}"
        stale.mkdir()
        (stale / "features.safetensors").write_bytes(b"partial")
        with atomic_dir(tmp_path / name, "marker.json", "vireid folder") as tmp:
            (tmp / "marker.json").write_text("{}")
        assert not stale.exists() and (tmp_path / name / "marker.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats", "idx"]


def test_bad_checkpoints_and_a_full_disk_are_one_sentence(tiny_trained_run, tmp_path, monkeypatch):
    import errno

    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import load_model_from_checkpoint

    ckpt = torch.load(tiny_trained_run / "best.pt", map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if v.ndim == 4)
    resized = dict(ckpt, model={**ckpt["model"], key: torch.zeros(3, 3, 1, 1)})
    torch.save(resized, tmp_path / "resized.pt")
    with pytest.raises(VireidError) as err:
        load_model_from_checkpoint(tmp_path / "resized.pt")
    assert f"{key} has shape (3, 3, 1, 1) in the checkpoint" in one_sentence(str(err.value))
    torch.save({k: v for k, v in ckpt.items() if k != "num_classes"}, tmp_path / "no-classes.pt")
    with pytest.raises(VireidError) as err:
        load_model_from_checkpoint(tmp_path / "no-classes.pt")
    assert "has no num_classes entry" in one_sentence(str(err.value))

    def full_disk(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(VireidError) as err:
        atomic_torch_save({"model": {}}, tmp_path / "out" / "last.pt")
    assert "(No space left on device); free some disk space" in one_sentence(str(err.value))
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- 10. quantize calibration


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter makes a one-op graph fastest
@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_takes_batches_of_any_size(tmp_path, method):
    import numpy as np
    from torch import nn

    from vireid.export.onnx import OUTPUT_NAME
    from vireid.export.quantize import calibration_batches, quantize_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16)).eval()
    fp32 = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 16, 8),), str(fp32), input_names=["images"], output_names=[OUTPUT_NAME],
                      dynamic_axes={"images": {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, dynamo=False)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(45, 3, 16, 8), dtype=np.uint8)
    codes = np.array([0] * 29 + [1] * 16)  # 22 + 12 calibration images after the held-out quarter: 16+6, 12
    feeds = calibration_batches(pixels, codes, (0.5,) * 3, (0.25,) * 3, batch_size=16)
    assert len({len(f["images"]) for f in feeds}) == 1  # one batch size for the histogram calibrators
    report = quantize_onnx(fp32, tmp_path / "tiny.int8.onnx", pixels, codes, method=method, batch_size=16)
    assert report.method == method and (tmp_path / "tiny.int8.onnx").is_file() and report.mean_cosine > 0.9


# ----------------------------------------------------------------------------- 3, 9. the server and slow clients


@pytest.fixture(scope="module")
def tiny_service(tiny_synth_root, tmp_path_factory):
    from _serve_fixtures import build_service

    return build_service(tiny_synth_root, tmp_path_factory.mktemp("guarded"))


@pytest.fixture(scope="module")
def guarded_service(tiny_service):
    """The tiny search service run as ``vireid serve`` runs it, with small limits: 1 s for headers, 1.5 s
    for a body, 12 connections."""
    from _serve_fixtures import running_server
    from vireid.serve import ServeLimits, create_app

    limits = ServeLimits(header_timeout_s=1.0, body_timeout_s=1.5, max_connections=12)
    with running_server(create_app(tiny_service.embedder, tiny_service.index, limits=limits), limits=limits) as url:
        yield tiny_service, url


@pytest.fixture()
def plain_service(tiny_service):
    """The tiny search service with its default limits."""
    from _serve_fixtures import running_server
    from vireid.serve import create_app

    with running_server(create_app(tiny_service.embedder, tiny_service.index)) as url:
        yield tiny_service, url


def _stalled(url: str, first_bytes: bytes) -> "socket.socket":
    import socket

    host, port = url.rsplit("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(first_bytes)
    return sock


def _answer(sock, limit_s: float = 5.0) -> tuple[int, dict]:
    """Status and JSON body the server sent on ``sock`` before closing it (bounded in time)."""
    import time

    sock.settimeout(0.5)
    data, deadline = b"", time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body)


def _search(service, url: str):
    import httpx

    files = {"file": ("q.jpg", service.query_member.read_bytes(), "image/jpeg")}
    return httpx.post(f"{url}/api/search", files=files, data={"modality": "visible"}, timeout=10)


def test_slow_clients_neither_block_searches_nor_get_plain_text(guarded_service):
    import time

    service, url = guarded_service
    # 30 connections (more than the 12 allowed) that stall in their headers, before any token check
    sockets = [_stalled(url, b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multi") for _ in range(30)]
    t0 = time.monotonic()
    answer = _search(service, url)
    elapsed = time.monotonic() - t0
    assert answer.status_code == 200 and answer.json()["results"], answer.text
    assert elapsed < 3.0, elapsed
    for sock in sockets:  # each is told, in JSON, and closed: evicted for the search or timed out
        status, body = _answer(sock)
        assert status == 408 and "headers did not arrive within 1 s" in body["error"]
    # an upload whose body stalls is answered 408 in JSON within the body deadline
    stalled_body = _stalled(url, b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                                 b"boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\nContent-Disposition: form-da")
    t0 = time.monotonic()
    status, body = _answer(stalled_body)
    assert status == 408 and "body did not arrive within 1.5 s" in body["error"] and time.monotonic() - t0 < 4.0
    # malformed HTTP is refused in JSON too
    status, body = _answer(_stalled(url, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and "error" in body
    assert _search(service, url).status_code == 200


def test_a_fifo_in_the_gallery_is_refused_at_once(plain_service):
    import os

    import httpx

    service, url = plain_service
    row = 1
    path = Path(service.index.metadata.image_path(row))
    saved = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    try:
        answer = httpx.get(f"{url}/api/gallery/{row}/image", timeout=5)
        assert answer.status_code == 404 and "not a regular file" in answer.json()["error"]
    finally:
        path.unlink()
        path.write_bytes(saved)


def test_a_client_that_disconnects_leaves_one_log_line_not_a_traceback(plain_service, caplog):
    import logging
    import time

    service, url = plain_service
    caplog.set_level(logging.INFO)
    sock = _stalled(url, b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                         b"boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\n")
    time.sleep(0.3)
    sock.close()  # gone in the middle of the upload
    time.sleep(0.7)
    assert _search(service, url).status_code == 200
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Traceback" not in text and not any(r.exc_info for r in caplog.records), text
    assert "client disconnected during POST /api/search" in text
