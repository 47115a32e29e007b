"""Attribute-filtered search: the ``--where`` syntax, filtered ranking against brute force, and
``vireid extract`` / ``index`` / ``search --where`` with stored and predicted gallery labels."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import REPO
from vireid.cli import app
from vireid.data.attribute_table import ATTRIBUTE_NAMES, ATTRIBUTES
from vireid.errors import VireidError
from vireid.retrieval import FeatureSet, GalleryIndex, Metadata
from vireid.retrieval.attributes import filtered_search, parse_where

runner = CliRunner()
BACKPACK, TOP_COLOUR = ATTRIBUTE_NAMES.index("backpack"), ATTRIBUTE_NAMES.index("top_colour")


def test_where_syntax_and_one_sentence_for_bad_filters():
    where = parse_where(" modality = IR , backpack=yes, top_color=red|Orange ")
    assert where.modality == "infrared"
    assert where.clauses == {BACKPACK: frozenset({1}), TOP_COLOUR: frozenset({3, 7})}
    assert where.describe() == "modality=infrared,backpack=yes,top_colour=red|orange"
    labels = np.full((4, len(ATTRIBUTES)), -1)
    labels[:, BACKPACK] = [1, 1, 0, 1]
    labels[:, TOP_COLOUR] = [3, 7, 3, -1]  # the last: an infrared image, colour unknown
    assert where.mask(labels).tolist() == [True, True, False, False]
    assert parse_where("") is None and parse_where(None) is None
    cases = {
        "umbrella=yes": "'umbrella' is not a known attribute; the attributes are gender, sleeves",
        "backpack=perhaps": "'perhaps' is not a value of attribute backpack; use one of no, yes",
        "top_colour=red|teal": "'teal' is not a value of attribute top_colour; use one of black, white",
        "modality=ultraviolet": "use modality=visible or modality=infrared",
        "backpack": "is not name=value",
        "hat=": "gives no value",
    }
    for text, words in cases.items():
        with pytest.raises(VireidError) as err:
            parse_where(text)
        assert words in str(err.value) and "\n" not in str(err.value), (text, str(err.value))


def _gallery(n: int = 400, dim: int = 32, seed: int = 0) -> tuple[GalleryIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mods = np.where(np.arange(n) % 3 == 0, "infrared", "visible")
    meta = Metadata.from_images([f"/g/{i:04d}.jpg" for i in range(n)], np.arange(n) % 40, np.ones(n), mods, root="/g")
    labels = np.stack([rng.integers(0, len(a.values), n) for a in ATTRIBUTES], axis=1)
    labels[:, BACKPACK] = (rng.random(n) < 0.05).astype(int)  # rare: the search must look deeper than 8 k
    labels[mods == "infrared", TOP_COLOUR] = -1
    index = GalleryIndex.build(FeatureSet(x, meta, {"attributes": "stored"}), "flat")
    index.attributes = labels
    return index, x, labels


def test_filtered_search_equals_brute_force_over_the_allowed_rows(tmp_path):
    index, gallery, labels = _gallery()
    queries = gallery[:5] + 0.3 * np.random.default_rng(1).standard_normal((5, gallery.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    where = parse_where("modality=infrared,backpack=yes")
    keep = where.mask(labels)
    allowed = keep & (index.metadata.modalities == "infrared")
    assert 0 < allowed.sum() < 15
    k = 10
    scores, rows = filtered_search(index, queries, k, "infrared", keep)
    sims = queries @ gallery.T
    sims[:, ~allowed] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    for q in range(len(queries)):
        n = min(k, int(allowed.sum()))
        assert rows[q, :n].tolist() == order[q, :n].tolist() and (rows[q, n:] == -1).all()
        assert np.allclose(scores[q, :n], sims[q, order[q, :n]], atol=1e-5)
    # the labels travel with the index folder
    index.save(tmp_path / "idx")
    again = GalleryIndex.load(tmp_path / "idx")
    assert np.array_equal(again.attributes, labels) and again.info["attributes"] == "stored"


def _checkpoint(path: Path, config: str, **overrides: str) -> Path:
    import torch

    from vireid.config import load_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model

    values = {"data.height": 64, "data.width": 32, **overrides}
    cfg = load_config(REPO / "configs" / config, [f"{k}={v}" for k, v in values.items()])
    torch.manual_seed(0)
    model = build_model(cfg, 4).eval()
    atomic_torch_save({"model": model.state_dict(), "config": asdict(cfg), "num_classes": 4}, path)
    return path


def _run(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _json(output: str):
    """The JSON document of a command's output (after any precision note on stderr)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    return json.loads("\n".join(lines[start:]))


