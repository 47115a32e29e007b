"""Building a pose cache: every image of a dataset through an estimator, in this process or a process
pool, resumable (``vireid pose-cache``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vireid.data.pose.cache import POSE_CACHE_VERSION, PoseCache, default_pose_cache_path, read_pose_cache, relative_keys, write_pose_cache
from vireid.data.pose.estimators import ESTIMATORS, MediaPipePoseEstimator, PoseEstimator, SyntheticPoseEstimator
from vireid.data.pose.sources import AUTO_SOURCE
from vireid.data.pose.synthetic import SYNTHETIC_SOURCE, is_synthetic_root
from vireid.errors import ConfigError, DatasetError


@dataclass
class PoseCacheReport:
    path: Path
    images: int
    new: int
    detected: int
    seconds: float


def dataset_image_paths(root: str | Path, fmt: str, options: dict | None = None) -> list[str]:
    """Every image of the dataset (train, val, test, query, gallery), once, as absolute paths."""
    from vireid.data.datasets import build_dataset, dataset_options

    options = dict(options or {})
    if "require_train" in dataset_options(fmt):
        options.setdefault("require_train", False)  # evaluation-only copies have joints too
    dataset = build_dataset(fmt, root, **options)
    seen: dict[str, None] = {}
    for split in ("train", "val", "test", "query", "gallery"):
        for record in getattr(dataset, split, None) or []:
            seen.setdefault(os.path.abspath(record.path), None)
    if not seen:
        raise DatasetError(f"dataset {root} ({fmt}) lists no images; check the root and --format")
    return sorted(seen)


def build_pose_cache(
    root: str | Path,
    fmt: str,
    out: str | Path | None = None,
    estimator: str = AUTO_SOURCE,
    options: dict | None = None,
    estimator_options: dict | None = None,
    overwrite: bool = False,
    save_every: int = 1000,
    workers: int = 1,
    progress: bool = True,
) -> PoseCacheReport:
    """Run a pose estimator once over every image of a dataset into a pose-cache file.

    ``estimator``: ``synthetic`` (copy a synth folder's joints), ``mediapipe`` or ``auto`` (synthetic
    for synth folders, else mediapipe). The file is rewritten atomically every ``save_every`` images and
    at the end, so an interrupted run resumes where it stopped (``overwrite=True`` starts again).
    ``workers`` > 1 runs that many estimator processes on chunks of images (results kept in order).
    """
    t0 = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else default_pose_cache_path(root)
    if estimator == AUTO_SOURCE:
        estimator = SYNTHETIC_SOURCE if is_synthetic_root(root) else "mediapipe"
    if estimator not in ESTIMATORS:
        raise ConfigError(f"--estimator {estimator!r} is unknown; use {', '.join([AUTO_SOURCE, *ESTIMATORS])}")
    paths = dataset_image_paths(root, fmt, options)
    keys = relative_keys(paths, root)

    done = PoseCache.empty()
    if out.is_file() and not overwrite:
        done = read_pose_cache(out)
        if done.meta.get("estimator") != estimator:
            raise ConfigError(f"{out} was made with estimator {done.meta.get('estimator')!r}, not {estimator!r}; "
                              "pass --overwrite to replace it or choose another --out")
    if estimator == "mediapipe":
        MediaPipePoseEstimator.load_module()  # fail early, in this process, when the extra is missing
    _, found = done.lookup(keys)
    todo = [i for i, ok in enumerate(found) if not ok]
    meta: dict = {"estimator": estimator, "settings": {}, "format": fmt, "version": POSE_CACHE_VERSION}
    parts = [done]

    def flush(complete: bool) -> None:
        merged = _concat(parts, {**meta, "complete": complete})
        parts[:] = [merged]
        write_pose_cache(out, merged)

    finished = False
    try:
        if estimator == SYNTHETIC_SOURCE:  # no pixels to look at: one vectorised lookup
            est = SyntheticPoseEstimator(root)
            todo_keys = [keys[i] for i in todo]
            joints, sizes, detected = est.estimate_many(todo_keys)
            parts.append(PoseCache(np.asarray(todo_keys, dtype=str), joints, sizes, detected))
            meta["settings"] = est.settings()
        else:
            from tqdm import tqdm

            bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=f"pose ({estimator})", unit="img",
                       dynamic_ncols=True, disable=None if progress else True)
            rows: list[tuple[str, np.ndarray, tuple[int, int], bool]] = []
            since_flush = 0
            try:
                items = [(paths[i], keys[i]) for i in todo]
                for settings, chunk in _estimate_chunks(estimator, dict(estimator_options or {}), items, workers):
                    meta["settings"] = settings
                    rows += chunk
                    since_flush += len(chunk)
                    bar.update(len(chunk))
                    if since_flush >= max(int(save_every), 1):
                        parts.append(_from_rows(rows))
                        rows, since_flush = [], 0
                        flush(complete=False)
            finally:  # keep what was estimated, even when interrupted
                parts.append(_from_rows(rows))
                bar.close()
        finished = True
    finally:
        flush(complete=finished)
    cache = parts[0]
    return PoseCacheReport(out, len(cache), len(todo), int(cache.detected.sum()), time.perf_counter() - t0)


#: Images per task handed to a worker process.
_CHUNK = 32
_WORKER_ESTIMATOR: PoseEstimator | None = None


def _init_worker(name: str, options: dict) -> None:
    global _WORKER_ESTIMATOR
    _WORKER_ESTIMATOR = ESTIMATORS[name](**options)


def _run_chunk(items: Sequence[tuple[str, str]]) -> tuple[dict, list[tuple[str, np.ndarray, tuple[int, int], bool]]]:
    """Estimate the joints of ``(path, key)`` items with this process's estimator."""
    from vireid.data.images import decode_image

    est = _WORKER_ESTIMATOR
    assert est is not None, "worker estimator not initialised"
    rows = []
    for path, key in items:
        image = decode_image(path)
        joints, detected = est.estimate(image, key)
        rows.append((key, joints, (int(image.shape[0]), int(image.shape[1])), bool(detected)))
    return est.settings(), rows


