"""Readers for users' own data: a folder tree (``folder``) or a CSV manifest (``csv``).

**Folder tree** (format ``folder``)::

    root/<split>/<modality>/<camera>/<identity>/<image>

* ``<split>``: ``train``, ``val``, ``query`` or ``gallery``. ``query`` and ``gallery`` come
  together and are used as given (``protocol_family == "given"``); ``test`` is then their union.
* ``<modality>``: ``visible`` or ``infrared``; the aliases ``rgb``, ``vis``, ``color`` and
  ``ir``, ``nir``, ``thermal`` are accepted (any case).
* ``<camera>`` and ``<identity>``: a number, optionally after a prefix without digits:
  ``3``, ``03``, ``cam3``, ``c3``, ``id_0042``, ``person12``. Names such as ``3a`` or
  ``front`` are refused. The number is the camera / identity number, so ``cam3`` and ``3``
  are the same camera. Give visible and infrared devices different camera numbers: protocols
  that skip same-camera gallery images compare camera numbers only.
* ``<image>``: any file with an extension of :data:`vireid.data.images.IMAGE_EXTENSIONS`.
* **Tracklets** (video): a folder inside an identity folder is one tracklet (a video sequence) of that
  identity, camera and modality, its images the frames --
  ``root/<split>/<modality>/<camera>/<identity>/<tracklet>/<frame>``. The tracklet folder's name is free
  (``walk01``, ``0003``); frames are taken in natural file-name order (``f2.jpg`` before ``f10.jpg``), which
  must be their temporal order. An identity folder may hold still images and tracklet folders side by side;
  a tracklet folder without frames is an error.

Hidden files and folders are ignored, and so is a ``Text`` folder beside the splits (the images'
descriptions, ``Text/descriptions.json``: :mod:`vireid.data.text.descriptions`); any other unexpected
folder is an error, so that nothing the user put there is silently left out.

**CSV manifest** (format ``csv``): a file (or a folder holding ``manifest.csv``) with the header
``path,identity,camera,modality`` and optionally ``split``, ``tracklet`` and ``description`` (the image's
text description, for text methods: :mod:`vireid.data.text`) (columns in any order; other columns are
ignored). ``path`` is relative to the CSV's folder or absolute; ``identity`` and
``camera`` follow the number rule above; ``modality`` accepts the same spellings as the folder
names; ``split`` is one of the split names above (rows without a ``split`` column all go to
``default_split``, ``train`` unless told otherwise). ``tracklet`` names the tracklet (video sequence) a
row's image is a frame of: any label (``walk7``, ``12``), one label per tracklet across the whole manifest;
the rows of one tracklet are its frames in temporal order (manifest order), and must share identity,
camera, modality and split; an empty cell is a still image. Errors name the CSV file and line.

**What each use needs** (both layouts):

* training: ``train`` images, every training identity with visible *and* infrared images;
* evaluation with a fixed query and gallery: ``query`` *and* ``gallery`` images (a lone one is an
  error, unless ``allow_lone_split``); without them (e.g. no ``split`` column) ``vireid eval``
  takes the images of one modality as queries and the other as gallery (``--query``/``--gallery``);
* ``vireid extract`` / ``index`` / ``search``: any images -- no ``split`` column (rows are read as
  one set), a gallery-only manifest (``allow_lone_split``, set by extract), identities and cameras
  may be any numbers.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from vireid.data.datasets.base import (
    DATASETS,
    MODALITY_ALIASES,
    VIReIDDataset,
    list_images,
    list_subdirs,
    parse_modality,
    parse_prefixed_int,
    require_dir,
)
from vireid.data.images import is_image_file
from vireid.data.records import ImageRecord
from vireid.errors import ConfigError, DatasetError

SPLITS = ("train", "val", "query", "gallery")
#: The one other folder a dataset root may hold: its text descriptions (vireid.data.text.descriptions).
TEXT_DIR = "Text"
_ACCEPTED_MODALITIES = ", ".join(sorted(MODALITY_ALIASES))


def natural_key(name: str) -> list:
    """Sort key of a file name with its digit runs compared as numbers (``f2.jpg`` before ``f10.jpg``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class _GivenSplitsDataset(VIReIDDataset):
    """Shared assembly for user data: split name -> records, then the base checks."""

    protocol_family = "given"

    allow_lone_split = False

    def _assemble(self, by_split: dict[str, list[ImageRecord]], source: Path) -> None:
        if not any(by_split.values()):
            raise DatasetError(
                f"{source} holds no images in any of the splits {', '.join(SPLITS)}; see the layout in "
                "vireid.data.datasets.folder"
            )
        has_query, has_gallery = bool(by_split.get("query")), bool(by_split.get("gallery"))
        if has_query != has_gallery:
            present, absent = ("query", "gallery") if has_query else ("gallery", "query")
            if not self.allow_lone_split:
                raise DatasetError(
                    f"{source} has {present} images but no {absent} images; evaluation ranks queries against a "
                    f"gallery, so add the {absent} split, or leave the split out and choose queries and gallery by "
                    f"modality (vireid eval --query infrared --gallery visible); vireid extract reads a lone "
                    f"{present} split as it is"
                )
            self.val = by_split.get("val", [])
            self._finish(by_split.get("train", []))
            setattr(self, present, by_split[present])  # a lone split (extract/index only): listed, not evaluated
            return
        self.val = by_split.get("val", [])
        if has_query:
            self.query = by_split["query"]
            self.gallery = by_split["gallery"]
            self.test = self.query + self.gallery
        self._finish(by_split.get("train", []))


@DATASETS.register("folder")
class FolderDataset(_GivenSplitsDataset):
    """Users' data laid out as root/<split>/<modality>/<camera>/<identity>/<image>."""

    name = "folder"

    def __init__(self, root: str | Path, allow_lone_split: bool = False) -> None:
        super().__init__(root)
        self.allow_lone_split = allow_lone_split
        self._next_tracklet = 0  # h17vdata: tracklet folders get ids 0, 1, ... in reading order
        require_dir(self.root, "dataset folder", "pass the folder that holds train/, query/ and gallery/")
        by_split: dict[str, list[ImageRecord]] = {}
        for split_dir in list_subdirs(self.root):
            if split_dir.name == TEXT_DIR:  # Text/descriptions.json, read by the tokens side input
                continue
            if split_dir.name not in SPLITS:
                raise DatasetError(
                    f"folder {split_dir} is not a split; the dataset folder may only hold {', '.join(SPLITS)}"
                )
            by_split[split_dir.name] = self._read_split(split_dir)
        self._assemble(by_split, self.root)

    def _read_split(self, split_dir: Path) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        seen_modalities: dict[str, Path] = {}
        for modality_dir in list_subdirs(split_dir):
            modality = parse_modality(modality_dir.name)
            if modality is None:
                raise DatasetError(
                    f"folder {modality_dir} is not a modality; use visible or infrared (accepted: "
                    f"{_ACCEPTED_MODALITIES})"
                )
            if modality in seen_modalities:
                raise DatasetError(
                    f"folders {seen_modalities[modality]} and {modality_dir} both hold {modality} images; "
                    "merge them into one"
                )
            seen_modalities[modality] = modality_dir
            before = len(records)
            for cam_dir in list_subdirs(modality_dir):
                camid = self._number(cam_dir, "camera")
                for id_dir in list_subdirs(cam_dir):
                    pid = self._number(id_dir, "identity")
                    images = list_images(id_dir, self.notes)
                    tracklet_dirs = list_subdirs(id_dir)  # h17vdata: one folder per tracklet
                    if not images and not tracklet_dirs:
                        self.notes.append(f"identity folder {id_dir} is empty")
                    records.extend(ImageRecord(str(p), pid, camid, modality, pid) for p in images)
                    records.extend(self._tracklet_records(tracklet_dirs, pid, camid, modality))
            if len(records) == before:
                raise DatasetError(
                    f"modality folder {modality_dir} holds no images; add <camera>/<identity>/<image> "
                    "under it or remove it"
                )
        return records

    # --- BEGIN h17vdata: tracklet folders
    def _tracklet_records(self, folders: list[Path], pid: int, camid: int, modality: str) -> list[ImageRecord]:
        """The frames of each tracklet folder, in natural file-name order, with a dataset-unique tracklet id."""
        out: list[ImageRecord] = []
        for folder in folders:
            frames = sorted(list_images(folder, self.notes), key=lambda p: natural_key(p.name))
            if not frames:
                raise DatasetError(
                    f"tracklet folder {folder} holds no frames; put the tracklet's images in it or remove the folder"
                )
            tracklet = self._next_tracklet
            self._next_tracklet += 1
            out.extend(ImageRecord(str(p), pid, camid, modality, pid, tracklet) for p in frames)
        return out
    # --- END h17vdata

    @staticmethod
    def _number(folder: Path, what: str) -> int:
        number = parse_prefixed_int(folder.name)
        if number is None:
            raise DatasetError(
                f"{what} folder {folder} is not named by a number; use e.g. 3, 0003 or "
                f"{'cam3' if what == 'camera' else 'id3'}"
            )
        return number


@DATASETS.register("csv")
class CSVDataset(_GivenSplitsDataset):
    """Users' data listed in a CSV manifest: path,identity,camera,modality[,split]."""

    name = "csv"
    REQUIRED = ("path", "identity", "camera", "modality")

    def __init__(self, root: str | Path, default_split: str = "train", allow_lone_split: bool = False) -> None:
        path = Path(root).expanduser().absolute()
        if path.is_dir():
            path = path / "manifest.csv"
        if not path.is_file():
            state = "is not a file" if path.exists() else "does not exist"
            raise DatasetError(
                f"CSV manifest {path} {state}; pass the path of a CSV file with header "
                "path,identity,camera,modality[,split]"
            )
        if default_split not in SPLITS:
            raise ConfigError(f"default_split must be one of {', '.join(SPLITS)}, got {default_split!r}")
        super().__init__(path.parent)
        self.allow_lone_split = allow_lone_split
        self.manifest = path
        by_split: dict[str, list[ImageRecord]] = defaultdict(list)
        for split, record in self._read(default_split):
            by_split[split].append(record)
        self._assemble(dict(by_split), path)

    def _read(self, default_split: str) -> list[tuple[str, ImageRecord]]:
        out: list[tuple[str, ImageRecord]] = []
        try:
            handle = self.manifest.open(newline="", encoding="utf-8-sig")
        except OSError as err:
            raise DatasetError(
                f"CSV manifest {self.manifest} cannot be read ({err.strerror}); check its permissions"
            ) from None
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError(
                    f"CSV manifest {self.manifest} is empty; it needs the header path,identity,camera,modality"
                )
            columns = {name.strip().lower(): i for i, name in enumerate(header)}
            missing = [c for c in self.REQUIRED if c not in columns]
            if missing:
                raise DatasetError(
                    f"CSV manifest {self.manifest} line 1 lacks the column(s) {', '.join(missing)}; the header must "
                    "be path,identity,camera,modality[,split]"
                )
            seen: dict[str, int] = {}
            tracklets: dict[str, tuple[int, str, ImageRecord, int]] = {}  # h17vdata: label -> (id, split, frame, line)
            for row in reader:
                lineno = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                split, record = self._parse_row(row, columns, lineno, default_split)
                if "tracklet" in columns:  # h17vdata
                    record = self._with_tracklet(record, split, row[columns["tracklet"]].strip(), lineno, tracklets)
                if record.path in seen:
                    raise DatasetError(
                        f"CSV manifest {self.manifest} line {lineno} repeats the image of line {seen[record.path]} "
                        f"({record.path}); list each image once"
                    )
                seen[record.path] = lineno
                out.append((split, record))
        return out

    # --- BEGIN h17vdata: the tracklet column
    def _with_tracklet(self, record: ImageRecord, split: str, label: str, lineno: int,
                       tracklets: dict[str, tuple[int, str, ImageRecord, int]]) -> ImageRecord:
        """``record`` as a frame of tracklet ``label`` (an empty label: a still image)."""
        if not label:
            return record
        if label not in tracklets:
            tracklets[label] = (len(tracklets), split, record, lineno)
            return replace(record, tracklet=len(tracklets) - 1)
        tid, first_split, first, first_line = tracklets[label]
        for what, mine, theirs in (("identity", record.pid, first.pid), ("camera", record.camid, first.camid),
                                   ("modality", record.modality, first.modality), ("split", split, first_split)):
            if mine != theirs:
                raise DatasetError(
                    f"CSV manifest {self.manifest} line {lineno}: tracklet {label!r} has {what} {theirs} on line "
                    f"{first_line} but {mine} here; the frames of one tracklet share identity, camera, modality and "
                    "split, so give this row another tracklet label"
                )
        return replace(record, tracklet=tid)
    # --- END h17vdata

    def _parse_row(
        self, row: list[str], columns: dict[str, int], lineno: int, default_split: str
    ) -> tuple[str, ImageRecord]:
        where = f"CSV manifest {self.manifest} line {lineno}"
        if len(row) < len(columns):
            raise DatasetError(f"{where} has {len(row)} fields but the header has {len(columns)}; fix the line")

        def cell(name: str) -> str:
            return row[columns[name]].strip()

        rel = cell("path")
        if not rel:
            raise DatasetError(f"{where} has an empty path; give the image path relative to the CSV's folder")
        path = Path(rel).expanduser()
        path = path if path.is_absolute() else self.root / path
        if not is_image_file(path):
            raise DatasetError(f"{where}: {rel!r} is not an image file name (expected .jpg, .png, .bmp, ...)")
        if not path.is_file():
            raise DatasetError(f"{where}: image {path} does not exist; fix the path or restore the image")
        pid = parse_prefixed_int(cell("identity"))
        if pid is None:
            raise DatasetError(f"{where}: identity {cell('identity')!r} is not a number (e.g. 12 or id12)")
        camid = parse_prefixed_int(cell("camera"))
        if camid is None:
            raise DatasetError(f"{where}: camera {cell('camera')!r} is not a number (e.g. 3 or cam3)")
        modality = parse_modality(cell("modality"))
        if modality is None:
            raise DatasetError(
                f"{where}: modality {cell('modality')!r} is unknown; use visible or infrared "
                f"(accepted: {_ACCEPTED_MODALITIES})"
            )
        split = cell("split").lower() if "split" in columns else default_split
        if split not in SPLITS:
            raise DatasetError(f"{where}: split {split!r} is unknown; use one of {', '.join(SPLITS)}")
        record = ImageRecord(str(path), pid, camid, modality, pid)
        if "description" in columns and cell("description"):  # optional text (vireid.data.text.descriptions)
            record = replace(record, description=cell("description"))
        return split, record
