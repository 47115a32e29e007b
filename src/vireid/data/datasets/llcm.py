"""LLCM reader (low-light cross-modality, Zhang & Wang, CVPR 2023 "Diverse Embedding Expansion Network").

Layout::

    root/idx/train_vis.txt, train_nir.txt   lines "relative/path label", e.g.
                                            "vis/0001/0001_c01_s185535_f7010_vis.jpg 0"
    root/idx/test_id.txt                    one line of comma-separated test identity numbers
    root/test_vis/cam<C>/<id>/<image>       test images, cameras 1..9
    root/test_nir/cam<C>/<id>/<image>       infrared has no camera 3

**Camera of a training image.** The published training paths keep the camera in the file
name (``<id>_c<CC>_s..._f..._vis.jpg``), not in a folder. The camera is taken from a
``cam<C>`` folder of the path when there is one, otherwise from the ``c<CC>`` token of the
file name (the underscore-separated part that is ``c`` plus digits); a training path with
neither is an error naming the index file and line.

**Identity numbers.** As for RegDB, a training image's identity is the number of the folder it
sits in when every listed path has one (``vis/0001/...``), checked one-to-one against the
index label; otherwise the label. Test identities are the ``<id>`` folder numbers, i.e. the
numbers of ``test_id.txt``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from vireid.data.datasets.base import (
    DATASETS,
    ListEntry,
    VIReIDDataset,
    identities_from_index,
    list_images,
    list_subdirs,
    read_id_list,
    read_path_label_list,
    require_dir,
    require_file,
)
from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.errors import DatasetError

#: Modality -> (training index file, test image folder).
LLCM_MODALITIES: dict[str, tuple[str, str]] = {
    VISIBLE: ("train_vis.txt", "test_vis"),
    INFRARED: ("train_nir.txt", "test_nir"),
}
_CAM_FOLDER = re.compile(r"^cam(\d+)$", re.IGNORECASE)
_CAM_TOKEN = re.compile(r"^c(\d+)$", re.IGNORECASE)


def camera_of_training_path(rel_path: str) -> int | None:
    """Camera number of an LLCM training path: a ``cam<C>`` folder, else a ``c<CC>`` file-name token."""
    parts = rel_path.split("/")
    for folder in parts[:-1]:
        match = _CAM_FOLDER.match(folder)
        if match:
            return int(match.group(1))
    for token in Path(parts[-1]).stem.split("_"):
        match = _CAM_TOKEN.match(token)
        if match:
            return int(match.group(1))
    return None


@DATASETS.register("llcm")
class LLCM(VIReIDDataset):
    """LLCM: 9 cameras, 713 training and 351 test identities, visible and near-infrared.

    ``split_dir`` reads ``train_vis.txt``, ``train_nir.txt`` and ``test_id.txt`` from another
    folder than ``root/idx`` (training paths stay relative to ``root``). With
    ``require_train=False`` a copy without the training index files is accepted.
    """

    name = "llcm"
    protocol_family = "llcm"

    def __init__(self, root: str | Path, split_dir: str | Path | None = None, require_train: bool = True) -> None:
        super().__init__(root)
        require_dir(self.root, "LLCM root", "pass the folder that holds idx/, test_vis/ and test_nir/")
        if split_dir is None:
            self.split_dir = require_dir(
                self.root / "idx", "LLCM index folder", "restore idx/ from the dataset or pass --split-dir"
            )
        else:
            self.split_dir = require_dir(
                Path(split_dir).expanduser().absolute(),
                "LLCM split folder",
                "pass a folder with train_vis.txt, train_nir.txt and test_id.txt",
            )
        test_file = require_file(
            self.split_dir / "test_id.txt", "LLCM split file", "restore it from the dataset's idx/ folder"
        )
        self.test_ids = read_id_list(test_file)
        self.test = self._test_records(test_file)

        raw_train: list[ImageRecord] = []
        train_files = {m: self.split_dir / name for m, (name, _) in LLCM_MODALITIES.items()}
        if all(p.is_file() for p in train_files.values()):
            for modality, list_file in train_files.items():
                raw_train.extend(self._train_records(modality, list_file))
        elif require_train or any(p.is_file() for p in train_files.values()):
            missing = next(p for p in train_files.values() if not p.is_file())
            raise DatasetError(
                f"LLCM index file {missing} does not exist; restore it from the dataset's idx/ folder"
                + (" or load with require_train=False to evaluate only" if require_train else "")
            )
        self._finish(raw_train)

    def _train_records(self, modality: str, list_file: Path) -> list[ImageRecord]:
        entries: list[ListEntry] = read_path_label_list(list_file)
        cameras: list[int] = []
        for entry in entries:
            cam = camera_of_training_path(entry.path)
            if cam is None:
                raise DatasetError(
                    f"LLCM index file {list_file} line {entry.lineno}: no camera in {entry.path!r} (expected a "
                    "cam<C> folder or a c<CC> token in the file name such as 0001_c01_s1_f1_vis.jpg)"
                )
            cameras.append(cam)
        paths, pids = identities_from_index(entries, list_file, self.root)
        return [ImageRecord(str(p), pid, cam, modality, pid) for p, pid, cam in zip(paths, pids, cameras)]

    def _test_records(self, test_file: Path) -> list[ImageRecord]:
        folders: dict[int, list[tuple[str, int, Path]]] = defaultdict(list)
        for modality, (_, test_dir_name) in LLCM_MODALITIES.items():
            test_dir = require_dir(
                self.root / test_dir_name, "LLCM test folder", "the dataset must hold test_vis/ and test_nir/"
            )
            for cam_dir in list_subdirs(test_dir):
                match = _CAM_FOLDER.match(cam_dir.name)
                if match is None:
                    self.notes.append(f"{cam_dir} is not a cam<C> folder and was not read")
                    continue
                for id_dir in list_subdirs(cam_dir):
                    if id_dir.name.isdigit():
                        folders[int(id_dir.name)].append((modality, int(match.group(1)), id_dir))
                    else:
                        self.notes.append(f"{id_dir} is not an identity-number folder and was not read")
        records: list[ImageRecord] = []
        for pid in sorted(self.test_ids):
            found = 0
            for modality, cam, folder in sorted(folders.get(pid, []), key=lambda f: (f[0] != VISIBLE, f[1])):
                images = list_images(folder, self.notes)
                if not images:
                    self.notes.append(f"identity folder {folder} is empty")
                found += len(images)
                records.extend(ImageRecord(str(p), pid, cam, modality, pid) for p in images)
            if found == 0:
                raise DatasetError(
                    f"identity {pid} listed in {test_file} has no images under {self.root}/test_vis or test_nir; "
                    "restore its folders or check that the split file belongs to this copy of the dataset"
                )
        return records
