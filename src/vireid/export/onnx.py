"""ONNX export of a trained model's embedding, checked against PyTorch with onnxruntime.

The exported graph is the evaluation-mode model: inputs ``images`` (float32 ``[B, 3, H, W]``,
normalised with the ImageNet mean/std) and ``modalities`` (int64 ``[B]``, 0 visible / 1
infrared), output ``embeddings`` (float32 ``[B, D]``, the raw embedding PyTorch returns; the
:class:`OnnxEmbedder` L2-normalises like every :class:`~vireid.inference.embedder.Embedder`). The
batch axis is dynamic.

Two-stream models route each sample through its modality's specific stages. In PyTorch this is
a data-dependent gather/scatter with Python shortcuts, which a tracer would freeze to the example
batch. For export the routing of every :class:`~vireid.modeling.backbones.two_stream.TwoStreamBackbone`
is rewritten with ``torch.cond`` (ONNX ``If``): a batch of one modality runs only that branch
(the :class:`OnnxEmbedder` always sends such batches), a mixed batch runs both and selects per
sample (``Where``), which equals the gather/scatter because evaluation-mode layers act per sample.

The exporter is ``torch.export`` + onnxscript (``torch.onnx.export(dynamo=True)``, opset 18),
whose optimiser folds BatchNorm into the convolutions, giving a clean Conv/Relu graph.
The export is checked with onnxruntime on mixed, visible-only and infrared-only batches
(max abs difference of the embeddings <= ``atol``, 1e-4 by default) before the file is written;
a larger difference is an error and no file is left behind.

What evaluation and search need travels in the file's ``metadata_props``: ``vireid.config`` (the
training config as JSON), ``vireid.input_size``, ``vireid.embed_dim``, ``vireid.mean`` /
``vireid.std``, ``vireid.verification`` (the checkpoint's calibrated threshold, when present),
``vireid.precision`` (fp32 or int8) and the export check's ``vireid.max_abs_diff``.
The runtime side (:class:`~vireid.inference.onnx_embedder.OnnxEmbedder`, sessions, metadata reading) lives
in :mod:`vireid.inference.onnx_embedder`, which :func:`vireid.inference.loading.load_embedder` opens ``.onnx``
files with; this module only writes.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import re
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vireid.inference.embedder import Embedder
from vireid.inference.onnx_embedder import (  # noqa: F401  (the runtime side, re-exported here)
    FORMAT,
    META_PREFIX,
    OUTPUT_NAME,
    OnnxEmbedder,
    load_onnx_embedder,
    make_session,
    read_metadata,
    run_session,
)
from vireid.errors import VireidError

DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
INPUT_NAMES = ("images", "modalities")


# ----------------------------------------------------------------------------- export-friendly routing
def _cond_forward_specific(self, x: torch.Tensor, modalities: torch.Tensor | int) -> torch.Tensor:
    """:meth:`TwoStreamBackbone.forward_specific` without data-dependent Python control flow."""
    if self.specific_stages == 0:
        return x
    if isinstance(modalities, int):
        return self._branch(modalities)(x)
    visible_branch, infrared_branch = self.modality_branches[0], self.modality_branches[1]
    codes = modalities.to(torch.long)

    def visible(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return visible_branch(x)

    def infrared(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return infrared_branch(x)

    def mixed(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        select = (codes == 0).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(select, visible_branch(x), infrared_branch(x))

    def not_all_visible(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return torch.cond((codes == 1).all(), infrared, mixed, (x, codes))

    return torch.cond((codes == 0).all(), visible, not_all_visible, (x, codes))


@contextlib.contextmanager
def exportable_routing(model: nn.Module) -> Iterator[int]:
    """Within the block, every two-stream backbone of ``model`` routes with ``torch.cond``;
    yields how many backbones were rewritten. The original method is restored afterwards."""
    from vireid.modeling.backbones.two_stream import TwoStreamBackbone

    patched = [m for m in model.modules() if isinstance(m, TwoStreamBackbone) and m.specific_stages > 0]
    for backbone in patched:
        backbone.forward_specific = types.MethodType(_cond_forward_specific, backbone)
    try:
        yield len(patched)
    finally:
        for backbone in patched:
            del backbone.forward_specific


class EmbeddingGraph(nn.Module):
    """The evaluation-mode embedding of a vireid method as a two-input module (what is exported)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        out = self.model(images, modalities)
        if not isinstance(out, torch.Tensor):
            raise VireidError(f"{type(self.model).__name__} returned {type(out).__name__} in evaluation mode; "
                              "only models returning an embedding tensor can be exported")
        return out


