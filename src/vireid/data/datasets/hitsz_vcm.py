"""HITSZ-VCM reader: video (tracklet) visible-infrared ReID (MITML, Lin et al., CVPR 2022, "Learning
Modal-Invariant and Temporal-Memory for Video-based Visible-Infrared Person Re-Identification").

**The dataset** (paper abstract): 927 identities, 463,259 frames in 21,863 tracklets from 12 RGB/IR
cameras. The MITML reference code (``VCM-project233/MITML``: ``data_manager.py`` class ``VCM``,
``data_loader.py``, ``test.py``) trains 500 classes (``test.py``: ``n_class = 500``); the remaining
identities are the test identities. The reader prints no hard-coded counts: ``vireid datasets check``
reports what the info files hold (identities, tracklets, frames per split and modality).

**Layout** (the dataset page's "Data structure", read as ``data_manager.py`` reads it)::

    root/<pid>/<rgb|ir>/<camera>/<frame image>       e.g. root/0001/ir/D1/0001.jpg
    root/info/train_name.txt       one frame name per line (the training frames, tracklet after tracklet)
    root/info/track_train_info.txt one training tracklet per line: "m start end pid camid"
    root/info/test_name.txt        the test frames, likewise
    root/info/track_test_info.txt  the test tracklets, likewise
    root/info/query_IDX.txt        the query rows of track_test_info.txt (1-based, whitespace-separated)

The five ``.txt`` files may also sit directly in ``root`` (the dataset page shows them next to the
identity folders); the training images may sit under ``root/Train`` and the test images under
``root/Test`` (how some copies unzip the two archives).

* **Frame names** (``data_manager.decoder_pic_path``): characters 0-3 are the identity (``0001``), character
  5 the modality (``1`` infrared, anything else visible); the camera folder is the text from the first
  ``D`` up to the first ``T`` (``D1``), the image file the text after the first ``F``. So a name
  ``<pid>?<m>D<cam>T<tracklet>F<frame>`` is the file ``root/<pid>/<ir|rgb>/D<cam>/<frame>``.
* **Tracklet lines** ``m start end pid camid`` (``data_manager._process_data_train``): ``m`` is the
  modality (``1`` infrared, ``2`` visible), ``start``/``end`` the 1-based, inclusive range of the tracklet's
  frames in the name list (``names[start-1:end]``), ``pid`` the identity, ``camid`` the camera. The reader
  checks that every frame name of the range agrees with ``pid`` and ``m``.
* **Short tracklets**: the reference drops tracklets of fewer than ``min_seq_len=12`` frames from every
  split (``VCM(min_seq_len=12)``); so does this reader (``min_seq_len`` option; 0 keeps all). Dropped
  tracklets are counted in :attr:`notes`.

**Query and gallery, both directions** (``data_manager.py`` / ``test.py``):

* *infrared -> visible* (``test1``, "ir2rgb"): queries = the rows of ``query_IDX.txt``, gallery = every
  other test tracklet;
* *visible -> infrared* (``test2``, "rgb2ir"): the same two sets swapped (queries = every other test
  tracklet, gallery = the ``query_IDX.txt`` rows).

The reference ranks tracklet features with the camera rule "skip gallery items of the query's identity
*and* camera" (``eval_metrics.evaluate``) and takes 6 frames per test tracklet (``test.py``:
``seq_lenth = 6``, ``VideoDataset_test`` mode ``video_test``); training clips are restricted random
samples (``VideoDataset_train`` mode ``video_train``): :mod:`vireid.data.tracklets` (``eval_frames(records, 6,
"mitml")`` picks exactly the reference's test frames; the ``restricted`` sampler its training clips).

**What the reader exposes** (one :class:`~vireid.data.records.ImageRecord` per frame, ``tracklet`` set,
each tracklet's frames consecutive and in temporal (name-list) order):

* ``train``: the training frames, identities relabelled 0..N-1 (``orig_pid`` keeps the number);
* ``val``: empty (the official protocol has none), or, with ``val_fraction``, that share of the training
  identities (at least one; a fixed seeded choice) held out with all their tracklets, to choose the best epoch;
* ``test``: every test frame (all test tracklets), dataset identity numbers;
* ``query`` / ``gallery``: the *infrared -> visible* direction (so the generic ``given`` protocol works on
  frames as they are);
* :attr:`directions`: ``{"infrared-to-visible": (query, gallery), "visible-to-infrared": (query, gallery)}``,
  frame records of both directions;
* :attr:`query_tracklets`: the tracklet ids of the ``query_IDX.txt`` rows, so a protocol over the ``test``
  pool tells queries from gallery in either direction;
* tracklet ids: training row ``i`` (1-based line of ``track_train_info.txt``) is tracklet ``i - 1``, test row
  ``j`` is ``test_tracklet_offset + j - 1`` (unique in the dataset).

``protocol_family`` is ``"vcm"`` (the tracklet protocols' family).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vireid.data.datasets.base import DATASETS, VIReIDDataset, require_dir
from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.errors import DatasetError

#: Info files and what each holds (the names of ``data_manager.py``).
INFO_FILES = ("train_name.txt", "track_train_info.txt", "test_name.txt", "track_test_info.txt", "query_IDX.txt")
#: Tracklet-line modality column: 1 infrared, 2 visible (``data_manager.py``: ``m == 1`` is infrared).
MODALITY_OF_COLUMN = {1: INFRARED, 2: VISIBLE}
#: Image folder of each modality (``decoder_pic_path``).
MODALITY_FOLDER = {INFRARED: "ir", VISIBLE: "rgb"}
DIRECTIONS = ("infrared-to-visible", "visible-to-infrared")
#: The reference code's default ``min_seq_len`` (``data_manager.VCM.__init__``).
REFERENCE_MIN_SEQ_LEN = 12
#: Seed of the fixed choice of validation identities (``val_fraction``).
_VAL_SEED = 0x7A1


@dataclass(frozen=True)
class TrackletRow:
    """One line ``m start end pid camid`` of a ``track_*_info.txt`` file."""

    lineno: int
    modality: str
    start: int
    end: int
    pid: int
    camid: int


def decode_frame_name(name: str) -> tuple[int, str, str, str] | None:
    """``(pid, modality, camera folder, image file)`` of a HITSZ-VCM frame name, or None if it is not one.

    The rule of the reference ``decoder_pic_path``: ``name[0:4]`` identity, ``name[5]`` modality (``1`` infrared),
    camera folder = from the first ``D`` to the first ``T``, image file = after the first ``F``.
    """
    if len(name) < 6 or not name[:4].isdigit():
        return None
    d_pos, t_pos, f_pos = name.find("D"), name.find("T"), name.find("F")
    if not 5 < d_pos < t_pos < f_pos or f_pos == len(name) - 1:
        return None
    modality = INFRARED if name[5] == "1" else VISIBLE
    return int(name[:4]), modality, name[d_pos:t_pos], name[f_pos + 1 :]


def frame_relpath(name: str) -> str | None:
    """The path (relative to the image root) of frame ``name``: ``<pid>/<ir|rgb>/<camera>/<image>``."""
    decoded = decode_frame_name(name)
    if decoded is None:
        return None
    _, modality, camera, image = decoded
    return f"{name[:4]}/{MODALITY_FOLDER[modality]}/{camera}/{image}"


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"HITSZ-VCM info file {path} cannot be read ({err.strerror}); check its permissions") from None
    return [line.strip() for line in text.splitlines()]


@DATASETS.register("hitsz-vcm")
class HITSZVCM(VIReIDDataset):
    """HITSZ-VCM (MITML, CVPR 2022): video visible-infrared ReID, tracklets of frames; see the module docstring.

    ``min_seq_len`` drops tracklets with fewer frames (reference: 12; 0 keeps every tracklet). ``val_fraction``
    holds out that share of the training identities as ``val`` (default 0: the official split). ``split_dir``
    reads the five info files from another folder than ``root/info`` (or ``root``). With
    ``require_train=False`` a copy without the training info files is accepted (evaluation only).
    """

    name = "hitsz-vcm"
    protocol_family = "vcm"

    def __init__(self, root: str | Path, min_seq_len: int = REFERENCE_MIN_SEQ_LEN, split_dir: str | Path | None = None,
                 require_train: bool = True, val_fraction: float = 0.0) -> None:
        super().__init__(root)
        if isinstance(min_seq_len, bool) or not isinstance(min_seq_len, int) or min_seq_len < 0:
            raise DatasetError(f"HITSZ-VCM min_seq_len={min_seq_len!r} is invalid; use 0 (keep every tracklet) or "
                               f"a number of frames (the reference uses {REFERENCE_MIN_SEQ_LEN})")
        self.min_seq_len = min_seq_len
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise DatasetError(f"HITSZ-VCM val_fraction={val_fraction!r} is invalid; use a share of the training "
                               "identities from 0 (no validation split, the official protocol) up to, not including, 1")
        require_dir(self.root, "HITSZ-VCM root", "pass the folder that holds the identity folders 0001 ... and info/")
        self.info_dir = self._find_info_dir(split_dir)
        self.directions: dict[str, tuple[list[ImageRecord], list[ImageRecord]]] = {}
        self.query_tracklets: frozenset[int] = frozenset()

        train_names_file = self.info_dir / "train_name.txt"
        train_info_file = self.info_dir / "track_train_info.txt"
        raw_train: list[ImageRecord] = []
        num_train_rows = 0
        if train_names_file.is_file() and train_info_file.is_file():
            rows = self._rows(train_info_file)
            num_train_rows = len(rows)
            raw_train = self._records(rows, self._names(train_names_file), train_info_file, train_names_file,
                                      offset=0, split="Train")
            raw_train = self._drop_half_identities(rows, raw_train)
            raw_train = self._hold_out_val(raw_train, float(val_fraction), train_info_file)
        elif require_train or train_names_file.is_file() or train_info_file.is_file():
            missing = train_names_file if not train_names_file.is_file() else train_info_file
            raise DatasetError(
                f"HITSZ-VCM info file {missing} does not exist; restore it from the dataset's info archive"
                + (" or load with require_train=False to evaluate only" if require_train else "")
            )
        self.test_tracklet_offset = num_train_rows

        test_info_file = self._info("track_test_info.txt")
        test_names_file = self._info("test_name.txt")
        query_file = self._info("query_IDX.txt")
        test_rows = self._rows(test_info_file)
        query_rows = self._query_rows(query_file, len(test_rows))
        self.test = self._records(test_rows, self._names(test_names_file), test_info_file, test_names_file,
                                  offset=num_train_rows, split="Test")
        if not self.test:
            raise DatasetError(
                f"every test tracklet of {test_info_file} is shorter than min_seq_len={self.min_seq_len} frames; "
                "lower min_seq_len (0 keeps every tracklet)"
            )
        self.query_tracklets = frozenset(num_train_rows + row - 1 for row in query_rows)
        marked = [r for r in self.test if r.tracklet in self.query_tracklets]
        others = [r for r in self.test if r.tracklet not in self.query_tracklets]
        for what, records, expected in (("query", marked, INFRARED), ("gallery", others, VISIBLE)):
            wrong = Counter(r.tracklet for r in records if r.modality != expected)
            if wrong:
                self.notes.append(
                    f"{len(wrong)} {what} tracklet(s) of the infrared -> visible direction ({query_file}) are not "
                    f"{expected}, e.g. tracklet {min(wrong)}; the directions follow the file as it is"
                )
        self.directions = {"infrared-to-visible": (marked, others), "visible-to-infrared": (others, marked)}
        self.query, self.gallery = marked, others
        self._finish(raw_train)

    # ------------------------------------------------------------------ files
    def _find_info_dir(self, split_dir: str | Path | None) -> Path:
        if split_dir is not None:
            return require_dir(Path(split_dir).expanduser().absolute(), "HITSZ-VCM info folder",
                               f"pass a folder with {', '.join(INFO_FILES)}")
        nested = self.root / "info"
        if nested.is_dir():
            return nested
        if (self.root / "track_test_info.txt").is_file():
            return self.root
        raise DatasetError(
            f"HITSZ-VCM info folder {nested} does not exist and {self.root} holds no track_test_info.txt; unpack the "
            f"dataset's info archive ({', '.join(INFO_FILES)}) into {nested} or pass split_dir (--split-dir)"
        )

    def _info(self, name: str) -> Path:
        path = self.info_dir / name
        if not path.is_file():
            raise DatasetError(f"HITSZ-VCM info file {path} does not exist; restore it from the dataset's info archive")
        return path

    def _names(self, path: Path) -> list[str]:
        names = _read_lines(path)
        while names and not names[-1]:
            names.pop()
        for lineno, name in enumerate(names, start=1):
            if frame_relpath(name) is None:
                raise DatasetError(
                    f"HITSZ-VCM name file {path} line {lineno} holds {name!r}, which is not a frame name "
                    "<pid 4 digits>?<modality digit>D<camera>T<tracklet>F<image>; restore the original file"
                )
        if not names:
            raise DatasetError(f"HITSZ-VCM name file {path} lists no frames; restore the original file")
        return names

    def _rows(self, path: Path) -> list[TrackletRow]:
        rows: list[TrackletRow] = []
        for lineno, line in enumerate(_read_lines(path), start=1):
            if not line:
                continue
            tokens = line.split()
            try:
                values = [int(t) for t in tokens]
            except ValueError:
                values = []
            if len(values) != 5:
                raise DatasetError(
                    f"HITSZ-VCM tracklet file {path} line {lineno} ({line!r}) is malformed; each line must be five "
                    "integers 'modality start end identity camera'"
                )
            m, start, end, pid, camid = values
            if m not in MODALITY_OF_COLUMN:
                raise DatasetError(
                    f"HITSZ-VCM tracklet file {path} line {lineno} has modality {m}; use 1 (infrared) or 2 (visible)"
                )
            rows.append(TrackletRow(lineno, MODALITY_OF_COLUMN[m], start, end, pid, camid))
        if not rows:
            raise DatasetError(f"HITSZ-VCM tracklet file {path} lists no tracklets; restore the original file")
        return rows

    def _query_rows(self, path: Path, num_rows: int) -> list[int]:
        rows: list[int] = []
        for lineno, line in enumerate(_read_lines(path), start=1):
            for token in line.replace(",", " ").split():
                try:
                    rows.append(int(token))
                except ValueError:
                    raise DatasetError(
                        f"HITSZ-VCM query file {path} line {lineno} holds {token!r}, which is not a row number; it must "
                        "list 1-based rows of track_test_info.txt"
                    ) from None
        if not rows:
            raise DatasetError(f"HITSZ-VCM query file {path} lists no query tracklets; restore the original file")
        bad = [r for r in rows if not 1 <= r <= num_rows]
        if bad:
            raise DatasetError(
                f"HITSZ-VCM query file {path} names row {bad[0]}, but track_test_info.txt has rows 1..{num_rows}; "
                "the query file and the tracklet file do not belong together"
            )
        repeated = sorted(r for r, n in Counter(rows).items() if n > 1)
        if repeated:
            raise DatasetError(f"HITSZ-VCM query file {path} lists rows {repeated[:5]} more than once; fix the file")
        if len(rows) == num_rows:
            raise DatasetError(
                f"HITSZ-VCM query file {path} makes every test tracklet a query, leaving no gallery; restore the file"
            )
        return rows

    def _image_root(self, relpaths: list[str], split: str) -> Path:
        """``root`` when the first frame is there, else ``root/Train`` or ``root/Test`` (the unzipped archives)."""
        for base in (self.root, self.root / split):
            if (base / relpaths[0]).is_file():
                return base
        return self.root

    # ------------------------------------------------------------------ records
    def _hold_out_val(self, records: list[ImageRecord], fraction: float, info_file: Path) -> list[ImageRecord]:
        """Move ``fraction`` of the training identities (at least one, a fixed seeded choice) to ``val``."""
        if fraction <= 0 or not records:
            return records
        ids = np.asarray(sorted({r.orig_pid for r in records}))
        n_val = max(1, int(round(fraction * ids.size)))
        if n_val >= ids.size:
            raise DatasetError(
                f"HITSZ-VCM val_fraction={fraction} holds out all {ids.size} training identities of {info_file}; "
                "lower val_fraction so that some identities are left to train on"
            )
        held = {int(i) for i in np.random.default_rng(_VAL_SEED).permutation(ids)[:n_val]}
        self.val = [r for r in records if r.orig_pid in held]
        return [r for r in records if r.orig_pid not in held]

    def _drop_half_identities(self, rows: list[TrackletRow], records: list[ImageRecord]) -> list[ImageRecord]:
        """Training identities that ``min_seq_len`` left with one modality only are left out (with a note);
        an identity that never had both modalities is the base class's error, as for every reader."""
        before: dict[int, set[str]] = defaultdict(set)
        after: dict[int, set[str]] = defaultdict(set)
        for row in rows:
            before[row.pid].add(row.modality)
        for r in records:
            after[r.orig_pid].add(r.modality)
        lost = sorted(pid for pid, mods in after.items() if len(mods) < 2 <= len(before[pid]))
        if not lost:
            return records
        self.notes.append(
            f"{len(lost)} training identities (e.g. {lost[:5]}) kept tracklets of one modality only after "
            f"min_seq_len={self.min_seq_len} and were left out of training"
        )
        gone = set(lost)
        return [r for r in records if r.orig_pid not in gone]

    def _records(self, rows: list[TrackletRow], names: list[str], info_file: Path, names_file: Path, offset: int,
                 split: str) -> list[ImageRecord]:
        kept: list[tuple[int, TrackletRow]] = []
        short = 0
        for index, row in enumerate(rows):
            where = f"HITSZ-VCM tracklet file {info_file} line {row.lineno}"
            if row.end < row.start:
                raise DatasetError(
                    f"{where} is a tracklet with no frames (start {row.start} > end {row.end}); fix or remove the line"
                )
            if row.start < 1 or row.end > len(names):
                raise DatasetError(
                    f"{where} gives frames {row.start}..{row.end}, past the {len(names)} names of {names_file}; the "
                    "tracklet file and the name file do not belong together"
                )
            for name in names[row.start - 1 : row.end]:
                pid, modality, _, _ = decode_frame_name(name)  # type: ignore[misc]  (names were checked)
                if pid != row.pid or modality != row.modality:
                    raise DatasetError(
                        f"{where} says identity {row.pid}, {row.modality}, but its frame {name} of {names_file} is "
                        f"identity {pid}, {modality}; the tracklet file and the name file do not belong together"
                    )
            if row.end - row.start + 1 < self.min_seq_len:
                short += 1
                continue
            kept.append((index, row))
        if short:
            self.notes.append(
                f"{short} of the {len(rows)} tracklets of {info_file.name} have fewer than min_seq_len="
                f"{self.min_seq_len} frames and were left out, as the reference code does"
            )
        if not kept:
            return []
        relpaths = [frame_relpath(names[row.start - 1]) or "" for _, row in kept]
        base = self._image_root(relpaths, split)
        records: list[ImageRecord] = []
        for index, row in kept:
            tracklet = offset + index
            for name in names[row.start - 1 : row.end]:
                path = base / (frame_relpath(name) or "")
                records.append(ImageRecord(str(path), row.pid, row.camid, row.modality, row.pid, tracklet))
        self._require_files(records, names_file)
        return records

    def _require_files(self, records: list[ImageRecord], names_file: Path) -> None:
        """Every frame exists (one listing per folder instead of one stat per frame)."""
        listing: dict[str, set[str] | None] = {}
        by_folder: dict[str, list[str]] = defaultdict(list)
        for r in records:
            folder, _, file = r.path.rpartition(os.sep)
            by_folder[folder].append(file)
        missing: list[str] = []
        for folder, files in by_folder.items():
            if folder not in listing:
                try:
                    listing[folder] = set(os.listdir(folder))
                except OSError:
                    listing[folder] = None
            present = listing[folder]
            missing.extend(os.path.join(folder, f) for f in files if present is None or f not in present)
        if missing:
            raise DatasetError(
                f"{len(missing)} frame(s) listed in {names_file} do not exist, first {missing[0]}; check the dataset "
                f"root {self.root} (identity folders, or Train/ and Test/) or restore the images"
            )

    def summary(self) -> dict:
        out = super().summary()
        out["min_seq_len"] = self.min_seq_len
        out["directions"] = {
            name: {"query_tracklets": len({r.tracklet for r in q}), "gallery_tracklets": len({r.tracklet for r in g})}
            for name, (q, g) in self.directions.items()
        }
        return out
