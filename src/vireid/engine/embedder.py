"""Embeddings of arbitrary image files or arrays from a trained model: the one entry point that
extraction, search, verification, the web service and exported models share.

An :class:`Embedder` applies exactly the evaluation preprocessing (decode with Pillow, resize to
the model's input size, ImageNet normalisation) and returns L2-normalised float32 embeddings, so a
cosine similarity is a plain inner product. :func:`load_embedder` picks the backend from the
path: a run folder or ``.pt`` checkpoint gives a :class:`TorchEmbedder`; other suffixes (e.g.
``.onnx``) are served by loaders registered with :func:`register_embedder_format`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.records import MODALITY_CODE
from vireid.errors import ConfigError

_FORMATS: dict[str, Callable[..., "Embedder"]] = {}


def register_embedder_format(suffix: str, loader: Callable[..., "Embedder"]) -> None:
    """Let :func:`load_embedder` open files ending in ``suffix`` (e.g. ``".onnx"``) with ``loader(path, device=...)``."""
    _FORMATS[suffix.lower()] = loader


def modality_codes(modalities: Sequence[str | int] | str | int, count: int) -> np.ndarray:
    """int64 codes (0 visible, 1 infrared) for ``count`` images from names, codes or one shared value."""
    if isinstance(modalities, (str, int, np.integer)):
        modalities = [modalities] * count
    codes = []
    for m in modalities:
        if isinstance(m, (int, np.integer)):
            if int(m) not in MODALITY_CODE.values():
                raise ConfigError(f"modality code {m} is unknown; use 0 (visible) or 1 (infrared)")
            codes.append(int(m))
        else:
            name = str(m).lower()
            if name in ("thermal", "ir", "nir"):
                name = "infrared"
            if name in ("rgb", "color", "colour"):
                name = "visible"
            if name not in MODALITY_CODE:
                raise ConfigError(f"modality {m!r} is unknown; use 'visible' or 'infrared'")
            codes.append(MODALITY_CODE[name])
    if len(codes) != count:
        raise ConfigError(f"got {len(codes)} modalities for {count} images; give one per image or a single one for all")
    return np.asarray(codes, dtype=np.int64)


class Embedder:
    """Images -> L2-normalised embeddings ``[N, D]`` (float32 numpy).

    Subclasses implement :meth:`_embed_batch` on a normalised float batch; the base class does the
    decoding, resizing, batching and normalisation. Attributes: ``input_size`` (H, W), ``dim``,
    ``config`` (the training :class:`~vireid.config.Config` or None), ``verification`` (the
    calibrated threshold dict stored with the model, or None), ``source`` (the file it came from).
    """

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, input_size: tuple[int, int], dim: int, *, config: Any = None,
                 verification: dict | None = None, source: str | Path | None = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.dim = int(dim)
        self.config = config
        self.verification = verification
        self.source = None if source is None else Path(source)

    # -- to implement -------------------------------------------------------------------------
    def _embed_batch(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        """Raw embeddings of a normalised float batch ``[B, 3, H, W]`` (CPU) with int64 modality codes."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def preprocess(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` at the input size -> normalised float32 batch."""
        x = torch.as_tensor(pixels)
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images [B, 3, H, W], got {x.dtype} {tuple(x.shape)}")
        if tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"expected {self.input_size[0]}x{self.input_size[1]} images, got {x.shape[2]}x{x.shape[3]}")
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def resize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 (any size) -> 3xHxW uint8 at the input size (bilinear, as the evaluation cache)."""
        from PIL import Image

        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {arr.dtype} {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        elif arr.shape[2] == 4:
            arr = arr[:, :, :3]
        height, width = self.input_size
        if arr.shape[:2] != (height, width):
            arr = np.asarray(Image.fromarray(arr).resize((width, height), Image.BILINEAR))
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    @torch.no_grad()
    def embed_pixels(self, pixels: np.ndarray | torch.Tensor, modalities, batch_size: int = 64) -> np.ndarray:
        """Embeddings of uint8 ``[N, 3, H, W]`` images already at the input size."""
        pixels = torch.as_tensor(pixels)
        codes = torch.as_tensor(modality_codes(modalities, len(pixels)))
        out = np.zeros((len(pixels), self.dim), dtype=np.float32)
        for start in range(0, len(pixels), batch_size):
            end = start + batch_size
            feats = self._embed_batch(self.preprocess(pixels[start:end]), codes[start:end]).float()
            out[start:end] = torch.nn.functional.normalize(feats, dim=1).cpu().numpy()
        return out

    def embed_arrays(self, images: Sequence[np.ndarray], modalities, batch_size: int = 64) -> np.ndarray:
        """Embeddings of HxWx3 uint8 images of any size (e.g. decoded uploads)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = np.stack([self.resize(img) for img in images])
        return self.embed_pixels(pixels, modalities, batch_size)

    def embed_paths(self, paths: Sequence[str | Path], modalities, batch_size: int = 64,
                    progress: bool = False) -> np.ndarray:
        """Embeddings of image files (decoded with :func:`vireid.data.images.decode_image`, errors name the file)."""
        from vireid.data.images import decode_image

        paths = list(paths)
        codes = modality_codes(modalities, len(paths))
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        starts = range(0, len(paths), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embedding", unit="batch", leave=False, dynamic_ncols=True, disable=None)
        for start in starts:
            chunk = paths[start:start + batch_size]
            pixels = np.stack([decode_image(p, size=self.input_size).transpose(2, 0, 1) for p in chunk])
            out[start:start + len(chunk)] = self.embed_pixels(pixels, codes[start:start + len(chunk)], batch_size)
        return out

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarities between rows of two embedding sets (both L2-normalised)."""
        return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T


class TorchEmbedder(Embedder):
    """A vireid PyTorch model (from a checkpoint) as an :class:`Embedder`; runs on ``device``.

    ``amp`` (``auto``, ``none``, ``bf16``, ``fp16``; default: the training config's ``train.amp`` where
    it runs well on ``device``, :func:`vireid.engine.precision.inference_amp`) picks the autocast
    precision and memory format, resolved on ``device`` as for training
    (:func:`vireid.engine.precision.resolve_precision`); embeddings are returned in float32.
    """

    def __init__(self, model: torch.nn.Module, config: Any, *, device: str | torch.device = "cpu",
                 verification: dict | None = None, source: str | Path | None = None, amp: str | None = None) -> None:
        from vireid.engine.precision import announce_precision, inference_amp, resolve_precision

        self.model = model.eval()
        self.device = torch.device(device)
        train_cfg = getattr(config, "train", None)
        self.precision = resolve_precision(amp or inference_amp(getattr(train_cfg, "amp", "none"), self.device), self.device,
                                           bool(getattr(train_cfg, "channels_last", False)))
        announce_precision(self.precision)
        self.precision.prepare_model(self.model)
        height, width = int(config.data.height), int(config.data.width)
        with torch.no_grad():
            probe = self._embed_batch(torch.zeros(1, 3, height, width), torch.zeros(1, dtype=torch.long))
        super().__init__((height, width), probe.shape[-1], config=config, verification=verification, source=source)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", amp: str | None = None) -> "TorchEmbedder":
        from vireid.engine.trainer import load_model_from_checkpoint

        model, cfg, ckpt = load_model_from_checkpoint(path, device)
        return cls(model, cfg, device=device, verification=ckpt.get("verification"), source=path, amp=amp)

    def _embed_batch(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        images = self.precision.prepare_input(images.to(self.device))
        with self.precision.autocast():
            return self.model(images, modalities.to(self.device)).float()


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
            import vireid.export.onnx  # noqa: F401  (registers the .onnx loader)
        except ImportError as err:
            raise ConfigError(f"{path} is an ONNX model but the ONNX backend is unavailable ({err}); install vireid[deploy]") from None
        if suffix in _FORMATS:
            return _FORMATS[suffix](path, device=device)
    if path.is_dir() or suffix in (".pt", ".pth", ".ckpt"):
        return TorchEmbedder.from_checkpoint(path, device, amp=amp)
    raise ConfigError(f"cannot load a model from {path}: expected a run folder, a .pt checkpoint or one of "
                      f"{', '.join(sorted(_FORMATS)) or 'no registered formats'}")
