"""Mixed precision (vireid.engine.precision): the CPU bf16 detection, what ``train.amp`` resolves to,
the one start-up line, and bf16 inference against fp32 on a trained model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import vireid.engine.precision as precision_module
from conftest import REPO
from vireid.config import load_config
from vireid.engine.precision import announce_precision, cpu_bf16_flags, inference_amp, resolve_precision
from vireid.errors import ConfigError

# /proc/cpuinfo excerpts (flags lines shortened) of the three kinds of x86 CPU
SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
                   "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
# a model name that mentions a flag is not a flag
TRICKY = "model name\t: amx_bf16 marketing name\nflags\t\t: fpu sse2 avx2\n"


def test_bf16_units_are_read_from_the_cpu_flags():
    assert cpu_bf16_flags(SAPPHIRE_RAPIDS) == ("amx_bf16", "avx512_bf16")
    assert cpu_bf16_flags(ZEN4) == ("avx512_bf16",)
    assert cpu_bf16_flags(ZEN3) == ()
    assert cpu_bf16_flags(TRICKY) == ()
    assert cpu_bf16_flags("") == ()


@pytest.mark.parametrize("cpuinfo, name", [(SAPPHIRE_RAPIDS, "bf16"), (ZEN4, "bf16"), (ZEN3, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(cpuinfo, name):
    p = resolve_precision("auto", "cpu", cpuinfo=cpuinfo)
    assert p.name == name
    assert p.dtype == (torch.bfloat16 if name == "bf16" else None)
    assert p.channels_last == (name == "bf16")  # NHWC with autocast; fp32 keeps NCHW unless asked
    assert not p.grad_scaler
    assert ("has bf16 matrix units" in p.reason) == (name == "bf16")


def test_explicit_settings_and_errors_on_cpu():
    forced = resolve_precision("bf16", "cpu", cpuinfo=ZEN3)
    assert forced.dtype == torch.bfloat16 and "much slower" in forced.reason
    assert resolve_precision("bf16", "cpu", cpuinfo=SAPPHIRE_RAPIDS).reason == "train.amp=bf16"
    fp32 = resolve_precision("none", "cpu", cpuinfo=SAPPHIRE_RAPIDS)
    assert fp32.dtype is None and not fp32.channels_last
    assert resolve_precision("none", "cpu", channels_last=True).channels_last
    with pytest.raises(ConfigError, match="fp16, which needs a CUDA device; on CPU use auto, bf16 or none"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match=r"'train.amp' must be one of auto, none, bf16, fp16, got 'fp8'"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ConfigError, match=r"'train.amp' must be one of auto, none, bf16, fp16"):
        load_config(None, ["train.amp=fp8"])


def test_gpu_recipes_evaluate_on_a_cpu_in_the_cpus_own_precision():
    """A checkpoint trained with amp bf16/fp16 (GPU recipes) is evaluated on a CPU with ``auto``:
    no fp16 error, no slow bf16 without bf16 units; explicit settings and auto/none are kept."""
    assert inference_amp("fp16", "cpu") == "auto" and inference_amp("bf16", "cpu") == "auto"
    assert inference_amp("none", "cpu") == "none" and inference_amp("auto", "cpu") == "auto"
    assert resolve_precision(inference_amp("fp16", "cpu"), "cpu", cpuinfo=ZEN3).name == "fp32"
    assert resolve_precision(inference_amp("bf16", "cpu"), "cpu", cpuinfo=SAPPHIRE_RAPIDS).name == "bf16"


def test_bf16_autocast_really_runs_in_bf16_on_cpu():
    p = resolve_precision("bf16", "cpu", cpuinfo=ZEN3)
    conv = p.prepare_model(torch.nn.Conv2d(3, 4, 3))
    x = p.prepare_input(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with p.autocast():
        y = conv(x)
    assert y.dtype == torch.bfloat16 and conv.weight.dtype == torch.float32


def test_auto_is_the_default_and_the_choice_is_printed_once(capsys, monkeypatch):
    assert load_config(None, []).train.amp == "auto"
    assert load_config(REPO / "configs" / "baseline_synth.yaml").train.amp == "auto"
    monkeypatch.setattr(precision_module, "_announced", set())
    p = resolve_precision("auto", "cpu", cpuinfo=SAPPHIRE_RAPIDS)
    announce_precision(p)
    announce_precision(resolve_precision("auto", "cpu", cpuinfo=SAPPHIRE_RAPIDS))
    out = capsys.readouterr().out
    assert out.count("precision:") == 1
    assert "precision: bf16 autocast + channels_last on cpu (auto: the CPU has bf16 matrix units (amx_bf16, avx512_bf16))" in out
    announce_precision(resolve_precision("auto", "cpu", cpuinfo=ZEN3), enabled=False)  # other ranks stay quiet
    assert capsys.readouterr().out == ""


def test_trainer_prints_its_precision_at_start(tiny_synth_root, tmp_path, capsys, monkeypatch):
    from conftest import tiny_cnn, tiny_overrides
    from vireid.engine.trainer import Trainer

    monkeypatch.setattr(precision_module, "_announced", set())
    cfg = tiny_cnn(load_config(REPO / "configs" / "baseline_synth.yaml",
                               tiny_overrides(tiny_synth_root, tmp_path, **{"train.amp": "bf16", "train.epochs": 1})))
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.close()
    assert re.search(r"^precision: bf16 autocast \+ channels_last on cpu \(train\.amp=bf16", capsys.readouterr().out, re.M)
    cfg.train.amp = "fp16"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        Trainer(cfg, tmp_path / "run-fp16")
    assert not (tmp_path / "run-fp16").exists()  # refused before any run folder or data work


def test_bf16_inference_matches_fp32_features_and_map(tiny_trained_run):
    """eval/extract/search/serve in bf16: per-image cosine >= 0.999 against fp32, mAP within 0.5 points."""
    from vireid.data.build import build_image_cache, modality_codes, prepare_dataset
    from vireid.inference.loading import load_embedder
    from vireid.workflows.evaluate_model import evaluate_features
    from vireid.inference.extract import extract_features
    from vireid.engine.trainer import load_model_from_checkpoint

    model, cfg, _ = load_model_from_checkpoint(tiny_trained_run)
    dataset = prepare_dataset(cfg.data, progress=False)
    pool = list(dataset.test)
    cache = build_image_cache(pool, cfg.data, progress=False)
    codes = modality_codes(pool)
    fp32 = extract_features(model, cache, codes, precision=resolve_precision("none", "cpu"))
    bf16 = extract_features(model, cache, codes, precision=resolve_precision("bf16", "cpu"))
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16, dim=1)
    assert cosine.min() >= 0.999, float(cosine.min())
    assert not torch.equal(fp32, bf16)  # bf16 really ran
    names = ["sysu-all-single"]
    m32 = evaluate_features(fp32, dataset, names, trials=2)[0].mean["mAP"]
    m16 = evaluate_features(bf16, dataset, names, trials=2)[0].mean["mAP"]
    assert abs(m32 - m16) <= 0.5, (m32, m16)

    # the Embedder (extract, search, serve, verify) takes the same setting, default the run's train.amp
    images = cache[list(range(8))]
    e16 = load_embedder(tiny_trained_run, amp="bf16")
    assert e16.precision.dtype == torch.bfloat16
    e32 = load_embedder(tiny_trained_run, amp="none")
    a, b = e32.embed_pixels(images, codes[:8]), e16.embed_pixels(images, codes[:8])
    assert (a * b).sum(axis=1).min() >= 0.999
    assert load_embedder(tiny_trained_run).precision == resolve_precision(cfg.train.amp, "cpu")
    from vireid.inference.embedder import TorchEmbedder

    cfg.train.amp = "fp16"  # a GPU run's checkpoint, embedded on this CPU
    assert TorchEmbedder(model, cfg).precision == resolve_precision("auto", "cpu")


def test_extract_cli_takes_the_amp_setting(tiny_trained_run, tiny_synth_root, tmp_path):
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401
    from vireid.cli import app
    from vireid.retrieval.features import FeatureSet

    runner = CliRunner()
    feats = {}
    for amp in ("none", "bf16"):
        result = runner.invoke(app, ["extract", "-c", str(tiny_trained_run), "-i", str(tiny_synth_root), "-o",
                                     str(tmp_path / amp), "--split", "test", "--modality", "infrared", "--amp", amp])
        assert result.exit_code == 0, result.output
        feats[amp] = FeatureSet.load(tmp_path / amp).features
    assert feats["none"].shape == feats["bf16"].shape and len(feats["none"]) > 0
    assert (feats["none"] * feats["bf16"]).sum(axis=1).min() >= 0.999
    assert not np.array_equal(feats["none"], feats["bf16"])
    result = runner.invoke(app, ["extract", "-c", str(tiny_trained_run), "-i", str(tiny_synth_root), "-o",
                                 str(tmp_path / "fp16"), "--split", "test", "--modality", "infrared", "--amp", "fp16"])
    assert isinstance(result.exception, ConfigError) and "fp16, which needs a CUDA device" in str(result.exception)


def test_unsafe_bf16_convolution_shapes_are_recognised():
    from vireid.engine.precision import bf16_conv_is_unsafe

    strided = torch.nn.Conv2d(128, 256, 3, stride=2, padding=1)
    assert bf16_conv_is_unsafe(strided, 4, 2)  # -> 2x1: oneDNN's bf16 kernel is wrong here (AMX Xeon)
    assert bf16_conv_is_unsafe(strided, 16, 2) and bf16_conv_is_unsafe(strided, 2, 16)
    assert not bf16_conv_is_unsafe(strided, 8, 4)  # -> 4x2: fine (the demo's 64x32 input gives this)
    assert not bf16_conv_is_unsafe(torch.nn.Conv2d(128, 256, 3, padding=1), 4, 1)  # stride 1
    assert not bf16_conv_is_unsafe(torch.nn.Conv2d(128, 256, 1, stride=2), 4, 2)  # 1x1 kernel


def test_bf16_guard_runs_only_the_unsafe_convolutions_in_fp32_and_matches_fp32():
    """A ResNet stage-3 convolution at a 32x16 input (4x2 -> 2x1, stride 2) under CPU bf16 autocast: on an
    AMX CPU oneDNN's bf16 kernel returned values off by > 0.1 or NaN here; the guard computes it in fp32."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(128, 256, 3, stride=2, padding=1, bias=False)
    precision = resolve_precision("bf16", "cpu")
    model = precision.prepare_model(torch.nn.Sequential(conv))
    unsafe = torch.rand(3, 128, 4, 2)
    safe = torch.rand(3, 128, 8, 4)
    with torch.no_grad():
        reference = torch.nn.functional.conv2d(unsafe, conv.weight, None, 2, 1)
        with precision.autocast():
            out_unsafe = model(precision.prepare_input(unsafe))
            out_safe = model(precision.prepare_input(safe))
    assert out_unsafe.dtype == torch.float32 and out_safe.dtype == torch.bfloat16  # only the unsafe call left bf16
    assert torch.allclose(out_unsafe, reference, atol=1e-5)
    precision.prepare_model(model)  # preparing twice wraps once
    assert model[0].forward.__func__.__name__ == "_guarded_conv_forward"


