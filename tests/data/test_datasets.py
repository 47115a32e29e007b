"""Dataset readers: layouts fabricated in tmp_path with tiny images, plus the real SYSU-MM01 crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import vireid  # noqa: F401  (torchvision guard first)
from vireid.data.datasets import DATASETS, build_dataset
from vireid.data.datasets.llcm import camera_of_training_path
from vireid.data.images import decode_image
from vireid.data.records import INFRARED, VISIBLE
from vireid.errors import ConfigError, DatasetError

from conftest import REAL_MINI, SHARED_DATA  # noqa: E402
REGDB_MAT = SHARED_DATA / "splits" / "regdb" / "RegDB_split.mat"


def write_image(path: Path, grey: bool = False, value: int = 100) -> Path:
    """A 16x8 image; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if grey:
        Image.new("L", (8, 16), value).save(path)
    else:
        Image.new("RGB", (8, 16), (value, 20, 200)).save(path)
    return path


# ---------------------------------------------------------------------- fabricated layouts
def make_sysu(root: Path, train=(1, 2), val=(3,), test=(4, 5), per_cam: int = 1, skip=()) -> Path:
    """SYSU-MM01 layout: every id in every camera (minus ``skip`` = {(cam, id)}), ``per_cam`` images each."""
    for cam in range(1, 7):
        for pid in (*train, *val, *test):
            if (cam, pid) in skip:
                continue
            for k in range(per_cam):
                write_image(root / f"cam{cam}" / f"{pid:04d}" / f"{k + 1:04d}.jpg", grey=cam in (3, 6))
    (root / "exp").mkdir(parents=True, exist_ok=True)
    (root / "exp" / "train_id.txt").write_text(",".join(map(str, train)) + "\n")
    (root / "exp" / "val_id.txt").write_text(" " + ", ".join(map(str, val)) + " \n\n")
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, test)))
    return root


