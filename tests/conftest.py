"""Shared fixtures: one tiny synthetic dataset per test session, tiny training configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import vireid.builtins  # noqa: E402,F401  (the registries; tests use them directly, as Python code does after this import)

REPO = Path(__file__).resolve().parent.parent


#: Side files of a synth output that later features added (and the metadata that lists them): the pinned
#: digests of the default outputs (images, joints, split files) leave them out.
SYNTH_SIDE_FILES = ("attributes.csv", "synth_meta.json")
SYNTH_SIDE_FOLDERS = ("Text/",)


def synth_bytes_digest(root: Path) -> str:
    """sha256 over the relative path and bytes of every file of a synth output but its side files."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and path.name not in SYNTH_SIDE_FILES and not rel.startswith(SYNTH_SIDE_FOLDERS):
            digest.update(rel.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _shared_data() -> Path:
    """The real sample images and official split files: ``VIREID_SHARED_DATA``, else ``shared/data``
    beside the checkout, else the copy kept in ``tests/data/shared`` (so a lone clone tests the same)."""
    if "VIREID_SHARED_DATA" in os.environ:
        return Path(os.environ["VIREID_SHARED_DATA"])
    beside = REPO.parent / "shared" / "data"
    return beside if beside.is_dir() else REPO / "tests" / "data" / "shared"


SHARED_DATA = _shared_data()
REAL_MINI = SHARED_DATA / "real-mini" / "sysu-mm01-figure"


@pytest.fixture(scope="session")
def tiny_synth_root(tmp_path_factory) -> Path:
    """A small synthetic SYSU-MM01-layout dataset (24 ids, 3 images per camera, 64x32)."""
    from vireid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate_dataset(root, ids=24, format="sysu-mm01", images_per_camera=3, height=64, width=32, seed=0,
                     workers=1, progress=False)
    return root


# --- BEGIN h17vdata: tiny synthetic video (tracklet) data
#: 8 ids x 2 modalities x 2 cameras x 2 tracklets x 8 frames at 64x32 (512 frames, about a second to make)
TINY_VCM = dict(ids=8, format="hitsz-vcm", images_per_camera=2, frames_per_tracklet=8, height=64, width=32, seed=0)
#: the same dataset as config overrides (data.format synthetic-vcm)
TINY_VCM_OVERRIDES = {"data.format": "synthetic-vcm", "data.synth.ids": 8, "data.synth.images_per_camera": 2,
                      "data.synth.frames_per_tracklet": 8, "data.synth.height": 64, "data.synth.width": 32,
                      "data.synth.seed": 0}


@pytest.fixture(scope="session")
def tiny_vcm_root(tmp_path_factory) -> Path:
    """A tiny synthetic HITSZ-VCM-layout dataset of walks (:data:`TINY_VCM`)."""
    from vireid.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("vcm") / "tiny"
    generate_dataset(root, workers=1, progress=False, **TINY_VCM)
    return root
# --- END h17vdata


def _tiny_threads() -> int:
    """torch threads of a tiny run: ``OMP_NUM_THREADS`` where the runner set it (on a shared machine the
    suite runs with 1, and a run forced to 2 threads there waits on busy cores: steps take ~30x longer),
    else 2 as before."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        return 2


def tiny_overrides(root: Path, out: Path, **extra) -> list[str]:
    """Overrides that turn baseline_synth into a seconds-long CPU run on ``root``."""
    values = {
        "name": "tiny",
        "output_dir": str(out),
        "data.root": str(root),
        "data.synth.ids": 24,
        "data.synth.images_per_camera": 3,
        "data.synth.height": 64,
        "data.synth.width": 32,
        "data.height": 64,
        "data.width": 32,
        "data.workers": 1,
        "model.params.backbone": "resnet10t",
        "sampler.num_ids": 4,
        "sampler.num_per_modality": 2,
        "sampler.epoch_length": 6,
        "train.epochs": 2,
        "train.progress": False,
        "train.threads": _tiny_threads(),
        "eval.trials": 2,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def copy_run(src: Path, dst: Path) -> Path:
    """A fresh run folder: checkpoints linked (large), small files copied, no results."""
    import shutil

    dst.mkdir()
    for path in src.iterdir():
        if path.suffix == ".pt":
            (dst / path.name).symlink_to(path)
        elif path.name in ("config.yaml", "metrics.jsonl", "train_summary.json", "curves.png"):
            shutil.copy(path, dst / path.name)
    return dst


@pytest.fixture(scope="session")
def tiny_trained_run(tiny_synth_root, tmp_path_factory) -> Path:
    """A 1-epoch run folder of the demo recipe on ``tiny_synth_root`` (checkpoints, metrics.jsonl,
    train_summary.json), not evaluated; tests that add results work on a :func:`copy_run` of it."""
    from vireid.workflows.train_run import run_training
    from vireid.config import load_config

    out = tmp_path_factory.mktemp("tiny-run")
    cfg = load_config(REPO / "configs" / "baseline_synth.yaml",
                      tiny_overrides(tiny_synth_root, out, **{"train.epochs": 1, "train.threads": 1}))
    folder = out / "run"
    run_training(cfg, folder, evaluate=False)
    return folder


def _register_tiny_cnn() -> None:
    """``test_tiny_cnn``: a two-convolution model with the trainer's interface (dict of ``logits`` /
    ``features`` in training mode, the embedding in evaluation mode). It is cheap in bf16 on CPUs
    without bf16 units too, where a ResNet step takes seconds; it records the dtype its convolutions
    computed in (``seen_dtypes``), so a test can tell autocast actually ran."""
    import torch
    from torch import nn

    from vireid.modeling import METHODS

    if "test_tiny_cnn" in METHODS.names():
        return

    @METHODS.register("test_tiny_cnn")
    class TinyCNN(nn.Module):
        def __init__(self, num_classes: int, width: int = 8) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            )
            self.modality = nn.Embedding(2, 2 * width)
            self.neck = nn.BatchNorm1d(2 * width)
            self.classifier = nn.Linear(2 * width, num_classes, bias=False)
            self.embed_dim = 2 * width
            self.seen_dtypes: set = set()
            self.seen_channels_last = False

        def forward(self, images, modalities, **extras):
            maps = self.body(images)
            self.seen_dtypes.add(maps.dtype)
            self.seen_channels_last = maps.is_contiguous(memory_format=torch.channels_last)
            features = maps.float().mean(dim=(2, 3)) + self.modality(modalities)
            bn = self.neck(features)
            if not self.training:
                return bn
            return {"features": features, "bn_features": bn, "logits": self.classifier(bn)}


def tiny_cnn(cfg):
    """``cfg`` (from :func:`tiny_overrides`) with its model replaced by ``test_tiny_cnn``."""
    _register_tiny_cnn()
    cfg.model.method = "test_tiny_cnn"
    cfg.model.params = {}
    return cfg


#: The tiny ViT of the transformer tests: 2 blocks, 32-d, 8x8 patches (seconds to build and run).
TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_vit(**params):
    """A seeded tiny TransReID-style ViT (``vit`` method, 64x32, stride 4, 6 classes) in training mode;
    ``params`` replace the method's arguments."""
    import torch

    from vireid.modeling import build_method

    values = {"num_classes": 6, "backbone": "vit_tiny_patch16_224", "vit_kwargs": TINY_VIT, "img_size": (64, 32),
              "stride": 4, "drop_path_rate": 0.0}
    values.update(params)
    torch.manual_seed(0)
    return build_method("vit", **values)
