"""Helpers shared by the picture modules: Agg backend, exact-size PNG output, fonts, thumbnails.

Every picture is written as a PNG whose pixel size is fixed by the caller (``size=(width, height)``
for matplotlib figures, a documented layout formula for the Pillow grids), so that a report or a
README shows them at a predictable size and tests can check it. Writes to a path are atomic
(temporary file in the same folder + ``os.replace``); ``out`` may also be a binary file object
(e.g. :class:`io.BytesIO` for the HTML report), which is written directly.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Union

import numpy as np

#: Where a picture goes: a file path, or an open binary file object.
Output = Union[str, os.PathLike, IO[bytes]]

#: Frame colours of ranked lists and thumbnails (RGB).
GREEN = (0, 170, 0)
RED = (220, 0, 0)
BLUE = (40, 90, 220)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_bytes(data: bytes, out: Output) -> Path | None:
    """Write ``data`` to a path atomically (temporary file + ``os.replace``) or to a file object.

    Returns the path, or None for a file object.
    """
    if hasattr(out, "write"):
        out.write(data)  # type: ignore[union-attr]
        return None
    path = Path(out)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def new_figure(size: Sequence[int], dpi: int = 100):
    """A matplotlib figure of exactly ``size = (width, height)`` pixels at ``dpi``."""
    plt = pyplot()
    width, height = int(size[0]), int(size[1])
    if width < 50 or height < 50:
        raise ValueError(f"figure size must be at least 50x50 pixels, got {width}x{height}")
    return plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)


def save_figure(fig: Any, out: Output, dpi: int = 100) -> Path | None:
    """Save a matplotlib figure as PNG at its own pixel size (no tight bounding box) and close it."""
    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return write_bytes(buffer.getvalue(), out)


def save_image(image: Any, out: Output) -> Path | None:
    """Save a Pillow image as PNG (atomically for a path)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_bytes(buffer.getvalue(), out)


def font(size: int = 11):
    """Pillow's bundled scalable font at ``size`` pixels (the bitmap default if FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def as_thumbnail(image: str | os.PathLike | np.ndarray, size: Sequence[int]) -> Any:
    """A Pillow RGB image of ``size = (height, width)`` from an image file or an HxWx3 uint8 array."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        pil = Image.fromarray(np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8))
    else:
        from vireid.data.images import decode_image

        pil = Image.fromarray(decode_image(image))
    if pil.size != (width, height):
        pil = pil.resize((width, height), Image.BILINEAR)
    return pil


def text_width(draw: Any, text: str, text_font: Any) -> int:
    """Rendered width of ``text`` in pixels."""
    left, _, right, _ = draw.textbbox((0, 0), text, font=text_font)
    return int(right - left)


def fit_text(draw: Any, text: str, text_font: Any, max_width: int) -> str:
    """``text`` shortened with an ellipsis until it fits in ``max_width`` pixels."""
    if text_width(draw, text, text_font) <= max_width:
        return text
    while len(text) > 1 and text_width(draw, text + "…", text_font) > max_width:
        text = text[:-1]
    return text + "…"


def identity_colours(count: int) -> np.ndarray:
    """``count`` distinct RGB colours in 0..1 (``tab10``/``tab20``, then evenly spaced hues)."""
    plt = pyplot()
    if count <= 10:
        return np.asarray(plt.get_cmap("tab10").colors[:count])
    if count <= 20:
        return np.asarray(plt.get_cmap("tab20").colors[:count])
    return np.asarray(plt.get_cmap("hsv")(np.linspace(0.0, 1.0, count, endpoint=False))[:, :3])


def pick_cross_modality_ids(pids: np.ndarray, modalities: np.ndarray, num_ids: int, rng: np.random.Generator,
                            purpose: str) -> np.ndarray:
    """``num_ids`` random identities (fewer if there are fewer) that have visible and infrared images;
    ``purpose`` completes the error raised when none has both."""
    from vireid.data.records import MODALITY_CODE, VISIBLE
    from vireid.errors import VireidError

    vis = MODALITY_CODE[VISIBLE]
    both = np.intersect1d(np.unique(pids[modalities == vis]), np.unique(pids[modalities != vis]))
    if len(both) == 0:
        raise VireidError(f"no test identity has both visible and infrared images; {purpose}")
    return rng.choice(both, size=min(int(num_ids), len(both)), replace=False)
