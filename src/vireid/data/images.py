"""Image decoding with Pillow: one place that turns a file into a uint8 HxWx3 array.

Infrared images (SYSU-MM01 stores them as 3-channel grey JPEGs, RegDB as single-channel BMPs)
come out as three identical channels, so every model sees 3-channel input. Problems are raised
as :class:`~vireid.errors.DatasetError` naming the file, never as a bare Pillow traceback.

Every decode is capped in pixels (:data:`DEFAULT_MAX_PIXELS`, the limit ``vireid serve`` applies to
uploads; ``VIREID_MAX_PIXELS`` in the environment changes it): the size is read from the file's
header and a larger image is refused before its pixels are decoded, so a small file claiming a huge
canvas (a "decompression bomb") costs neither memory nor time.
"""

from __future__ import annotations

import os
import re
import warnings
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

DEFAULT_MAX_PIXELS = 40_000_000  # 40 megapixels: far above any re-id image, far below a bomb


def max_pixels() -> int:
    """The pixel cap of :func:`decode_image`: ``VIREID_MAX_PIXELS`` when set, else :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get("VIREID_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise DatasetError(f"VIREID_MAX_PIXELS is {raw!r}; set it to a whole number of pixels such as 40000000")
    return int(raw)


def pixel_limit_sentence(subject: str, width: int | None, height: int | None, limit: int,
                         max_side: int | None = None) -> str:
    """The one sentence for an image over the pixel cap, shared by file decoding and the server."""
    size = f"{width}x{height} pixels" if width is not None else "far too large"
    side = f"{max_side} pixels per side and " if max_side is not None else ""
    return f"{subject} is {size}; the limit is {side}{limit / 1e6:g} megapixels, resize it"


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
    limit = max_pixels()
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"image {path} is an empty file (0 bytes); replace or remove it and its split entry")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides, below
            img = Image.open(path)
        with img:
            width, height = img.size
            if width * height > limit:
                raise DatasetError(pixel_limit_sentence(f"image {path}", width, height, limit)
                                   + " or raise VIREID_MAX_PIXELS")
            img.load()
            return pil_to_rgb_array(img, size, resample)
    except DatasetError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own cap (twice Image.MAX_IMAGE_PIXELS) at open
        dims = re.search(r"\((\d+) pixels\)", str(err))
        what = f"image {path}" + (f" ({int(dims.group(1)) / 1e6:.0f} megapixels)" if dims else "")
        raise DatasetError(pixel_limit_sentence(what, None, None, limit) + " or raise VIREID_MAX_PIXELS") from None
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; check the dataset root and its split files") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(
            f"image {path} cannot be decoded ({type(err).__name__}: {err}); re-extract or replace the file"
        ) from None
