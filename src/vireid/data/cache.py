"""Decode every image once into one uint8 array ``[N, 3, H, W]``, in memory or memory-mapped on disk.

JPEG decoding and resizing cost far more than the augmentations of :mod:`vireid.data.transforms`;
done per step they starve a GPU. AGW/CAJ pre-resize SYSU-MM01 into ``.npy`` files for the same reason.
:class:`ImageCache` does this for any list of paths: images are decoded in parallel with
:func:`~vireid.data.images.decode_image` at the model's input size, and batches are then gathered by
fancy indexing (one numpy call per batch).

With ``cache_dir`` the array lives in a ``.npy`` file named after a fingerprint of the paths, their
sizes and modification times and the target size, so a second run (or another process of a
distributed job) maps the finished file instead of decoding again, and any change to an image gives a
new file. The file is written under a temporary name, flushed, fsynced and renamed: a killed build
leaves at most a ``*.tmp`` file, which is never mistaken for a cache.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.images import decode_image
from vireid.errors import ConfigError, DatasetError

CACHE_FORMAT_VERSION = 1
#: Images decoded per task handed to a worker (amortises the executor overhead).
_CHUNK = 16


def _stat_line(path: str) -> str:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; check the dataset root and its split files") from None
    return f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"


def image_fingerprint(paths: Sequence[str | os.PathLike[str]], height: int, width: int, resample: str = "bilinear") -> str:
    """SHA-256 over the absolute paths, sizes and mtimes of ``paths``, the target ``height`` x ``width``
    and the resampling filter (bilinear keeps the fingerprints of caches written before it was an option)."""
    head = f"vireid-image-cache-v{CACHE_FORMAT_VERSION}\n{int(height)}x{int(width)}\n"
    if resample != "bilinear":
        head += f"resample={resample}\n"
    digest = hashlib.sha256(head.encode())
    for path in paths:
        digest.update(_stat_line(os.fspath(path)).encode())
    return digest.hexdigest()


def _decode_chunk_into(target: np.ndarray, paths: Sequence[str], start: int, height: int, width: int,
                       resample: str = "bilinear") -> int:
    for offset, path in enumerate(paths):
        target[start + offset] = decode_image(path, size=(height, width), resample=resample).transpose(2, 0, 1)
    return len(paths)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(final: Path) -> None:
    """Delete ``<final>.<pid>.<tag>.tmp`` files left by builds whose process is gone."""
    for leftover in final.parent.glob(final.name + ".*.tmp"):
        parts = leftover.name[len(final.name) + 1 :].split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else -1
        if pid != os.getpid() and not _pid_alive(pid):
            leftover.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ImageCache:
    """uint8 images ``[N, 3, H, W]`` held in memory or memory-mapped from a ``.npy`` file.

    ``cache[indices]`` returns a uint8 :class:`torch.Tensor` ``[len(indices), 3, H, W]`` (a copy made
    by one numpy fancy-indexing call); an integer index returns ``[3, H, W]``.
    """

    def __init__(self, array: np.ndarray, path: Path | None = None) -> None:
        if array.ndim != 4 or array.shape[1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"an image cache holds uint8 [N, 3, H, W] arrays, got {array.dtype} {array.shape}")
        self.array = array
        self.path = path

    # ------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        height: int,
        width: int,
        cache_dir: str | os.PathLike[str] | None = None,
        workers: int | None = None,
        progress: bool = True,
        resample: str = "bilinear",
    ) -> ImageCache:
        """Decode ``paths`` at ``height`` x ``width`` (or reuse the finished cache file in ``cache_dir``).

        ``workers``: decoding threads (default: the CPUs available to this process). Threads, not
        processes: Pillow releases the GIL while decoding and resizing, threads write straight into the
        (memory-mapped) array with no pickling, and a process pool must first re-import torch in every
        worker -- measured on a 2-CPU machine, 400 JPEGs to 288x144 took ~2 s with threads and ~8-14 s
        with a spawned process pool. An image that cannot be decoded raises the
        :class:`~vireid.errors.DatasetError` of :func:`~vireid.data.images.decode_image`, naming it.
        """
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise ConfigError(f"image cache size {height}x{width} is invalid; use positive height and width")
        paths = [os.fspath(p) for p in paths]
        shape = (len(paths), 3, height, width)
        workers = _default_workers() if workers is None else max(1, int(workers))

        if cache_dir is None:
            for path in paths:
                _stat_line(path)  # fail fast, naming a missing file, before any decoding
            array = np.empty(shape, dtype=np.uint8)
            _decode_all(array, paths, height, width, workers, progress, resample)
            return cls(array)

        directory = Path(cache_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"image cache folder {directory} cannot be created ({err}); choose a writable cache_dir") from None
        fingerprint = image_fingerprint(paths, height, width, resample)
        final = directory / f"images-{len(paths)}x3x{height}x{width}-{fingerprint[:24]}.npy"
        existing = cls._open_if_valid(final, shape)
        if existing is not None:
            return existing
        _remove_stale_temporaries(final)
        temporary = final.with_name(f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
            _decode_all(array, paths, height, width, workers, progress, resample)
            array.flush()
            del array
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            _fsync_directory(directory)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        opened = cls._open_if_valid(final, shape)
        if opened is None:
            raise DatasetError(f"image cache {final} was written but cannot be read back; check the disk and delete it")
        return opened

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ImageCache:
        """Memory-map a finished cache file (read-only)."""
        path = Path(path)
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DatasetError(f"image cache {path} cannot be opened ({err}); delete it so it is rebuilt") from None
        return cls(array, path)

    @classmethod
    def _open_if_valid(cls, path: Path, shape: tuple[int, ...]) -> ImageCache | None:
        if not path.is_file():
            return None
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if array.shape != shape or array.dtype != np.uint8:
            return None
        return cls(array, path)

    # ------------------------------------------------------------- reading
    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def height(self) -> int:
        return int(self.array.shape[2])

    @property
    def width(self) -> int:
        return int(self.array.shape[3])

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def __getitem__(self, indices: Any) -> torch.Tensor:
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        if isinstance(indices, (int, np.integer, slice)):
            selected = self.array[indices]
        else:
            selected = self.array[np.asarray(indices, dtype=np.int64)]
        return torch.from_numpy(np.array(selected, dtype=np.uint8, copy=True))

    def gather(self, indices: Any, pin: bool = False) -> torch.Tensor:
        """``self[indices]`` (int64 indices or a slice) copied once, straight into a new tensor, in
        page-locked memory when ``pin`` (CUDA): a non-blocking copy to the GPU then overlaps the
        training step, without the extra gather + ``pin_memory()`` copies of ``self[indices]``.
        The pinned block comes from PyTorch's caching host allocator, which reuses it only after
        the copies that read it have finished."""
        if isinstance(indices, slice):
            indices = np.arange(*indices.indices(len(self)), dtype=np.int64)
        elif isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = torch.empty((len(index), 3, self.height, self.width), dtype=torch.uint8, pin_memory=pin)
        np.take(self.array, index, axis=0, out=out.numpy())
        return out

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"ImageCache({len(self)} images {self.height}x{self.width}, {where})"


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _decode_all(array: np.ndarray, paths: list[str], height: int, width: int, workers: int, progress: bool,
                resample: str = "bilinear") -> None:
    """Fill ``array`` (in memory or memory-mapped) with the decoded images, ``workers`` threads in parallel."""
    from tqdm import tqdm

    starts = list(range(0, len(paths), _CHUNK))
    with tqdm(total=len(paths), desc=f"decoding images to {height}x{width}", unit="img", disable=None if progress else True) as bar:
        if workers == 1 or len(starts) <= 1:
            for start in starts:
                bar.update(_decode_chunk_into(array, paths[start : start + _CHUNK], start, height, width, resample))
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vireid-decode")
        try:
            pending = {
                pool.submit(_decode_chunk_into, array, paths[start : start + _CHUNK], start, height, width, resample)
                for start in starts
            }
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    bar.update(future.result())  # re-raises a worker's DatasetError, naming the file
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