def _required_extra_inputs(model: nn.Module) -> list[str]:
    params = list(inspect.signature(model.forward).parameters.values())[2:]
    return [p.name for p in params
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


# ----------------------------------------------------------------------------- metadata
def build_metadata(cfg: Any, ckpt: dict, input_size: tuple[int, int], embed_dim: int, *,
                   source: str | Path | None = None, precision: str = "fp32") -> dict[str, str]:
    """The ``metadata_props`` of an exported model (all values are strings, JSON where structured)."""
    meta = {
        "format": FORMAT,
        "config": json.dumps(cfg.to_dict()),
        "input_size": json.dumps([int(input_size[0]), int(input_size[1])]),
        "embed_dim": str(int(embed_dim)),
        "mean": json.dumps(list(Embedder.mean)),
        "std": json.dumps(list(Embedder.std)),
        "precision": precision,
        "num_classes": str(int(ckpt.get("num_classes", 0))),
        "inputs": "images float32 [B,3,H,W] (RGB/255, minus mean, over std); modalities int64 [B] (0 visible, 1 infrared)",
        "output": "embeddings float32 [B,D] (not normalised; compare L2-normalised embeddings)",
    }
    if source is not None:
        meta["source"] = str(source)
    if isinstance(ckpt.get("model"), dict):  # the weights' fingerprint, shared with the checkpoint's embedder
        from vireid.inference.embedder import model_fingerprint

        meta["fingerprint"] = model_fingerprint(ckpt["model"])
    if ckpt.get("verification"):
        meta["verification"] = json.dumps(ckpt["verification"])
    if ckpt.get("pruning"):
        spec = ckpt["pruning"]
        meta["pruning"] = json.dumps({k: spec[k] for k in ("amount", "criterion", "multiple") if k in spec})
    return {META_PREFIX + k: v for k, v in meta.items()}


def set_metadata(model_proto: Any, metadata: dict[str, str]) -> None:
    """Replace (or add) ``metadata_props`` entries of an ``onnx.ModelProto`` in place."""
    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = key, value




# ----------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    """Result of an export: the file, its size, and the agreement with PyTorch."""

    path: str
    size_bytes: int
    opset: int
    embed_dim: int
    input_size: tuple[int, int]
    max_abs_diff: float
    checks: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"exported {self.path} ({self.size_bytes / 2**20:.2f} MB, opset {self.opset}, input "
                f"{self.input_size[0]}x{self.input_size[1]}, {self.embed_dim}-d embedding); onnxruntime vs PyTorch: "
                f"max abs difference {self.max_abs_diff:.2e}")


