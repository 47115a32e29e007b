"""Video (tracklet) re-identification end to end: a temporal model trains through the Trainer with validation
on tracklets and is evaluated on the tracklet protocols in both directions; a tracklet gallery is extracted
and indexed one entry per tracklet, and a folder of frames is one search query."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from _video_pseudo import register_pseudo_vcm, tracklet_sampling_overrides
from conftest import REPO, tiny_overrides


@pytest.fixture(scope="module")
def video_run(tiny_synth_root, tmp_path_factory) -> Path:
    from vireid.config import load_config
    from vireid.workflows.train_run import run_training

    fmt = register_pseudo_vcm()
    out = tmp_path_factory.mktemp("video-run")
    overrides = tiny_overrides(tiny_synth_root, out, **{"data.format": fmt, "train.epochs": 1, "train.threads": 1,
                                                        "sampler.epoch_length": 2, "train.eval_every": 1,
                                                        "model.params.seq_len": 2,
                                                        "data.options.train_includes_val": "false",
                                                        **tracklet_sampling_overrides(2)})
    cfg = load_config(REPO / "configs" / "video_synth.yaml", [o for o in overrides if not o.startswith("eval.trials")])
    folder = out / "run"
    run_training(cfg, folder, evaluate=True)
    return folder


def test_train_validate_on_tracklets_and_evaluate_both_directions(video_run):
    summary = json.loads((video_run / "train_summary.json").read_text())
    assert "val_mAP" in summary["history"][0]  # validation ranked tracklets during training
    results = {r["name"]: r for r in json.loads((video_run / "test_results.json").read_text())}
    assert set(results) == {"vcm-i2v", "vcm-v2i"}
    for result in results.values():
        assert result["settings"]["unit"] == "tracklet" and result["settings"]["cam_rule"] == "same-camera"
        # the test pool: 5 identities x (4 visible + 2 infrared cameras) tracklets of 3 frames, of which the
        # model (seq_len 2, test_frames evenly) embeds 2 each
        assert result["settings"]["num_tracklets"] == 30 and result["settings"]["num_frames"] == 60
        assert 0 <= result["mean"]["mAP"] <= 100
    assert results["vcm-i2v"]["trials"][0]["num_query"] == 10 and results["vcm-v2i"]["trials"][0]["num_query"] == 20


def _tracklet_folders(root: Path, out: Path) -> Path:
    """A plain gallery: <modality>/<pid>_<cam>/ folders of the test identities' frames (copied)."""
    for cam, mod in ((1, "visible"), (2, "visible"), (3, "infrared")):
        for pid_dir in sorted((root / f"cam{cam}").iterdir())[:4]:
            dest = out / mod / f"{pid_dir.name}_{cam}"
            dest.mkdir(parents=True)
            for frame in sorted(pid_dir.iterdir()):
                shutil.copy(frame, dest / frame.name)
    return out


def test_extract_index_and_search_tracklets(video_run, tiny_synth_root, tmp_path):
    from vireid.errors import VireidError
    from vireid.workflows.search import build_index, search_gallery

    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers every command)
    from vireid.cli import app

    gallery = _tracklet_folders(tiny_synth_root, tmp_path / "gallery")
    result = CliRunner().invoke(app, ["extract", "--checkpoint", str(video_run / "best.pt"), "--images", str(gallery),
                                      "--out", str(tmp_path / "feats"), "--tracklets"])
    assert result.exit_code == 0, result.output
    assert "wrote 12 " in result.output and "one per tracklet, 36 frames" in result.output  # 12 folders of 3 frames
    build_index(tmp_path / "feats", tmp_path / "index", "flat")
    from vireid.retrieval.index import GalleryIndex

    assert GalleryIndex.load(tmp_path / "index").ntotal == 12  # one entry per tracklet
    query = next((gallery / "infrared").iterdir())
    found = CliRunner().invoke(app, ["search", str(query), "--index", str(tmp_path / "index"), "--checkpoint",
                                     str(video_run / "best.pt"), "-k", "3", "--cross-modality", "--json"])
    assert found.exit_code == 0, found.output
    result = json.loads(found.stdout)[0]
    assert result["frames"] == 3 and result["modality"] == "infrared" and len(result["results"]) == 3
    assert all(hit["modality"] == "visible" for hit in result["results"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VireidError, match=r"tracklet folder .*empty holds no frames; put the image files"):
        search_gallery([empty], tmp_path / "index", video_run / "best.pt")


def test_a_tracklet_embedding_uses_the_temporal_model(video_run, tiny_synth_root):
    import numpy as np

    from vireid.inference.loading import load_embedder

    embedder = load_embedder(video_run / "best.pt")
    frames = sorted((tiny_synth_root / "cam1" / sorted(p.name for p in (tiny_synth_root / "cam1").iterdir())[0]).iterdir())
    one = embedder.embed_tracklet(frames, "visible")
    assert one.shape == (embedder.dim,) and abs(float(np.linalg.norm(one)) - 1) < 1e-5
    mean = embedder.embed_paths(frames, "visible").mean(0)
    assert not np.allclose(one, mean / np.linalg.norm(mean), atol=1e-4)  # the GRU, not the average of frames
    # seq_len 2, test_frames evenly: of 3 frames the chunk middles 0 and 1 are used (and only they are decoded)
    assert np.allclose(one, embedder.embed_tracklet(frames[:2], "visible"), atol=1e-5)


def test_tracklet_folder_frames_are_in_natural_order(tmp_path):
    from vireid.retrieval.tracklets import tracklet_frames

    for name in ("f10.png", "f2.png", "f1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in tracklet_frames(tmp_path)] == ["f1.png", "f2.png", "f10.png"]
