"""The gallery as the service sees it: rows of a :class:`~vireid.retrieval.index.GalleryIndex`,
searched by modality, and their image files read safely.

Clients name gallery images only by integer row id. A file is served only when it is the file the
index lists for that row, its real location (symlinks resolved, checked again on the opened file
descriptor) lies inside the gallery root, and its first bytes are those of an image; anything
else is answered 404. The gallery root is ``gallery_root`` when given, else the index's image
root (``metadata.root``), else the deepest folder holding every listed image.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.images import IMAGE_EXTENSIONS
from vireid.data.records import MODALITIES
from vireid.serve.uploads import UploadError, sniff_format

#: Content types of the image formats a gallery file may have.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "WEBP": "image/webp",
               "GIF": "image/gif", "TIFF": "image/tiff"}
#: Largest gallery file served (a gallery of person crops has no reason to hold bigger ones).
MAX_GALLERY_FILE_BYTES = 64 * 1024 * 1024


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class ServedGallery:
    """Read-only view of an index for the service: metadata rows, search, and safe file reads."""

    def __init__(self, index: Any, root: str | os.PathLike | None = None) -> None:
        self.index = index
        self.meta = index.metadata
        self.size = len(self.meta)
        self.dim = getattr(index, "dim", None)
        if root is None:
            root = getattr(self.meta, "root", None)
        if root is None:
            parents = [os.path.dirname(os.path.abspath(str(self.meta.image_path(i)))) for i in range(self.size)]
            root = os.path.commonpath(parents) if parents else os.getcwd()
        self.root = os.path.realpath(os.path.expanduser(str(root)))
        self._modalities = np.asarray(self.meta.modalities, dtype=object)

    def modality_counts(self) -> dict[str, int]:
        """Number of gallery images per modality."""
        return {m: int(np.count_nonzero(self._modalities == m)) for m in MODALITIES}

    def row(self, i: int) -> dict[str, Any]:
        """Public fields of row ``i``: pid, camid, modality and the file name relative to the gallery root."""
        row = self.meta.row(i)
        listed = os.path.abspath(str(self.meta.image_path(i)))
        name = os.path.relpath(listed, self.root) if _inside(listed, self.root) else os.path.basename(listed)
        return {"pid": row["pid"], "camid": row["camid"], "modality": row["modality"], "name": Path(name).as_posix()}

    def search(self, feats: np.ndarray, k: int, modality: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine scores and row ids for each query row, optionally among one modality."""
        return self.index.search(feats, k, modality=modality)

    def read_image(self, i: int) -> tuple[bytes, str]:
        """Bytes and content type of gallery image ``i``; :class:`UploadError` 404 when it may not be served."""
        if not 0 <= i < self.size:
            raise UploadError(404, f"there is no gallery image {i}; ids run from 0 to {self.size - 1}")
        listed = Path(os.path.abspath(str(self.meta.image_path(i))))
        if listed.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UploadError(404, f"gallery entry {i} is not an image file; it is not served")
        real = os.path.realpath(listed)
        if not _inside(real, self.root):
            raise UploadError(404, f"gallery image {i} lies outside the gallery folder; it is not served")
        # O_NONBLOCK: opening a FIFO (or a device) placed in the gallery returns at once instead of waiting
        # for a writer; the regular-file check below then refuses it
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except OSError:
            raise UploadError(404, f"gallery image {i} is missing or unreadable on the server") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UploadError(404, f"gallery entry {i} is not a regular file; it is not served")
            if info.st_size > MAX_GALLERY_FILE_BYTES:
                raise UploadError(404, f"gallery image {i} is too large to serve")
            opened = f"/proc/self/fd/{fd}"
            if os.path.exists(opened):  # the file actually opened, in case a folder was swapped meanwhile
                if not _inside(os.path.realpath(os.readlink(opened)), self.root):
                    raise UploadError(404, f"gallery image {i} lies outside the gallery folder; it is not served")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(MAX_GALLERY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        kind = sniff_format(data[:32])
        if kind not in MEDIA_TYPES:
            raise UploadError(404, f"gallery image {i} is not a readable image file; it is not served")
        return data, MEDIA_TYPES[kind]
