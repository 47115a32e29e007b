"""ONNX export: parity with PyTorch, metadata, the onnxruntime Embedder, ``vireid eval model.onnx``, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides  # noqa: E402
from vireid.errors import VireidError

VERIFICATION = {"metric": "cosine", "threshold": 0.42, "eer": 0.2, "far_target": 0.01, "tar_at_far": 0.3,
                "split": "val", "num_pairs": 10}


def make_checkpoint(root: Path, out: Path, arch: str = "resnet10t", **extra) -> Path:
    """A vireid checkpoint (untrained weights, non-trivial BN statistics) of a tiny two-stream model."""
    from vireid.config import load_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model

    cfg = load_config(REPO / "configs" / "baseline_synth.yaml",
                      tiny_overrides(root, out, **{"model.params.backbone": arch, **extra}))
    torch.manual_seed(0)
    model = build_model(cfg, 12).eval()
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
    ckpt = {"format": "vireid-checkpoint-1", "config": cfg.to_dict(), "model": model.state_dict(),
            "num_classes": 12, "embed_dim": model.embed_dim, "verification": VERIFICATION}
    path = out / "run" / "best.pt"
    atomic_torch_save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def exported(tiny_synth_root, tmp_path_factory):
    from vireid.export.onnx import export_checkpoint

    out = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(tiny_synth_root, out)
    report = export_checkpoint(ckpt, out / "model.onnx")
    return ckpt, out / "model.onnx", report


def test_export_matches_pytorch_and_carries_metadata(exported) -> None:
    from vireid.export.onnx import read_metadata

    ckpt, path, report = exported
    assert path.is_file() and report.size_bytes == path.stat().st_size
    assert report.max_abs_diff <= 1e-4 and set(report.checks) == {"mixed", "visible", "infrared"}
    meta = read_metadata(path)
    assert meta["format"] == "vireid-onnx-1" and meta["precision"] == "fp32"
    assert json.loads(meta["input_size"]) == [64, 32] and int(meta["embed_dim"]) == report.embed_dim
    assert json.loads(meta["config"])["model"]["params"]["backbone"] == "resnet10t"
    assert json.loads(meta["verification"])["threshold"] == pytest.approx(0.42)


def test_graph_has_dynamic_batch_and_both_inputs(exported) -> None:
    import onnx

    _, path, _ = exported
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    inputs = {i.name: i for i in model.graph.input}
    assert set(inputs) == {"images", "modalities"}
    batch = inputs["images"].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic batch axis
    ops = {n.op_type for n in model.graph.node}
    assert "If" in ops  # modality routing; BatchNorm of the convolutions folded away
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) <= 1  # only the BNNeck


def test_onnx_embedder_equals_torch_embedder(exported) -> None:
    from vireid.inference.embedder import TorchEmbedder
    from vireid.inference.loading import load_embedder
    from vireid.inference.onnx_embedder import OnnxEmbedder

    ckpt, path, _ = exported
    onnx_embedder = load_embedder(path)
    assert isinstance(onnx_embedder, OnnxEmbedder)
    torch_embedder = TorchEmbedder.from_checkpoint(ckpt, amp="none")  # ONNX runs fp32: compare with fp32
    assert onnx_embedder.input_size == torch_embedder.input_size and onnx_embedder.dim == torch_embedder.dim
    assert onnx_embedder.verification["threshold"] == pytest.approx(0.42)
    assert onnx_embedder.config.model.params["backbone"] == "resnet10t"
    pixels = np.random.default_rng(0).integers(0, 256, (7, 3, 64, 32), dtype=np.uint8)
    modalities = ["visible", "infrared", "infrared", "visible", "thermal", "visible", "infrared"]
    for batch in (1, 3, 7):  # dynamic batch sizes, mixed and single-modality batches
        a = onnx_embedder.embed_pixels(pixels, modalities, batch_size=batch)
        b = torch_embedder.embed_pixels(pixels, modalities, batch_size=batch)
        assert a.shape == (7, onnx_embedder.dim)
        np.testing.assert_allclose(a, b, atol=2e-5)
    # the graph itself, given a mixed batch, runs both branches and selects per sample
    from vireid.inference.onnx_embedder import make_session

    session = make_session(path)
    x = onnx_embedder.preprocess(torch.as_tensor(pixels)).numpy()
    codes = np.array([0, 1, 1, 0, 1, 0, 1])
    raw = session.run(["embeddings"], {"images": x, "modalities": codes})[0]
    with torch.no_grad():
        expected = torch_embedder.model(torch.from_numpy(x), torch.from_numpy(codes)).numpy()
    np.testing.assert_allclose(raw, expected, atol=1e-4)


def test_vireid_eval_on_the_onnx_file_matches_the_checkpoint(exported) -> None:
    from vireid.workflows.train_run import evaluate_checkpoint

    ckpt, path, _ = exported
    from_onnx = evaluate_checkpoint(path, protocols=("sysu-all-single",), progress=False, quiet=True)
    from_torch = evaluate_checkpoint(ckpt, protocols=("sysu-all-single",), progress=False, quiet=True,
                                     verification=False, amp="none")  # the ONNX file runs fp32
    a, b = from_onnx[0].to_dict(), from_torch[0].to_dict()
    for key in ("mAP", "mINP"):
        assert a["mean"][key] == pytest.approx(b["mean"][key], abs=1e-3)
    np.testing.assert_allclose(a["cmc"], b["cmc"], atol=1e-3)
    written = json.loads(path.with_name("model.test_results.json").read_text())
    assert written["results"][0]["name"] == "sysu-all-single"
    assert written["verification"]["threshold"] == pytest.approx(0.42)
    assert 0.0 <= written["verification"]["tar"] <= 1.0


def test_a_graph_that_disagrees_with_pytorch_is_refused(exported, monkeypatch, tmp_path) -> None:
    import vireid.export.onnx as onnx_export

    import onnx

    ckpt, path, _ = exported
    monkeypatch.setattr(onnx_export, "trace_to_onnx", lambda *a, **k: onnx.load(str(path)))  # skip re-tracing
    monkeypatch.setattr(onnx_export, "compare_with_torch", lambda *a, **k: {"mixed": 0.5})
    with pytest.raises(VireidError, match="differs from PyTorch"):
        onnx_export.export_checkpoint(ckpt, tmp_path / "bad.onnx")
    assert not any(tmp_path.iterdir())  # nothing left behind


def test_export_cli_errors_are_one_clear_line(exported, tmp_path) -> None:
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers every command)
    from vireid.cli import app

    ckpt, _, _ = exported
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and "not supported" in str(result.exception)
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.bin")])
    assert result.exit_code != 0 and ".onnx" in str(result.exception)


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv2_100"])
def test_mobile_backbones_in_the_two_stream_model(arch: str) -> None:
    """MobileNetV2/V3 split into stem + 4 stages by output stride (mobilenetv3_small has no block at
    stride 2: its stem is the whole first stage) and route each modality through its own stem."""
    from vireid.modeling.backbones.two_stream import TwoStreamBackbone

    backbone = TwoStreamBackbone(arch, specific_stages=2, last_stride=2).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        sizes = []
        y = backbone.forward_specific(x, torch.tensor([0, 1]))
        sizes.append(y.shape[-2:])
        for stage in range(2, 5):
            y = backbone.forward_shared(y, stage, stage + 1)
            sizes.append(y.shape[-2:])
    assert [tuple(s) for s in sizes] == [(16, 8), (8, 4), (4, 2), (2, 1)]  # strides 4, 8, 16, 32
    assert y.shape[1] == backbone.out_channels == backbone.stage_channels[-1]


def test_mobile_configs_build() -> None:
    from vireid.config import load_config
    from vireid.engine.trainer import build_model, validate_config
    from vireid.modeling.flops import count_parameters

    for name, arch in (("mobile_synth", "efficientnet_lite0"), ("mobile_sysu", "efficientnet_lite0")):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        validate_config(cfg)
        assert cfg.model.params["backbone"] == arch
        model = build_model(cfg, 4)  # mobile_sysu loads the packaged ImageNet weights
        assert count_parameters(model) < 4_000_000
