"""Embeddings of a set of images with their metadata, saved as a small documented folder.

A *feature folder* (written by ``vireid extract``, read by ``vireid index``) holds:

``features.safetensors``
    one float32 tensor ``features`` of shape ``[N, D]`` (L2-normalised embeddings, row ``i`` is
    image ``i``); the safetensors header's ``__metadata__`` holds ``format = "vireid-features"``,
    ``version``, ``num``, ``dim``, ``root`` (the image folder relative paths refer to, may be
    empty) and ``info`` (JSON: the checkpoint, input size, ... the features came from).
``meta.csv``
    header ``path,pid,camid,modality`` and one line per row of ``features``, in the same order.
    ``path`` is relative to ``root`` (POSIX separators) when the image lies under it, else
    absolute; ``pid`` is the identity number (``-1`` when unknown), ``camid`` the camera number
    (``-1`` when unknown), ``modality`` ``visible`` or ``infrared``.

Both files are written into a temporary folder that then replaces the target, so an interrupted
write never leaves a half-written feature folder. Any other program can read the format with
``safetensors`` and a CSV reader.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.records import MODALITIES
from vireid.errors import VireidError

FEATURES_FILE = "features.safetensors"
META_FILE = "meta.csv"
FORMAT_NAME = "vireid-features"
FORMAT_VERSION = "1"
META_COLUMNS = ("path", "pid", "camid", "modality")


@contextmanager
def atomic_dir(target: str | Path, marker: str, what: str) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target``.

    ``target`` may already exist only as a folder holding ``marker`` (a previous artifact of the
    same kind), so that a wrong ``--out`` never deletes an unrelated folder. On failure the
    temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target).expanduser().absolute()
    if target.exists() and not (target.is_dir() and (target / marker).is_file()):
        raise VireidError(
            f"{target} already exists and is not a {what}; choose another output path or remove it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    from vireid.engine.checkpoint import remove_stale_temporaries

    remove_stale_temporaries(target.parent, target.name)  # left by a killed earlier run
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _check_modalities(values: np.ndarray, where: str) -> None:
    bad = sorted(set(values.tolist()) - set(MODALITIES))
    if bad:
        raise VireidError(f"{where} has unknown modality value(s) {bad[:5]}; use visible or infrared")


@dataclass
class Metadata:
    """One row per image: ``path``, ``pid`` (-1 unknown), ``camid`` (-1 unknown), ``modality``.

    ``root`` is the folder that relative ``paths`` refer to (``None`` when every path is
    absolute). Columns are numpy arrays of equal length; :meth:`row` gives one row as a dict.
    """

    paths: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    modalities: np.ndarray
    root: str | None = None

    def __post_init__(self) -> None:
        self.paths = np.asarray(self.paths, dtype=object).reshape(-1)
        self.pids = np.asarray(self.pids, dtype=np.int64).reshape(-1)
        self.camids = np.asarray(self.camids, dtype=np.int64).reshape(-1)
        self.modalities = np.asarray(self.modalities, dtype=object).reshape(-1)
        n = len(self.paths)
        if not (len(self.pids) == len(self.camids) == len(self.modalities) == n):
            raise ValueError(
                f"metadata columns differ in length: paths {n}, pids {len(self.pids)}, camids {len(self.camids)}, "
                f"modalities {len(self.modalities)}"
            )
        _check_modalities(self.modalities, "the metadata")

    @classmethod
    def from_images(cls, paths: Sequence[str | Path], pids: Sequence[int], camids: Sequence[int],
                    modalities: Sequence[str], root: str | Path | None = None) -> "Metadata":
        """Metadata for image files; paths under ``root`` are stored relative to it (portable)."""
        root_path = Path(root).expanduser().absolute() if root is not None else None
        stored = []
        for p in paths:
            path = Path(p).expanduser().absolute()
            if root_path is not None and path.is_relative_to(root_path):
                stored.append(path.relative_to(root_path).as_posix())
            else:
                stored.append(str(path))
        return cls(np.asarray(stored, dtype=object), pids, camids, modalities,
                   str(root_path) if root_path is not None else None)

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, i: int) -> Path:
        """Absolute path of image ``i`` (relative paths are joined to :attr:`root`)."""
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"image index {i} is out of range for {n} images")
        path = Path(self.paths[int(i)])
        if not path.is_absolute() and self.root is not None:
            path = Path(self.root) / path
        return path

    def row(self, i: int) -> dict[str, Any]:
        """``{"path", "pid", "camid", "modality"}`` of row ``i`` (``path`` as stored)."""
        i = int(i)
        return {
            "path": str(self.paths[i]),
            "pid": int(self.pids[i]),
            "camid": int(self.camids[i]),
            "modality": str(self.modalities[i]),
        }

    def subset(self, indices: np.ndarray) -> "Metadata":
        idx = np.asarray(indices, dtype=np.int64)
        return Metadata(self.paths[idx], self.pids[idx], self.camids[idx], self.modalities[idx], self.root)

    def concat(self, other: "Metadata") -> "Metadata":
        """Rows of ``self`` then ``other`` (both must share the same root)."""
        if len(self) and len(other) and self.root != other.root:
            raise ValueError(f"cannot join metadata with roots {self.root} and {other.root}")
        return Metadata(
            np.concatenate([self.paths, other.paths]), np.concatenate([self.pids, other.pids]),
            np.concatenate([self.camids, other.camids]), np.concatenate([self.modalities, other.modalities]),
            self.root if len(self) else other.root,
        )

    # ------------------------------------------------------------------ CSV
    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(META_COLUMNS)
        writer.writerows(zip(self.paths.tolist(), self.pids.tolist(), self.camids.tolist(),
                             self.modalities.tolist()))
        return buf.getvalue()

    @classmethod
    def read_csv(cls, path: Path, root: str | None) -> "Metadata":
        """Read ``meta.csv``; errors name the file and line."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VireidError(f"metadata file {path} is missing; rebuild the folder with vireid extract") from None
        except (OSError, UnicodeDecodeError) as err:
            raise VireidError(f"metadata file {path} cannot be read ({err}); rebuild it with vireid extract") from None
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or tuple(c.strip() for c in rows[0]) != META_COLUMNS:
            raise VireidError(
                f"metadata file {path} does not start with the header {','.join(META_COLUMNS)}; "
                "it is not a vireid metadata file"
            )
        body = rows[1:]
        bad = next((i for i, r in enumerate(body) if len(r) != len(META_COLUMNS)), None)
        if bad is not None:
            raise VireidError(f"metadata file {path} line {bad + 2} has {len(body[bad])} fields, expected 4; "
                              "the file is corrupt, rebuild it")
        cols = list(zip(*body)) if body else [(), (), (), ()]
        try:
            pids = np.asarray(cols[1], dtype=np.int64) if body else np.zeros(0, np.int64)
            camids = np.asarray(cols[2], dtype=np.int64) if body else np.zeros(0, np.int64)
        except ValueError:
            raise VireidError(f"metadata file {path} has a pid or camid that is not an integer; "
                              "the file is corrupt, rebuild it") from None
        modalities = np.asarray(cols[3], dtype=object)
        _check_modalities(modalities, f"metadata file {path}")
        return cls(np.asarray(cols[0], dtype=object), pids, camids, modalities, root)


