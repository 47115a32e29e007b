"""Feature folders, gallery indexes (flat / IVF-PQ / HNSW), search with modality filtering and
re-ranking, and ``vireid extract`` / ``index`` / ``search`` end to end on a tiny synthetic set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import REPO
from vireid.cli import app
from vireid.errors import DatasetError, VireidError
from vireid.evaluation.rerank import k_reciprocal_rerank
from vireid.retrieval import FeatureSet, GalleryIndex, Metadata
from vireid.retrieval.extract import collect_images, detect_format
from vireid.retrieval.search import guess_modality

runner = CliRunner()


# ---------------------------------------------------------------------- helpers
def clustered(n: int, dim: int, ids: int, seed: int = 0, noise: float = 0.6,
              views: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``ids`` identity centres (drawn from ``seed``): views of one person are
    close. ``views`` seeds the view noise, so that queries are new views of the gallery's people."""
    centres = np.random.default_rng(seed).standard_normal((ids, dim))
    rng = np.random.default_rng([seed, views])
    pids = np.arange(n) % ids
    x = centres[pids] + noise * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), pids


def featureset(n: int = 1200, dim: int = 64, ids: int = 120, seed: int = 0, root: str = "/gallery",
               noise: float = 0.6) -> FeatureSet:
    x, pids = clustered(n, dim, ids, seed, noise)
    mods = np.where(np.arange(n) % 3 == 0, "infrared", "visible")
    meta = Metadata.from_images([f"{root}/{i:05d}.jpg" for i in range(n)], pids, np.arange(n) % 6 + 1, mods, root=root)
    return FeatureSet(x, meta, {"model": "test"})


def exact_topk(q: np.ndarray, g: np.ndarray, k: int, allowed: np.ndarray | None = None):
    sims = q @ g.T
    if allowed is not None:
        sims[:, ~allowed] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


