"""Tracklets (sequences of frames) as queries and gallery entries of ``vireid extract`` / ``index`` / ``search``.

* **A tracklet folder** is a folder whose image files are the frames of one tracklet, in temporal order
  by file name in natural order, ``2.jpg`` before ``10.jpg`` (:func:`tracklet_frames`); ``vireid search FOLDER``
  makes it one query.
* **A tracklet gallery** (``vireid extract --tracklets``): from a dataset whose records carry tracklet ids
  (HITSZ-VCM, your own frames with a tracklet column or folder), each tracklet of the chosen split; from
  any other folder, each folder that directly holds image files (modality from the folder names, as for
  a plain folder, :mod:`vireid.retrieval.extract`). One feature row per tracklet, stored under its first
  frame (the picture search results show), so ``vireid index`` indexes one entry per tracklet.

Each tracklet is embedded by :meth:`vireid.inference.embedder.Embedder.embed_tracklet`: a temporal model
sees the frames as one tracklet; any other model gives the mean of the frames' embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.images import is_image_file
from vireid.errors import DatasetError, VireidError
from vireid.retrieval.features import FeatureSet, Metadata


def frame_order(path: str | Path) -> list:
    """Sort key of a frame file: its name in natural order (``f2.jpg`` before ``f10.jpg``), as the folder reader
    orders a tracklet folder's frames."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", Path(path).name)]


def tracklet_frames(folder: str | Path) -> list[Path]:
    """The frames of a tracklet folder: its image files (not those of sub-folders), in natural name order."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise VireidError(f"tracklet folder {folder} does not exist or is not a folder; pass a folder of frames")
    frames = sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")),
                    key=frame_order)
    if not frames:
        raise DatasetError(f"tracklet folder {folder} holds no frames; put the image files (.jpg, .png, ...) of one "
                           "tracklet directly in it, named in temporal order")
    return frames


def collect_tracklets(source: str | Path, fmt: str | None = None, *, modality: str | None = None,
                      split: str = "all", options: dict[str, Any] | None = None
                      ) -> tuple[Metadata, list[list[str]], str]:
    """``(metadata, frames, format)``: one metadata row per tracklet of ``source`` (its first frame, identity,
    camera, modality) and the absolute frame paths of each, in temporal order. See the module docstring."""
    from vireid.retrieval.extract import PLAIN, collect_images, detect_format

    source = Path(source).expanduser().absolute()
    fmt = fmt or detect_format(source)
    if fmt == PLAIN:
        meta, used = collect_images(source, fmt, modality=modality, split=split, options=options)
        groups: dict[str, list[int]] = {}
        for i in range(len(meta)):
            groups.setdefault(str(meta.image_path(i).parent), []).append(i)
        groups = {folder: sorted(members, key=lambda i: frame_order(meta.image_path(i))) for folder, members in groups.items()}
        rows = [members[0] for members in groups.values()]
        frames = [[str(meta.image_path(i)) for i in members] for members in groups.values()]
        for members in groups.values():
            if len({meta.modalities[i] for i in members}) > 1:
                raise DatasetError(f"tracklet folder {meta.image_path(members[0]).parent} mixes modalities; keep one "
                                   "modality per tracklet folder")
        out = Metadata.from_images([meta.image_path(i) for i in rows], meta.pids[rows], meta.camids[rows],
                                   meta.modalities[rows], root=source)
        return out, frames, used
    records, used = _dataset_records(source, fmt, modality, split, options)
    by_tracklet: dict[int, list] = {}
    for r in records:
        tid = int(getattr(r, "tracklet", -1))
        if tid < 0:
            raise DatasetError(f"{r.path} of {source} ({fmt}) belongs to no tracklet; --tracklets needs a video dataset "
                               "(frames with tracklet ids) or a folder of tracklet folders")
        by_tracklet.setdefault(tid, []).append(r)
    firsts = [members[0] for members in by_tracklet.values()]
    root = source.parent if source.is_file() else source
    out = Metadata.from_images([r.path for r in firsts], [r.orig_pid for r in firsts], [r.camid for r in firsts],
                               [r.modality for r in firsts], root=root)
    return out, [[str(r.path) for r in members] for members in by_tracklet.values()], used


def _dataset_records(source: Path, fmt: str, modality: str | None, split: str, options: dict[str, Any] | None):
    """The frame records of ``split`` of a dataset (each once, in reader = temporal order)."""
    from vireid.data.datasets import build_dataset, dataset_options
    from vireid.data.datasets.base import parse_modality

    if modality is not None:
        modality = parse_modality(modality) or modality
    options = dict(options or {})
    if "require_train" in dataset_options(fmt):
        options.setdefault("require_train", False)  # evaluation-only copies are fine for extraction
    dataset = build_dataset(fmt, source, **options)
    seen: dict[str, Any] = {}
    for name, records in dataset.splits():
        if split in ("all", name):
            for r in records:
                if modality is None or r.modality == modality:
                    seen.setdefault(r.path, r)
    if not seen:
        raise DatasetError(f"the {split} split of {source} ({fmt}) holds no frames; choose another --split or --modality")
    return list(seen.values()), fmt


def extract_tracklet_featureset(embedder, meta: Metadata, frames: list[list[str]], *, progress: bool = False,
                                info: dict[str, Any] | None = None) -> FeatureSet:
    """One embedding per tracklet (:meth:`~vireid.inference.embedder.Embedder.embed_tracklet`), as a feature
    folder whose rows are ``meta``'s; ``info`` records ``unit: tracklet`` and the frame count."""
    rows = range(len(frames))
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="tracklets", unit="tracklet", leave=False, dynamic_ncols=True, disable=None)
    feats = np.zeros((len(frames), int(embedder.dim)), dtype=np.float32)
    for i in rows:
        feats[i] = embedder.embed_tracklet(frames[i], meta.modalities[i])
    from vireid.retrieval.extract import feature_record

    record = feature_record(embedder, {"unit": "tracklet", "num_frames": int(sum(len(f) for f in frames)), **(info or {})})
    return FeatureSet(feats, meta, record)


__all__ = ["collect_tracklets", "extract_tracklet_featureset", "frame_order", "tracklet_frames"]
