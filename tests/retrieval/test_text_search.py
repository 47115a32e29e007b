"""``vireid search --text`` end to end on a tiny trained text run: extract -> index -> search with words,
with words and an image, and the bad inputs (one sentence each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import REPO, tiny_overrides
from vireid.cli import app
from vireid.errors import VireidError
from vireid.retrieval.text_search import MAX_QUERY_CHARS

runner = CliRunner()


@pytest.fixture(scope="module")
def text_run(tiny_synth_root, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder of a 1-epoch text_image run, its index over the tiny test split)."""
    from vireid.config import load_config
    from vireid.workflows.train_run import run_training

    out = tmp_path_factory.mktemp("text-run")
    cfg = load_config(REPO / "configs" / "text_synth.yaml",
                      tiny_overrides(tiny_synth_root, out, **{"train.epochs": 1, "train.threads": 1,
                                                              "sampler.epoch_length": 1}))
    run = out / "run"
    run_training(cfg, run, evaluate=False)
    feats = out / "feats"
    result = runner.invoke(app, ["extract", "-c", str(run), "-i", str(tiny_synth_root), "--split", "test", "-o",
                                 str(feats)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["index", str(feats), "--out", str(out / "index"), "--kind", "flat"])
    assert result.exit_code == 0, result.output
    return run, out / "index"


def test_search_with_words_alone_and_with_an_image(text_run, tiny_synth_root):
    run, index = text_run
    result = runner.invoke(app, ["search", "--text", "a man with a backpack, zorblax", "-i", str(index), "-c", str(run),
                                 "-k", "5", "--gallery-modality", "infrared", "--json"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)
    assert answer["modality"] == "text" and answer["searched"] == "infrared" and len(answer["results"]) == 5
    assert {hit["modality"] for hit in answer["results"]} == {"infrared"}
    assert "zorblax" in result.stderr  # the unknown word is reported
    image = next((tiny_synth_root / "cam1").rglob("*.jpg"))
    result = runner.invoke(app, ["search", str(image), "--text", "a person in trousers", "-i", str(index), "-c",
                                 str(run), "-k", "3", "--cross-modality", "--modality", "visible"])
    assert result.exit_code == 0, result.output
    assert "(visible+text) -> infrared gallery" in result.stdout


def test_bad_text_queries_are_one_sentence(text_run, tiny_synth_root):
    run, index = text_run
    cases = [
        (["--text", "   "], "the query text is empty"),
        (["--text", "x" * (MAX_QUERY_CHARS + 1)], f"give at most {MAX_QUERY_CHARS}"),
        (["--text", "a man", str(tiny_synth_root / "cam1/0001/0001.jpg"), str(tiny_synth_root / "cam1/0001/0002.jpg")],
         "--text takes at most one query image"),
        (["--text", "a man", "--cross-modality"], "--cross-modality needs a query image"),
        ([], "give one or more query images, or a description with --text"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["search", *extra, "-i", str(index), "-c", str(run)])
        assert isinstance(result.exception, VireidError) and message in str(result.exception), (extra, result)


def test_an_image_model_cannot_search_with_words(text_run, tmp_path):
    from dataclasses import asdict

    import torch

    from vireid.config import load_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model

    _, index = text_run
    cfg = load_config(REPO / "configs" / "baseline_synth.yaml", ["model.params.backbone=resnet10t", "data.height=64",
                                                                 "data.width=32"])
    model = build_model(cfg, 4).eval()
    ckpt = tmp_path / "image.pt"
    atomic_torch_save({"model": model.state_dict(), "config": asdict(cfg), "num_classes": 4}, ckpt)
    result = runner.invoke(app, ["search", "--text", "a man", "-i", str(index), "-c", str(ckpt)])
    assert isinstance(result.exception, VireidError) and "not trained with text descriptions" in str(result.exception)


def test_verification_calibrates_on_the_image_embedding(text_run, tiny_synth_root):
    """A text model's evaluation output is [image | query side]; the verification threshold (stored in
    best.pt, used by vireid verify and the page on image pairs) is computed on the image columns only, and
    the pictures (vireid visualize) rank the image columns."""
    from vireid.data.datasets import build_dataset
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.workflows.calibration import embed_records

    run, _ = text_run
    model, cfg, ckpt = load_model_from_checkpoint(run)
    records = build_dataset("sysu-mm01", tiny_synth_root).test[:6]
    feats = embed_records(model, records, cfg, "cpu")
    assert feats.shape == (6, model.embed_dim)
    assert "threshold" in ckpt["verification"]
    from vireid.viz.data import load_run  # the pictures rank the image embeddings too

    assert load_run(run, "cpu", data_root=str(tiny_synth_root)).features.shape[1] == model.embed_dim


def test_image_protocols_of_a_text_model_use_its_image_columns(text_run, tiny_synth_root):
    """Evaluating a text model under an image protocol ranks its image embeddings, not image + text."""
    from vireid.data.build import build_image_cache, modality_codes
    from vireid.data.datasets import build_dataset
    from vireid.engine.trainer import load_model_from_checkpoint
    from vireid.evaluation.protocols import run_protocol
    from vireid.inference.extract import extract_features
    from vireid.workflows.evaluate_model import evaluate_model

    run, _ = text_run
    model, cfg, _ = load_model_from_checkpoint(run)
    cfg.data.root = str(tiny_synth_root)
    dataset = build_dataset("sysu-mm01", tiny_synth_root)
    image_only, text = evaluate_model(model, dataset, cfg, protocols=["sysu-all-single", "text-to-visible"],
                                      progress=False, amp="none")  # compared with the fp32 features below
    cache = build_image_cache(dataset.test, cfg.data, progress=False)
    plain = extract_features(model, cache, modality_codes(dataset.test), "cpu", 64)  # no tokens: image only
    assert plain.shape[1] == model.embed_dim
    expected = run_protocol("sysu-all-single", plain, dataset.test, trials=cfg.eval.trials)
    assert image_only.mean == pytest.approx(expected.mean) and text.name == "text-to-visible"
