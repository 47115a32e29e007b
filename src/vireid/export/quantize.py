"""int8 post-training static quantization of an exported model with onnxruntime.

Why this route (and not ``torch.ao``): on an x86 CPU with AVX-512 VNNI / AMX-int8 (as here),
onnxruntime's MLAS kernels run int8 QDQ convolutions much faster than its fp32 ones (a
two-stream ResNet-18 at 256x128: 55 -> 14 ms per image, batch 1, one thread; depthwise
MobileNets gain less, their depthwise layers being memory-bound; docs/benchmarks.md,
"Lightweight deployment", has the measured table), the quantized model is an ordinary ONNX
file that the :class:`~vireid.inference.onnx_embedder.OnnxEmbedder` serves unchanged (``vireid eval``,
search, the web service), and nothing new needs installing. ``torch.ao`` eager/FX static
quantization is being retired in favour of torchao's PT2E flow (torchao is not a dependency),
and PyTorch's dynamic quantization only covers ``Linear``/LSTM layers, i.e. almost nothing of a
convolutional re-id backbone.

How: the fp32 graph is pre-processed (shape inference, graph optimisation), then
``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs (QDQ format) with per-channel
symmetric int8 weights and uint8 activations whose ranges are calibrated on real *training*
images of the model's dataset (never test images), fed one modality per batch so that each
modality branch sees its own images. The modality-specific first stages live inside the ONNX
``If`` branches of two-stream models, which onnxruntime's calibrator does not reach: they stay
fp32 (commonly done anyway for the first, most quantization-sensitive layers); the shared stages,
the bulk of the compute, run in int8.

The result is checked against the fp32 model on held-out training images: the cosine similarity
of the two embeddings of each image (mean and minimum) is stored in the metadata
(``vireid.quantization``) and reported.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vireid.errors import ConfigError, VireidError

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
#: Mean cosine (int8 vs fp32 embeddings) below which the quantized model is reported as unusable.
MIN_MEAN_COSINE = 0.9


@dataclass
class QuantizeReport:
    """The int8 file, its size, and how closely it follows the fp32 model."""

    path: str
    size_bytes: int
    fp32_size_bytes: int
    calibration_images: int
    check_images: int
    mean_cosine: float
    min_cosine: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def describe(self) -> str:
        return (f"int8 model {self.path} ({self.size_bytes / 2**20:.2f} MB, fp32 {self.fp32_size_bytes / 2**20:.2f} MB); "
                f"calibrated on {self.calibration_images} training images ({self.method}); embedding cosine vs fp32 on "
                f"{self.check_images} other training images: mean {self.mean_cosine:.4f}, min {self.min_cosine:.4f}")


def calibration_records(cfg: Any, count: int = 256, *, seed: int = 0, data_root: str | None = None,
                        progress: bool = False) -> list:
    """``count`` training images of the model's dataset (never validation or test identities), half
    visible and half infrared as far as the split allows, drawn with ``seed``."""
    from vireid.data.build import modality_codes, prepare_dataset

    if count < 2:
        raise ConfigError(f"calibration needs at least 2 images, got {count}")
    if data_root is not None:
        cfg.data.root = data_root
    dataset = prepare_dataset(cfg.data, progress=progress)
    records = list(dataset.train)
    if not records:
        raise VireidError(f"the dataset at {cfg.data.root} has no training images to calibrate int8 ranges on; "
                          "pass --data-root pointing to the dataset the model was trained on")
    codes = modality_codes(records)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for code in (0, 1):
        pool = np.flatnonzero(codes == code)
        take = min(len(pool), count // 2 if code == 0 else count - len(chosen))
        chosen += rng.choice(pool, size=take, replace=False).tolist()
    if len(chosen) < count:  # one modality short: fill from the other
        rest = np.setdiff1d(np.arange(len(records)), np.asarray(chosen, dtype=np.int64))
        chosen += rng.choice(rest, size=min(len(rest), count - len(chosen)), replace=False).tolist()
    return [records[i] for i in chosen]


def calibration_images(cfg: Any, count: int = 256, *, seed: int = 0, data_root: str | None = None,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, 3, H, W]`` images of :func:`calibration_records` at the model's input size, and
    their modality codes."""
    from vireid.data.build import modality_codes
    from vireid.data.images import decode_image

    records = calibration_records(cfg, count, seed=seed, data_root=data_root, progress=progress)
    size = (int(cfg.data.height), int(cfg.data.width))
    iterator: Any = records
    if progress:
        from tqdm import tqdm

        iterator = tqdm(records, desc="calibration images", leave=False, dynamic_ncols=True, disable=None)
    pixels = np.stack([decode_image(r.path, size=size).transpose(2, 0, 1) for r in iterator])
    return pixels, modality_codes(records)


