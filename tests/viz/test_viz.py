"""Pictures of a run (vireid.viz and ``vireid visualize``): ranked lists, CMC, Grad-CAM, t-SNE, curves.

One tiny run (24 synthetic identities, 64x32 images, ResNet-10-T, 1 epoch) is trained once for the
module; each picture must come out with its documented pixel size and real content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vireid.cli.commands  # noqa: F401  (registers every command)
from conftest import copy_run
from vireid.cli import app
from vireid.errors import VireidError
from vireid.viz._common import GREEN, RED

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tiny_trained_run, tmp_path_factory) -> Path:
    """A 1-epoch run folder with checkpoints, metrics.jsonl and test_results.json."""
    from vireid.workflows.train_run import evaluate_checkpoint

    folder = copy_run(tiny_trained_run, tmp_path_factory.mktemp("viz") / "run")
    evaluate_checkpoint(folder, progress=False, quiet=True)
    return folder


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from vireid.viz.data import load_run

    return load_run(tiny_run, device="cpu")


def _image(path_or_bytes) -> np.ndarray:
    with Image.open(path_or_bytes) as img:
        return np.asarray(img.convert("RGB"))


def _assert_picture(path: Path, size: tuple[int, int]) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.size == size, (img.size, size)
    pixels = _image(path)
    assert pixels.std() > 5, "the picture is (almost) a single colour"
    return pixels


# ------------------------------------------------------------------------------------ ranked lists
def test_top_k_matches_a_sorted_reference_and_respects_exclusions():
    from vireid.viz.ranking import top_k

    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(7, 30, generator=gen)
    excluded = torch.rand(7, 30, generator=gen) < 0.3
    values, indices = top_k(scores, 5, excluded)
    ref = np.where(excluded.numpy(), -np.inf, scores.numpy())
    ref_idx = np.argsort(-ref, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(indices.numpy(), ref_idx)
    np.testing.assert_allclose(values.numpy(), np.take_along_axis(ref, ref_idx, 1))
    assert not excluded.gather(1, indices).any()
    d_values, d_idx = top_k(1 - scores, 3, largest=False)  # distances: smallest first
    np.testing.assert_array_equal(d_idx.numpy(), torch.topk(scores, 3).indices.numpy())
    assert top_k(scores, 99)[1].shape == (7, 30)  # k larger than the gallery


def test_ranked_list_frames_follow_correctness(tmp_path):
    from vireid.viz.ranking import FRAME, PAD, SEPARATOR, TEXT_HEIGHT, plot_ranked_lists, ranked_list_size

    rng = np.random.default_rng(0)
    queries = [rng.integers(0, 255, (40, 20, 3), dtype=np.uint8) for _ in range(2)]
    gallery = [rng.integers(0, 255, (40, 20, 3), dtype=np.uint8) for _ in range(6)]
    scores = np.array([[0.9, 0.1, 0.8, 0.2, 0.3, 0.4], [0.1, 0.9, 0.2, 0.8, 0.7, 0.0]])
    q_ids, g_ids = np.array([1, 2]), np.array([1, 2, 3, 2, 1, 2])
    thumb = (40, 20)
    out = tmp_path / "ranked.png"
    plot_ranked_lists(queries, gallery, scores, k=4, query_ids=q_ids, gallery_ids=g_ids, thumb=thumb, out=out)
    pixels = _assert_picture(out, ranked_list_size(2, 4, thumb))
    cell_h, cell_w = thumb[0] + 2 * FRAME, thumb[1] + 2 * FRAME
    # expected order: row 0 -> g0 (id 1), g2 (3), g5 (2), g4 (1); row 1 -> g1 (2), g3 (2), g4 (1), g2 (3)
    expected = [[True, False, False, True], [True, True, False, False]]
    for row in range(2):
        y = PAD + row * (TEXT_HEIGHT + cell_h + PAD) + TEXT_HEIGHT + 1  # inside the top frame line
        for rank in range(4):
            x = PAD + cell_w + SEPARATOR + rank * (cell_w + PAD) + cell_w // 2
            assert tuple(pixels[y, x]) == (GREEN if expected[row][rank] else RED), (row, rank)


def test_ranked_lists_for_run_and_cli(tiny_run, loaded, tmp_path):
    from vireid.viz.ranking import ranked_list_size, ranked_lists_for_run

    out = tmp_path / "ranked.png"
    ranked_lists_for_run(loaded, out, num_queries=3, k=5, seed=1)
    _assert_picture(out, ranked_list_size(3, 5))
    # every query is infrared, every shown gallery image visible (i2v), and the SYSU camera rule holds
    q_idx, g_idx = loaded.query_gallery("i2v")
    assert set(loaded.modalities[q_idx]) == {1} and set(loaded.modalities[g_idx]) == {0}
    mask = loaded.excluded(q_idx, g_idx)
    cams_q, cams_g = loaded.cams[q_idx], loaded.cams[g_idx]
    assert mask is None or bool((mask.numpy() == ((cams_q[:, None] == 3) & (cams_g[None, :] == 2))).all())

    cli_out = tmp_path / "cli_ranked.png"
    result = runner.invoke(app, ["visualize", "ranked", str(tiny_run), "--out", str(cli_out), "-n", "2",
                                 "--device", "cpu", "--direction", "v2i"])
    assert result.exit_code == 0, result.output
    _assert_picture(cli_out, ranked_list_size(2, 10))


# ------------------------------------------------------------------------------------ CMC
def test_cmc_of_one_and_several_runs(tiny_run, tmp_path):
    from vireid.viz.cmc import DEFAULT_SIZE, cmc_curves_from_runs, plot_cmc

    curves = cmc_curves_from_runs([tiny_run])
    assert [c.label for c in curves] == ["sysu-all-single", "sysu-indoor-single"]
    assert all(len(c.cmc) == 20 and np.all(np.diff(c.cmc) >= -1e-9) for c in curves)
    out = tmp_path / "cmc.png"
    plot_cmc(curves, out)
    _assert_picture(out, DEFAULT_SIZE)

    two = cmc_curves_from_runs([tiny_run, tiny_run], protocols=["sysu-all-single"])
    assert len(two) == 2 and all(c.label.startswith("run · ") for c in two)
    result = runner.invoke(app, ["visualize", "cmc", str(tiny_run), str(tiny_run), "-p", "sysu-all-single",
                                 "--out", str(tmp_path / "cmc2.png")])
    assert result.exit_code == 0, result.output
    _assert_picture(tmp_path / "cmc2.png", DEFAULT_SIZE)
    with pytest.raises(VireidError, match="no CMC curves"):
        cmc_curves_from_runs([tiny_run], protocols=["regdb-v2t"])
    with pytest.raises(VireidError, match="vireid eval"):
        cmc_curves_from_runs([tmp_path])


# ------------------------------------------------------------------------------------ Grad-CAM
def _manual_gradcam(model, layer, images, modalities, reference) -> np.ndarray:
    """Grad-CAM by hand (Selvaraju et al.): w_k = mean grad, ReLU(sum_k w_k A_k), resized, min-max scaled."""
    import cv2

    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(act=o))
    model.eval()
    emb = model(images, modalities)
    handle.remove()
    target = (torch.nn.functional.normalize(emb, dim=1) * torch.nn.functional.normalize(reference, dim=1)).sum()
    grads = torch.autograd.grad(target, store["act"])[0]
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * store["act"]).sum(1)).detach().numpy()
    out = []
    for c in cam:
        c = c - c.min()
        c = c / (1e-7 + c.max())
        out.append(cv2.resize(c, (images.shape[3], images.shape[2])))
    return np.stack(out)


def test_gradcam_wrapper_matches_a_manual_gradcam(loaded):
    from vireid.data.images import decode_image
    from vireid.viz.cam import SimilarityTarget, _normalised, compute_cams, target_layers

    model = loaded.model
    [layer] = target_layers(model, 0)
    assert layer is model.backbone.shared_stages[-1]  # the last feature stage of the backbone
    rows = [int(np.flatnonzero(loaded.modalities == 0)[0]), int(np.flatnonzero(loaded.modalities == 1)[0])]
    size = (loaded.cfg.data.height, loaded.cfg.data.width)
    pixels = np.stack([decode_image(loaded.records[r].path, size=size) for r in rows])
    x = _normalised(pixels)
    mods = torch.as_tensor(loaded.modalities[rows])
    with torch.no_grad():
        ref = model(x, mods).flip(0)  # each image explained by its similarity to the other one
    cams = compute_cams(model, x, mods, [SimilarityTarget(r) for r in ref])
    assert cams.shape == (2, *size) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    manual = _manual_gradcam(model, layer, x, mods, ref)
    np.testing.assert_allclose(cams, manual, atol=1e-3)  # float32 rounding (numpy vs torch reductions)


def test_cams_for_run_picture_and_cli(tiny_run, loaded, tmp_path):
    from vireid.viz.cam import cam_grid_size, cams_for_run

    out = tmp_path / "cam.png"
    cams_for_run(loaded, out, num_ids=3, seed=0)
    _assert_picture(out, cam_grid_size(6, 6))

    # arbitrary image files with the embedding-norm target
    paths = [loaded.records[int(np.flatnonzero(loaded.modalities == m)[0])].path for m in (0, 1)]
    cli_out = tmp_path / "cam_files.png"
    result = runner.invoke(app, ["visualize", "cam", str(tiny_run), "--image", paths[0], "--image", paths[1],
                                 "--modality", "visible", "--modality", "infrared", "--out", str(cli_out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    _assert_picture(cli_out, cam_grid_size(2, 2))
    bad = runner.invoke(app, ["visualize", "cam", str(tiny_run), "--image", paths[0], "--out", str(cli_out)])
    assert isinstance(bad.exception, VireidError) and "--modality" in str(bad.exception)


def test_cam_layer_choice_for_specific_parallel_and_named_layers(loaded):
    from vireid.modeling.methods.baseline import BaselineReID
    from vireid.viz.cam import compute_cams, target_layers

    x = torch.randn(4, 3, 64, 32)
    mods = torch.tensor([0, 1, 0, 1])
    model = BaselineReID(num_classes=4, backbone="resnet10t", specific_stages=5, non_local=None).eval()
    assert target_layers(model, 0) == [model.backbone.modality_branches[0][-1]]
    assert target_layers(model, 1) == [model.backbone.modality_branches[1][-1]]
    cams = compute_cams(model, x, mods, "norm")  # one grad-cam call per modality branch
    assert cams.shape == (4, 64, 32) and np.isfinite(cams).all() and cams.max() > 0

    from vireid.modeling import METHODS

    if "dfw_sln" in METHODS:  # DFW+SLN: the last stage is N parallel copies; each is explained, maps averaged
        sln = METHODS.get("dfw_sln")(num_classes=4, backbone="resnet10t", num_branches=2).eval()
        layers = target_layers(sln, 0)
        assert layers == list(sln.backbone.shared_stages[-1].branches) and len(layers) == 2
        cams = compute_cams(sln, x, mods, "norm")
        assert cams.shape == (4, 64, 32) and np.isfinite(cams).all() and cams.max() > 0

    assert target_layers(loaded.model, 0, "backbone.shared_stages.2") == [loaded.model.backbone.shared_stages[2]]
    with pytest.raises(VireidError, match="no module"):
        target_layers(loaded.model, 0, "backbone.nothing")


# ------------------------------------------------------------------------------------ t-SNE
def test_tsne_rows_and_picture(tiny_run, loaded, tmp_path):
    from vireid.viz.embedding import DEFAULT_SIZE, choose_rows, embedding_for_run, tsne_2d

    rows = choose_rows(loaded.pids, loaded.modalities, num_ids=3, per_modality=2, seed=0)
    ids = np.unique(loaded.pids[rows])
    assert len(ids) == 3
    for pid in ids:
        for m in (0, 1):
            assert ((loaded.pids[rows] == pid) & (loaded.modalities[rows] == m)).sum() == 2
    pts = tsne_2d(loaded.features[rows].numpy(), seed=0)
    assert pts.shape == (len(rows), 2) and np.isfinite(pts).all()
    np.testing.assert_allclose(pts, tsne_2d(loaded.features[rows].numpy(), seed=0))  # seeded

    out = tmp_path / "tsne.png"
    embedding_for_run(loaded, out, num_ids=4, per_modality=4)
    _assert_picture(out, DEFAULT_SIZE)
    result = runner.invoke(app, ["visualize", "tsne", str(tiny_run), "-n", "3", "--out", str(tmp_path / "t.png"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    _assert_picture(tmp_path / "t.png", DEFAULT_SIZE)


# ------------------------------------------------------------------------------------ curves
def test_training_curves_picture(tiny_run, tmp_path):
    from vireid.viz.curves import CURVES_SIZE

    result = runner.invoke(app, ["visualize", "curves", str(tiny_run), "--out", str(tmp_path / "curves.png")])
    assert result.exit_code == 0, result.output
    _assert_picture(tmp_path / "curves.png", CURVES_SIZE)
    _assert_picture(tiny_run / "curves.png", CURVES_SIZE)  # written by training
    missing = runner.invoke(app, ["visualize", "curves", str(tmp_path)])
    assert isinstance(missing.exception, VireidError) and "metrics.jsonl" in str(missing.exception)