def test_cli_search_where_with_stored_labels(tiny_synth_root, tmp_path):
    ckpt = _checkpoint(tmp_path / "baseline.pt", "baseline_synth.yaml", **{"model.params.backbone": "resnet10t"})
    summary = _json(_run("extract", "-c", ckpt, "-i", tiny_synth_root, "--split", "test", "-o", tmp_path / "f",
                              "--json"))
    assert summary["attributes"] == "stored"
    _run("index", tmp_path / "f", "-o", tmp_path / "idx")
    with (tiny_synth_root / "attributes.csv").open() as handle:
        truth = {row["path"]: row for row in csv.DictReader(handle)}
    query = tiny_synth_root / "cam1" / "0002" / "0001.jpg"
    (res,) = _json(_run("search", query, "-i", tmp_path / "idx", "-c", ckpt, "-k", "6", "--json",
                             "--where", "modality=infrared,backpack=yes"))
    assert res["searched"] == "infrared" and res["attribute_labels"] == "stored"
    assert res["where"] == "modality=infrared,backpack=yes" and res["results"]
    for hit in res["results"]:  # infrared images of people with a backpack, by the dataset's own labels
        assert hit["modality"] == "infrared" and truth[hit["path"]]["backpack"] == "yes"
        assert hit["attributes"]["backpack"] == "yes" and hit["attributes"]["top_colour"] is None
    text = _run("search", query, "-i", tmp_path / "idx", "-c", ckpt, "-k", "3", "-w", "top_colour=red|blue")
    assert "where top_colour=red|blue (stored attribute labels)" in text
    result = runner.invoke(app, ["search", str(query), "-i", str(tmp_path / "idx"), "-c", str(ckpt),
                                 "--where", "backpack=maybe"])
    assert isinstance(result.exception, VireidError) and "'maybe' is not a value of attribute backpack" in str(result.exception)


def test_cli_search_where_with_predicted_labels_and_without_any(tiny_synth_root, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for pid in (1, 2, 3):
        for cam in (3, 6):
            shutil.copy(tiny_synth_root / f"cam{cam}" / f"{pid:04d}" / "0001.jpg", plain / f"{pid}_{cam}.jpg")
    attr_ckpt = _checkpoint(tmp_path / "attr.pt", "attributes_synth.yaml")
    summary = _json(_run("extract", "-c", attr_ckpt, "-i", plain, "-m", "infrared", "-o", tmp_path / "f",
                              "--json"))
    assert summary["attributes"] == "predicted"  # a plain folder has no labels: the heads' predictions
    _run("index", tmp_path / "f", "-o", tmp_path / "idx")
    query = plain / "1_3.jpg"
    (res,) = _json(_run("search", query, "-i", tmp_path / "idx", "-c", attr_ckpt, "-m", "infrared", "--json",
                             "--where", "hat=yes|no"))
    assert res["attribute_labels"] == "predicted" and len(res["results"]) == 6
    assert all(hit["attributes"]["top_colour"] is None for hit in res["results"])  # no colour on infrared
    # a model without attribute heads on images without labels: filtering is refused in one sentence
    base_ckpt = _checkpoint(tmp_path / "baseline.pt", "baseline_synth.yaml", **{"model.params.backbone": "resnet10t"})
    summary = _json(_run("extract", "-c", base_ckpt, "-i", plain, "-m", "infrared", "-o", tmp_path / "g", "--json"))
    assert summary["attributes"] is None
    _run("index", tmp_path / "g", "-o", tmp_path / "idx2")
    result = runner.invoke(app, ["search", str(query), "-i", str(tmp_path / "idx2"), "-c", str(base_ckpt),
                                 "--where", "backpack=yes"])
    assert isinstance(result.exception, VireidError)
    assert "the index holds no attribute labels" in str(result.exception)
