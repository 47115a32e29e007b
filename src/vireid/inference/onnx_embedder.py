"""Run an exported vireid model with onnxruntime: :class:`OnnxEmbedder` (same preprocessing and
L2-normalised output as the PyTorch :class:`~vireid.inference.embedder.Embedder`), sessions, and the
file's vireid metadata. The writer is :mod:`vireid.export.onnx`; the graph's inputs, outputs and
metadata keys are described there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.errors import VireidError
from vireid.inference.embedder import Embedder

FORMAT = "vireid-onnx-1"
OUTPUT_NAME = "embeddings"
META_PREFIX = "vireid."


def read_metadata(path: str | Path) -> dict[str, str]:
    """The vireid ``metadata_props`` of an ONNX file (prefix removed)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


# ----------------------------------------------------------------------------- sessions
def make_session(path: str | Path, device: str | torch.device = "cpu", threads: int | None = None):
    """An onnxruntime session for ``path`` (CUDA provider when asked for and available)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no notes about initializers the optimiser removed
    threads = threads if threads is not None else _env_threads()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise VireidError(f"onnxruntime cannot load {path} ({type(err).__name__}: {err}); re-export the model") from None


def _env_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def run_session(session: Any, images: np.ndarray, modalities: np.ndarray) -> np.ndarray:
    """Embeddings of a normalised float32 batch; each modality's samples are sent as one batch
    (so the graph takes its single-branch path), results in input order."""
    names = {i.name for i in session.get_inputs()}
    images = np.ascontiguousarray(images, dtype=np.float32)
    modalities = np.asarray(modalities, dtype=np.int64)

    def call(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        feeds = {"images": x}
        if "modalities" in names:
            feeds["modalities"] = m
        return session.run([OUTPUT_NAME], feeds)[0]

    codes = np.unique(modalities)
    if len(codes) <= 1:
        return call(images, modalities)
    out: np.ndarray | None = None
    for code in codes:
        index = np.flatnonzero(modalities == code)
        part = call(np.ascontiguousarray(images[index]), modalities[index])
        if out is None:
            out = np.empty((len(modalities), part.shape[1]), dtype=np.float32)
        out[index] = part
    assert out is not None
    return out


class OnnxEmbedder(Embedder):
    """An exported vireid model run by onnxruntime, with the same preprocessing as the torch one.

    Reads the input size, embedding size, config and verification calibration from the file's
    metadata; ``precision`` is ``"fp32"`` or ``"int8"``.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        from vireid.plugins import stored_config

        path = Path(path)
        self.session = make_session(path, device, threads)
        meta = {k[len(META_PREFIX):]: v for k, v in self.session.get_modelmeta().custom_metadata_map.items()
                if k.startswith(META_PREFIX)}
        if meta.get("format") != FORMAT:
            raise VireidError(f"{path} is not an ONNX model exported by vireid (no {META_PREFIX}format={FORMAT} "
                              "metadata); export it with vireid export")
        self.metadata = meta
        self.precision = meta.get("precision", "fp32")
        self.mean = tuple(json.loads(meta["mean"])) if "mean" in meta else Embedder.mean
        self.std = tuple(json.loads(meta["std"])) if "std" in meta else Embedder.std
        config = stored_config(json.loads(meta["config"]), source=f"exported model {path}") if "config" in meta else None
        verification = json.loads(meta["verification"]) if meta.get("verification") else None
        height, width = json.loads(meta["input_size"])
        super().__init__((height, width), int(meta["embed_dim"]), config=config, verification=verification, source=path)
        # the exported weights' fingerprint (an int8 model is a different model); files without one: their bytes
        from vireid.inference.embedder import file_fingerprint

        recorded = meta.get("fingerprint")
        self.fingerprint = (recorded + ("" if self.precision == "fp32" else f"+{self.precision}")) if recorded \
            else file_fingerprint(path)

    def _embed_batch(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        out = run_session(self.session, images.detach().cpu().numpy(), modalities.detach().cpu().numpy())
        return torch.from_numpy(out)


def load_onnx_embedder(path: str | Path, device: str | torch.device = "cpu") -> OnnxEmbedder:
    """The loader :func:`vireid.inference.loading.load_embedder` uses for ``.onnx`` files."""
    return OnnxEmbedder(path, device=device)


__all__ = ["FORMAT", "META_PREFIX", "OUTPUT_NAME", "OnnxEmbedder", "load_onnx_embedder", "make_session",
           "read_metadata", "run_session"]
