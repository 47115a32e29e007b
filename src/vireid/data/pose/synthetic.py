"""The exact joints the synthetic generator stores (``synth_joints.npz`` of a ``vireid synth`` folder),
read as a pose cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vireid.data.pose.cache import POSE_CACHE_VERSION, PoseCache
from vireid.errors import DatasetError

SYNTHETIC_SOURCE = "synthetic"


def is_synthetic_root(root: str | Path) -> bool:
    from vireid.data.synth.generator import JOINTS_FILE

    return (Path(root) / JOINTS_FILE).is_file()


def synthetic_pose_cache(root: str | Path) -> PoseCache:
    """The generator's stored joints of a ``vireid synth`` folder as a :class:`PoseCache` (exact joints,
    every image 'detected', visibility 0/1)."""
    from vireid.data.synth.generator import JOINTS_FILE, META_FILE

    root = Path(root)
    joints_path, meta_path = root / JOINTS_FILE, root / META_FILE
    if not joints_path.is_file():
        raise DatasetError(f"{joints_path} does not exist: {root} is not a vireid synth folder; set data.joints to "
                           f"auto or to a pose cache made by `vireid pose-cache {root} --format FORMAT`")
    try:
        args = json.loads(meta_path.read_text())["arguments"]
        size = (int(args["height"]), int(args["width"]))
        with np.load(joints_path, allow_pickle=False) as data:
            paths, joints = data["paths"].astype(str), data["joints"].astype(np.float32)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"the joints of synthetic dataset {root} cannot be read ({type(err).__name__}: {err}); "
                           f"delete {root} and run vireid synth again") from None
    n = len(paths)
    meta = {"estimator": SYNTHETIC_SOURCE, "complete": True, "version": POSE_CACHE_VERSION}
    return PoseCache(paths, joints, np.tile(np.asarray(size, np.int32), (n, 1)), np.ones(n, bool), meta).sorted()


__all__ = ["SYNTHETIC_SOURCE", "is_synthetic_root", "synthetic_pose_cache"]
