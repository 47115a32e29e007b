"""On-disk layouts the generator writes: the real SYSU-MM01 and RegDB layouts, so that the real
dataset readers (not a synthetic-only reader) load the synthetic data.

SYSU-MM01: ``cam1..cam6/<pid:04d>/<k:04d>.jpg`` and ``exp/{train,val,test,available}_id.txt``
(one line of comma-separated identity numbers, as in the official release).

NPU-ReID (dual-path Swin; vireid's layout, see :mod:`vireid.data.datasets.npu_reid`): the SYSU-MM01 shape with
``cam1..cam8`` (odd visible, even thermal; thermal JPEGs are single-channel) and the same split files.

RegDB: ``Visible/<pid>/<gender>_<view>_v_<counter:05d>_<pid>.bmp``, ``Thermal/<pid>/..._t_...bmp``
(the official naming) and ``idx/{train,test}_{visible,thermal}_{1..10}.txt`` with lines
``relative/path label``.

RegDB label convention (the one of the official ``idx`` files, which AGW/CAJ-style loaders use
directly as classifier targets): within each file the label is the identity's position in the
sorted list of that split's identities, **0-based and restarting at 0 in the test files** (train
labels 0..N_train-1, test labels 0..N_test-1). The identity number itself is the folder name
(and the number at the end of the file name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SYSU_VISIBLE_CAMERAS = (1, 2, 4, 5)
SYSU_INFRARED_CAMERAS = (3, 6)
SYSU_CAMERAS = (1, 2, 3, 4, 5, 6)
REGDB_TRIALS = 10

#: Every top-level entry the generator may create; nothing else is ever written or removed.
SYNTH_ENTRIES = (
    "cam1", "cam2", "cam3", "cam4", "cam5", "cam6", "cam7", "cam8", "exp",
    "Visible", "Thermal", "Depth", "idx", "synth_joints.npz", "synth_meta.json", "synth_meta.json.tmp",
    "Train", "Test", "info",  # the hitsz-vcm (video) layout
    "attributes.csv", "attributes.csv.tmp",  # attribute labels (vireid.data.synth.attributes)
    "Text",  # per-image descriptions (vireid.data.synth.descriptions)
)


def sysu_image_path(camid: int, pid: int, index: int) -> str:
    """Relative path of image ``index`` (1-based) of identity ``pid`` in camera ``camid``."""
    return f"cam{camid}/{pid:04d}/{index:04d}.jpg"


def sysu_split(num_ids: int, seed: int) -> dict[str, list[int]]:
    """Split identities 1..num_ids like SYSU-MM01 (about 60% train, 20% val, 20% test; at least 2 test
    ids and 1 train id). The assignment is a seeded shuffle, so test ids are spread over the range."""
    n_test = max(2, int(round(0.2 * num_ids)))
    n_val = int(round(0.2 * num_ids))
    n_train = num_ids - n_test - n_val
    if n_train < 1:
        raise ValueError(f"a SYSU-MM01 layout needs at least 4 identities, got {num_ids}")
    order = np.random.default_rng([int(seed), 0x5B]).permutation(np.arange(1, num_ids + 1))
    return {
        "train": sorted(int(i) for i in order[:n_train]),
        "val": sorted(int(i) for i in order[n_train : n_train + n_val]),
        "test": sorted(int(i) for i in order[n_train + n_val :]),
        "available": list(range(1, num_ids + 1)),
    }


def write_sysu_split_files(root: Path, split: dict[str, list[int]]) -> None:
    """Write ``exp/<name>_id.txt`` files: one line of comma-separated ids, newline-terminated."""
    exp = root / "exp"
    exp.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test", "available"):
        (exp / f"{name}_id.txt").write_text(",".join(str(i) for i in split[name]) + "\n")


def regdb_image_path(modality_folder: str, gender: str, view: str, counter: int, pid: int) -> str:
    """Official RegDB naming, e.g. ``Visible/7/male_front_v_00061_7.bmp`` / ``Thermal/7/..._t_...``."""
    letter = "v" if modality_folder == "Visible" else "t"
    return f"{modality_folder}/{pid}/{gender}_{view}_{letter}_{counter:05d}_{pid}.bmp"


def regdb_depth_path(gender: str, view: str, counter: int, pid: int) -> str:
    """Path of the optional depth image of a RegDB-layout moment: ``Depth/7/male_front_d_00061_7.png``
    (the same counter as its visible/thermal twins; vireid's extension, not part of RegDB)."""
    return f"Depth/{pid}/{gender}_{view}_d_{counter:05d}_{pid}.png"


def regdb_trials(num_ids: int, seed: int, trials: int = REGDB_TRIALS) -> list[tuple[list[int], list[int]]]:
    """Per trial, a random half of identities 1..num_ids for training and the rest for testing
    (different halves per trial, like the 10 official RegDB trials)."""
    if num_ids < 2:
        raise ValueError(f"a RegDB layout needs at least 2 identities, got {num_ids}")
    out = []
    for t in range(1, trials + 1):
        order = np.random.default_rng([int(seed), 0xDB, t]).permutation(np.arange(1, num_ids + 1))
        half = num_ids // 2
        out.append((sorted(int(i) for i in order[:half]), sorted(int(i) for i in order[half:])))
    return out


def write_regdb_index_files(root: Path, trials: list[tuple[list[int], list[int]]],
                            images: dict[int, tuple[list[str], list[str]]]) -> None:
    """Write ``idx/{train,test}_{visible,thermal}_{t}.txt``; ``images[pid] = (visible paths, thermal paths)``.

    Labels follow the official convention (see the module docstring): the 0-based position of the
    identity among the sorted identities of that split.
    """
    idx = root / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    for t, (train_ids, test_ids) in enumerate(trials, start=1):
        for split_name, ids in (("train", train_ids), ("test", test_ids)):
            for m, modality in enumerate(("visible", "thermal")):
                lines = [f"{path} {label}" for label, pid in enumerate(ids) for path in images[pid][m]]
                (idx / f"{split_name}_{modality}_{t}.txt").write_text("\n".join(lines) + "\n")
