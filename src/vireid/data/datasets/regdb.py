"""RegDB reader (Nguyen et al., Sensors 2017), with the 10-trial split of Ye et al.

Layout::

    root/Visible/<id>/*.bmp, root/Thermal/<id>/*.bmp        412 identities, 10 + 10 images each
    root/idx/train_visible_{t}.txt, train_thermal_{t}.txt,   t = 1..10, lines "relative/path label"
             test_visible_{t}.txt,  test_thermal_{t}.txt

**Identity numbers.** The labels in the published ``idx`` files are per-split class indices:
both the train and the test file of a trial number their 206 identities 0..205 (public loaders
add 206 to the test labels to keep the two apart). They are therefore *not* used as
``orig_pid``: the identity is the number of the ``<id>`` folder the image sits in (1..412, the
numbering of ``RegDB_split.mat``), and the reader checks that each label maps to exactly one
folder. Only if the listed paths do not sit in numbered folders is the label used.

**Without idx files.** When the trial's four idx files are absent and ``split_mat`` (or
``split_dir`` holding ``RegDB_split.mat``) is given, the trial is built from ``TrainIdx`` /
``TestIdx`` (10 x 206 identity numbers, row ``t - 1`` for trial ``t``): every image of
``Visible/<id>`` and ``Thermal/<id>``, identities in ascending number, images sorted by file
name. Present idx files always take precedence over the mat file.

Cameras: visible 1, thermal 2 (one co-located camera pair). ``test`` is every test image of the
trial; the protocol builds visible->thermal and thermal->visible from it.

**Pairs** (``paired=True``, the survey §4.1 multi-modal input): RegDB's cameras are co-located and
fire together, so each visible image has a thermal twin of the same moment (same file counter,
``..._v_<n>_<id>.bmp`` / ``..._t_<n>_<id>.bmp``). The reader then also sets ``train_pairs`` and
``test_pairs``: ``int64 [P, 2]`` rows ``(visible index, thermal index)`` into ``train`` / ``test``
(see :func:`vireid.data.paired.pair_registered_records`); training then samples registered pairs.
When the root also holds ``Depth/<id>/..._d_<n>_<id>.png`` (written by ``vireid synth --format regdb``
with depth), ``train_depth`` / ``test_depth`` list the depth image of each pair's moment. Without the
option all four are ``None``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vireid.data.datasets.base import (
    DATASETS,
    VIReIDDataset,
    identities_from_index,
    list_images,
    list_subdirs,
    read_path_label_list,
    require_dir,
    require_file,
)
from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.errors import ConfigError, DatasetError

#: Modality -> (folder name, camera number, idx file word).
REGDB_MODALITIES: dict[str, tuple[str, int, str]] = {
    VISIBLE: ("Visible", 1, "visible"),
    INFRARED: ("Thermal", 2, "thermal"),
}
NUM_TRIALS = 10


@DATASETS.register("regdb")
class RegDB(VIReIDDataset):
    """RegDB: one visible and one thermal camera, 206 training and 206 test identities per trial (1..10)."""

    name = "regdb"
    protocol_family = "regdb"

    def __init__(
        self,
        root: str | Path,
        trial: int = 1,
        split_mat: str | Path | None = None,
        split_dir: str | Path | None = None,
        paired: bool = False,
    ) -> None:
        super().__init__(root)
        #: (visible index, thermal index) rows of registered pairs (``paired=True`` only).
        self.train_pairs: np.ndarray | None = None
        self.test_pairs: np.ndarray | None = None
        #: depth image of each pair's moment, when the dataset has a Depth/ folder (``paired=True`` only).
        self.train_depth: list[str] | None = None
        self.test_depth: list[str] | None = None
        if isinstance(trial, bool) or not isinstance(trial, int) or not 1 <= trial <= NUM_TRIALS:
            raise ConfigError(f"RegDB trial must be an integer from 1 to {NUM_TRIALS}, got {trial!r}")
        self.trial = trial
        require_dir(self.root, "RegDB root", "pass the folder that holds Visible/, Thermal/ and idx/")
        for folder, _, _ in REGDB_MODALITIES.values():
            require_dir(self.root / folder, "RegDB folder", "the dataset must hold Visible/ and Thermal/")
        if split_mat is None and split_dir is not None:
            split_mat = Path(split_dir) / "RegDB_split.mat"
        idx_files = {
            (split, modality): self.root / "idx" / f"{split}_{word}_{trial}.txt"
            for split in ("train", "test")
            for modality, (_, _, word) in REGDB_MODALITIES.items()
        }
        present = [p for p in idx_files.values() if p.is_file()]
        if present and len(present) < len(idx_files):
            missing = next(p for p in idx_files.values() if not p.is_file())
            raise DatasetError(
                f"RegDB index file {missing} does not exist while other idx files of trial {trial} do; "
                "restore the idx/ folder of the dataset"
            )
        if present:
            self.split_source = "idx"
            raw_train = self._from_idx(idx_files, "train")
            self.test = self._from_idx(idx_files, "test")
        elif split_mat is not None:
            self.split_source = "mat"
            raw_train, self.test = self._from_mat(Path(split_mat).expanduser().absolute())
        else:
            raise DatasetError(
                f"RegDB index files for trial {trial} (e.g. {idx_files['train', VISIBLE]}) do not exist; restore "
                "idx/ from the dataset or pass split_mat= (or --split-dir) with RegDB_split.mat"
            )
        self._finish(raw_train)
        if paired:
            from vireid.data.paired import pair_registered_records

            self.train_pairs = pair_registered_records(self.train, "train")
            self.test_pairs = pair_registered_records(self.test, "test")
            if (self.root / "Depth").is_dir():
                from vireid.data.paired import depth_for_pairs

                self.train_depth = depth_for_pairs(self.train, self.train_pairs, self.root / "Depth")
                self.test_depth = depth_for_pairs(self.test, self.test_pairs, self.root / "Depth")

    def _from_idx(self, idx_files: dict[tuple[str, str], Path], split: str) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for modality, (_, camid, _) in REGDB_MODALITIES.items():
            list_file = idx_files[split, modality]
            entries = read_path_label_list(list_file)
            paths, pids = identities_from_index(entries, list_file, self.root)
            records.extend(ImageRecord(str(p), pid, camid, modality, pid) for p, pid in zip(paths, pids))
        return records

    def _from_mat(self, mat_path: Path) -> tuple[list[ImageRecord], list[ImageRecord]]:
        import scipy.io

        require_file(mat_path, "RegDB split file", "pass the path of RegDB_split.mat (TrainIdx / TestIdx)")
        try:
            mat = scipy.io.loadmat(str(mat_path))
        except (ValueError, OSError, NotImplementedError) as err:
            raise DatasetError(f"RegDB split file {mat_path} cannot be read as a MATLAB file ({err})") from None
        rows: dict[str, np.ndarray] = {}
        for key in ("TrainIdx", "TestIdx"):
            table = mat.get(key)
            if table is None or np.ndim(table) != 2 or np.shape(table)[0] < self.trial:
                raise DatasetError(
                    f"RegDB split file {mat_path} has no {key} table with a row for trial {self.trial}; "
                    "it must hold TrainIdx and TestIdx of shape 10 x 206"
                )
            rows[key] = np.asarray(table[self.trial - 1]).astype(np.int64).ravel()
        folders = self._identity_folders()
        train = self._records_of_ids(rows["TrainIdx"], folders, mat_path)
        test = self._records_of_ids(rows["TestIdx"], folders, mat_path)
        return train, test

    def _identity_folders(self) -> dict[str, dict[int, Path]]:
        folders: dict[str, dict[int, Path]] = {}
        for modality, (name, _, _) in REGDB_MODALITIES.items():
            folders[modality] = {int(d.name): d for d in list_subdirs(self.root / name) if d.name.isdigit()}
        return folders

    def _records_of_ids(
        self, ids: np.ndarray, folders: dict[str, dict[int, Path]], mat_path: Path
    ) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for pid in sorted(int(i) for i in ids):
            for modality, (name, camid, _) in REGDB_MODALITIES.items():
                folder = folders[modality].get(pid)
                images = list_images(folder, self.notes) if folder is not None else []
                if not images:
                    state = "has no images" if folder is not None else "does not exist"
                    raise DatasetError(
                        f"RegDB folder {self.root / name / str(pid)} (identity {pid} of {mat_path.name}, trial "
                        f"{self.trial}) {state}; restore the dataset's {name}/ folder"
                    )
                records.extend(ImageRecord(str(p), pid, camid, modality, pid) for p in images)
        return records
