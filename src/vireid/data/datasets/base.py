"""The dataset interface every reader implements, plus the helpers the readers share.

A reader turns a dataset on disk into lists of :class:`~vireid.data.records.ImageRecord`:

* ``train`` -- training images, identities relabelled to 0..N-1 (``orig_pid`` keeps the
  dataset's number), every identity with images of both modalities;
* ``val`` -- images of the validation identities (dataset numbers), possibly empty;
* ``test`` -- the evaluation *pool*: every image of the test identities (dataset numbers).
  The official protocols (:mod:`vireid.evaluation.protocols`) draw queries and galleries
  from it;
* ``query`` / ``gallery`` -- only for data with a fixed query/gallery (user data,
  ``protocol_family == "given"``), otherwise ``None``.

Readers never skip a file that the layout says exists: structural problems raise
:class:`~vireid.errors.DatasetError` at construction, with one sentence naming the path
and what to do. :meth:`VIReIDDataset.check` then decodes every image (in parallel) and
reports unreadable files, without raising.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vireid.data.images import decode_image, is_image_file
from vireid.data.records import INFRARED, MODALITIES, VISIBLE, ImageRecord, relabel
from vireid.errors import DatasetError
from vireid.registry import Registry

#: Dataset readers by format name (``"sysu-mm01"``, ``"regdb"``, ``"llcm"``, ``"folder"``, ``"csv"``).
DATASETS: Registry = Registry("dataset format")

#: Spellings accepted for the two modalities (folder names, CSV values), lower-case.
MODALITY_ALIASES: dict[str, str] = {
    "visible": VISIBLE,
    "vis": VISIBLE,
    "rgb": VISIBLE,
    "color": VISIBLE,
    "colour": VISIBLE,
    "infrared": INFRARED,
    "ir": INFRARED,
    "nir": INFRARED,
    "thermal": INFRARED,
}

_PREFIXED_NUMBER = re.compile(r"^[^\d]*?(\d+)$")
_MAX_LISTED = 5


def parse_modality(value: str) -> str | None:
    """``"rgb"`` -> ``"visible"``, ``"IR"`` -> ``"infrared"``; ``None`` for an unknown spelling."""
    return MODALITY_ALIASES.get(value.strip().lower())


def parse_prefixed_int(name: str) -> int | None:
    """The number of a folder or value name such as ``"3"``, ``"0042"``, ``"cam3"``, ``"id_12"``.

    Accepted: an optional prefix without digits followed by digits only. ``None`` otherwise
    (``"3a"``, ``"cam3_b"``, ``"abc"``).
    """
    match = _PREFIXED_NUMBER.match(name.strip())
    return int(match.group(1)) if match else None


def list_subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder`` (hidden ones skipped), sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def list_images(folder: Path, notes: list[str] | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Hidden files are ignored; any other non-image file is reported in ``notes`` (it is not
    part of the dataset, but the user should know it was not read).
    """
    images: list[Path] = []
    others: list[str] = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if is_image_file(entry.name):
            images.append(Path(entry.path))
        else:
            others.append(entry.name)
    if others and notes is not None:
        shown = ", ".join(sorted(others)[:_MAX_LISTED])
        notes.append(f"{folder} holds {len(others)} file(s) that are not images and were not read ({shown})")
    return sorted(images, key=lambda p: p.name)


