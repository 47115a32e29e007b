"""Which images to embed, and embedding them into a :class:`~vireid.retrieval.features.FeatureSet`.

``vireid extract`` accepts any image source vireid reads (:func:`collect_images`):

* a dataset root of a known layout -- SYSU-MM01, RegDB, LLCM, the ``folder`` tree of
  :mod:`vireid.data.datasets.folder` -- or a CSV manifest (format ``csv``); the format is
  detected from the files (:func:`detect_format`) or named with ``fmt``. Identity, camera and
  modality come from the layout; the images of ``split`` (default: all images, each once) are
  used; ``modality`` keeps only the images of that modality. Rows of a CSV manifest without a
  ``split`` column are read as one set (split ``val``).
* any other folder (format ``plain``): every image file below it, recursively, sorted by path.
  Identity and camera are unknown (-1). The modality of an image is the nearest enclosing folder
  named like a modality (``visible``/``rgb``/``vis``/... or ``infrared``/``ir``/``nir``/
  ``thermal``), else the ``modality`` argument; an image with neither is an error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import vireid.builtins  # noqa: F401  (the dataset readers)
from vireid.data.datasets.base import parse_modality
from vireid.data.images import is_image_file
from vireid.errors import DatasetError, VireidError
from vireid.retrieval.features import FeatureSet, Metadata

SPLIT_CHOICES = ("all", "train", "val", "test", "query", "gallery")
PLAIN = "plain"


def detect_format(source: str | Path) -> str:
    """Guess the layout of ``source``: a dataset format name, ``csv`` or ``plain``."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return "csv"
        raise DatasetError(f"{source} is a file but not a CSV manifest; pass an image folder, a dataset root or a "
                           ".csv manifest")
    if not source.is_dir():
        raise DatasetError(f"image source {source} does not exist; pass an image folder, a dataset root or a "
                           ".csv manifest")
    names = {p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if (source / "manifest.csv").is_file():
        return "csv"
    if any(f"cam{i}" in names for i in range(1, 7)) and ("exp" in names):
        return "sysu-mm01"
    if {"Visible", "Thermal"} <= names:
        return "regdb"
    if "idx" in names and names & {"test_vis", "test_nir"}:
        return "llcm"
    from vireid.data.datasets.folder import SPLITS, TEXT_DIR

    splits = names - {TEXT_DIR}
    if splits and splits <= set(SPLITS) and not any(is_image_file(p) for p in source.iterdir()):
        return "folder"
    return PLAIN


def _plain_images(source: Path, modality: str | None) -> Metadata:
    """Every image below ``source`` (recursively), modality from folder names or ``modality``."""
    paths = sorted(
        p for p in source.rglob("*")
        if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    if not paths:
        raise DatasetError(f"folder {source} holds no image files ({', '.join(('.jpg', '.png', '.bmp'))}, ...); "
                           "pass a folder with images")
    modalities: list[str] = []
    for p in paths:
        found = next((m for m in map(parse_modality, reversed(p.relative_to(source).parts[:-1])) if m), None)
        found = found or modality
        if found is None:
            raise DatasetError(f"the modality of {p} is unknown; put the images in visible/ and infrared/ folders or "
                               "pass --modality visible|infrared")
        modalities.append(found)
    n = len(paths)
    return Metadata.from_images(paths, np.full(n, -1), np.full(n, -1), modalities, root=source)


def collect_images(source: str | Path, fmt: str | None = None, *, modality: str | None = None,
                   split: str = "all", options: dict[str, Any] | None = None) -> tuple[Metadata, str]:
    """The images of ``source`` to embed, as metadata rows, and the format they were read as.

    ``fmt`` is a dataset format, ``csv`` or ``plain`` (``None``: :func:`detect_format`);
    ``options`` go to the dataset reader (e.g. ``{"trial": 2}`` for RegDB). See the module docstring.
    """
    source = Path(source).expanduser().absolute()
    if modality is not None:
        parsed = parse_modality(modality)
        if parsed is None:
            raise VireidError(f"modality {modality!r} is unknown; use visible or infrared")
        modality = parsed
    if split not in SPLIT_CHOICES:
        raise VireidError(f"split {split!r} is unknown; use one of {', '.join(SPLIT_CHOICES)}")
    fmt = fmt or detect_format(source)
    if fmt == PLAIN:
        if not source.is_dir():
            raise DatasetError(f"image folder {source} does not exist or is not a folder; pass a folder of images")
        if split != "all":
            raise VireidError(f"a plain image folder has no splits; drop --split {split} or give a dataset layout")
        if options:
            raise VireidError(f"a plain image folder takes no reader options ({', '.join(options)})")
        return _plain_images(source, modality), fmt
    from vireid.data.datasets import build_dataset, dataset_options

    options = dict(options or {})
    if "require_train" in dataset_options(fmt):
        options.setdefault("require_train", False)  # evaluation-only copies are fine for extraction
    if fmt == "csv":
        # rows of a manifest without a split column form one set; reading them as "val" skips the
        # training-only rule that every identity has both modalities
        options.setdefault("default_split", "val")
    if "allow_lone_split" in dataset_options(fmt):
        options.setdefault("allow_lone_split", True)  # a gallery-only manifest is a gallery to index
    dataset = build_dataset(fmt, source, **options)
    chosen = [records for name, records in dataset.splits() if split in ("all", name)]
    if split in ("query", "gallery") and getattr(dataset, split) is None:
        raise VireidError(f"format {fmt} has no fixed {split} split; use --split test (the evaluation pool) or all")
    seen: dict[str, Any] = {}
    for records in chosen:
        for r in records:
            if modality is None or r.modality == modality:
                seen.setdefault(r.path, r)
    if not seen:
        what = f"{modality} images" if modality else "images"
        raise DatasetError(
            f"the {split} split of {source} ({fmt}) holds no {what}; choose another --split or --modality"
        )
    rows = list(seen.values())
    root = source.parent if source.is_file() else source
    meta = Metadata.from_images([r.path for r in rows], [r.orig_pid for r in rows], [r.camid for r in rows],
                                [r.modality for r in rows], root=root)
    return meta, fmt


def extract_featureset(embedder, images: Metadata, *, batch_size: int = 64, progress: bool = False,
                       info: dict[str, Any] | None = None) -> FeatureSet:
    """Embed every image of ``images`` with ``embedder`` (a :class:`vireid.inference.embedder.Embedder`).

    Returns the features with the same metadata rows; ``info`` records the model (source, dim,
    input size, weights' fingerprint -- :func:`vireid.inference.embedder.model_fingerprint` -- and
    whether test-time flip was on), the time, and whatever the caller adds.
    """
    paths = [str(images.image_path(i)) for i in range(len(images))]
    feats = embedder.embed_paths(paths, list(images.modalities), batch_size=batch_size, progress=progress)
    return FeatureSet(feats, images, feature_record(embedder, info))


def feature_record(embedder, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a feature folder records of the model that made it (source, dim, input size, weights'
    fingerprint, test-time flip) and when, plus ``info``."""
    record = {
        "model": str(getattr(embedder, "source", "") or ""),
        "dim": int(embedder.dim),
        "input_size": list(embedder.input_size),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "normalized": True,
        "fingerprint": getattr(embedder, "fingerprint", None),
        "flip": bool(getattr(embedder, "flip", False)),
    }
    record.update(info or {})
    return record
