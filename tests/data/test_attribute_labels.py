"""Attribute labels: the synthetic generator's attributes.csv, the readers and the ``attributes`` side input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vireid.data.attributes import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    UNKNOWN,
    AttributeExtra,
    dataset_attribute_table,
    decode,
    read_attribute_csv,
)
from vireid.data.datasets.folder import CSVDataset
from vireid.data.extras import load_extras, mirror_extras
from vireid.errors import ConfigError, DatasetError

from conftest import synth_bytes_digest

#: sha256 over every file of the tiny fixture dataset but the side files (attributes.csv, Text/) and
#: synth_meta.json, computed with the generator before attribute labels and descriptions existed: images,
#: joints and split files must not change.
DEFAULT_OUTPUT_DIGEST = "1a58d8c5c7d91c166b77a4fd26892594d48b387c6aa3ab474f08db11d40ea00f"


def _rows(root: Path) -> dict[str, dict[str, str]]:
    with (root / "attributes.csv").open(newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_default_synth_outputs_are_unchanged_by_the_attribute_file(tiny_synth_root):
    assert synth_bytes_digest(tiny_synth_root) == DEFAULT_OUTPUT_DIGEST


def test_labels_follow_the_traits_of_a_hand_checked_identity_and_infrared_has_no_colour(tiny_synth_root):
    rows = _rows(tiny_synth_root)
    images = sorted(p.relative_to(tiny_synth_root).as_posix() for p in tiny_synth_root.glob("cam*/*/*.jpg"))
    assert sorted(rows) == images  # one row per image
    # identity 2 of seed 0, read off its traits by hand: a man in a short-sleeved red top with horizontal
    # stripes ((0.79, 0.22, 0.10): palette red), trousers in dark denim, a bag, a backpack and a hat, short hair
    shared = {"gender": "male", "sleeves": "short", "top_pattern": "horizontal-stripes", "bottom": "trousers",
              "bag": "yes", "backpack": "yes", "hat": "yes", "hair": "short"}
    for cam in (1, 2, 4, 5):  # visible cameras
        assert rows[f"cam{cam}/0002/0001.jpg"] == {"path": f"cam{cam}/0002/0001.jpg", **shared,
                                                    "top_colour": "red", "bottom_colour": "blue"}
    for cam in (3, 6):  # infrared cameras: no colour label
        assert rows[f"cam{cam}/0002/0003.jpg"] == {"path": f"cam{cam}/0002/0003.jpg", **shared,
                                                    "top_colour": "", "bottom_colour": ""}
    infrared = [r for p, r in rows.items() if p.startswith(("cam3/", "cam6/"))]
    assert infrared and all(r["top_colour"] == r["bottom_colour"] == "" for r in infrared)
    visible = [r for p, r in rows.items() if not p.startswith(("cam3/", "cam6/"))]
    assert all(r["top_colour"] and r["bottom_colour"] for r in visible)
    assert len({r["backpack"] for r in visible}) == 2  # both values occur among 24 identities


def test_side_input_reads_the_dataset_labels_and_a_mirror_changes_none(tiny_synth_root):
    from vireid.data.datasets import DATASETS

    dataset = DATASETS.get("sysu-mm01")(tiny_synth_root)
    records = dataset.train[:40] + dataset.test[:40]
    cfg = SimpleNamespace(root=str(tiny_synth_root), format="synthetic", extras={"attributes": "dataset"}, joints=None)
    labels = load_extras(records, cfg)["attributes"]
    assert labels.dtype == torch.int64 and labels.shape == (80, len(ATTRIBUTES))
    rows = _rows(tiny_synth_root)
    for record, row in zip(records, labels):
        rel = Path(record.path).relative_to(tiny_synth_root).as_posix()
        assert {k: v or None for k, v in rows[rel].items() if k != "path"} == decode(row.tolist())
    assert torch.equal(mirror_extras({"attributes": labels}, 32, 64)["attributes"], labels)
    # a synthetic output made before attribute labels existed: recomputed from its traits, the same labels
    old = tiny_synth_root.parent / "before-attributes"
    shutil.copytree(tiny_synth_root, old)
    (old / "attributes.csv").unlink()
    recomputed = dataset_attribute_table(old, "synthetic")
    written = read_attribute_csv(tiny_synth_root / "attributes.csv")
    assert len(recomputed) == len(written)
    for path, row in written.items():
        assert np.array_equal(recomputed[str(old / Path(path).relative_to(tiny_synth_root))], row)


def _manifest(tmp_path: Path, root: Path, extra_header: str, extra_cells: list[str]) -> Path:
    lines = [f"path,identity,camera,modality,description,{extra_header}"]
    for i, cell in enumerate(extra_cells):
        cam, modality = (1, "visible") if i % 2 == 0 else (3, "infrared")
        lines.append(f"{root}/cam{cam}/000{1 + i // 2}/0001.jpg,{1 + i // 2},{cam},{modality},a person,{cell}")
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_manifest_attribute_columns_and_an_attribute_file_beside_a_layout(tiny_synth_root, tmp_path):
    manifest = _manifest(tmp_path, tiny_synth_root, "Backpack,top_color", ["yes,red", "no,blue", "true,", "0,gray"])
    dataset = CSVDataset(manifest)
    cfg = SimpleNamespace(root=str(manifest), format="csv", extras={"attributes": "dataset"}, joints=None)
    labels = load_extras(dataset.train, cfg)["attributes"]
    backpack, top = ATTRIBUTE_NAMES.index("backpack"), ATTRIBUTE_NAMES.index("top_colour")
    by_path = {r.path: row for r, row in zip(dataset.train, labels.tolist())}
    got = [by_path[str(tiny_synth_root / p)] for p in ("cam1/0001/0001.jpg", "cam3/0001/0001.jpg",
                                                       "cam1/0002/0001.jpg", "cam3/0002/0001.jpg")]
    assert [r[backpack] for r in got] == [1, 0, 1, 0]
    # the infrared rows' colour is unknown whatever the file says; an empty cell is unknown
    assert [r[top] for r in got] == [ATTRIBUTES[top].values.index("red"), UNKNOWN, UNKNOWN, UNKNOWN]
    assert all(r[ATTRIBUTE_NAMES.index("gender")] == UNKNOWN for r in got)  # a column the file lacks
    # an attribute CSV given by path (here: beside another layout)
    side = tmp_path / "labels.csv"
    side.write_text(f"path,hat\n{tiny_synth_root}/cam1/0001/0001.jpg,yes\n")
    labels = AttributeExtra(str(side)).load(dataset.train, cfg)
    assert labels[:, ATTRIBUTE_NAMES.index("hat")].tolist().count(1) == 1


def test_unknown_attribute_names_and_values_are_one_sentence(tiny_synth_root, tmp_path):
    bad_value = tmp_path / "bad_value.csv"
    bad_value.write_text(f"path,backpack\n{tiny_synth_root}/cam1/0001/0001.jpg,maybe\n")
    with pytest.raises(DatasetError, match=r"line 2: 'maybe' is not a value of attribute backpack; use one of no, yes"):
        read_attribute_csv(bad_value)
    bad_name = tmp_path / "bad_name.csv"
    bad_name.write_text(f"path,umbrella\n{tiny_synth_root}/cam1/0001/0001.jpg,yes\n")
    with pytest.raises(DatasetError, match=r"'umbrella' is not a known attribute; the attributes are gender, sleeves"):
        read_attribute_csv(bad_name)
    with pytest.raises(ConfigError, match=r"data.extras.attributes' names .* which is not a file"):
        AttributeExtra(str(tmp_path / "missing.csv"))
    # a manifest's other columns (descriptions, tracklets, ...) are not attributes and stay ignored
    manifest = _manifest(tmp_path, tiny_synth_root, "backpack", ["perhaps", "no"])
    cfg = SimpleNamespace(root=str(manifest), format="csv", extras={"attributes": "dataset"}, joints=None)
    with pytest.raises(DatasetError, match=r"'perhaps' is not a value of attribute backpack"):
        load_extras(CSVDataset(manifest).train, cfg)