def require_dir(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a folder, else raise a DatasetError naming it."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{what} {path} {state}; {hint}")
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a file, else raise a DatasetError naming it."""
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise DatasetError(f"{what} {path} {state}; {hint}")
    return path


def read_id_list(path: Path) -> list[int]:
    """Identity numbers of a split file such as SYSU-MM01's ``exp/test_id.txt``.

    The official files hold one line of comma-separated numbers; commas and whitespace are
    both accepted as separators, blank lines and a trailing newline are fine. A token that is
    not an integer raises a DatasetError naming the file and line.
    """
    ids: list[int] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"split file {path} cannot be read ({err.strerror}); check its permissions") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        for token in re.split(r"[,\s]+", line.strip()):
            if not token:
                continue
            try:
                ids.append(int(token))
            except ValueError:
                raise DatasetError(
                    f"split file {path} line {lineno} holds {token!r}, which is not an identity number; "
                    "it must list integers separated by commas"
                ) from None
    if not ids:
        raise DatasetError(f"split file {path} lists no identities; restore the original file")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DatasetError(
            f"split file {path} lists identities {duplicates[:_MAX_LISTED]} more than once; fix the file"
        )
    return ids


@dataclass(frozen=True)
class ListEntry:
    """One line ``relative/path label`` of an index file (RegDB ``idx/*.txt``, LLCM ``idx/train_*.txt``)."""

    lineno: int
    path: str
    label: int


def read_path_label_list(path: Path) -> list[ListEntry]:
    """Parse an index file of ``relative/path label`` lines (blank lines ignored).

    The label is the last whitespace-separated token, so paths may contain spaces. A line
    without a label, or with a label that is not an integer, raises a DatasetError naming the
    file and line number.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"index file {path} cannot be read ({err.strerror}); check its permissions") from None
    entries: list[ListEntry] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DatasetError(
                f"index file {path} line {lineno} ({line!r}) is malformed; each line must be 'relative/path label'"
            )
        rel, label = parts
        try:
            entries.append(ListEntry(lineno, rel.replace("\\", "/"), int(label)))
        except ValueError:
            raise DatasetError(
                f"index file {path} line {lineno} has label {label!r}, which is not an integer; "
                "each line must be 'relative/path label'"
            ) from None
    if not entries:
        raise DatasetError(f"index file {path} lists no images; restore the original file")
    return entries


def identities_from_index(
    entries: list[ListEntry], list_file: Path, root: Path
) -> tuple[list[Path], list[int]]:
    """Resolve the image paths of an index file and decide each image's identity number.

    The labels of the published RegDB/LLCM index files are *per-split* class indices
    (RegDB: 0..205 in both the train and the test files of a trial), not the dataset's
    identity numbers. When every image sits in a folder named by an integer
    (``Visible/<id>/...``, ``nir/<id>/...``, the published layouts), that folder number is the
    identity; the label must then map one-to-one onto the folders, or the file is corrupt.
    Otherwise the label is the identity. Every listed file must exist.
    """
    paths = [root / e.path for e in entries]
    missing = [(e, p) for e, p in zip(entries, paths) if not p.is_file()]
    if missing:
        first_entry, first_path = missing[0]
        raise DatasetError(
            f"index file {list_file} lists {len(missing)} image(s) that do not exist, first {first_path} "
            f"(line {first_entry.lineno}); check the dataset root {root} or restore the images"
        )
    folder_ids = [int(p.parent.name) if p.parent.name.isdigit() else None for p in paths]
    if any(f is None for f in folder_ids):
        return paths, [e.label for e in entries]
    folder_of_label: dict[int, tuple[int, int]] = {}
    label_of_folder: dict[int, tuple[int, int]] = {}
    for entry, folder_id in zip(entries, folder_ids):
        assert folder_id is not None
        seen = folder_of_label.setdefault(entry.label, (folder_id, entry.lineno))
        if seen[0] != folder_id:
            raise DatasetError(
                f"index file {list_file} line {entry.lineno} gives label {entry.label} to identity folder {folder_id}, "
                f"but line {seen[1]} gives it to folder {seen[0]}; restore the original index file"
            )
        seen = label_of_folder.setdefault(folder_id, (entry.label, entry.lineno))
        if seen[0] != entry.label:
            raise DatasetError(
                f"index file {list_file} line {entry.lineno} gives identity folder {folder_id} label {entry.label}, "
                f"but line {seen[1]} gives it label {seen[0]}; restore the original index file"
            )
    return paths, [int(f) for f in folder_ids]  # type: ignore[arg-type]


@dataclass
class CheckReport:
    """What :meth:`VIReIDDataset.check` found. ``problems`` make the dataset unusable as is;
    ``warnings`` are worth a look but harmless."""

    dataset: str
    root: str
    num_images: int
    decoded: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def _probe(path: str, decode: bool) -> str | None:
    """One sentence about what is wrong with the image at ``path``, or None."""
    if decode:
        try:
            decode_image(path)
        except DatasetError as err:
            return str(err)
        return None
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return f"image {path} does not exist; check the dataset root and its split files"
    except OSError as err:
        return f"image {path} cannot be read ({err.strerror}); check its permissions"
    if size == 0:
        return f"image {path} is an empty file (0 bytes); replace or remove it and its split entry"
    return None


def default_workers() -> int:
    """Threads used to decode images in :meth:`VIReIDDataset.check`."""
    return max(1, min(16, os.cpu_count() or 1))


class VIReIDDataset:
    """Base class of every dataset reader; see the module docstring for the meaning of each split."""

    name: ClassVar[str] = ""
    protocol_family: ClassVar[str] = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.train: list[ImageRecord] = []
        self.val: list[ImageRecord] = []
        self.test: list[ImageRecord] = []
        self.query: list[ImageRecord] | None = None
        self.gallery: list[ImageRecord] | None = None
        #: Original identity number -> training label.
        self.train_pid_map: dict[int, int] = {}
        #: Harmless findings of the reader (stray files, empty folders), repeated by :meth:`check`.
        self.notes: list[str] = []

    # ------------------------------------------------------------------ building
    def _finish(self, raw_train: list[ImageRecord]) -> None:
        """Validate the splits and relabel the training identities; readers call this last."""
        self._require_both_modalities("train", raw_train, per_identity=True)
        self._require_both_modalities("test", self.test, per_identity=False)
        if self.query is not None or self.gallery is not None:
            for split, records in (("query", self.query), ("gallery", self.gallery)):
                if not records:
                    raise DatasetError(
                        f"dataset {self.root} has no {split} images but has a "
                        f"{'gallery' if split == 'query' else 'query'}; add the {split} images or remove both"
                    )
        self.train, self.train_pid_map = relabel(raw_train)

    def _require_both_modalities(self, split: str, records: list[ImageRecord], per_identity: bool) -> None:
        if not records:
            return
        by_modality = Counter(r.modality for r in records)
        for modality in MODALITIES:
            if by_modality[modality] == 0:
                raise DatasetError(
                    f"the {split} split of {self.root} has no {modality} images; a visible-infrared dataset "
                    f"needs both modalities, so add the {modality} images or fix the split files"
                )
        if not per_identity:
            return
        modalities: dict[int, set[str]] = defaultdict(set)
        folders: dict[int, set[str]] = defaultdict(set)
        for r in records:
            modalities[r.orig_pid].add(r.modality)
            folders[r.orig_pid].add(str(Path(r.path).parent))
        for pid in sorted(modalities):
            if len(modalities[pid]) < 2:
                (only,) = modalities[pid]
                shown = ", ".join(sorted(folders[pid])[:_MAX_LISTED])
                raise DatasetError(
                    f"identity {pid} of the {split} split has only {only} images (in {shown}); every training "
                    "identity needs visible and infrared images, so add the missing ones or move the identity out "
                    "of the training split"
                )

    # ------------------------------------------------------------------ reading
    @property
    def num_train_ids(self) -> int:
        return len({r.pid for r in self.train})

    def splits(self) -> Iterator[tuple[str, list[ImageRecord]]]:
        """(name, records) of every split that is present (query/gallery only when set)."""
        yield "train", self.train
        yield "val", self.val
        yield "test", self.test
        if self.query is not None:
            yield "query", self.query
        if self.gallery is not None:
            yield "gallery", self.gallery

    def summary(self) -> dict[str, Any]:
        """Counts of identities and images per split, modality and camera."""
        splits: dict[str, Any] = {}
        for split, records in self.splits():
            per_modality: dict[str, Any] = {}
            for modality in MODALITIES:
                subset = [r for r in records if r.modality == modality]
                cameras = Counter(r.camid for r in subset)
                per_modality[modality] = {
                    "ids": len({r.orig_pid for r in subset}),
                    "images": len(subset),
                    "cameras": {int(c): cameras[c] for c in sorted(cameras)},
                }
            splits[split] = {
                "ids": len({r.orig_pid for r in records}),
                "images": len(records),
                "modalities": per_modality,
            }
            tracklets = {r.tracklet for r in records if r.tracklet >= 0}
            if tracklets:  # video data: how many tracklets the frames form (still images: no key)
                splits[split]["tracklets"] = len(tracklets)
        return {
            "format": self.name,
            "root": str(self.root),
            "protocol_family": self.protocol_family,
            "num_train_ids": self.num_train_ids,
            "splits": splits,
        }

    def _unique_paths(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, records in self.splits():
            for r in records:
                seen.setdefault(r.path, None)
        return list(seen)

    def _consistency_warnings(self) -> list[str]:
        """Findings that do not stop the dataset from being used but usually mean a mistake."""
        found: list[str] = []
        train_ids = {r.orig_pid for r in self.train}
        eval_records = list(self.test)
        eval_records += (self.query or []) + (self.gallery or [])
        overlap = sorted(train_ids & {r.orig_pid for r in eval_records})
        if overlap:
            found.append(
                f"{len(overlap)} identities are both in the training split and in the evaluation data "
                f"(e.g. {overlap[:_MAX_LISTED]}); results on them are not a test of generalisation"
            )
        train_paths = {r.path for r in self.train}
        shared = sorted(train_paths & {r.path for r in eval_records})
        if shared:
            found.append(f"{len(shared)} images are both in training and evaluation data (e.g. {shared[0]})")
        cameras: dict[int, set[str]] = defaultdict(set)
        for _, records in self.splits():
            for r in records:
                cameras[r.camid].add(r.modality)
        both = sorted(c for c, mods in cameras.items() if len(mods) > 1)
        if both:
            found.append(
                f"camera number(s) {both} hold both visible and infrared images; protocols that skip same-camera "
                "gallery images will treat them as one camera, so give different devices different numbers"
            )
        return found

    def check(self, decode: bool = True, workers: int | None = None, progress: bool = True) -> CheckReport:
        """Open every image of every split and report what is wrong.

        ``decode=False`` only checks that each file exists and is not empty (fast). Images are
        decoded by ``workers`` threads (Pillow releases the GIL while decoding) with a tqdm
        progress bar on stderr when ``progress`` is set and stderr is a terminal. Never raises
        for a bad image: each one becomes a sentence in ``report.problems``.
        """
        from tqdm import tqdm

        paths = self._unique_paths()
        workers = default_workers() if workers is None else max(1, int(workers))
        problems: list[str] = []
        desc = f"{'decoding' if decode else 'checking'} {self.name}"
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results: Iterable[str | None] = pool.map(lambda p: _probe(p, decode), paths, chunksize=64)
            for message in tqdm(results, total=len(paths), desc=desc, unit="img", disable=None if progress else True):
                if message is not None:
                    problems.append(message)
        warnings = list(self.notes) + self._consistency_warnings()
        if not self.train:
            warnings.append(f"{self.root} has no training split: it can be evaluated on but not trained on")
        return CheckReport(
            dataset=self.name,
            root=str(self.root),
            num_images=len(paths),
            decoded=decode,
            problems=problems,
            warnings=warnings,
            summary=self.summary(),
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{split}={len(records)}" for split, records in self.splits())
        return f"{type(self).__name__}(root={str(self.root)!r}, {counts}, train_ids={self.num_train_ids})"
