"""Image decoding with Pillow: one place that turns a file into a uint8 HxWx3 array.

Infrared images (SYSU-MM01 stores them as 3-channel grey JPEGs, RegDB as single-channel BMPs)
come out as three identical channels, so every model sees 3-channel input. Problems are raised
as :class:`~vireid.errors.DatasetError` naming the file, never as a bare Pillow traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vireid.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Resampling filters for the resize to the model input (config ``data.resample``): bilinear (vireid's
#: default) or Lanczos, which AGW's and CAJ's reference code use (``Image.ANTIALIAS`` in their
#: ``data_loader.py`` / ``pre_process_sysu.py``; Pillow's ANTIALIAS is LANCZOS).
RESAMPLE_FILTERS = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def resample_filter(name: str | None) -> int:
    """Pillow filter for a ``data.resample`` name (None = bilinear)."""
    key = "bilinear" if name is None else str(name).lower()
    if key not in RESAMPLE_FILTERS:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_FILTERS)}, got {name!r}")
    return RESAMPLE_FILTERS[key]


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def pil_to_rgb_array(img: Image.Image, size: tuple[int, int] | None = None, resample: str = "bilinear") -> np.ndarray:
    """A loaded Pillow image -> uint8 (H, W, 3): EXIF orientation applied, 16/32-bit grey stretched to
    0-255 over its own range, any mode converted to RGB, resized to ``size=(height, width)`` with
    ``resample`` (``"bilinear"`` or ``"lanczos"``, :data:`RESAMPLE_FILTERS`)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = (255.0 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)).astype(np.uint8)
        img = Image.fromarray(arr)
    img = img.convert("RGB")
    if size is not None:
        height, width = int(size[0]), int(size[1])
        if img.size != (width, height):
            img = img.resize((width, height), resample_filter(resample))
    return np.asarray(img, dtype=np.uint8)


def decode_image(path: str | Path, size: tuple[int, int] | None = None, resample: str = "bilinear") -> np.ndarray:
    """Decode ``path`` to a uint8 array of shape (H, W, 3).

    ``size=(height, width)`` resizes with ``resample`` (bilinear by default, or lanczos). EXIF orientation is applied.
    Greyscale, palette, 16-bit and alpha images are converted to RGB.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"image {path} is an empty file (0 bytes); replace or remove it and its split entry")
        with Image.open(path) as img:
            img.load()
            return pil_to_rgb_array(img, size, resample)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; check the dataset root and its split files") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(
            f"image {path} cannot be decoded ({type(err).__name__}: {err}); re-extract or replace the file"
        ) from None
