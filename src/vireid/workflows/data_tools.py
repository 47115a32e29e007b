"""Data tools the cli runs: the synthetic dataset (``vireid synth``, :mod:`vireid.data.synth`), the
pose cache of PDFENet's body joints (``vireid pose-cache``, :mod:`vireid.data.pose`) and the registry
listing (``vireid list``, :func:`vireid.builtins.format_registries`). Each returns the text the command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import vireid.builtins  # noqa: F401  (the dataset readers a command names)


def make_synthetic_dataset(out: Path, ids: int = 200, *, format: str = "sysu-mm01",  # noqa: A002
                           images_per_camera: int = 10, height: Optional[int] = None, width: Optional[int] = None,
                           seed: int = 0, workers: Optional[int] = None, overwrite: bool = False, depth: bool = False,
                           progress: bool = True, frames_per_tracklet: int = 12) -> str:
    """Write the synthetic visible-infrared dataset in a real dataset's layout
    (:func:`vireid.data.synth.generate_dataset`)."""
    from vireid.data.synth import generate_dataset
    from vireid.data.synth.generator import META_FILE

    root = generate_dataset(out, ids, format=format, images_per_camera=images_per_camera, height=height,
                            width=width, seed=seed, workers=workers, progress=progress, overwrite=overwrite,
                            depth=depth, frames_per_tracklet=frames_per_tracklet)
    return f"synthetic {format} dataset ready in {root} (see {root / META_FILE})"


def make_pose_cache(root: Path, fmt: str = "sysu-mm01", *, out: Optional[Path] = None, estimator: str = "auto",
                    split_dir: Optional[Path] = None, min_confidence: float = 0.3, save_every: int = 1000,
                    workers: int = 1, overwrite: bool = False, progress: bool = True) -> str:
    """Estimate the 16 MPII body joints of every image of a dataset once into a resumable cache file
    (:func:`vireid.data.pose.build_pose_cache`, PDFENet's pose input)."""
    from vireid.data.pose import build_pose_cache

    options = {"split_dir": split_dir} if split_dir is not None else {}
    report = build_pose_cache(
        root, fmt, out=out, estimator=estimator, options=options,
        estimator_options={"min_detection_confidence": min_confidence}, overwrite=overwrite,
        save_every=save_every, workers=workers, progress=progress,
    )
    rate = 100.0 * report.detected / max(report.images, 1)
    return (f"pose cache {report.path}: {report.images} images ({report.new} new), a person found in "
            f"{report.detected} ({rate:.1f}%), {report.seconds:.1f} s")


def list_registries(names: Sequence[str] = ()) -> str:
    """What every registry (or those named) holds, one line per entry (:func:`vireid.builtins.format_registries`)."""
    from vireid.builtins import format_registries

    return format_registries(tuple(names))
