"""HITSZ-VCM reader on hand-made tiny layouts: parsing, both query/gallery directions, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.data.datasets import build_dataset
from vireid.data.datasets.hitsz_vcm import decode_frame_name, frame_relpath
from vireid.errors import DatasetError

# (m, pid, camid, frames): m 1 = infrared, 2 = visible (track_*_info.txt's first column)
TRAIN = [(2, 1, 1, 3), (1, 1, 2, 4), (2, 2, 1, 2), (1, 2, 2, 3)]
TEST = [(1, 5, 2, 3), (2, 5, 1, 3), (1, 6, 2, 2), (2, 6, 3, 4), (2, 5, 3, 2)]
QUERY_ROWS = [1, 3]  # the infrared test rows


def _write_split(root: Path, info: Path, split: str, tracks, first_tracklet: int, image_base: Path) -> None:
    names, lines, start = [], [], 1
    for t, (m, pid, cam, n) in enumerate(tracks):
        for f in range(n):
            frame = first_tracklet * 100 + t * 10 + f
            name = f"{pid:04d}M{m}D{cam}T{first_tracklet + t:04d}F{frame:04d}.png"
            names.append(name)
            path = image_base / frame_relpath(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 4, 3), 10 * f, np.uint8)).save(path)
        lines.append(f"{m} {start} {start + n - 1} {pid} {cam}")
        start += n
    (info / f"{split}_name.txt").write_text("\n".join(names) + "\n")
    (info / f"track_{split}_info.txt").write_text("\n".join(lines) + "\n")


def make_vcm(root: Path, train=TRAIN, test=TEST, query_rows=QUERY_ROWS, nested_info: bool = True,
             archives: bool = False) -> Path:
    info = root / "info" if nested_info else root
    info.mkdir(parents=True, exist_ok=True)
    _write_split(root, info, "train", train, 0, root / "Train" if archives else root)
    _write_split(root, info, "test", test, 50, root / "Test" if archives else root)
    (info / "query_IDX.txt").write_text(" ".join(map(str, query_rows)) + "\n")
    return root


def test_frame_names_decode_as_the_reference_does():
    assert decode_frame_name("0001M1D3T0002F0017.jpg") == (1, "infrared", "D3", "0017.jpg")
    assert frame_relpath("0042M2D12T0100F0005.jpg") == "0042/rgb/D12/0005.jpg"
    assert frame_relpath("garbage.jpg") is None and frame_relpath("0001M1F1T3D1.jpg") is None


@pytest.mark.parametrize("nested_info,archives", [(True, False), (False, True)])
def test_reads_frames_tracklets_and_both_directions(tmp_path, nested_info, archives):
    ds = build_dataset("hitsz-vcm", make_vcm(tmp_path / "vcm", nested_info=nested_info, archives=archives),
                       min_seq_len=0)
    assert ds.protocol_family == "vcm"
    assert len(ds.train) == 12 and ds.num_train_ids == 2
    assert sorted({r.pid for r in ds.train}) == [0, 1] and sorted({r.orig_pid for r in ds.train}) == [1, 2]
    # one record per frame, tracklet = row - 1, frames consecutive and in name-list (temporal) order
    assert [r.tracklet for r in ds.train] == [0] * 3 + [1] * 4 + [2] * 2 + [3] * 3
    assert [Path(r.path).name for r in ds.train[:3]] == ["0000.png", "0001.png", "0002.png"]
    assert {(r.tracklet, r.modality, r.camid) for r in ds.train} == {
        (0, "visible", 1), (1, "infrared", 2), (2, "visible", 1), (3, "infrared", 2)}
    assert ds.test_tracklet_offset == 4 and len(ds.test) == 14
    assert sorted({r.tracklet for r in ds.test}) == [4, 5, 6, 7, 8]
    assert ds.query_tracklets == frozenset({4, 6})
    q, g = ds.directions["infrared-to-visible"]
    assert {r.tracklet for r in q} == {4, 6} and {r.modality for r in q} == {"infrared"}
    assert {r.tracklet for r in g} == {5, 7, 8} and {r.modality for r in g} == {"visible"}
    q2, g2 = ds.directions["visible-to-infrared"]
    assert q2 == g and g2 == q
    assert ds.query == q and ds.gallery == g
    assert ds.notes == []
    summary = ds.summary()
    assert summary["directions"]["infrared-to-visible"] == {"query_tracklets": 2, "gallery_tracklets": 3}
    assert summary["splits"]["train"]["tracklets"] == 4
    assert ds.check(decode=True, workers=1, progress=False).ok


def test_short_tracklets_are_left_out_as_the_reference_does(tmp_path):
    ds = build_dataset("hitsz-vcm", make_vcm(tmp_path / "vcm"), min_seq_len=3)
    # tracklet 2 (identity 2's only visible one) has 2 frames: identity 2 keeps infrared only and leaves training
    assert sorted({r.tracklet for r in ds.train}) == [0, 1] and ds.num_train_ids == 1
    assert {r.tracklet for r in ds.test} == {4, 5, 7}
    assert any("fewer than min_seq_len=3" in note for note in ds.notes)
    assert any("identities (e.g. [2]) kept tracklets of one modality only" in note for note in ds.notes)
    # with the reference default (12) every tiny tracklet is too short
    with pytest.raises(DatasetError, match="shorter than min_seq_len=12"):
        build_dataset("hitsz-vcm", tmp_path / "vcm", require_train=False)


def _rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize("breakage,message", [
    (lambda r: (r / "info" / "track_test_info.txt").unlink(), r"info file .*track_test_info.txt does not exist"),
    (lambda r: (r / "info" / "query_IDX.txt").unlink(), r"info file .*query_IDX.txt does not exist"),
    (lambda r: (r / "info" / "train_name.txt").unlink(), r"train_name.txt does not exist; .*require_train=False"),
    (lambda r: _rewrite(r / "info" / "track_train_info.txt", "2 1 3 1 1", "2 3 1 1 1"),
     r"line 1 is a tracklet with no frames \(start 3 > end 1\)"),
    (lambda r: _rewrite(r / "info" / "track_test_info.txt", "2 13 14 5 3", "2 13 15 5 3"),
     r"line 5 gives frames 13..15, past the 14 names"),
    (lambda r: _rewrite(r / "info" / "track_train_info.txt", "2 1 3 1 1", "2 1 3 1"), r"line 1 .* is malformed"),
    (lambda r: _rewrite(r / "info" / "track_train_info.txt", "2 1 3 1 1", "3 1 3 1 1"), r"modality 3; use 1"),
    (lambda r: _rewrite(r / "info" / "track_train_info.txt", "2 1 3 1 1", "2 1 3 2 1"),
     r"line 1 says identity 2, visible, but its frame 0001M2D1T0000F0000.png .* is identity 1"),
    (lambda r: _rewrite(r / "info" / "train_name.txt", "0001M2D1T0000F0000.png", "frame0.png"),
     r"line 1 holds 'frame0.png', which is not a frame name"),
    (lambda r: (r / "info" / "query_IDX.txt").write_text("1 9\n"), r"names row 9, but track_test_info.txt has rows 1..5"),
    (lambda r: (r / "info" / "query_IDX.txt").write_text("1 1\n"), r"lists rows \[1\] more than once"),
    (lambda r: (r / "info" / "query_IDX.txt").write_text("1 2 3 4 5\n"), r"leaving no gallery"),
    (lambda r: (r / "info" / "query_IDX.txt").write_text("one\n"), r"holds 'one', which is not a row number"),
    (lambda r: (r / "0005" / "ir" / "D2" / "5001.png").unlink(), r"1 frame\(s\) listed in .*test_name.txt do not exist"),
    (lambda r: __import__("shutil").rmtree(r / "info"), r"info folder .*info does not exist"),
])
def test_each_bad_input_is_one_sentence(tmp_path, breakage, message):
    root = make_vcm(tmp_path / "vcm")
    breakage(root)
    with pytest.raises(DatasetError, match=message) as err:
        build_dataset("hitsz-vcm", root, min_seq_len=0)
    assert "\n" not in str(err.value)


def test_evaluation_only_copy_and_odd_query_file_notes(tmp_path):
    root = make_vcm(tmp_path / "vcm")
    (root / "info" / "train_name.txt").unlink()
    (root / "info" / "track_train_info.txt").unlink()
    ds = build_dataset("hitsz-vcm", root, min_seq_len=0, require_train=False)
    assert ds.train == [] and ds.test_tracklet_offset == 0 and ds.query_tracklets == frozenset({0, 2})
    (root / "info" / "query_IDX.txt").write_text("1 2\n")  # row 2 is a visible tracklet
    ds = build_dataset("hitsz-vcm", root, min_seq_len=0, require_train=False)
    assert any("are not infrared" in n for n in ds.notes) and any("are not visible" in n for n in ds.notes)


def test_info_files_from_another_folder(tmp_path):
    root = make_vcm(tmp_path / "vcm")
    (root / "info").rename(tmp_path / "elsewhere")
    ds = build_dataset("hitsz-vcm", root, min_seq_len=0, split_dir=tmp_path / "elsewhere")
    assert len(ds.train) == 12 and len(ds.test) == 14


def test_val_fraction_holds_out_training_identities(tmp_path):
    root = make_vcm(tmp_path / "vcm")
    ds = build_dataset("hitsz-vcm", root, min_seq_len=0, val_fraction=0.5)
    assert ds.num_train_ids == 1 and len({r.orig_pid for r in ds.val}) == 1
    assert {r.orig_pid for r in ds.val} | {r.orig_pid for r in ds.train} == {1, 2}
    assert all(r.tracklet >= 0 and r.pid == r.orig_pid for r in ds.val)
    again = build_dataset("hitsz-vcm", root, min_seq_len=0, val_fraction=0.5)
    assert [r.path for r in again.val] == [r.path for r in ds.val]  # a fixed choice
    with pytest.raises(DatasetError, match="holds out all 2 training identities"):
        build_dataset("hitsz-vcm", root, min_seq_len=0, val_fraction=0.9)
    with pytest.raises(DatasetError, match="val_fraction=1.5 is invalid"):
        build_dataset("hitsz-vcm", root, min_seq_len=0, val_fraction=1.5)