def _estimate_chunks(name: str, options: dict, items: list[tuple[str, str]], workers: int):
    """Yield ``(settings, rows)`` per chunk of ``items``, in order; in this process or in ``workers``."""
    if int(workers) <= 1 or len(items) <= _CHUNK:  # in this process, one image at a time
        _init_worker(name, options)
        try:
            for item in items:
                yield _run_chunk([item])
        finally:
            global _WORKER_ESTIMATOR
            if _WORKER_ESTIMATOR is not None:
                _WORKER_ESTIMATOR.close()
                _WORKER_ESTIMATOR = None
        return
    from concurrent.futures import ProcessPoolExecutor

    chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    executor = ProcessPoolExecutor(max_workers=int(workers), initializer=_init_worker, initargs=(name, options))
    try:
        yield from executor.map(_run_chunk, chunks)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _from_rows(rows: list[tuple[str, np.ndarray, tuple[int, int], bool]]) -> PoseCache:
    if not rows:
        return PoseCache.empty()
    return PoseCache(np.asarray([r[0] for r in rows], dtype=str), np.stack([r[1] for r in rows]).astype(np.float32),
                     np.asarray([r[2] for r in rows], dtype=np.int32), np.asarray([r[3] for r in rows], dtype=bool))


def _concat(parts: list[PoseCache], meta: dict) -> PoseCache:
    parts = [p for p in parts if len(p)] or [PoseCache.empty()]
    return PoseCache(np.concatenate([p.paths.astype(str) for p in parts]), np.concatenate([p.joints for p in parts]),
                     np.concatenate([p.sizes for p in parts]), np.concatenate([p.detected for p in parts]),
                     dict(meta)).sorted()


__all__ = ["PoseCacheReport", "build_pose_cache", "dataset_image_paths"]
