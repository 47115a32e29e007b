"""Mixed precision: which autocast dtype (and memory format) training and inference use.

``train.amp`` is ``auto`` (the default), ``none`` (fp32), ``bf16`` or ``fp16``; every command that runs
a model (``train``, ``eval``, ``extract``, ``search``, ``serve``, validation during training) resolves
it with :func:`resolve_precision` on its device:

* **CPU**: ``auto`` picks bf16 autocast when the CPU has bf16 matrix units -- the ``amx_bf16``
  (Intel AMX, Sapphire Rapids and later) or ``avx512_bf16`` (Cooper Lake, AMD Zen 4 and later)
  flags of ``/proc/cpuinfo`` -- and fp32 elsewhere. Without those units oneDNN has no bf16
  convolution kernels and PyTorch falls back to its reference convolution: measured on an AVX2-only
  AMD EPYC, one training step of a ResNet-10-T at 64x32 took 13 s in bf16 against 0.46 s in fp32,
  so ``auto`` never picks bf16 there (``train.amp=bf16`` still forces it). fp16 autocast is
  CUDA-only here.
* **CUDA**: ``auto`` picks bf16 where the GPU supports it (``torch.cuda.is_bf16_supported()``,
  Ampere and later) and fp16 with a gradient scaler elsewhere.

Under autocast the model and its input batches are ``channels_last`` (NHWC): both oneDNN's bf16/AMX
kernels and cuDNN's tensor-core kernels want that layout (PyTorch's tuning guides for CPU and CUDA
training). In fp32 on CPU it is off unless ``train.channels_last`` asks for it (on the AVX2 EPYC
above, fp32 with channels_last was slower). Loss distances stay fp32 regardless (the losses cast).

The choice is printed once per process (:func:`announce_precision`).
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass

import torch

from vireid._compat import BF16_CPU_FLAGS, cpu_bf16_flags  # noqa: F401  (re-exported: evaluation uses them too)
from vireid.errors import ConfigError

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_announced: set[tuple] = set()


def cpu_has_bf16_units(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16) and oneDNN is built in."""
    return bool(cpu_bf16_flags(cpuinfo)) and torch.backends.mkldnn.is_available()