def _normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((pixels.astype(np.float32) / 255.0 - m) / s).astype(np.float32)


def calibration_batches(pixels: np.ndarray, codes: np.ndarray, mean: Sequence[float], std: Sequence[float],
                        batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """Feeds for the calibrator: single-modality batches, visible and infrared alternating, all of one
    size. onnxruntime's histogram calibrators (percentile, entropy) stack the outputs of every batch
    into one array, which fails for batches of unequal size; so the size is the smaller of
    ``batch_size`` and the smallest modality's count, and a modality's last short batch is completed
    with its first images again (a repeat changes no range: min/max and histograms only gain counts)."""
    groups = [np.flatnonzero(codes == code) for code in np.unique(codes)]
    size = max(1, min([batch_size, *(len(g) for g in groups)]))
    per_modality = []
    for index in groups:
        chunks = [index[i:i + size] for i in range(0, len(index), size)]
        if len(chunks[-1]) < size:
            chunks[-1] = np.concatenate([chunks[-1], np.resize(index, size - len(chunks[-1]))])
        per_modality.append(chunks)
    feeds: list[dict[str, np.ndarray]] = []
    for step in range(max(len(chunks) for chunks in per_modality)):
        for chunks in per_modality:
            if step < len(chunks):
                idx = chunks[step]
                feeds.append({"images": _normalise(pixels[idx], mean, std), "modalities": codes[idx].astype(np.int64)})
    return feeds


class _FeedReader:
    """An onnxruntime ``CalibrationDataReader`` over prepared feeds (inputs the graph lacks are dropped)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], input_names: set[str]) -> None:
        self._feeds = [{k: v for k, v in feed.items() if k in input_names} for feed in feeds]
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._feeds):
            return None
        self._position += 1
        return self._feeds[self._position - 1]

    def rewind(self) -> None:
        self._position = 0


def _reader(feeds: list[dict[str, np.ndarray]], input_names: set[str]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_FeedReader, CalibrationDataReader):
        pass

    return Reader(feeds, input_names)


def quantize_onnx(fp32_path: str | Path, out: str | Path, pixels: np.ndarray, codes: np.ndarray, *,
                  check_fraction: float = 0.25, method: str = "minmax", per_channel: bool = True,
                  batch_size: int = 16) -> QuantizeReport:
    """Quantize an exported vireid ONNX model to int8 (QDQ), calibrated on ``pixels`` (uint8
    ``[N,3,H,W]``) with modality ``codes``; a ``check_fraction`` of them is held out to compare
    int8 with fp32 embeddings. Writes ``out`` atomically and returns a :class:`QuantizeReport`."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vireid.export.onnx import META_PREFIX, make_session, read_metadata, run_session, set_metadata

    fp32_path, out = Path(fp32_path), Path(out)
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method {method!r} is unknown; use one of {', '.join(CALIBRATION_METHODS)}")
    meta = read_metadata(fp32_path)
    if meta.get("precision", "fp32") != "fp32":
        raise VireidError(f"{fp32_path} is already {meta.get('precision')}; quantize the fp32 export instead")
    mean = json.loads(meta.get("mean", "[0.485, 0.456, 0.406]"))
    std = json.loads(meta.get("std", "[0.229, 0.224, 0.225]"))
    if len(pixels) != len(codes) or len(pixels) < 2:
        raise ConfigError("calibration needs at least 2 images with one modality code each")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pixels))
    n_check = min(max(int(round(len(pixels) * check_fraction)), 1), len(pixels) - 1)
    check_idx, calib_idx = np.sort(order[:n_check]), np.sort(order[n_check:])
    input_names = {i.name for i in ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()}
    feeds = calibration_batches(pixels[calib_idx], codes[calib_idx], mean, std, batch_size)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="vireid-quant-") as work:
        pre = Path(work) / "pre.onnx"
        quiet = contextlib.redirect_stdout(io.StringIO())
        try:
            with warnings.catch_warnings(), quiet, _quiet_logging():
                warnings.simplefilter("ignore")
                try:
                    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
                except Exception as err:  # noqa: BLE001 - fall back to the plain graph
                    logger.info("onnxruntime pre-processing skipped (%s)", err)
                    pre = fp32_path
                quantize_static(
                    str(pre), str(tmp), _reader(feeds, input_names), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=calibrate,
                    extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True},
                )
            fp32 = make_session(fp32_path)
            int8 = make_session(tmp)
            check_x = _normalise(pixels[check_idx], mean, std)
            a = _unit(run_session(fp32, check_x, codes[check_idx]))
            b = _unit(run_session(int8, check_x, codes[check_idx]))
            cosine = np.sum(a * b, axis=1)
            report = QuantizeReport(str(out), 0, fp32_path.stat().st_size, len(calib_idx), len(check_idx),
                                    float(np.mean(cosine)), float(np.min(cosine)), method)
            if not np.isfinite(report.mean_cosine) or report.mean_cosine < MIN_MEAN_COSINE:
                raise VireidError(
                    f"the int8 model's embeddings agree poorly with fp32 (mean cosine {report.mean_cosine:.3f} < "
                    f"{MIN_MEAN_COSINE}); nothing was written — try --calibration percentile or more calibration images"
                )
            proto = onnx.load(str(tmp))
            carried = {META_PREFIX + k: v for k, v in meta.items()}
            carried[META_PREFIX + "precision"] = "int8"
            carried[META_PREFIX + "quantization"] = json.dumps(
                {"format": "QDQ", "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
                 "activations": "uint8", "method": method, "calibration_images": len(calib_idx),
                 "check_images": len(check_idx), "mean_cosine": round(report.mean_cosine, 6),
                 "min_cosine": round(report.min_cosine, 6), "source": fp32_path.name})
            set_metadata(proto, carried)
            onnx.save_model(proto, str(tmp))
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
    report.size_bytes = out.stat().st_size
    return report


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime's quantizer logs per-tensor warnings on the root logger and its calibration
    sessions print graph notes; keep both out of the CLI (errors still show)."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)


def quantize_model_file(fp32_path: str | Path, out: str | Path, *, images: int = 256, data_root: str | None = None,
                        method: str = "minmax", per_channel: bool = True, seed: int = 0,
                        progress: bool = False) -> QuantizeReport:
    """Quantize an exported vireid ONNX file, calibrating on its dataset's training images (from
    the config in its metadata; ``data_root`` if the dataset moved)."""
    from vireid.plugins import stored_config
    from vireid.export.onnx import read_metadata

    meta = read_metadata(fp32_path)
    if "config" not in meta:
        raise VireidError(f"{fp32_path} carries no vireid config; export it with vireid export first")
    cfg = stored_config(json.loads(meta["config"]), source=f"exported model {fp32_path}")
    pixels, codes = calibration_images(cfg, images, seed=seed, data_root=data_root, progress=progress)
    return quantize_onnx(fp32_path, out, pixels, codes, method=method, per_channel=per_channel)


__all__ = [
    "CALIBRATION_METHODS",
    "QuantizeReport",
    "calibration_batches",
    "calibration_images",
    "calibration_records",
    "quantize_model_file",
    "quantize_onnx",
]