def test_an_untrained_two_stream_resnet_at_32x16_embeds_finite_features_in_bf16():
    """Before the guard, a freshly initialised two-stream ResNet-10-T at 32x16 gave NaN embeddings in bf16 on an AMX
    CPU for half of the initialisations tried (seeds 0 and 2 of 0-3) -- its third stage is the unsafe 4x2 -> 2x1
    convolution; fp32 gave finite ones."""
    from vireid.config import load_config
    from vireid.engine.trainer import build_model

    cfg = load_config("configs/baseline_synth.yaml", ["data.height=32", "data.width=16"])
    precision = resolve_precision("bf16", "cpu")
    for seed in range(4):
        torch.manual_seed(seed)
        model = build_model(cfg, 5).eval()
        images, modalities = torch.rand(6, 3, 32, 16), torch.tensor([0, 1] * 3)
        with torch.no_grad():
            fp32 = model(images, modalities)
            precision.prepare_model(model)
            with precision.autocast():
                bf16 = model(precision.prepare_input(images), modalities).float()
        assert torch.isfinite(bf16).all(), seed
        assert torch.nn.functional.cosine_similarity(fp32, bf16, dim=1).min() >= 0.999, seed


@pytest.mark.parametrize("kernel,stride,padding,dilation,bias,size", [
    (3, 1, 1, 1, False, (4, 2)), (3, 2, 1, 1, True, (8, 4)), (1, 1, 0, 1, False, (4, 2)), (1, 2, 0, 1, True, (7, 3)),
    (3, 1, 2, 2, False, (5, 3)), ((3, 1), (2, 1), (1, 0), 1, True, (6, 4)), (5, 3, 2, 1, False, (9, 7))])