def make_regdb(root: Path, ids=(1, 2, 3, 4), trial: int = 1, per_id: int = 2, write_idx: bool = True) -> Path:
    """RegDB layout; trial ``trial`` trains on the first half of ``ids``. Labels are 0-based per split,
    as in the published idx files."""
    for pid in ids:
        for k in range(per_id):
            write_image(root / "Visible" / str(pid) / f"female_front_v_{pid:05d}_{k}.bmp")
            write_image(root / "Thermal" / str(pid) / f"female_front_t_{pid:05d}_{k}.bmp", grey=True)
    if write_idx:
        half = len(ids) // 2
        (root / "idx").mkdir(parents=True, exist_ok=True)
        for split, split_ids in (("train", ids[:half]), ("test", ids[half:])):
            for word, folder in (("visible", "Visible"), ("thermal", "Thermal")):
                lines = [
                    f"{folder}/{pid}/{p.name} {label}"
                    for label, pid in enumerate(split_ids)
                    for p in sorted((root / folder / str(pid)).iterdir())
                ]
                (root / "idx" / f"{split}_{word}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_llcm(root: Path, train=(1, 2), test=(7, 8)) -> Path:
    """LLCM layout with the published path format (camera in the file name for training images)."""
    idx = root / "idx"
    idx.mkdir(parents=True)
    for modality, word, cams in (("vis", "vis", (1, 3)), ("nir", "nir", (1, 2))):
        lines = []
        for label, pid in enumerate(train):
            for cam in cams:
                rel = f"{modality}/{pid:04d}/{pid:04d}_c{cam:02d}_s1_f{cam}_{word}.jpg"
                write_image(root / rel, grey=word == "nir")
                lines.append(f"{rel} {label}")
        (idx / f"train_{word}.txt").write_text("\n".join(lines) + "\n")
    for pid in test:
        for cam in (1, 3):
            write_image(root / "test_vis" / f"cam{cam}" / f"{pid:04d}" / "a.jpg")
        for cam in (2, 9):
            write_image(root / "test_nir" / f"cam{cam}" / f"{pid:04d}" / "a.jpg", grey=True)
    (idx / "test_id.txt").write_text(",".join(map(str, test)) + "\n")
    return root


def make_folder(root: Path) -> Path:
    """User folder layout with aliases and prefixed names."""
    for split, ids in (("train", (1, 2)), ("query", (5,)), ("gallery", (5, 6))):
        for modality, cam in (("rgb", "cam1"), ("IR", "cam2")):
            for pid in ids:
                write_image(root / split / modality / cam / f"id{pid:03d}" / "x.png", grey=modality == "IR")
    return root


# ---------------------------------------------------------------------- registry
def test_registry_lists_all_formats_and_rejects_unknown_ones(tmp_path):
    assert set(DATASETS.names()) == {"sysu-mm01", "regdb", "llcm", "npu-reid", "folder", "csv", "combined", "hitsz-vcm"}
    with pytest.raises(DatasetError, match="unknown dataset format 'market'.*sysu-mm01"):
        build_dataset("market", tmp_path)
    make_sysu(tmp_path / "s")
    with pytest.raises(ConfigError, match="no option trial"):
        build_dataset("sysu-mm01", tmp_path / "s", trial=2)


# ---------------------------------------------------------------------- SYSU-MM01
def test_sysu_reads_splits_cameras_and_relabels(tmp_path):
    root = make_sysu(tmp_path / "sysu", train=(2, 9), val=(5,), test=(11, 12), per_cam=2)
    ds = build_dataset("sysu-mm01", root)
    assert ds.protocol_family == "sysu" and ds.query is None and ds.gallery is None
    assert ds.num_train_ids == 3
    assert {r.orig_pid for r in ds.train} == {2, 5, 9}
    assert sorted({(r.orig_pid, r.pid) for r in ds.train}) == [(2, 0), (5, 1), (9, 2)]
    assert len(ds.train) == 3 * 6 * 2
    assert {r.orig_pid for r in ds.val} == {5} and len(ds.val) == 12
    assert {r.pid for r in ds.test} == {11, 12} and len(ds.test) == 24
    for r in ds.test + ds.train:
        assert r.modality == (INFRARED if r.camid in (3, 6) else VISIBLE)
        assert Path(r.path).parent.parent.name == f"cam{r.camid}"
    summary = ds.summary()
    assert summary["splits"]["test"]["modalities"]["infrared"]["cameras"] == {3: 4, 6: 4}
    assert summary["splits"]["train"]["ids"] == 3

    held_out = build_dataset("sysu-mm01", root, train_includes_val=False)
    assert held_out.num_train_ids == 2 and {r.orig_pid for r in held_out.val} == {5}


def test_sysu_real_crops_eval_only(tmp_path):
    ds = build_dataset("sysu-mm01", REAL_MINI, require_train=False)
    assert ds.train == [] and len(ds.test) == 60
    assert {r.pid for r in ds.test} == {1, 2, 3, 4, 5}
    assert sorted({r.camid for r in ds.test if r.modality == INFRARED}) == [3, 6]
    assert sum(r.modality == VISIBLE for r in ds.test) == 40
    report = ds.check(workers=2, progress=False)
    assert report.ok and report.num_images == 60
    assert any("no training split" in w for w in report.warnings)
    ir = decode_image(next(r.path for r in ds.test if r.camid == 3), size=(32, 16))
    assert ir.shape == (32, 16, 3) and ir.dtype == np.uint8
    with pytest.raises(DatasetError, match=r"train_id.txt does not exist.*--split-dir.*require_train=False"):
        build_dataset("sysu-mm01", REAL_MINI)


def test_sysu_split_dir_and_missing_exp(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    splits = tmp_path / "splits"
    (root / "exp").rename(splits)
    with pytest.raises(DatasetError, match=r"exp does not exist.*--split-dir"):
        build_dataset("sysu-mm01", root)
    ds = build_dataset("sysu-mm01", root, split_dir=splits)
    assert {r.pid for r in ds.test} == {4, 5} and ds.num_train_ids == 3


def test_sysu_errors_name_the_id_and_file(tmp_path):
    root = make_sysu(tmp_path / "a", test=(4, 5))
    (root / "exp" / "test_id.txt").write_text("4,5,77\n")
    with pytest.raises(DatasetError, match=r"identity 77 listed in .*test_id.txt has no folder"):
        build_dataset("sysu-mm01", root)

    one_modality = make_sysu(tmp_path / "b", skip={(3, 2), (6, 2)})
    with pytest.raises(DatasetError, match=r"identity 2 of the train split has only visible images \(in .*cam1/0002"):
        build_dataset("sysu-mm01", one_modality)

    bad_split = make_sysu(tmp_path / "c")
    (bad_split / "exp" / "train_id.txt").write_text("1,2\n3,x\n")
    with pytest.raises(DatasetError, match=r"train_id.txt line 2 holds 'x'"):
        build_dataset("sysu-mm01", bad_split)

    no_cam = make_sysu(tmp_path / "d")
    for p in sorted((no_cam / "cam5").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (no_cam / "cam5").rmdir()
    with pytest.raises(DatasetError, match=r"camera folder .*cam5 does not exist"):
        build_dataset("sysu-mm01", no_cam)

    with pytest.raises(DatasetError, match=r"SYSU-MM01 root .*nowhere does not exist"):
        build_dataset("sysu-mm01", tmp_path / "nowhere")


def test_empty_modality_is_an_error(tmp_path):
    no_ir = make_sysu(tmp_path / "sysu", skip={(c, p) for c in (3, 6) for p in (4, 5)})
    with pytest.raises(DatasetError, match="test split .* has no infrared images"):
        build_dataset("sysu-mm01", no_ir)


# ---------------------------------------------------------------------- RegDB
def test_regdb_idx_identities_are_folder_numbers(tmp_path):
    root = make_regdb(tmp_path / "regdb", ids=(3, 8, 10, 41), trial=2)
    ds = build_dataset("regdb", root, trial=2)
    assert ds.protocol_family == "regdb" and ds.split_source == "idx"
    assert {r.orig_pid for r in ds.train} == {3, 8} and ds.num_train_ids == 2
    assert {r.pid for r in ds.test} == {10, 41}  # not the 0-based idx labels
    assert len(ds.test) == 8 and len(ds.train) == 8
    for r in ds.train + ds.test:
        assert (r.modality, r.camid) in {(VISIBLE, 1), (INFRARED, 2)}
        assert Path(r.path).parent.parent.name == ("Visible" if r.modality == VISIBLE else "Thermal")
    with pytest.raises(DatasetError, match=r"index files for trial 1 .* do not exist.*split_mat"):
        build_dataset("regdb", root, trial=1)
    with pytest.raises(ConfigError, match="trial must be an integer from 1 to 10"):
        build_dataset("regdb", root, trial=11)


def test_regdb_idx_errors(tmp_path):
    root = make_regdb(tmp_path / "a")
    lst = root / "idx" / "train_thermal_1.txt"
    lines = lst.read_text().splitlines()
    lst.write_text("\n".join(lines[:2] + ["Thermal/1/female_front_t_00001_0.bmp"] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=r"train_thermal_1.txt line 3 .* is malformed"):
        build_dataset("regdb", root)

    lst.write_text("\n".join(lines[:1] + [lines[1].rsplit(" ", 1)[0] + " 1"] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=r"line 2 gives identity folder 1 label 1, but line 1 gives it label 0"):
        build_dataset("regdb", root)

    lst.write_text("\n".join(lines + ["Thermal/1/missing.bmp 0"]) + "\n")
    with pytest.raises(DatasetError, match=r"lists 1 image\(s\) that do not exist, first .*missing.bmp \(line 5\)"):
        build_dataset("regdb", root)

    lst.unlink()
    with pytest.raises(DatasetError, match=r"train_thermal_1.txt does not exist while other idx files"):
        build_dataset("regdb", root)


def test_regdb_from_split_mat(tmp_path):
    root = make_regdb(tmp_path / "regdb", ids=tuple(range(1, 9)), write_idx=False)
    mat = tmp_path / "split.mat"
    train = np.tile(np.array([[1, 3, 5, 7]], dtype=np.uint16), (10, 1))
    test = np.tile(np.array([[2, 4, 6, 8]], dtype=np.uint16), (10, 1))
    train[3], test[3] = [2, 4, 6, 8], [1, 3, 5, 7]
    scipy.io.savemat(mat, {"TrainIdx": train, "TestIdx": test})
    ds = build_dataset("regdb", root, trial=4, split_mat=mat)
    assert ds.split_source == "mat"
    assert {r.orig_pid for r in ds.train} == {2, 4, 6, 8} and {r.pid for r in ds.test} == {1, 3, 5, 7}
    assert len(ds.train) == 4 * 2 * 2
    names = [Path(r.path).name for r in ds.test if r.modality == VISIBLE and r.pid == 1]
    assert names == sorted(names)


def test_regdb_split_mat_errors(tmp_path):
    root = make_regdb(tmp_path / "regdb", ids=(1, 2), write_idx=False)
    with pytest.raises(DatasetError, match=r"RegDB_split.mat does not exist"):
        build_dataset("regdb", root, split_dir=tmp_path / "nodir")
    # the official file: trial 1 needs identities up to 412, of which only 1 and 2 exist here
    with pytest.raises(DatasetError, match=r"RegDB folder .*Visible/\d+ \(identity \d+ of RegDB_split.mat, trial 1\) does not exist"):
        build_dataset("regdb", root, split_mat=REGDB_MAT)


def test_regdb_official_split_mat(tmp_path):
    root = tmp_path / "regdb"
    for pid in range(1, 413):  # listing only: empty files with image names are enough to build the split
        for folder in ("Visible", "Thermal"):
            (root / folder / str(pid)).mkdir(parents=True)
            (root / folder / str(pid) / "a.bmp").touch()
    ds = build_dataset("regdb", root, trial=3, split_mat=REGDB_MAT)
    table = scipy.io.loadmat(REGDB_MAT)
    assert {r.orig_pid for r in ds.train} == set(table["TrainIdx"][2].tolist())
    assert {r.pid for r in ds.test} == set(table["TestIdx"][2].tolist())
    assert ds.num_train_ids == 206 and len(ds.test) == 412


# ---------------------------------------------------------------------- LLCM
def test_llcm_reads_train_cameras_and_test_pool(tmp_path):
    root = make_llcm(tmp_path / "llcm", train=(1, 2), test=(7, 8))
    ds = build_dataset("llcm", root)
    assert ds.protocol_family == "llcm"
    assert {r.orig_pid for r in ds.train} == {1, 2} and ds.num_train_ids == 2
    assert sorted({(r.modality, r.camid) for r in ds.train}) == [
        (INFRARED, 1), (INFRARED, 2), (VISIBLE, 1), (VISIBLE, 3)
    ]
    assert {r.pid for r in ds.test} == {7, 8} and len(ds.test) == 8
    assert sorted({(r.modality, r.camid) for r in ds.test}) == [(INFRARED, 2), (INFRARED, 9), (VISIBLE, 1), (VISIBLE, 3)]


def test_llcm_camera_rule_and_errors(tmp_path):
    assert camera_of_training_path("nir/0001/0001_c06_s200656_f4830_nir.jpg") == 6
    assert camera_of_training_path("train_vis/cam4/0001/x_c09.jpg") == 4
    assert camera_of_training_path("vis/0001/0001_s1.jpg") is None

    root = make_llcm(tmp_path / "a")
    lst = root / "idx" / "train_nir.txt"
    write_image(root / "nir" / "0001" / "nocam.jpg", grey=True)
    lst.write_text(lst.read_text() + "nir/0001/nocam.jpg 0\n")
    with pytest.raises(DatasetError, match=r"train_nir.txt line 5: no camera in 'nir/0001/nocam.jpg'"):
        build_dataset("llcm", root)

    root = make_llcm(tmp_path / "b", test=(7, 8))
    (root / "idx" / "test_id.txt").write_text("7,8,99")
    with pytest.raises(DatasetError, match=r"identity 99 listed in .*test_id.txt has no images"):
        build_dataset("llcm", root)

    root = make_llcm(tmp_path / "c")
    (root / "idx" / "train_vis.txt").unlink()
    with pytest.raises(DatasetError, match=r"train_vis.txt does not exist"):
        build_dataset("llcm", root)
    with pytest.raises(DatasetError, match=r"train_vis.txt does not exist"):
        build_dataset("llcm", root, require_train=False)  # half a training split is never silently dropped
    (root / "idx" / "train_nir.txt").unlink()
    assert build_dataset("llcm", root, require_train=False).train == []


# ---------------------------------------------------------------------- folder / csv
def test_folder_layout_with_aliases_and_given_protocol(tmp_path):
    ds = build_dataset("folder", make_folder(tmp_path / "mine"))
    assert ds.protocol_family == "given"
    assert ds.num_train_ids == 2 and {r.orig_pid for r in ds.train} == {1, 2}
    assert ds.query is not None and ds.gallery is not None
    assert {r.pid for r in ds.query} == {5} and {r.pid for r in ds.gallery} == {5, 6}
    assert len(ds.test) == len(ds.query) + len(ds.gallery) == 6
    assert {(r.modality, r.camid) for r in ds.gallery} == {(VISIBLE, 1), (INFRARED, 2)}


def test_folder_layout_errors(tmp_path):
    root = make_folder(tmp_path / "a")
    (root / "extras").mkdir()
    with pytest.raises(DatasetError, match=r"folder .*extras is not a split"):
        build_dataset("folder", root)

    root = make_folder(tmp_path / "b")
    write_image(root / "train" / "depth" / "1" / "1" / "x.png")
    with pytest.raises(DatasetError, match=r"folder .*train/depth is not a modality"):
        build_dataset("folder", root)

    root = make_folder(tmp_path / "c")
    write_image(root / "train" / "rgb" / "front" / "1" / "x.png")
    with pytest.raises(DatasetError, match=r"camera folder .*front is not named by a number"):
        build_dataset("folder", root)

    root = make_folder(tmp_path / "d")
    (root / "train" / "thermal" / "cam4").mkdir(parents=True)  # second infrared folder, empty
    with pytest.raises(DatasetError, match=r"both hold infrared images"):
        build_dataset("folder", root)

    root = tmp_path / "e"
    write_image(root / "train" / "visible" / "1" / "1" / "x.png")
    (root / "train" / "infrared").mkdir()
    with pytest.raises(DatasetError, match=r"modality folder .*train/infrared holds no images"):
        build_dataset("folder", root)

    root = make_folder(tmp_path / "f")
    for p in sorted((root / "gallery").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "gallery").rmdir()
    with pytest.raises(DatasetError, match=r"has query images but no gallery images"):
        build_dataset("folder", root)

    root = tmp_path / "g"
    write_image(root / "train" / "visible" / "1" / "1" / "x.png")
    write_image(root / "train" / "visible" / "1" / "2" / "x.png")
    write_image(root / "train" / "infrared" / "2" / "1" / "x.png", grey=True)
    with pytest.raises(DatasetError, match=r"identity 2 of the train split has only visible images"):
        build_dataset("folder", root)


def write_manifest(folder: Path, rows: list[str], header: str = "path,identity,camera,modality,split") -> Path:
    manifest = folder / "list.csv"
    manifest.write_text("\n".join([header, *rows]) + "\n")
    return manifest


def test_csv_manifest(tmp_path):
    absolute = write_image(tmp_path / "elsewhere" / "q.png", grey=True)
    for name in ("a", "b", "c", "d", "e"):
        write_image(tmp_path / "data" / "img" / f"{name}.jpg")
    manifest = write_manifest(
        tmp_path / "data",
        [
            "img/a.jpg,1,1,visible,train",
            "img/b.jpg,id1,cam2,IR,train",
            "img/c.jpg,2,1,rgb,train",
            "img/d.jpg,2,2,thermal,train",
            f"{absolute},7,2,nir,query",
            "img/e.jpg,7,1,visible,gallery",
        ],
    )
    ds = build_dataset("csv", manifest)
    assert ds.protocol_family == "given" and ds.root == manifest.parent
    assert ds.num_train_ids == 2
    assert [(r.orig_pid, r.camid, r.modality) for r in ds.train] == [
        (1, 1, VISIBLE), (1, 2, INFRARED), (2, 1, VISIBLE), (2, 2, INFRARED)
    ]
    assert ds.query is not None and ds.query[0].path == str(absolute)
    assert ds.gallery is not None and Path(ds.gallery[0].path) == tmp_path / "data" / "img" / "e.jpg"

    # columns in any order, no split column: every row goes to default_split
    no_split = write_manifest(tmp_path / "data", ["vis,img/a.jpg,1,1", "ir,img/b.jpg,2,1"], header="modality,path,camera,identity")
    assert len(build_dataset("csv", no_split).train) == 2
    with pytest.raises(DatasetError, match="the train split .* has no infrared images"):
        build_dataset("csv", write_manifest(tmp_path / "data", ["vis,img/a.jpg,1,1"], header="modality,path,camera,identity"))


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["img/a.jpg,1,1,visible,train"], "path,identity,modality", r"line 1 lacks the column\(s\) camera"),
        (["img/a.jpg,1,1,visible,train", "img/b.jpg,one,1,visible,train"], None, r"list.csv line 3: identity 'one' is not a number"),
        (["img/a.jpg,1,1,visible,train", "img/b.jpg,1,2,depth,train"], None, r"line 3: modality 'depth' is unknown"),
        (["img/a.jpg,1,1,visible,test"], None, r"line 2: split 'test' is unknown"),
        (["img/a.jpg,1,1"], None, r"line 2 has 3 fields but the header has 5"),
        (["img/zz.jpg,1,1,visible,train"], None, r"line 2: image .*zz.jpg does not exist"),
        (["img/a.jpg,1,1,visible,train", "img/a.jpg,1,2,ir,train"], None, r"line 3 repeats the image of line 2"),
    ],
)
def test_csv_manifest_errors(tmp_path, rows, header, message):
    for name in ("a", "b"):
        write_image(tmp_path / "img" / f"{name}.jpg")
    manifest = write_manifest(tmp_path, rows, header or "path,identity,camera,modality,split")
    with pytest.raises(DatasetError, match=message):
        build_dataset("csv", manifest)


def test_csv_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match=r"CSV manifest .*manifest.csv does not exist"):
        build_dataset("csv", tmp_path)


# ---------------------------------------------------------------------- check()
def test_check_finds_undecodable_images(tmp_path):
    root = make_sysu(tmp_path / "sysu", per_cam=2)
    garbage = root / "cam1" / "0004" / "0001.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    empty = root / "cam3" / "0005" / "0002.jpg"
    empty.write_bytes(b"")
    truncated = root / "cam2" / "0001" / "0001.jpg"
    Image.new("RGB", (64, 128), (1, 2, 3)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:300])
    (root / "cam2" / "0001" / "notes.txt").write_text("stray")

    ds = build_dataset("sysu-mm01", root)  # structure is fine: problems are found by check()
    report = ds.check(workers=2, progress=False)
    assert not report.ok and report.num_images == len(ds.train) + len(ds.test)
    assert len(report.problems) == 3
    assert any(str(garbage) in p and "cannot be decoded" in p for p in report.problems)
    assert any(str(empty) in p and "0 bytes" in p for p in report.problems)
    assert any(str(truncated) in p for p in report.problems)
    assert any("notes.txt" in w for w in report.warnings)
    assert report.to_dict()["ok"] is False and report.summary["splits"]["test"]["images"] == len(ds.test)

    quick = ds.check(decode=False, progress=False)
    assert len(quick.problems) == 1 and str(empty) in quick.problems[0]

    with pytest.raises(DatasetError, match=r"image .*0001.jpg cannot be decoded"):
        decode_image(garbage)


def test_check_warns_about_shared_cameras_and_identity_overlap(tmp_path):
    root = tmp_path / "mine"
    for split, pid in (("train", 1), ("query", 1), ("gallery", 1)):
        write_image(root / split / "visible" / "1" / str(pid) / "x.png")
        write_image(root / split / "infrared" / "1" / str(pid) / "x.png", grey=True)
    report = build_dataset("folder", root).check(workers=1, progress=False)
    assert report.ok
    assert any("camera number(s) [1] hold both visible and infrared" in w for w in report.warnings)
    assert any("identities are both in the training split and in the evaluation data" in w for w in report.warnings)
