"""int8 post-training static quantization with onnxruntime (and the export of a pruned mobile model):
calibration data, fidelity, metadata, serving, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from test_export import make_checkpoint  # noqa: E402  (tests/ is on sys.path, as for conftest)
from vireid.cli import app


@pytest.fixture(scope="module")
def deployed(tiny_synth_root, tmp_path_factory):
    """A MobileNetV3 (depthwise, squeeze-excitation, hard-swish) two-stream model, pruned by half,
    exported with ``vireid export --int8``: (pruned run folder, fp32 .onnx, int8 .onnx, CLI output)."""
    from vireid.workflows.prune import prune_checkpoint

    out = tmp_path_factory.mktemp("deploy")
    ckpt = make_checkpoint(tiny_synth_root, out, arch="mobilenetv3_small_050", **{"model.params.specific_stages": 2})
    prune_checkpoint(ckpt, out / "pruned", 0.5, progress=False)
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(out / "pruned"), "--out", str(out / "m.onnx"),
                                      "--int8", "--calib-images", "48"])
    assert result.exit_code == 0, result.output
    return out / "pruned", out / "m.onnx", out / "m.int8.onnx", result.output


def test_pruned_mobile_model_exports_and_matches_pytorch(deployed) -> None:
    from vireid.inference.embedder import TorchEmbedder
    from vireid.inference.loading import load_embedder

    pruned, fp32, _, output = deployed
    assert "max abs difference" in output and "int8 model" in output
    pixels = np.random.default_rng(1).integers(0, 256, (4, 3, 64, 32), dtype=np.uint8)
    a = load_embedder(fp32).embed_pixels(pixels, [0, 1, 0, 1])
    b = TorchEmbedder.from_checkpoint(pruned, amp="none").embed_pixels(pixels, [0, 1, 0, 1])  # ONNX: fp32
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_int8_model_follows_fp32_and_is_served_like_it(deployed, tmp_path) -> None:
    import onnx

    from vireid.inference.loading import load_embedder
    from vireid.errors import VireidError
    from vireid.export.onnx import read_metadata
    from vireid.export.quantize import quantize_model_file

    _, fp32, int8_path, _ = deployed
    meta = read_metadata(int8_path)
    assert meta["precision"] == "int8" and json.loads(meta["input_size"]) == [64, 32]
    quant = json.loads(meta["quantization"])
    assert quant["format"] == "QDQ" and quant["calibration_images"] + quant["check_images"] == 48
    assert quant["mean_cosine"] > 0.95
    assert json.loads(meta["pruning"])["amount"] == pytest.approx(0.5)
    ops = {n.op_type for n in onnx.load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8, reference = load_embedder(int8_path), load_embedder(fp32)
    assert int8.precision == "int8" and int8.dim == reference.dim and int8.input_size == reference.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (6, 3, 64, 32), dtype=np.uint8)
    a, b = int8.embed_pixels(pixels, [0, 1] * 3), reference.embed_pixels(pixels, [0, 1] * 3)
    assert np.isfinite(a).all() and np.all(np.sum(a * b, axis=1) > 0.8)
    with pytest.raises(VireidError, match="already int8"):
        quantize_model_file(int8_path, tmp_path / "twice.onnx", images=8)


def test_calibration_images_are_training_images_of_both_modalities(deployed) -> None:
    from vireid.data.build import prepare_dataset
    from vireid.inference.loading import load_embedder
    from vireid.export.quantize import calibration_batches, calibration_images, calibration_records

    _, fp32, _, _ = deployed
    cfg = load_embedder(fp32).config  # the training config travels inside the ONNX file
    pixels, codes = calibration_images(cfg, 20, seed=3)
    assert pixels.shape == (20, 3, 64, 32) and pixels.dtype == np.uint8
    assert (codes == 0).sum() == 10 and (codes == 1).sum() == 10
    assert np.array_equal(calibration_images(cfg, 20, seed=3)[0], pixels)  # seeded draw
    dataset = prepare_dataset(cfg.data, progress=False)
    records = calibration_records(cfg, 20, seed=3)
    assert {r.path for r in records} <= {r.path for r in dataset.train}  # training images only
    assert not {r.orig_pid for r in records} & {r.orig_pid for r in dataset.test}
    feeds = calibration_batches(pixels, codes, [0.5] * 3, [0.25] * 3, batch_size=4)
    assert all(len(set(f["modalities"].tolist())) == 1 for f in feeds)  # one modality per batch
    assert [int(f["modalities"][0]) for f in feeds[:2]] == [0, 1]  # the branches alternate
    assert {len(f["modalities"]) for f in feeds} == {4}  # one batch size (the histogram calibrators need it)
    assert sum(len(f["modalities"]) for f in feeds) == 24  # each modality's last 2 completed with its first 2
    expected = (pixels[codes == 0][0, 0, 0, 0] / 255 - 0.5) / 0.25
    np.testing.assert_allclose(feeds[0]["images"][0, 0, 0, 0], expected, rtol=1e-5)


def test_quantize_cli(deployed, tmp_path) -> None:
    _, fp32, _, _ = deployed
    result = CliRunner().invoke(app, ["quantize", str(fp32), "--out", str(tmp_path / "q.onnx"), "--images", "16",
                                      "--calibration", "percentile", "--per-tensor"])
    assert result.exit_code == 0, result.output
    assert "int8 model" in result.output and (tmp_path / "q.onnx").is_file()
    assert (tmp_path / "q.onnx").stat().st_size < fp32.stat().st_size
    bad = CliRunner().invoke(app, ["quantize", str(fp32), "--out", str(tmp_path / "r.onnx"), "--calibration", "kl"])
    assert bad.exit_code != 0 and "calibration method" in str(bad.exception)
    missing = CliRunner().invoke(app, ["quantize", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "s.onnx")])
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception)
