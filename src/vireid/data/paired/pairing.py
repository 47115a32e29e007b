"""Pairing registered images: the moment an image shows (RegDB's file names), the ``(visible, infrared)``
rows of a split, and the depth image of each pair (:mod:`vireid.data.paired`)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vireid.data.records import VISIBLE, ImageRecord
from vireid.errors import DatasetError

#: RegDB names a visible image ``..._v_<counter>_<id>.bmp`` and its thermal twin ``..._t_<counter>_<id>.bmp``
#: (vireid's synthetic depth camera adds ``..._d_<counter>_<id>.png``).
_MODALITY_TOKEN = re.compile(r"_(?:v|t|d)_", re.IGNORECASE)


def moment_key(path: str) -> str:
    """The name of the moment an image shows: its file name with RegDB's modality letter removed
    (``male_front_v_00061_7.bmp`` and ``male_front_t_00061_7.bmp`` -> ``male_front_*_00061_7``)."""
    return _MODALITY_TOKEN.sub("_*_", Path(path).stem, count=1)


def pair_registered_records(records: Sequence[ImageRecord], split: str = "train") -> np.ndarray:
    """``int64 [P, 2]`` rows ``(visible index, infrared index)`` into ``records``, one per moment.

    Within each identity the images are matched by :func:`moment_key` when that matches every image
    one to one (RegDB's file names), otherwise by position (the i-th visible image with the i-th
    infrared image, as listed), which needs equal counts. Rows are ordered by identity, then visible
    index. Raises :class:`DatasetError` when an identity cannot be paired.
    """
    by_identity: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for i, r in enumerate(records):
        by_identity[r.orig_pid][0 if r.modality == VISIBLE else 1].append(i)
    rows: list[tuple[int, int]] = []
    for pid in sorted(by_identity):
        visible, infrared = by_identity[pid]
        vis_keys = [moment_key(records[i].path) for i in visible]
        ir_index = {moment_key(records[i].path): i for i in infrared}
        if len(ir_index) == len(infrared) == len(visible) == len(set(vis_keys)) and set(vis_keys) == set(ir_index):
            rows.extend((v, ir_index[k]) for v, k in zip(visible, vis_keys))
        elif len(visible) == len(infrared) and visible:
            rows.extend(zip(visible, infrared))
        else:
            raise DatasetError(
                f"identity {pid} of the {split} split has {len(visible)} visible and {len(infrared)} infrared images "
                "whose names do not match moment by moment, so they cannot be paired; restore the missing twins or "
                "read the dataset without paired=true"
            )
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def depth_for_pairs(records: Sequence[ImageRecord], pairs: np.ndarray, depth_root: Path) -> list[str]:
    """Path of the depth image of every pair's moment: ``depth_root/<identity folder>/<file>`` whose
    :func:`moment_key` equals the pair's (RegDB layout with vireid's synthetic depth camera)."""
    from vireid.data.images import is_image_file

    listing: dict[str, dict[str, str]] = {}
    out = []
    for v in np.asarray(pairs, dtype=np.int64).reshape(-1, 2)[:, 0]:
        folder = Path(records[int(v)].path).parent.name
        if folder not in listing:
            directory = depth_root / folder
            files = sorted(p for p in directory.iterdir() if is_image_file(p)) if directory.is_dir() else []
            listing[folder] = {moment_key(str(p)): str(p) for p in files}
        key = moment_key(records[int(v)].path)
        if key not in listing[folder]:
            raise DatasetError(
                f"{depth_root / folder} has no depth image of moment {key} (of {records[int(v)].path}); restore it or "
                "remove the Depth/ folder to read visible/thermal pairs only"
            )
        out.append(listing[folder][key])
    return out


__all__ = ["depth_for_pairs", "moment_key", "pair_registered_records"]
