"""Open a model for embedding: :func:`load_embedder` picks the embedder by what the path is (a run folder or
``.pt`` checkpoint: :class:`~vireid.inference.embedder.TorchEmbedder`; ``.onnx``:
:class:`~vireid.inference.onnx_embedder.OnnxEmbedder`; other suffixes: a loader registered with
:func:`register_embedder_format`). Kept apart from the embedder classes so that neither imports the other
back (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from vireid.errors import ConfigError
from vireid.inference.embedder import Embedder, TorchEmbedder

_FORMATS: dict[str, Callable[..., Embedder]] = {}


def register_embedder_format(suffix: str, loader: Callable[..., Embedder]) -> None:
    """Let :func:`load_embedder` open files ending in ``suffix`` (e.g. ``".engine"``) with ``loader(path, device=...)``."""
    _FORMATS[suffix.lower()] = loader


def load_embedder(path: str | Path, device: str | torch.device = "cpu", amp: str | None = None) -> Embedder:
    """An :class:`Embedder` for a run folder, a ``.pt`` checkpoint, or a registered format (e.g. ``.onnx``).

    ``amp`` overrides a PyTorch checkpoint's ``train.amp`` (:class:`TorchEmbedder`); exported models
    run in their own precision."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model {path} does not exist; give a run folder, a .pt checkpoint or an exported model")
    suffix = path.suffix.lower()
    if suffix in _FORMATS:
        return _FORMATS[suffix](path, device=device)
    if suffix == ".onnx":
        try:
            from vireid.inference.onnx_embedder import load_onnx_embedder
        except ImportError as err:
            raise ConfigError(f"{path} is an ONNX model but the ONNX backend is unavailable ({err}); install vireid[deploy]") from None
        return load_onnx_embedder(path, device=device)
    if path.is_dir() or suffix in (".pt", ".pth", ".ckpt"):
        return TorchEmbedder.from_checkpoint(path, device, amp=amp)
    raise ConfigError(f"cannot load a model from {path}: expected a run folder, a .pt checkpoint or one of "
                      f"{', '.join(sorted(_FORMATS)) or 'no registered formats'}")


__all__ = ["load_embedder", "register_embedder_format"]