@dataclass
class FeatureSet:
    """Embeddings ``features`` ``[N, D]`` (float32) with their :class:`Metadata` (one row each).

    ``info`` records where the features came from (checkpoint, input size, ...); it is kept
    with the features and the indexes built from them.
    """

    features: np.ndarray
    meta: Metadata
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        if self.features.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {self.features.shape}")
        if len(self.features) != len(self.meta):
            raise ValueError(f"{len(self.features)} feature rows but {len(self.meta)} metadata rows")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def subset(self, indices: np.ndarray) -> "FeatureSet":
        idx = np.asarray(indices, dtype=np.int64)
        return FeatureSet(self.features[idx], self.meta.subset(idx), dict(self.info))

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write the feature folder (see the module docstring) atomically; returns its path."""
        from safetensors.numpy import save_file

        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num": str(len(self)),
            "dim": str(self.dim),
            "root": self.meta.root or "",
            "info": json.dumps(self.info, sort_keys=True, default=str),
        }
        with atomic_dir(folder, FEATURES_FILE, "vireid feature folder") as tmp:
            save_file({"features": self.features}, str(tmp / FEATURES_FILE), metadata=header)
            (tmp / META_FILE).write_text(self.meta.to_csv(), encoding="utf-8")
        return Path(folder).expanduser().absolute()

    @classmethod
    def load(cls, folder: str | Path) -> "FeatureSet":
        """Read a feature folder; a missing, foreign or corrupt folder raises VireidError."""
        folder = Path(folder).expanduser().absolute()
        if not folder.is_dir():
            state = "is a file, not a folder" if folder.exists() else "does not exist"
            raise VireidError(f"feature folder {folder} {state}; pass the --out folder of vireid extract")
        tensor_file = folder / FEATURES_FILE
        if not tensor_file.is_file():
            raise VireidError(f"{folder} holds no {FEATURES_FILE}; pass the --out folder of vireid extract")
        try:
            from safetensors import safe_open

            with safe_open(str(tensor_file), framework="np") as fh:
                header = fh.metadata() or {}
                if header.get("format") != FORMAT_NAME:
                    raise VireidError(f"{tensor_file} is not a vireid feature file (no format={FORMAT_NAME} "
                                      "header); write it with vireid extract")
                if "features" not in fh.keys():
                    raise VireidError(f"{tensor_file} holds no 'features' tensor; rebuild it with vireid extract")
                features = fh.get_tensor("features")
        except VireidError:
            raise
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file, whatever the parser says
            raise VireidError(f"{tensor_file} cannot be read ({type(err).__name__}: {err}); it is truncated or not "
                              "a safetensors file, rebuild it with vireid extract") from None
        if header.get("version") != FORMAT_VERSION:
            raise VireidError(f"{tensor_file} has format version {header.get('version')!r}, this vireid reads "
                              f"version {FORMAT_VERSION}; re-extract the features")
        if features.ndim != 2 or features.dtype != np.float32:
            raise VireidError(f"{tensor_file} holds features {features.dtype} {features.shape}, expected float32 "
                              "[N, D]; rebuild it with vireid extract")
        meta = Metadata.read_csv(folder / META_FILE, header.get("root") or None)
        if len(meta) != len(features):
            raise VireidError(f"{folder} has {len(features)} feature rows but {len(meta)} metadata rows; "
                              "the folder is inconsistent, re-extract it")
        try:
            info = json.loads(header.get("info") or "{}")
        except json.JSONDecodeError:
            info = {}
        return cls(features, meta, info)
