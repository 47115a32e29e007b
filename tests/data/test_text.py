"""Text descriptions: the synthetic sentences, the shipped tokenizer, description sources and the tokens side input."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import vireid.builtins  # noqa: F401
from vireid.data.datasets import build_dataset
from vireid.data.extras import load_extras
from vireid.data.records import ImageRecord
from vireid.data.synth import generate_dataset
from vireid.data.synth.descriptions import (
    COLOUR_NAMES,
    COLOUR_WORDS,
    colour_name,
    describe_image,
    description_rng,
    stride_of,
    synth_descriptions,
)
from vireid.data.synth.generator import SynthArguments
from vireid.data.synth.traits import sample_identity_traits
from vireid.data.text.descriptions import record_descriptions
from vireid.data.text.tokenizer import PAD, SHIPPED_VOCAB, UNK, WordTokenizer, split_words
from vireid.errors import ConfigError, DatasetError

from conftest import REPO, synth_bytes_digest

#: sha256 over every file (path + bytes) of these synth outputs but the new side files (Text/, attributes.csv)
#: and synth_meta.json (which lists them), made by the generator before descriptions and attribute labels
#: existed (main at ff3fa15): images, joints and split files must stay bit-identical.
PINNED = {
    "sysu-mm01": "3c95b2e3fd7ed9e9d6a67266c730803f4b4d50ea349e38e84d8cd9c32ef39182",
    "regdb": "9d0d5e839e2418cb93b780525a2791d633d34f1b620029d9f669cce5a10d9534",
}


def _digest(root: Path) -> str:
    return synth_bytes_digest(root)


@pytest.mark.parametrize("fmt", ["sysu-mm01", "regdb"])
def test_default_synth_outputs_unchanged_and_descriptions_written(tmp_path, fmt):
    root = generate_dataset(tmp_path / fmt, ids=6, format=fmt, images_per_camera=2, height=64, width=32, seed=3,
                            workers=1, progress=False)
    assert _digest(root) == PINNED[fmt]
    written = json.loads((root / "Text" / "descriptions.json").read_text())
    args = SynthArguments(format=fmt, ids=6, images_per_camera=2, height=64, width=32, seed=3)
    images = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".jpg", ".bmp")}
    assert set(written) == images  # every image, nothing else
    from vireid.data.synth import load_joints

    assert written == synth_descriptions(args, load_joints(root))  # deterministic, from traits + joints
    # a dataset made before the descriptions existed gets them on the next call, images untouched
    (root / "Text" / "descriptions.json").unlink()
    generate_dataset(root, ids=6, format=fmt, images_per_camera=2, height=64, width=32, seed=3, workers=1,
                     progress=False)
    assert json.loads((root / "Text" / "descriptions.json").read_text()) == written
    assert _digest(root) == PINNED[fmt]


def test_infrared_sentences_never_name_a_colour_and_visible_ones_do():
    visible_colours = 0
    for pid in range(1, 120):
        traits = sample_identity_traits(0, pid)
        for index in range(3):
            words = set(split_words(describe_image(traits, True, description_rng(0, pid, 3, index))))
            assert not words & COLOUR_WORDS, (pid, words & COLOUR_WORDS)
            sentence = describe_image(traits, False, description_rng(0, pid, 1, index))
            visible_colours += bool(set(split_words(sentence)) & COLOUR_WORDS)
            assert colour_name(traits.top_colour) in sentence
    assert visible_colours == 119 * 3


def test_wording_varies_but_is_reproducible():
    traits = sample_identity_traits(0, 7)
    sentences = {describe_image(traits, False, description_rng(0, 7, 1, k)) for k in range(8)}
    assert len(sentences) >= 4  # several phrasings and clause orders per person
    assert describe_image(traits, False, description_rng(0, 7, 1, 2)) == describe_image(
        traits, False, description_rng(0, 7, 1, 2))


def test_colour_names_and_stride():
    for name, rgb in COLOUR_NAMES.items():
        assert colour_name(rgb) == name
    assert colour_name((0.0, 0.0, 0.0)) == "black" and colour_name((1.0, 1.0, 1.0)) == "white"
    joints = np.zeros((16, 3), dtype=np.float32)
    joints[[0, 5, 9], 2] = 1
    joints[0, :2], joints[5, :2], joints[9, :2] = (10, 60), (20, 60), (15, 10)
    assert stride_of(joints) == pytest.approx(10 / 50)
    joints[9, 2] = 0
    assert stride_of(joints) is None  # the head is hidden: no gait is described


# ---------------------------------------------------------------------- tokenizer
def test_tokenizer_known_unknown_padding_truncation():
    tok = WordTokenizer(max_length=8)
    ids = tok.encode("Man, dark coat; BACKPACK!")
    assert ids.dtype == torch.int64 and ids.shape == (8,)
    assert tok.decode(ids) == "man , dark coat ; backpack !"
    assert ids[7:].tolist() == [PAD]
    assert tok.encode("zorblax man")[:2].tolist() == [UNK, tok.index["man"]]
    assert tok.unknown_words("a zorblax hat") == ["zorblax"]
    long = tok.encode(" ".join(["man"] * 20))
    assert long.tolist() == [tok.index["man"]] * 8  # cut, no padding
    assert split_words("t-shirt, long-sleeved.") == ["t-shirt", ",", "long-sleeved", "."]
    assert tok.encode_batch(["man", "woman"]).shape == (2, 8)


def test_every_synthetic_word_is_in_the_shipped_vocabulary_and_it_is_package_data():
    tok = WordTokenizer()
    args = SynthArguments(format="sysu-mm01", ids=40, images_per_camera=2, height=64, width=32, seed=5)
    for sentence in synth_descriptions(args).values():
        assert not tok.unknown_words(sentence), sentence
        assert len(split_words(sentence)) <= tok.max_length
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vireid"]
    assert any(SHIPPED_VOCAB.match(pattern) or pattern == "data/text/vocab.txt" for pattern in data)
    assert SHIPPED_VOCAB.read_text().splitlines()[:2] == ["<pad>", "<unk>"]


def test_a_bad_vocabulary_file_is_one_sentence(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("man\nwoman\n")
    with pytest.raises(ConfigError, match="must start with the lines <pad> and <unk>"):
        WordTokenizer(vocab=bad)
    with pytest.raises(ConfigError, match="max_length must be at least 1"):
        WordTokenizer(max_length=0)


# ---------------------------------------------------------------------- readers and the tokens side input
def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (90, 20, 200)).save(path)
    return path


def test_csv_description_column_and_description_file(tmp_path):
    rows = ["path,identity,camera,modality,split,description"]
    for pid in (1, 2):
        for cam, mod in ((1, "visible"), (2, "infrared")):
            rel = f"img/{pid}_{cam}.png"
            _image(tmp_path / rel)
            text = "" if (pid, cam) == (2, 2) else f"person {pid} seen by camera {cam}"
            rows.append(f'{rel},{pid},{cam},{mod},train,"{text}"')
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    ds = build_dataset("csv", tmp_path)
    by_path = {Path(r.path).name: r.description for r in ds.train}
    assert by_path["1_1.png"] == "person 1 seen by camera 1" and by_path["2_2.png"] is None
    cfg = SimpleNamespace(root=str(tmp_path), extras={"tokens": "dataset"}, joints=None)
    with pytest.raises(DatasetError, match=r"2_2.png has no description .* remove data.extras.tokens"):
        load_extras(ds.train, cfg)
    # a description file fills what the records lack (paths relative to the dataset root)
    (tmp_path / "Text").mkdir()
    (tmp_path / "Text" / "descriptions.json").write_text(json.dumps({"img/2_2.png": "a woman with a backpack"}))
    tokens = load_extras(ds.train, cfg)["tokens"]
    assert tokens.dtype == torch.int64 and tokens.shape == (4, 64)
    assert record_descriptions([r for r in ds.train if r.description is None], "dataset", tmp_path) == [
        "a woman with a backpack"]
    # a file named directly, any layout
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({str(tmp_path / "img/1_1.png"): "absolute key"}))
    rec = ImageRecord(str(tmp_path / "img/1_1.png"), 1, 1, "visible")
    assert record_descriptions([rec], str(other), tmp_path) == ["absolute key"]
    other.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="must be a JSON object mapping image paths to sentences"):
        record_descriptions([rec], str(other), tmp_path)
    with pytest.raises(DatasetError, match="description file .*missing.json does not exist"):
        record_descriptions([rec], str(tmp_path / "missing.json"), tmp_path)


def test_synthetic_reader_tokens_extra(tiny_synth_root):
    ds = build_dataset("sysu-mm01", tiny_synth_root)
    cfg = SimpleNamespace(root=str(tiny_synth_root), extras={"tokens": {"descriptions": "dataset", "max_length": 12}},
                          joints=None)
    tokens = load_extras(ds.test, cfg)["tokens"]
    assert tokens.shape == (len(ds.test), 12) and tokens.dtype == torch.int64
    assert int((tokens == UNK).sum()) == 0
    with pytest.raises(ConfigError, match="'data.extras.tokens.descriptions' is 3"):
        load_extras(ds.test, SimpleNamespace(root=str(tiny_synth_root), extras={"tokens": {"descriptions": 3}},
                                             joints=None))


def test_folder_layout_reads_its_text_folder(tmp_path):
    from vireid.retrieval.extract import detect_format

    table = {}
    for pid in (1, 2):
        for modality, cam in (("visible", 1), ("infrared", 2)):
            rel = f"train/{modality}/cam{cam}/{pid}/a.png"
            _image(tmp_path / rel)
            table[rel] = f"person {pid}"
    (tmp_path / "Text").mkdir()
    (tmp_path / "Text" / "descriptions.json").write_text(json.dumps(table))
    assert detect_format(tmp_path) == "folder"  # the Text folder is not a foreign split
    ds = build_dataset("folder", tmp_path)
    cfg = SimpleNamespace(root=str(tmp_path), extras={"tokens": "dataset"}, joints=None)
    assert load_extras(ds.train, cfg)["tokens"].shape == (4, 64)
