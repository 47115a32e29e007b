"""``data.joints`` -> the joints of a list of records in the cached images' pixel frame (the sources
are listed in :mod:`vireid.data.pose`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vireid.data.pose.cache import default_pose_cache_path, read_pose_cache, relative_keys
from vireid.data.pose.mapping import NUM_JOINTS, scale_joints
from vireid.data.pose.synthetic import SYNTHETIC_SOURCE, is_synthetic_root, synthetic_pose_cache
from vireid.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    import torch

AUTO_SOURCE = "auto"


def resolve_joint_source(data_cfg: Any) -> tuple[str, Path]:
    """``(kind, path)`` for ``data.joints``: ``("synthetic", root)`` or ``("cache", file)``."""
    value = str(data_cfg.joints)
    root = Path(data_cfg.root)
    if value == SYNTHETIC_SOURCE:
        return SYNTHETIC_SOURCE, root
    if value == AUTO_SOURCE:
        if is_synthetic_root(root):
            return SYNTHETIC_SOURCE, root
        cache = default_pose_cache_path(root)
        if not cache.is_file():
            raise DatasetError(
                f"data.joints is auto but dataset {root} has neither synthetic joints nor a pose cache at {cache}; "
                f"create it with `vireid pose-cache {root} --format {data_cfg.format}` or set data.joints to a "
                "pose-cache file"
            )
        return "cache", cache
    path = Path(value)
    if not path.is_file():
        raise ConfigError(
            f"config key 'data.joints' is {value!r}, which is neither synthetic, auto nor an existing pose-cache "
            f"file; create one with `vireid pose-cache {root} --format {data_cfg.format} --out {value}`"
        )
    return "cache", path


def load_record_joints(records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
    """Joints ``[N, 16, 3]`` (x, y, visible) of ``records`` in the pixel frame of the cached images
    (``data.height`` x ``data.width``), from the source named by ``data.joints`` (module docstring).

    Raises a DatasetError naming how many images (and the first) have no joints in the source and how
    to make the pose cache.
    """
    import torch

    kind, where = resolve_joint_source(data_cfg)
    cache = synthetic_pose_cache(where) if kind == SYNTHETIC_SOURCE else read_pose_cache(where)
    if not records:
        return torch.zeros(0, NUM_JOINTS, 3)
    keys = relative_keys([r.path for r in records], data_cfg.root)
    rows, found = cache.lookup(keys)
    if not found.all():
        missing = [k for k, ok in zip(keys, found) if not ok]
        hint = (f"run `vireid pose-cache {data_cfg.root} --format {data_cfg.format}"
                + (f" --out {where}`" if kind == "cache" else "`"))
        if kind == "cache" and not cache.meta.get("complete", False):
            hint += " again to finish it (it resumes)"
        raise DatasetError(
            f"{len(missing)} of {len(keys)} images have no joints in {where}, first {missing[0]}; {hint}"
        )
    joints = scale_joints(cache.joints[rows], cache.sizes[rows], data_cfg.height, data_cfg.width)
    return torch.from_numpy(np.ascontiguousarray(joints, dtype=np.float32))


__all__ = ["AUTO_SOURCE", "load_record_joints", "resolve_joint_source"]