def test_conv_as_matmul_is_the_convolution_forward_and_backward(kernel, stride, padding, dilation, bias, size):
    from vireid.engine.precision import conv2d_as_matmul

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    x = torch.randn(3, 6, *size, dtype=torch.float64, requires_grad=True)
    ref = conv(x)
    out = conv2d_as_matmul(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, *conv.parameters()], grad)
    grads = torch.autograd.grad(out, [x, *conv.parameters()], grad)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-12)


def test_bf16_training_calls_on_small_maps_run_as_a_matmul_and_inference_stays_onednn(monkeypatch):
    """Under CPU bf16 autocast a training call whose output map has <= 16 pixels goes through conv2d_as_matmul
    (faster on AMX; bench_train.py), gives oneDNN's values to bf16 rounding and the same gradients; a larger map,
    or a call without gradients, keeps oneDNN's convolution."""
    import vireid.engine.precision as prec

    calls = []
    real = prec.conv2d_as_matmul
    monkeypatch.setattr(prec, "conv2d_as_matmul", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.manual_seed(0)
    precision = resolve_precision("bf16", "cpu")
    conv = torch.nn.Conv2d(64, 96, 3, padding=1, bias=False)
    reference = torch.nn.Conv2d(64, 96, 3, padding=1, bias=False)
    reference.load_state_dict(conv.state_dict())
    model = precision.prepare_model(torch.nn.Sequential(conv))
    reference = reference.to(memory_format=torch.channels_last)
    small = precision.prepare_input(torch.randn(8, 64, 4, 4))
    with precision.autocast():
        out = model(small)
        ref = reference(small)
    assert calls == [(8, 64, 4, 4)] and out.dtype == torch.bfloat16
    assert (out.float() - ref.float()).abs().max() <= 0.02 * ref.float().abs().max()
    out.float().square().sum().backward()
    ref.float().square().sum().backward()
    assert conv.weight.grad.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(conv.weight.grad.flatten(), reference.weight.grad.flatten(), dim=0)
    assert cos > 0.999
    with precision.autocast():
        model(precision.prepare_input(torch.randn(8, 64, 8, 4)))  # 32 output pixels: oneDNN
        with torch.no_grad():
            model(small)  # inference: oneDNN
    assert calls == [(8, 64, 4, 4)]
    unsafe = precision.prepare_input(torch.randn(2, 64, 4, 2))
    strided = precision.prepare_model(torch.nn.Conv2d(64, 32, 3, stride=2, padding=1))
    with precision.autocast():
        trained = strided(unsafe)  # 2x1 output: oneDNN's bf16 kernel is wrong here; the matmul is not
    expected = torch.nn.functional.conv2d(unsafe, strided.weight, strided.bias, 2, 1)
    assert (trained.float() - expected).abs().max() <= 0.02 * expected.abs().max()


def test_vireid_commands_flush_subnormals_in_every_torch_thread():
    """Subnormal weights and Adam moments slowed the demo's training from ~950 to ~580 img/s (flush_denormals'
    docstring); `vireid` flushes them before torch's thread pool starts, so its worker threads flush too. A
    multi-threaded product over subnormal inputs is then exactly zero; without the flush it is not."""
    import subprocess
    import sys

    probe = ("import torch; torch.set_num_threads(2); x = torch.full((1 << 20,), 1e-39); "
             "print(float((x * 1.5).abs().max()))")
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert float(plain.stdout) > 0
    flushed = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['vireid', '--help']\n"
                              "import vireid.cli, torch\n"
                              "try:\n    vireid.cli.main()\nexcept SystemExit:\n    pass\n" + probe.replace("; ", "\n")],
                             capture_output=True, text=True, check=True)
    assert float(flushed.stdout.strip().splitlines()[-1]) == 0.0
