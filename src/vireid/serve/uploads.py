"""Checking and decoding uploaded query images before any of their pixels are decoded.

An upload goes through, in order: a byte-size limit (enforced while the request body streams in,
see :class:`~vireid.serve.app.BodySizeLimit`, and again here), a magic-number check that it is
JPEG, PNG, BMP or WebP, Pillow's header parse restricted to those formats, a dimension limit
read from the header (so a small file that claims 100000 x 100000 pixels is refused without
allocating them), and only then the decode, where a truncated or corrupt file becomes a 400.
Every refusal is an :class:`UploadError` carrying an HTTP status and one sentence for the user.

The decoded image is turned into the model's input exactly as gallery images are by
:func:`vireid.data.images.decode_image` (EXIF orientation, RGB, bilinear resize), so a gallery
image uploaded as a query finds itself with score 1.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from vireid.data.images import DEFAULT_MAX_PIXELS, pil_to_rgb_array, pixel_limit_sentence

#: Pillow format names accepted for uploads.
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
_FORMAT_WORDS = "JPEG, PNG, BMP or WebP"


@dataclass(frozen=True)
class ServeLimits:
    """Limits that keep one request from exhausting the server.

    ``max_upload_bytes`` bounds the image file, ``max_request_bytes`` the whole request body
    (image + form fields + multipart framing). ``max_side`` / ``max_pixels`` bound the decoded
    size (checked from the header before decoding). ``max_k`` bounds the number of results.
    ``max_pending`` is how many searches may be queued or running at once (more get 503);
    ``workers`` how many run at the same time (decoding in parallel, the model one at a time).
    ``header_timeout_s`` / ``body_timeout_s`` bound how long a client may take to send its request's
    headers / body, ``max_connections`` the open connections (slow clients, :mod:`vireid.serve.protocol`).
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 10 * 1024 * 1024 + 64 * 1024
    max_side: int = 8192
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_k: int = 100
    default_k: int = 10
    max_pending: int = 16
    workers: int = 2
    header_timeout_s: float = 10.0  # a request's headers must arrive within this (vireid.serve.protocol)
    body_timeout_s: float = 60.0  # and its body within this once the application reads it
    max_connections: int = 64  # open connections; more evict the longest-stalled one or get 503

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_request_bytes", "max_side", "max_pixels", "max_k",
                     "default_k", "max_pending", "workers", "max_connections"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ServeLimits.{name} must be at least 1")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"ServeLimits.{name} must be positive")
        if self.default_k > self.max_k:
            raise ValueError("ServeLimits.default_k must not exceed max_k")


def format_bytes(n: int) -> str:
    """A byte count for messages: ``10.0 MiB``, ``48 KiB``."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{max(1, round(n / 1024))} KiB"


class UploadError(Exception):
    """A request the server refuses: ``status`` is the HTTP status, ``message`` one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sniff_format(head: bytes) -> str | None:
    """The image format named by the file's first bytes (Pillow's name), or None if unknown.

    Formats that are images but not accepted (GIF, TIFF, ...) are named too, so the error can
    say "GIF images are not accepted" rather than "not an image".
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "HEIF/AVIF"
    if head.lstrip()[:5].lower() in (b"<?xml", b"<svg ") or head.lstrip()[:4].lower() == b"<svg":
        return "SVG"
    if head.startswith(b"%PDF"):
        return "PDF"
    return None


def decode_upload(data: bytes, limits: ServeLimits, size: tuple[int, int] | None = None,
                  resample: str = "bilinear") -> np.ndarray:
    """Validate an uploaded image file and decode it to uint8 (H, W, 3).

    ``size=(height, width)`` resizes (``resample``: the model's ``data.resample``, bilinear by default)
    to the model's input size. Raises
    :class:`UploadError` (4xx) for anything that is not a well-formed, reasonably sized image.
    """
    if len(data) == 0:
        raise UploadError(400, "the uploaded file is empty (0 bytes); choose a JPEG, PNG, BMP or WebP image")
    if len(data) > limits.max_upload_bytes:
        raise UploadError(413, f"the uploaded file is larger than {format_bytes(limits.max_upload_bytes)}, the "
                               "limit; send a smaller image")
    kind = sniff_format(data[:32])
    if kind is None:
        raise UploadError(415, f"the uploaded file is not an image; send a {_FORMAT_WORDS} file")
    if kind not in ALLOWED_FORMATS:
        raise UploadError(415, f"{kind} images are not accepted; convert it to {_FORMAT_WORDS}")
    kind = "WebP" if kind == "WEBP" else kind
    try:
        img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except Image.DecompressionBombError:
        raise UploadError(400, pixel_limit_sentence("the image", None, None, limits.max_pixels, limits.max_side)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise UploadError(400, f"the uploaded {kind} file is corrupt or truncated (its header cannot be read); "
                               "re-save the image and try again") from None
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise UploadError(400, f"the uploaded image has no pixels ({width}x{height}); send a real image")
        if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
            raise UploadError(400, pixel_limit_sentence("the image", width, height, limits.max_pixels, limits.max_side))
        try:
            if size is not None and img.format == "JPEG":
                # decode a large JPEG directly at a reduced DCT scale, still >= 2x the model input
                img.draft("RGB", (2 * int(size[1]), 2 * int(size[0])))
            img.load()
            return pil_to_rgb_array(img, size, resample)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            what = "truncated" if "truncated" in str(err).lower() else "corrupt"
            raise UploadError(400, f"the uploaded {kind} image is {what} and cannot be decoded; "
                                   "re-save the image and try again") from None