def check_batches(input_size: tuple[int, int], seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Inputs the export is checked on: a mixed batch and one batch of each modality."""
    gen = torch.Generator().manual_seed(seed)
    height, width = input_size

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, 3, height, width, generator=gen)

    return {
        "mixed": (images(4), torch.tensor([0, 1, 1, 0])),
        "visible": (images(3), torch.zeros(3, dtype=torch.long)),
        "infrared": (images(1), torch.ones(1, dtype=torch.long)),
    }


def compare_with_torch(model: nn.Module, session: Any, input_size: tuple[int, int]) -> dict[str, float]:
    """Max abs difference between PyTorch's and onnxruntime's embeddings per check batch."""
    diffs: dict[str, float] = {}
    for name, (x, m) in check_batches(input_size).items():
        with torch.no_grad():
            expected = model(x, m).float().numpy()
        names = {i.name for i in session.get_inputs()}
        feeds = {"images": x.numpy()}
        if "modalities" in names:
            feeds["modalities"] = m.numpy()
        got = session.run([OUTPUT_NAME], feeds)[0]
        if got.shape != expected.shape:
            raise VireidError(f"the exported graph returns {got.shape} for the {name} check batch, PyTorch {expected.shape}")
        diffs[name] = float(np.max(np.abs(got - expected))) if got.size else 0.0
    return diffs


def drop_unused_initializers(model_proto: Any) -> int:
    """Remove main-graph initializers no node reads (also looking inside ``If`` branches, which may read
    outer-scope names); returns how many were removed. The exporter leaves a few constants behind."""
    import onnx

    used: set[str] = set()

    def collect(graph: Any) -> None:
        for node in graph.node:
            used.update(node.input)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    collect(attr.g)
                for sub in attr.graphs:
                    collect(sub)
        used.update(o.name for o in graph.output)

    collect(model_proto.graph)
    keep = [init for init in model_proto.graph.initializer if init.name in used]
    removed = len(model_proto.graph.initializer) - len(keep)
    if removed:
        del model_proto.graph.initializer[:]
        model_proto.graph.initializer.extend(keep)
    return removed


def _first_line(err: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def trace_to_onnx(graph: EmbeddingGraph, example: tuple[torch.Tensor, torch.Tensor], opset: int = DEFAULT_OPSET):
    """``torch.export`` + onnxscript translation and optimisation of ``graph`` -> ``onnx.ModelProto``
    (dynamic batch axis; two-stream routing as ONNX ``If``)."""
    batch = torch.export.Dim("batch", min=1)
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)  # no graph dumps or guard notes on the console
    try:
        with exportable_routing(graph), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, example, dynamo=True, opset_version=int(opset), verbose=False,
                input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: batch}, "modalities": {0: batch}},
            )
    except VireidError:
        raise
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the user needs one line
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        reason = _first_line(root) or _first_line(err) or type(err).__name__
        raise VireidError(f"torch.onnx could not export {type(graph.model).__name__} ({type(root).__name__}: {reason}); "
                          "the method uses an operation or data-dependent control flow the ONNX exporter does not "
                          "support, so serve it with its .pt checkpoint") from None
    finally:
        torch_logger.setLevel(level)
    return program.model_proto


def export_model(model: nn.Module, cfg: Any, ckpt: dict, out: str | Path, *, opset: int = DEFAULT_OPSET,
                 atol: float = DEFAULT_ATOL, source: str | Path | None = None) -> ExportReport:
    """Export ``model`` (evaluation mode, CPU) to ``out`` with its metadata, check it, write atomically."""
    import onnx

    out = Path(out)
    if opset < 17:
        raise VireidError(f"opset {opset} is too old; use 17 or newer (default {DEFAULT_OPSET})")
    extra = _required_extra_inputs(model)
    if extra:
        raise VireidError(f"{type(model).__name__} needs {', '.join(extra)} at inference besides images and modalities; "
                          "such models cannot be exported to ONNX")
    model = model.cpu().eval()
    height, width = int(cfg.data.height), int(cfg.data.width)
    x, m = check_batches((height, width), seed=1)["mixed"]
    graph = EmbeddingGraph(model).eval()
    with torch.no_grad():
        embed_dim = int(graph(x, m).shape[-1])
    proto = trace_to_onnx(graph, (x, m), opset=int(opset))
    drop_unused_initializers(proto)
    set_metadata(proto, build_metadata(cfg, ckpt, (height, width), embed_dim, source=source))
    proto.doc_string = f"vireid {cfg.name}: {cfg.model.method} embedding ({embed_dim}-d) for {height}x{width} images"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        onnx.save_model(proto, str(tmp))
        session = make_session(tmp)
        diffs = compare_with_torch(model, session, (height, width))
        worst = max(diffs.values())
        if not np.isfinite(worst) or worst > atol:
            detail = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
            raise VireidError(f"the ONNX export of {cfg.name} differs from PyTorch by {worst:.2e} > {atol:g} on the "
                              f"embeddings ({detail}); nothing was written — report this model/method as not exportable")
        set_metadata(proto, {META_PREFIX + "max_abs_diff": f"{worst:.3e}"})
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportReport(str(out), out.stat().st_size, int(opset), embed_dim, (height, width), worst, diffs)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET,
                      atol: float = DEFAULT_ATOL) -> ExportReport:
    """Export the model of a checkpoint or run folder to ONNX (see :func:`export_model`)."""
    from vireid.engine.trainer import load_model_from_checkpoint

    model, cfg, ckpt = load_model_from_checkpoint(checkpoint, "cpu")
    return export_model(model, cfg, ckpt, out, opset=opset, atol=atol, source=checkpoint)


__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "EmbeddingGraph",
    "ExportReport",
    "OnnxEmbedder",
    "build_metadata",
    "compare_with_torch",
    "drop_unused_initializers",
    "export_checkpoint",
    "export_model",
    "exportable_routing",
    "load_onnx_embedder",
    "make_session",
    "read_metadata",
    "run_session",
    "set_metadata",
    "trace_to_onnx",
]
