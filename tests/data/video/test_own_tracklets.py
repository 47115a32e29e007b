"""Users' own tracklets: a tracklet folder level in the folder layout, a tracklet column in the CSV manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vireid.data.datasets import build_dataset
from vireid.data.tracklets import eval_frames
from vireid.errors import DatasetError


def _image(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (value, 20, 200)).save(path)
    return path


def _folder(root: Path) -> Path:
    """Train: identity 1 with one tracklet per modality (frames f1, f2, f10: natural order) plus a still image;
    query/gallery: identity 5 as tracklets."""
    for split, pid in (("train", 1), ("query", 5), ("gallery", 5)):
        for modality, cam in (("visible", "cam1"), ("infrared", "cam2")):
            if split == "query" and modality == "visible" or split == "gallery" and modality == "infrared":
                continue
            for frame in ("f10.png", "f1.png", "f2.png"):
                _image(root / split / modality / cam / f"id{pid}" / "walk1" / frame)
    _image(root / "train" / "visible" / "cam1" / "id1" / "still.png")
    _image(root / "train" / "visible" / "cam1" / "id1" / "walk2" / "0001.png")
    return root


def test_folder_tracklet_level(tmp_path):
    ds = build_dataset("folder", _folder(tmp_path / "mine"))
    train = ds.train
    still = [r for r in train if r.tracklet == -1]
    assert [Path(r.path).name for r in still] == ["still.png"]
    walks = {}
    for r in train:
        if r.tracklet >= 0:
            walks.setdefault(r.tracklet, []).append(r)
    assert len(walks) == 3  # visible walk1 + walk2, infrared walk1
    first = walks[min(walks)]
    assert [Path(r.path).name for r in first] == ["f1.png", "f2.png", "f10.png"]  # natural (temporal) order
    assert {(r.modality, r.camid) for r in first} in ({("visible", 1)}, {("infrared", 2)})
    assert ds.summary()["splits"]["query"]["tracklets"] == 1
    frames, ids, order = eval_frames(ds.query, seq_len=2)
    assert len(frames) == 2 and len(set(ids.tolist())) == 1
    assert len({r.tracklet for r in ds.train + ds.query + ds.gallery if r.tracklet >= 0}) == 5  # unique ids


def test_folder_tracklet_without_frames_is_one_sentence(tmp_path):
    root = _folder(tmp_path / "mine")
    (root / "train" / "infrared" / "cam2" / "id1" / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"tracklet folder .*empty holds no frames; put the tracklet's images"):
        build_dataset("folder", root)


def _csv(root: Path, rows: list[str]) -> Path:
    for i in range(6):
        _image(root / f"{i}.png", 10 * i)
    (root / "manifest.csv").write_text("path,identity,camera,modality,split,tracklet\n" + "\n".join(rows) + "\n")
    return root


def test_csv_tracklet_column(tmp_path):
    root = _csv(tmp_path / "c", ["2.png,1,1,visible,train,walkA", "0.png,1,1,visible,train,walkA",
                                 "1.png,1,2,infrared,train,7", "3.png,1,2,infrared,train,",
                                 "4.png,1,1,visible,train,walkA", "5.png,1,2,infrared,train,7"])
    ds = build_dataset("csv", root)
    assert [r.tracklet for r in ds.train] == [0, 0, 1, -1, 0, 1]
    walk = [Path(r.path).name for r in ds.train if r.tracklet == 0]
    assert walk == ["2.png", "0.png", "4.png"]  # manifest order is the temporal order
    frames, ids, _ = eval_frames([r for r in ds.train if r.tracklet >= 0], mode="all")
    assert ids.tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("row,what", [("4.png,2,1,visible,train,walkA", "identity 1 on line 2 but 2 here"),
                                      ("4.png,1,3,visible,train,walkA", "camera 1 on line 2 but 3 here"),
                                      ("4.png,1,1,infrared,train,walkA", "modality visible on line 2 but infrared"),
                                      ("4.png,1,1,visible,val,walkA", "split train on line 2 but val here")])
def test_csv_tracklet_mixing_frames_is_one_sentence(tmp_path, row, what):
    root = _csv(tmp_path / "c", ["0.png,1,1,visible,train,walkA", "1.png,1,2,infrared,train,7", row])
    with pytest.raises(DatasetError, match=f"line 4: tracklet 'walkA' has {what}") as err:
        build_dataset("csv", root)
    assert "\n" not in str(err.value)
