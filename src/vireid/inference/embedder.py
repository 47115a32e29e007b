"""Embeddings of arbitrary image files or arrays from a trained model: the one entry point that
extraction, search, verification, the web service and exported models share.

An :class:`Embedder` applies exactly the evaluation preprocessing (decode with Pillow, resize to
the model's input size, ImageNet normalisation) and returns L2-normalised float32 embeddings, so a
cosine similarity is a plain inner product. :func:`vireid.inference.loading.load_embedder` picks the
backend from the path: a run folder or ``.pt`` checkpoint gives a :class:`TorchEmbedder`, ``.onnx`` an
:class:`~vireid.inference.onnx_embedder.OnnxEmbedder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.records import MODALITY_CODE
from vireid.errors import ConfigError


def modality_codes(modalities: Sequence[str | int] | str | int, count: int) -> np.ndarray:
    """int64 codes (0 visible, 1 infrared) for ``count`` images from names, codes or one shared value.

    Names accept every spelling of :mod:`vireid.data.modality` (``vis``, ``rgb``, ``ir``, ``nir``,
    ``thermal``, ...); ``auto`` is resolved by the callers that see the pixels (:meth:`Embedder.embed`).
    """
    from vireid.data.modality import parse

    if isinstance(modalities, (str, int, np.integer)):
        modalities = [modalities] * count
    codes = []
    for m in modalities:
        if isinstance(m, (int, np.integer)):
            if int(m) not in MODALITY_CODE.values():
                raise ConfigError(f"modality code {m} is unknown; use 0 (visible) or 1 (infrared)")
            codes.append(int(m))
        else:
            codes.append(MODALITY_CODE[parse(m, allow_auto=False)])
    if len(codes) != count:
        raise ConfigError(f"got {len(codes)} modalities for {count} images; give one per image or a single one for all")
    return np.asarray(codes, dtype=np.int64)


def model_fingerprint(state_dict: dict) -> str:
    """A short fingerprint of a model's weights: SHA-256 over every tensor's name, dtype, shape and
    bytes (sorted by name), ``"sha256:"`` + 16 hex digits. Feature and index folders record it, so
    that ``vireid search`` / ``serve`` notice a different model (:func:`check_fingerprint`)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "sha256:" + digest.hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """The fingerprint of a model file that records none (its bytes' SHA-256)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def check_fingerprint(recorded: str | None, embedder: "Embedder", what: str, force: bool = False) -> str | None:
    """Compare the model fingerprint a feature/index folder recorded with ``embedder``'s.

    Returns None when they match (or the folder records none); a different model raises one
    sentence, or with ``force`` returns it as a warning to print.
    """
    mine = getattr(embedder, "fingerprint", None)
    if not recorded or not mine or recorded == mine:
        return None
    message = (f"{what} was built with another model (fingerprint {recorded}) than {embedder.source} ({mine}); "
               "its scores would compare embeddings of two different models")
    if force:
        return f"warning: {message} (going on because of --force)"
    raise ConfigError(f"{message}; use the checkpoint it was built with, rebuild it with this one, or pass --force")


class Embedder:
    """Images -> L2-normalised embeddings ``[N, D]`` (float32 numpy).

    Subclasses implement :meth:`_embed_batch` on a normalised float batch; the base class does the
    decoding, resizing, batching and normalisation. Attributes: ``input_size`` (H, W), ``dim``,
    ``config`` (the training :class:`~vireid.config.Config` or None), ``verification`` (the
    calibrated threshold dict stored with the model, or None), ``source`` (the file it came from),
    ``fingerprint`` (:func:`model_fingerprint` of its weights, or None), ``flip`` (test-time flip:
    each embedding is the mean of the image's and its mirror's; default ``eval.flip`` of the config).
    """

    fingerprint: str | None = None

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, input_size: tuple[int, int], dim: int, *, config: Any = None,
                 verification: dict | None = None, source: str | Path | None = None,
                 flip: bool | None = None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        # the training config's resize filter (data.resample; lanczos for AGW/CAJ imports), else bilinear
        data = getattr(config, "data", None) if config is not None and not isinstance(config, dict) else (config or {}).get("data")
        resample = getattr(data, "resample", None) if not isinstance(data, dict) else data.get("resample")
        self.resample = str(resample or "bilinear")
        if flip is None:
            flip = bool(getattr(getattr(config, "eval", None), "flip", False))
        self.flip = bool(flip)
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
        """HxWx3 uint8 (any size) -> 3xHxW uint8 at the input size (``self.resample``, as the evaluation cache)."""
        from PIL import Image

        from vireid.data.images import resample_filter

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
            arr = np.asarray(Image.fromarray(arr).resize((width, height), resample_filter(self.resample)))
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    @torch.no_grad()
    def embed_pixels(self, pixels: np.ndarray | torch.Tensor, modalities, batch_size: int = 64) -> np.ndarray:
        """Embeddings of uint8 ``[N, 3, H, W]`` images already at the input size."""
        pixels = torch.as_tensor(pixels)
        codes = torch.as_tensor(modality_codes(modalities, len(pixels)))
        out = np.zeros((len(pixels), self.dim), dtype=np.float32)
        for start in range(0, len(pixels), batch_size):
            end = start + batch_size
            batch = self.preprocess(pixels[start:end])
            feats = self._embed_batch(batch, codes[start:end]).float()
            if self.flip:  # test-time flip: mean of the image's and its mirror's raw embedding
                feats = (feats + self._embed_batch(torch.flip(batch, dims=[3]), codes[start:end]).float()) / 2
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
            pixels = np.stack([decode_image(p, size=self.input_size, resample=self.resample).transpose(2, 0, 1)
                               for p in chunk])
            out[start:start + len(chunk)] = self.embed_pixels(pixels, codes[start:start + len(chunk)], batch_size)
        return out

    # ---- tracklets (video): one embedding per sequence of frames
    def embed_tracklet(self, paths: Sequence[str | Path], modality: str | int) -> np.ndarray:
        """One L2-normalised embedding ``[D]`` of a tracklet: its frame files ``paths`` in temporal order, all of
        ``modality``. A model that reads the ``tracklets`` side input (``model.method: temporal``) embeds the frames
        as one tracklet (its test-time frame choice, :mod:`vireid.modeling.methods.temporal`); any other model (and
        an exported ONNX model) gives the mean of the frames' embeddings (temporal average pooling)."""
        from vireid.data.images import decode_image

        paths = list(paths)
        if not paths:
            raise ConfigError("a tracklet needs at least one frame; give the image files of its frames")
        paths = [paths[i] for i in self._tracklet_frames_used(len(paths))]
        codes = modality_codes(modality, len(paths))
        pixels = np.stack([decode_image(p, size=self.input_size, resample=self.resample).transpose(2, 0, 1)
                           for p in paths])
        raw = self._embed_tracklet_pixels(pixels, codes)
        return (raw / max(float(np.linalg.norm(raw)), 1e-12)).astype(np.float32)

    def _tracklet_frames_used(self, count: int) -> Sequence[int]:
        """Positions of the frames of a ``count``-frame tracklet that are decoded (here: all)."""
        return range(count)

    def _embed_tracklet_pixels(self, pixels: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Raw tracklet embedding of uint8 frames ``[T, 3, H, W]``: here the mean of the frames' embeddings."""
        return self.embed_pixels(pixels, codes).mean(axis=0)
    # ---- end tracklets

    def embed(self, images: Any, modality: Any = "auto", flip: bool | None = None,
              batch_size: int = 64) -> np.ndarray:
        """L2-normalised embeddings ``[N, D]`` of ``images``: one or a list of paths, PIL images or
        ``HxWx3``/``HxW`` uint8 numpy arrays, any size.

        ``modality``: ``"auto"`` guesses each image (grey-level -> infrared, see
        :mod:`vireid.data.modality`), or one spelling for all (``"visible"``, ``"ir"``, ...), or one
        per image. The modalities used are kept in :attr:`last_modalities`, and warnings (e.g. a
        grey image given as visible) in :attr:`last_warnings` (also issued with :mod:`warnings`).
        ``flip`` overrides :attr:`flip` for this call.
        """
        import warnings as _warnings

        from vireid.data.modality import resolve_modalities

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        arrays, names = [], []
        for i, item in enumerate(items):
            array, name = _as_array(item, i)
            arrays.append(array)
            names.append(name)
        mods, notes, _ = resolve_modalities(arrays, modality, names)
        self.last_modalities, self.last_warnings = mods, notes
        for note in notes:
            _warnings.warn(note, stacklevel=2)
        saved = self.flip
        if flip is not None:
            self.flip = bool(flip)
        try:
            return self.embed_arrays(arrays, mods, batch_size)
        finally:
            self.flip = saved

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarities between rows of two embedding sets (both L2-normalised)."""
        return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T


def _as_array(item: Any, i: int) -> tuple[np.ndarray, str]:
    """(HxWx3 uint8 array, a name for messages) of a path, PIL image or numpy array."""
    if isinstance(item, (str, Path)):
        from vireid.data.images import decode_image

        return decode_image(item), str(item)
    if isinstance(item, np.ndarray):
        arr = item
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ConfigError(f"image {i + 1} is a {arr.dtype} array of shape {arr.shape}; give HxWx3 (or HxW) uint8 pixels")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        return np.ascontiguousarray(arr[:, :, :3]), f"image {i + 1}"
    if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image
        from vireid.data.images import pil_to_rgb_array

        return pil_to_rgb_array(item), f"image {i + 1}"
    raise ConfigError(f"image {i + 1} is a {type(item).__name__}; give a file path, a PIL image or a uint8 numpy array")


class TorchEmbedder(Embedder):
    """A vireid PyTorch model (from a checkpoint) as an :class:`Embedder`; runs on ``device``.

    ``amp`` (``auto``, ``none``, ``bf16``, ``fp16``; default: the training config's ``train.amp`` where
    it runs well on ``device``, :func:`vireid.engine.precision.inference_amp`) picks the autocast
    precision and memory format, resolved on ``device`` as for training
    (:func:`vireid.engine.precision.resolve_precision`); embeddings are returned in float32.
    """

    def __init__(self, model: torch.nn.Module, config: Any, *, device: str | torch.device = "cpu",
                 verification: dict | None = None, source: str | Path | None = None,
                 flip: bool | None = None, amp: str | None = None) -> None:
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
        super().__init__((height, width), probe.shape[-1], config=config, verification=verification, source=source,
                         flip=flip)
        self.fingerprint = model_fingerprint(model.state_dict())

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", amp: str | None = None) -> "TorchEmbedder":
        from vireid.engine.trainer import load_model_from_checkpoint

        model, cfg, ckpt = load_model_from_checkpoint(path, device)
        return cls(model, cfg, device=device, verification=ckpt.get("verification"), source=path, amp=amp)

    def _embed_batch(self, images: torch.Tensor, modalities: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        images = self.precision.prepare_input(images.to(self.device))
        extras = {name: value.to(self.device) for name, value in extras.items()}
        with self.precision.autocast():
            return self.model(images, modalities.to(self.device), **extras).float()

    def _tracklet_frames_used(self, count: int) -> Sequence[int]:
        """A temporal model uses some frames only (``test_frames: evenly`` or ``mitml``): only those are decoded."""
        if getattr(self.model, "test_frames", None) in ("evenly", "mitml") and hasattr(self.model, "seq_len"):
            from vireid.modeling.methods.temporal import frames_used

            return frames_used(count, int(self.model.seq_len), self.model.test_frames)
        return range(count)

    def _embed_tracklet_pixels(self, pixels: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """A model that reads ``tracklets`` sees the frames as one tracklet (every row is then its embedding);
        other models: the mean of the frames' embeddings."""
        from vireid.registry import accepted_parameters

        if "tracklets" not in accepted_parameters(type(self.model).forward)[0]:
            return super()._embed_tracklet_pixels(pixels, codes)
        batch = self.preprocess(torch.as_tensor(pixels))
        codes_t = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        tracklets = torch.zeros(len(batch), dtype=torch.long)
        with torch.no_grad():
            feats = self._embed_batch(batch, codes_t, tracklets=tracklets)[0]
            if self.flip:
                feats = (feats + self._embed_batch(torch.flip(batch, dims=[3]), codes_t, tracklets=tracklets)[0]) / 2
        return feats.cpu().numpy()