def make_checkpoint(path: Path, num_classes: int = 4) -> Path:
    import torch

    from vireid.config import load_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model

    cfg = load_config(REPO / "configs" / "baseline_synth.yaml",
                      ["model.params.backbone=resnet10t", "model.params.pretrained=null", "data.height=64",
                       "data.width=32"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes).eval()
    atomic_torch_save({"model": model.state_dict(), "config": asdict(cfg), "num_classes": num_classes}, path)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def extracted(tiny_synth_root, tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("feats") / "feats"
    result = runner.invoke(app, ["extract", "--checkpoint", str(tiny_ckpt), "--images", str(tiny_synth_root),
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------------- feature folders
def test_feature_folder_round_trip_and_errors(tmp_path):
    fs = featureset(50, 16, 5)
    folder = fs.save(tmp_path / "feats")
    back = FeatureSet.load(folder)
    np.testing.assert_array_equal(back.features, fs.features)
    assert back.meta.row(7) == fs.meta.row(7) == {"path": "00007.jpg", "pid": 2, "camid": 2, "modality": "visible"}
    assert back.meta.image_path(7) == Path("/gallery/00007.jpg") and back.info == {"model": "test"}
    assert (folder / "meta.csv").read_text().splitlines()[0] == "path,pid,camid,modality"
    fs.save(folder)  # overwriting a feature folder is fine ...
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(VireidError, match="is not a vireid feature folder"):  # ... an unrelated folder is not
        fs.save(tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left

    with pytest.raises(VireidError, match="does not exist"):
        FeatureSet.load(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    data = (broken / "features.safetensors").read_bytes()
    (broken / "features.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(VireidError, match="truncated or not"):
        FeatureSet.load(broken)
    shutil.copytree(folder, tmp_path / "short")
    lines = (tmp_path / "short" / "meta.csv").read_text().splitlines()
    (tmp_path / "short" / "meta.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(VireidError, match="50 feature rows but 49 metadata rows"):
        FeatureSet.load(tmp_path / "short")
    (tmp_path / "short" / "meta.csv").write_text("a,b\n1,2\n")
    with pytest.raises(VireidError, match="does not start with the header"):
        FeatureSet.load(tmp_path / "short")


# ---------------------------------------------------------------------- indexes
def test_flat_search_equals_brute_force_and_round_trips(tmp_path):
    fs = featureset()
    q, _ = clustered(40, 64, 120, views=1)
    index = GalleryIndex.build(fs, "auto")
    assert index.kind == "flat" and index.counts() == {"visible": 800, "infrared": 400}
    scores, rows = index.search(q, k=10)
    ref_scores, ref_rows = exact_topk(q, fs.features, 10)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)

    loaded = GalleryIndex.load(index.save(tmp_path / "index"))
    s2, r2 = loaded.search(q, k=10)
    np.testing.assert_array_equal(r2, rows)
    np.testing.assert_allclose(s2, scores, atol=1e-6)
    assert loaded.metadata.row(5) == fs.meta.row(5)
    assert loaded.image_path(5) == Path("/gallery/00005.jpg")
    with pytest.raises(IndexError):
        loaded.image_path(len(fs))
    # unnormalised queries are normalised; more results than images pad with -1 / -inf
    s3, r3 = index.search(q[:2] * 3.0, k=10)
    np.testing.assert_array_equal(r3, rows[:2])
    small = GalleryIndex.build(fs.subset(np.arange(4)), "flat")
    s4, r4 = small.search(q[:1], k=6)
    assert (r4[0, 4:] == -1).all() and np.isneginf(s4[0, 4:]).all() and (r4[0, :4] >= 0).all()


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_approximate_indexes_round_trip_with_high_recall(tmp_path, kind):
    fs = featureset(3000, 64, 300)
    q, _ = clustered(50, 64, 300, views=2)
    index = GalleryIndex.build(fs, kind)
    assert index.kind == kind
    scores, rows = index.search(q, k=10)
    _, ref_rows = exact_topk(q, fs.features, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), ref_rows.tolist())])
    assert recall >= 0.9, recall
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_allclose(scores, np.take_along_axis(q @ fs.features.T, rows, 1), atol=2e-3)  # cosines
    loaded = GalleryIndex.load(index.save(tmp_path / kind))
    assert loaded.kind == kind and loaded.params == index.params
    s2, r2 = loaded.search(q, k=10)
    np.testing.assert_array_equal(r2, rows)
    if kind == "ivfpq":  # visiting every cell with a full-precision refine step is exact
        loaded.set_search_params(nprobe=loaded.params["nlist"], k_factor=50)
        _, r3 = loaded.search(q, k=10)
        assert np.mean(r3 == ref_rows) > 0.99
    with pytest.raises(VireidError, match="does not apply"):
        loaded.set_search_params(ef_search=5) if kind == "ivfpq" else loaded.set_search_params(nprobe=5)


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "hnsw"])
def test_cross_modality_filter_returns_only_that_modality(kind):
    fs = featureset(2000, 64, 200)
    q, _ = clustered(12, 64, 200, views=3)
    index = GalleryIndex.build(fs, kind)
    mods = fs.meta.modalities
    for target in ("visible", "infrared"):
        _, rows = index.search(q, k=20, modality=target)
        assert (rows >= 0).all() and (mods[rows] == target).all()
        if kind == "flat":
            np.testing.assert_array_equal(rows, exact_topk(q, fs.features, 20, allowed=mods == target)[1])
    per_query = ["visible", "infrared", None] * 4
    _, rows = index.search(q, k=5, modality=per_query)
    assert (mods[rows[0::3]] == "visible").all() and (mods[rows[1::3]] == "infrared").all()
    if kind == "flat":
        np.testing.assert_array_equal(rows[2::3], exact_topk(q[2::3], fs.features, 5)[1])
    with pytest.raises(VireidError, match="unknown"):
        index.search(q, k=5, modality="thermalish")
    with pytest.raises(VireidError, match="one per query"):
        index.search(q, k=5, modality=["visible"] * 3)


def test_rerank_over_all_candidates_equals_full_reranking():
    fs = featureset(300, 32, 30)
    q, _ = clustered(8, 32, 30, views=4)
    index = GalleryIndex.build(fs, "flat")
    scores, rows = index.search(q, k=10, rerank=True, rerank_candidates=len(fs))

    def euclidean(a, b):
        return np.sqrt(np.maximum(2 - 2 * a @ b.T, 0)).astype(np.float32)

    g = fs.features
    full = k_reciprocal_rerank(euclidean(q, g), euclidean(q, q), euclidean(g, g))
    order = np.argsort(full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(scores, 1 - np.take_along_axis(full, order, 1), atol=1e-5)
    assert not np.array_equal(rows, index.search(q, k=10)[1])  # re-ranking changes the order
    # with a modality filter every re-ranked result keeps the modality
    _, rows_ir = index.search(q, k=10, modality="infrared", rerank=True, rerank_candidates=30)
    assert (fs.meta.modalities[rows_ir] == "infrared").all()


def test_streaming_build_equals_one_shot_build():
    """create / train / add in chunks (how galleries too large for memory are indexed) gives the
    same index as build(); ivfpq refuses vectors of a modality it was not trained on."""
    fs = featureset(1000, 32, 100)
    q, _ = clustered(10, 32, 100, views=5)
    streamed = GalleryIndex.create(fs.dim, "flat", len(fs), info=fs.info)
    for start in (0, 400):
        rows = np.arange(start, min(start + 600 if start else 400, len(fs)))
        streamed.add(fs.features[rows], fs.meta.subset(rows))
    assert len(streamed) == len(fs) and streamed.metadata.row(999) == fs.meta.row(999)
    np.testing.assert_array_equal(streamed.search(q, 7)[1], GalleryIndex.build(fs, "flat").search(q, 7)[1])

    ivf = GalleryIndex.create(fs.dim, "ivfpq", len(fs), nlist=4)
    assert not ivf.is_trained
    with pytest.raises(VireidError, match="call train"):
        ivf.add(fs.features, fs.meta)
    visible = np.flatnonzero(fs.meta.modalities == "visible")
    ivf.train(fs.features[visible], fs.meta.modalities[visible])
    with pytest.raises(VireidError, match="include infrared images"):
        ivf.add(fs.features, fs.meta)
    with pytest.raises(VireidError, match="too few for nlist=64"):
        GalleryIndex.create(fs.dim, "ivfpq", len(fs), nlist=64).train(fs.features[:50], fs.meta.modalities[:50])


def test_index_load_errors(tmp_path):
    with pytest.raises(VireidError, match="does not exist"):
        GalleryIndex.load(tmp_path / "none")
    folder = GalleryIndex.build(featureset(100, 16, 10), "flat").save(tmp_path / "index")
    (folder / "visible.faiss").write_bytes(b"not an index")
    with pytest.raises(VireidError, match="truncated or corrupt"):
        GalleryIndex.load(folder)
    (folder / "index.json").write_text("{")
    with pytest.raises(VireidError, match="cannot be read"):
        GalleryIndex.load(folder)
    index = GalleryIndex.build(featureset(100, 16, 10), "flat")
    with pytest.raises(VireidError, match="16-dim"):
        index.search(np.ones((1, 8), np.float32))
    with pytest.raises(VireidError, match="takes no parameter"):
        GalleryIndex.build(featureset(100, 16, 10), "flat", nlist=4)


# ---------------------------------------------------------------------- image sources
def test_collect_images_from_layouts(tiny_synth_root, tmp_path):
    assert detect_format(tiny_synth_root) == "sysu-mm01"
    meta, fmt = collect_images(tiny_synth_root)
    images = sorted(p for p in tiny_synth_root.rglob("*.jpg"))
    assert fmt == "sysu-mm01" and len(meta) == len(images)
    assert set(meta.camids.tolist()) == {1, 2, 3, 4, 5, 6}
    assert set(meta.modalities[np.isin(meta.camids, [3, 6])]) == {"infrared"}
    assert (meta.pids > 0).all() and not Path(meta.paths[0]).is_absolute()

    ir, _ = collect_images(tiny_synth_root, split="test", modality="ir")
    assert set(ir.modalities) == {"infrared"} and 0 < len(ir) < len(meta)

    # a CSV manifest (paths relative to its folder)
    manifest = tmp_path / "m.csv"
    rows = ["path,identity,camera,modality"] + [f"{meta.image_path(i)},{meta.pids[i]},{meta.camids[i]},"
                                                f"{meta.modalities[i]}" for i in range(0, 40, 4)]
    manifest.write_text("\n".join(rows) + "\n")
    from_csv, fmt = collect_images(manifest)
    assert fmt == "csv" and len(from_csv) == 10 and from_csv.row(0)["pid"] == int(meta.pids[0])

    # a plain tree: modality from folder names, else from --modality, else an error
    plain = tmp_path / "plain"
    for i, sub in enumerate(["ir/a", "RGB", "x"]):
        (plain / sub).mkdir(parents=True)
        shutil.copyfile(meta.image_path(i), plain / sub / f"{i}.jpg")
    assert detect_format(plain) == "plain"
    with pytest.raises(DatasetError, match="modality of .*x/2.jpg is unknown"):
        collect_images(plain)
    found, _ = collect_images(plain, modality="visible")
    assert found.paths.tolist() == ["RGB/1.jpg", "ir/a/0.jpg", "x/2.jpg"]
    assert found.modalities.tolist() == ["visible", "infrared", "visible"] and (found.pids == -1).all()


def test_guess_modality(tiny_synth_root):
    assert guess_modality(next((tiny_synth_root / "cam3").rglob("*.jpg"))) == "infrared"
    assert guess_modality(next((tiny_synth_root / "cam1").rglob("*.jpg"))) == "visible"


# ---------------------------------------------------------------------- CLI end to end
def test_extract_index_search_cli(extracted, tiny_synth_root, tiny_ckpt, tmp_path):
    feats = FeatureSet.load(extracted)
    assert feats.meta.root == str(tiny_synth_root.absolute())
    assert np.allclose(np.linalg.norm(feats.features, axis=1), 1, atol=1e-5)
    assert feats.info["format"] == "sysu-mm01" and feats.info["dim"] == feats.dim

    index_dir = tmp_path / "index"
    result = runner.invoke(app, ["index", str(extracted), "--out", str(index_dir), "--kind", "hnsw", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["kind"] == "hnsw" and summary["num"] == len(feats)

    query = feats.meta.image_path(0)  # a visible gallery image: it finds itself first
    result = runner.invoke(app, ["search", str(query), "--index", str(index_dir), "--checkpoint", str(tiny_ckpt),
                                 "-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    (res,) = json.loads(result.output)
    assert res["modality"] == "visible" and res["searched"] == "all" and len(res["results"]) == 5
    top = res["results"][0]
    assert top["index"] == 0 and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["image"] == str(query) and top["pid"] == int(feats.meta.pids[0]) and top["camid"] == 1

    ir_query = next(i for i in range(len(feats)) if feats.meta.modalities[i] == "infrared")
    result = runner.invoke(app, ["search", str(query), str(feats.meta.image_path(ir_query)), "--index",
                                 str(index_dir), "--checkpoint", str(tiny_ckpt), "-k", "4", "--cross-modality",
                                 "--rerank", "--json"])
    assert result.exit_code == 0, result.output
    vis_res, ir_res = json.loads(result.output)
    assert vis_res["searched"] == "infrared" and {h["modality"] for h in vis_res["results"]} == {"infrared"}
    assert ir_res["searched"] == "visible" and {h["modality"] for h in ir_res["results"]} == {"visible"}
    assert vis_res["reranked"] and len(vis_res["results"]) == 4

    result = runner.invoke(app, ["search", str(query), "--index", str(index_dir), "--checkpoint", str(tiny_ckpt),
                                 "-k", "3", "--gallery-modality", "visible", "--ef-search", "32"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(": visible (guessed: colour image)")  # the modality decision (stderr) comes first
    lines = lines[1:]
    assert "-> visible gallery" in lines[0] and lines[1].split()[:5] == ["rank", "score", "identity", "camera",
                                                                        "modality"]
    assert len(lines) == 5 and lines[2].split()[0] == "1" and lines[2].split()[-1] == feats.meta.paths[0]


def test_extract_of_one_split_and_modality(tiny_synth_root, tiny_ckpt, tmp_path):
    result = runner.invoke(app, ["extract", "-c", str(tiny_ckpt), "-i", str(tiny_synth_root), "-o",
                                 str(tmp_path / "f"), "--split", "test", "--modality", "infrared"])
    assert result.exit_code == 0, result.output
    assert "infrared" in result.output
    assert set(FeatureSet.load(tmp_path / "f").meta.modalities) == {"infrared"}


def test_cli_errors(extracted, tiny_ckpt, tmp_path):
    # missing index: the real command prints one line and exits 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "vireid", "search", str(tiny_ckpt), "--index",
                           str(tmp_path / "nope"), "--checkpoint", str(tiny_ckpt)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "error: index" in proc.stderr and "does not exist" in proc.stderr

    # dimension mismatch between the index and the checkpoint
    feats = FeatureSet.load(extracted)
    other = FeatureSet(np.eye(len(feats), 16, dtype=np.float32), feats.meta, {"model": "other.pt"})
    GalleryIndex.build(other, "flat").save(tmp_path / "idx16")
    result = runner.invoke(app, ["search", str(feats.meta.image_path(0)), "--index", str(tmp_path / "idx16"),
                                 "--checkpoint", str(tiny_ckpt)])
    assert isinstance(result.exception, VireidError)
    assert "16-dim features" in str(result.exception) and "other.pt" in str(result.exception)

    # a bad image in the source folder names the file
    bad = tmp_path / "imgs"
    bad.mkdir()
    Image.new("RGB", (16, 32)).save(bad / "ok.jpg")
    (bad / "broken.jpg").write_text("not an image")
    result = runner.invoke(app, ["extract", "-c", str(tiny_ckpt), "-i", str(bad), "-o", str(tmp_path / "o"),
                                 "-m", "visible"])
    assert isinstance(result.exception, DatasetError) and "broken.jpg" in str(result.exception)
    assert not (tmp_path / "o").exists()
    # a missing query image, and an --ef-search on an exact index
    result = runner.invoke(app, ["search", str(bad / "none.jpg"), "--index", str(tmp_path / "idx16"),
                                 "--checkpoint", str(tiny_ckpt)])
    assert isinstance(result.exception, VireidError) and "none.jpg does not exist" in str(result.exception)
    result = runner.invoke(app, ["search", str(bad / "ok.jpg"), "--index", str(tmp_path / "idx16"),
                                 "--checkpoint", str(tiny_ckpt), "--ef-search", "8"])
    assert isinstance(result.exception, VireidError) and "does not apply to a flat index" in str(result.exception)
