"""Pose-cache files: one ``.npz`` per dataset of every image's joints (format in :mod:`vireid.data.pose`),
written atomically and looked up by the image's path relative to the dataset root."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vireid.data.pose.mapping import NUM_JOINTS
from vireid.errors import ConfigError, DatasetError

POSE_CACHE_VERSION = 1


@dataclass
class PoseCache:
    """The content of a pose-cache file (see the module docstring)."""

    paths: np.ndarray  # str [N], relative to the dataset root, sorted
    joints: np.ndarray  # float32 [N, 16, 3], original pixels
    sizes: np.ndarray  # int32 [N, 2] (height, width)
    detected: np.ndarray  # bool [N]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    @classmethod
    def empty(cls, meta: dict | None = None) -> PoseCache:
        return cls(np.zeros(0, dtype=str), np.zeros((0, NUM_JOINTS, 3), np.float32), np.zeros((0, 2), np.int32),
                   np.zeros(0, dtype=bool), dict(meta or {}))

    def sorted(self) -> PoseCache:
        order = np.argsort(self.paths, kind="stable")
        return PoseCache(self.paths[order], self.joints[order], self.sizes[order], self.detected[order], self.meta)

    def lookup(self, rel_paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row of each relative path (vectorised: binary search in the sorted paths) and a found mask."""
        keys = np.asarray(list(rel_paths), dtype=str)
        if len(self) == 0 or keys.size == 0:
            return np.zeros(keys.shape, dtype=np.int64), np.zeros(keys.shape, dtype=bool)
        rows = np.clip(np.searchsorted(self.paths, keys), 0, len(self) - 1)
        return rows, self.paths[rows] == keys


def write_pose_cache(path: str | Path, cache: PoseCache) -> Path:
    """Write ``cache`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"pose cache folder {path.parent} cannot be created ({err}); pass a writable --out") from None
    cache = cache.sorted()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, paths=cache.paths.astype(str), joints=cache.joints.astype(np.float32),
                     sizes=cache.sizes.astype(np.int32), detected=cache.detected.astype(bool),
                     meta=np.asarray(json.dumps(cache.meta, sort_keys=True)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise ConfigError(f"pose cache {path} cannot be written ({err}); pass a writable --out") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_pose_cache(path: str | Path) -> PoseCache:
    """Read a pose-cache file; a missing or foreign file raises a DatasetError saying how to make one."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pose cache {path} does not exist; create it with `vireid pose-cache DATASET_ROOT "
                           f"--format FORMAT --out {path}`")
    try:
        with np.load(path, allow_pickle=False) as data:
            cache = PoseCache(data["paths"].astype(str), data["joints"].astype(np.float32),
                              data["sizes"].astype(np.int32), data["detected"].astype(bool),
                              json.loads(str(data["meta"])))
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{path} is not a vireid pose cache ({type(err).__name__}: {err}); delete it and run "
                           "`vireid pose-cache` again") from None
    if cache.joints.shape != (len(cache), NUM_JOINTS, 3) or cache.sizes.shape != (len(cache), 2):
        raise DatasetError(f"pose cache {path} holds arrays of inconsistent shapes; delete it and run "
                           "`vireid pose-cache` again")
    return cache.sorted()


def default_pose_cache_path(root: str | Path) -> Path:
    """``<parent>/<root name>.pose.npz``: next to the dataset folder (the dataset is never written to)."""
    root = Path(os.path.abspath(root))
    return root.parent / f"{root.name}.pose.npz"


def relative_keys(paths: Iterable[str | Path], root: str | Path) -> list[str]:
    """Paths relative to ``root``, ``/``-separated (the keys of the pose cache and of synthetic joints)."""
    base = os.path.abspath(root)
    return [Path(os.path.relpath(os.path.abspath(p), base)).as_posix() for p in paths]


__all__ = ["POSE_CACHE_VERSION", "PoseCache", "default_pose_cache_path", "read_pose_cache", "relative_keys",
           "write_pose_cache"]
