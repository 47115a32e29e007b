"""SYSU-MM01 reader (Wu et al., ICCV 2017).

Layout::

    root/cam1 ... cam6/<identity>/<image>     identity folders are numbers (``0001`` ... ``0533``)
    root/exp/train_id.txt, val_id.txt, test_id.txt   one line of comma-separated identity numbers

Cameras 1, 2, 4, 5 are visible, 3 and 6 near-infrared. Any image extension of
:data:`vireid.data.images.IMAGE_EXTENSIONS` is read (the dataset ships JPEGs). Identity folders
are matched by number, so ``0007`` and ``7`` are the same identity. Not every identity appears
in every camera; an identity listed in a split file that has no image in any camera is an error.

``test`` is every image of the test identities in all six cameras; the official query/gallery
draws (IR queries from cams 3/6, 1 or 10 gallery images per id and visible camera, 10 trials)
are made from it by :mod:`vireid.evaluation.protocols`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from vireid.data.datasets.base import (
    DATASETS,
    VIReIDDataset,
    list_images,
    list_subdirs,
    read_id_list,
    require_dir,
    require_file,
)
from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.errors import DatasetError

#: Camera number -> modality.
CAMERA_MODALITY: dict[int, str] = {1: VISIBLE, 2: VISIBLE, 3: INFRARED, 4: VISIBLE, 5: VISIBLE, 6: INFRARED}


@DATASETS.register("sysu-mm01")
class SYSUMM01(VIReIDDataset):
    """SYSU-MM01: 6 cameras (4 visible, 2 infrared), 395 training and 96 test identities.

    ``train_includes_val`` (default, standard practice) trains on the train and val identities
    (296 + 99 = 395); ``val`` lists the val identities' images either way, so a trainer may hold
    them out. ``split_dir`` reads the split files from another folder (e.g. the official ones in
    ``data/splits/sysu-mm01``) instead of ``root/exp``. With ``require_train=False`` a copy
    without ``train_id.txt`` (evaluation only) is accepted and ``train`` is empty.
    """

    name = "sysu-mm01"
    protocol_family = "sysu"
    #: camera number -> modality (subclasses with other camera sets override it, e.g. NPU-ReID)
    camera_modality: dict[int, str] = CAMERA_MODALITY

    def __init__(
        self,
        root: str | Path,
        train_includes_val: bool = True,
        split_dir: str | Path | None = None,
        require_train: bool = True,
    ) -> None:
        super().__init__(root)
        self.train_includes_val = train_includes_val
        require_dir(self.root, "SYSU-MM01 root", "pass the folder that holds cam1 ... cam6 and exp/")
        if split_dir is None:
            self.split_dir = self.root / "exp"
            if not self.split_dir.is_dir():
                raise DatasetError(
                    f"SYSU-MM01 split folder {self.split_dir} does not exist; restore exp/ from the dataset or pass "
                    "--split-dir (split_dir=) pointing to a folder with train_id.txt, val_id.txt and test_id.txt"
                )
        else:
            self.split_dir = require_dir(
                Path(split_dir).expanduser().absolute(),
                "SYSU-MM01 split folder",
                "pass a folder with train_id.txt, val_id.txt and test_id.txt",
            )
        self._folders = self._index_identity_folders()

        test_file = require_file(
            self.split_dir / "test_id.txt", "SYSU-MM01 split file", "restore it from the dataset's exp/ folder"
        )
        self.test_ids = read_id_list(test_file)
        self.test = self._records_of(self.test_ids, test_file)

        train_file = self.split_dir / "train_id.txt"
        val_file = self.split_dir / "val_id.txt"
        self.train_ids: list[int] = []
        self.val_ids: list[int] = []
        raw_train: list[ImageRecord] = []
        if train_file.is_file():
            self.train_ids = read_id_list(train_file)
            if val_file.is_file():
                self.val_ids = read_id_list(val_file)
            elif train_includes_val:
                raise DatasetError(
                    f"SYSU-MM01 split file {val_file} does not exist but train_includes_val is set; restore it "
                    "from the dataset's exp/ folder or set train_includes_val=False"
                )
            raw_train = self._records_of(self.train_ids, train_file)
            self.val = self._records_of(self.val_ids, val_file) if self.val_ids else []
            if train_includes_val:
                raw_train = raw_train + self.val
        elif require_train:
            raise DatasetError(
                f"SYSU-MM01 split file {train_file} does not exist; restore it, pass --split-dir with the official "
                "split files, or load with require_train=False to evaluate only"
            )
        self._finish(raw_train)

    def _index_identity_folders(self) -> dict[int, list[tuple[int, Path]]]:
        """identity number -> [(camera, folder)] over the six camera folders."""
        folders: dict[int, list[tuple[int, Path]]] = defaultdict(list)
        last = max(self.camera_modality)
        for cam in sorted(self.camera_modality):
            cam_dir = require_dir(
                self.root / f"cam{cam}", f"{self.name} camera folder", f"the dataset must hold cam1 ... cam{last}"
            )
            strays: list[str] = []
            for sub in list_subdirs(cam_dir):
                if sub.name.isdigit():
                    folders[int(sub.name)].append((cam, sub))
                else:
                    strays.append(sub.name)
            if strays:
                self.notes.append(
                    f"{cam_dir} holds folders that are not identity numbers and were not read: {strays[:5]}"
                )
        return folders

    def _records_of(self, ids: list[int], split_file: Path) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for pid in sorted(ids):
            found = 0
            for cam, folder in self._folders.get(pid, []):
                images = list_images(folder, self.notes)
                if not images:
                    self.notes.append(f"identity folder {folder} is empty")
                found += len(images)
                records.extend(ImageRecord(str(p), pid, cam, self.camera_modality[cam], pid) for p in images)
            if found == 0:
                where = ("has only empty folders" if pid in self._folders
                         else f"has no folder in any of cam1 ... cam{max(self.camera_modality)}")
                raise DatasetError(
                    f"identity {pid} listed in {split_file} {where} under {self.root}; restore its images or "
                    "check that the split file belongs to this copy of the dataset"
                )
        return records