@dataclass(frozen=True)
class Precision:
    """A resolved ``train.amp``: ``name`` (fp32, bf16, fp16), the autocast ``dtype`` (None: fp32),
    the ``device_type`` it runs on, whether tensors are ``channels_last``, and ``reason`` (printed)."""

    name: str
    dtype: torch.dtype | None
    device_type: str
    channels_last: bool
    reason: str

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs loss scaling (its 5-bit exponent underflows small gradients); bf16 does not."""
        return self.name == "fp16"

    def autocast(self):
        """The autocast context of this precision (a no-op context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in this precision's memory format (weights stay fp32; autocast casts per op).

        Under CPU bf16 autocast, every convolution is also routed by :func:`guard_cpu_bf16_convolutions`
        (small training maps as one matrix product, which is faster on AMX; fp32 for the family of small output
        shapes where oneDNN's bf16 convolution returns wrong values)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.device_type == "cpu" and self.dtype == torch.bfloat16:
            guard_cpu_bf16_convolutions(model)
        return model

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> str:
        layout = " + channels_last" if self.channels_last else ""
        kind = "fp32" if self.dtype is None else f"{self.name} autocast"
        return f"precision: {kind}{layout} on {self.device_type} ({self.reason})"


def _conv_output_map(stride, padding, dilation, kernel, height: int, width: int) -> tuple[int, int]:
    """(height, width) of a convolution's output on a ``height`` x ``width`` input (numeric padding)."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip((height, width), kernel, stride, padding, dilation))


def bf16_conv_is_unsafe(conv: torch.nn.Conv2d, height: int, width: int) -> bool:
    """Whether oneDNN's CPU bf16 convolution may return wrong values for ``conv`` on an input of ``height`` x
    ``width``: a strided convolution with a kernel wider than 1 whose output is one pixel wide or high.

    Measured with torch 2.13.0+cpu on an AMX Xeon: such convolutions (e.g. a 3x3, stride-2 conv from a 4x2 to
    a 2x1 map, what a ResNet's third stage does at a 32x16 input) return values off by more than 0.1, or NaN,
    for every channel count tried, in NCHW and NHWC alike, while fp32 is exact; every other shape of a sweep
    over 1-16 x 1-8 inputs, strides 1-3 and kernels 1/3/5 agreed with fp32. oneDNN has fixed bugs of this kind
    in its AMX convolution kernels (uxlfoundation/oneDNN pull request 5494: stride larger than the kernel
    overwrote the input buffer); this rule is deliberately a little wider than the failures seen.
    """
    if isinstance(conv.padding, str):  # "same"/"valid": size from the module's own rule is not needed here
        return max(conv.stride) > 1 and max(conv.kernel_size) > 1 and min(height, width) <= max(conv.kernel_size)
    out = _conv_output_map(conv.stride, conv.padding, conv.dilation, conv.kernel_size, height, width)
    return max(conv.stride) > 1 and max(conv.kernel_size) > 1 and min(out) == 1


#: largest output map (height x width, pixels) whose bf16 *training* convolution runs as one matrix product
#: (:func:`conv2d_as_matmul`) instead of oneDNN's convolution. Measured with torch 2.13.0+cpu on a 2-core AMX Xeon,
#: bf16 autocast + channels_last, forward + backward of one convolution at batch 64 (docs/benchmarks.md, "Training
#: throughput"; benchmarks/bench_train.py times the whole step): a 3x3 512->512 convolution on a 4x2 map (the demo
#: ResNet-10-T's last stage) 24-27 ms in oneDNN against 8.7-8.8 ms as a matrix product; 3x3 256->512 at 4x2 10.2 ->
#: 4.2 ms; 3x3 256->256 at 4x4 / 8x2 5.5 / 7.1 -> 3.9 / 4.1 ms; 1x1 256->512 at 4x2 1.5 -> 0.75 ms. At 32 output
#: pixels and more oneDNN wins (3x3 128->128 at 8x4: 2.5 against 3.0 ms; at 16x8: 1.9 against 4.6 ms). oneDNN's
#: weight-gradient kernel is slow when the reduction over batch x pixels is short; one GEMM over the gathered
#: patches keeps the AMX tiles full. Forward-only calls (evaluation, extraction) keep oneDNN: there the matrix
#: product is not faster for every shape (3x3 256->256 at 4x4: 0.75 against 1.07 ms).
MATMUL_CONV_MAX_PIXELS = 16


def conv2d_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """A zero-padded, ungrouped 2-D convolution as one matrix product over the gathered patches (im2col in NHWC).

    The same function as ``torch.nn.functional.conv2d`` (autograd differentiates it; under autocast the product
    runs in the autocast dtype with fp32 accumulation). The patches are gathered from an NHWC view, so the result
    comes back ``channels_last``. Used for small output maps, where it trains faster than oneDNN's bf16
    convolution (see :data:`MATMUL_CONV_MAX_PIXELS`); it is also correct for the shapes
    :func:`bf16_conv_is_unsafe` names, since no oneDNN convolution kernel runs."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = _conv_output_map(stride, padding, dilation, (kh, kw), h, w)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    xh = x.to(dtype).permute(0, 2, 3, 1)
    if ph or pw:
        xh = torch.nn.functional.pad(xh, (0, 0, pw, pw, ph, ph))
    patches = [xh[:, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw, :]
               for i in range(kh) for j in range(kw)]
    cols = patches[0] if len(patches) == 1 else torch.cat(patches, dim=-1)
    out = cols.reshape(n * ho * wo, -1) @ weight.permute(0, 2, 3, 1).reshape(c_out, -1).t()
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.view(n, ho, wo, c_out).permute(0, 3, 1, 2)


def _matmul_conv_applies(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether this bf16 training call of ``conv`` is one :func:`conv2d_as_matmul` does faster (see
    :data:`MATMUL_CONV_MAX_PIXELS`): gradients on, ungrouped, zero padding given as numbers, a small output map."""
    if not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)):
        return False
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    ho, wo = _conv_output_map(conv.stride, conv.padding, conv.dilation, conv.kernel_size, x.shape[-2], x.shape[-1])
    return ho * wo <= MATMUL_CONV_MAX_PIXELS


def _guarded_conv_forward(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and torch.is_autocast_enabled("cpu"):
        if _matmul_conv_applies(self, x):
            return conv2d_as_matmul(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        if bf16_conv_is_unsafe(self, x.shape[-2], x.shape[-1]):
            with torch.autocast("cpu", enabled=False):
                return type(self).forward(self, x.float())
    return type(self).forward(self, x)


def guard_cpu_bf16_convolutions(model: torch.nn.Module) -> torch.nn.Module:
    """Route every ``nn.Conv2d`` of ``model`` per call under CPU bf16 autocast: training calls with a small output
    map run as one matrix product (:func:`conv2d_as_matmul`, faster on AMX); other calls whose shape
    :func:`bf16_conv_is_unsafe` names run in fp32 (oneDNN's bf16 kernel gives wrong values there); all others stay
    oneDNN bf16. A shape check per call, nothing else; applying it twice changes nothing. Returns ``model``."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and not getattr(module, "_vireid_bf16_guard", False):
            module.forward = types.MethodType(_guarded_conv_forward, module)
            module._vireid_bf16_guard = True
    return model


def resolve_precision(amp: str, device: torch.device | str, channels_last: bool = False,
                      cpuinfo: str | None = None) -> Precision:
    """The :class:`Precision` that ``train.amp`` = ``amp`` means on ``device`` (see the module text).

    ``channels_last`` is ``train.channels_last`` (forces NHWC in fp32 too); ``cpuinfo`` replaces
    ``/proc/cpuinfo`` (tests).
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"config key 'train.amp' must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    device_type = torch.device(device).type
    if device_type == "cuda":
        if amp == "auto":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            reason = "auto: " + ("the GPU supports bf16" if name == "bf16" else "the GPU has no bf16, fp16 with loss scaling")
        elif amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("config key 'train.amp' is bf16 but this GPU does not support bf16; use fp16 or auto")
        else:
            name = "fp32" if amp == "none" else amp
            reason = f"train.amp={amp}"
    elif device_type == "cpu":
        flags = cpu_bf16_flags(cpuinfo)
        units = bool(flags) and torch.backends.mkldnn.is_available()
        if amp == "fp16":
            raise ConfigError("config key 'train.amp' is fp16, which needs a CUDA device; on CPU use auto, bf16 or none")
        if amp == "auto":
            name = "bf16" if units else "fp32"
            reason = (f"auto: the CPU has bf16 matrix units ({', '.join(flags)})" if units else
                      "auto: the CPU has no bf16 matrix units (no amx_bf16/avx512_bf16 flag); train.amp=bf16 forces bf16")
        elif amp == "bf16":
            name = "bf16"
            reason = "train.amp=bf16" + ("" if units else "; this CPU has no bf16 matrix units, so bf16 runs much slower than fp32")
        else:
            name, reason = "fp32", "train.amp=none"
    else:  # mps and others: fp32 unless asked
        if amp in ("bf16", "fp16"):
            raise ConfigError(f"config key 'train.amp' is {amp} but device {device_type} has no autocast support here; use none or auto")
        name, reason = "fp32", f"train.amp={amp}: fp32 on {device_type}"
    dtype = _DTYPES.get(name)
    return Precision(name=name, dtype=dtype, device_type=device_type,
                     channels_last=bool(channels_last) or dtype is not None, reason=reason)


def inference_amp(stored: str, device: torch.device | str) -> str:
    """The ``train.amp`` an evaluation of a checkpoint trained with ``stored`` uses when none is given.

    The stored setting where it runs well on ``device``; otherwise ``auto``. So a bf16/fp16 GPU recipe
    evaluated on a CPU uses the CPU's own choice (bf16 with bf16 units, fp32 without) instead of
    failing (fp16) or running the slow reference kernels (bf16 without units).
    """
    device_type = torch.device(device).type
    if stored in ("auto", "none"):
        return stored
    if device_type == "cuda":
        return stored if stored == "fp16" or torch.cuda.is_bf16_supported() else "auto"
    return "auto"


def announce_precision(precision: Precision, enabled: bool = True) -> None:
    """Print :meth:`Precision.describe` once per process (a second trainer or evaluation stays quiet)."""
    key = (precision.name, precision.device_type, precision.channels_last)
    if enabled and key not in _announced:
        _announced.add(key)
        print(precision.describe(), flush=True)


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on the CPU (flush-to-zero and denormals-are-zero); True where supported (x86).

    Why: arithmetic on subnormal floats (magnitude below 1.2e-38) takes the CPU's slow microcode path.
    Measured on the demo (2-core AMX Xeon, torch 2.13.0+cpu): after 40 epochs of Adam with L2 weight decay, 35 %
    of the last stage's convolution weights and 17 % of the optimizer state were subnormal, and training slowed
    from about 950 to about 580 images/s between epochs 20 and 40; an element-wise product over subnormal
    inputs took 12x the time of one over normal inputs. A subnormal weight or moment changes no result that
    matters, so every vireid command flushes them (:func:`vireid.workflows.process.prepare_process`, called by
    :func:`vireid.cli.main`; and :class:`vireid.engine.trainer.Trainer`
    for library use).

    The setting is per thread: worker threads created afterwards inherit it (POSIX threads inherit the
    floating-point environment), threads of an already started OpenMP pool keep theirs. So call it before
    the first parallel operation of the process, as the CLI does."""
    return bool(torch.set_flush_denormal(True))


__all__ = ["AMP_CHOICES", "BF16_CPU_FLAGS", "Precision", "announce_precision", "cpu_bf16_flags",
           "cpu_has_bf16_units", "flush_denormals", "inference_amp", "resolve_precision"]
