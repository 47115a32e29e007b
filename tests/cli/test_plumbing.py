"""Batch context (labels, joints through geometric augmentation), configured extra steps, the
``<key>_labels`` loss-target override and the file-level Embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vireid.data.transforms import (
    TRANSFORM_STEPS,
    BatchContext,
    RandomPadCropFlip,
    add_configured_steps,
    build_train_transform,
    move_joints,
)
from vireid.errors import ConfigError


def _marked_images(batch: int, height: int, width: int, points: torch.Tensor) -> torch.Tensor:
    """Black images with one white pixel per sample at ``points`` [B, 2] (x, y)."""
    images = torch.zeros(batch, 3, height, width, dtype=torch.uint8)
    for b in range(batch):
        images[b, :, int(points[b, 1]), int(points[b, 0])] = 255
    return images


def test_joints_follow_pad_crop_flip():
    """The joint marks the same pixel before and after the step, for crops and mirrors."""
    batch, height, width = 16, 20, 12
    gen = torch.Generator().manual_seed(0)
    xs = torch.randint(3, width - 3, (batch,))
    ys = torch.randint(3, height - 3, (batch,))
    images = _marked_images(batch, height, width, torch.stack([xs, ys], 1))
    joints = torch.zeros(batch, 1, 3)
    joints[:, 0, 0], joints[:, 0, 1], joints[:, 0, 2] = xs.float(), ys.float(), 1.0
    step = RandomPadCropFlip(pad=2, flip=0.5)
    context = BatchContext(extras={"joints": joints})
    out = step(images, None, gen, context=context)
    moved = context.extras["joints"]
    assert step.last_flipped.any() and (~step.last_flipped).any()
    for b in range(batch):
        if moved[b, 0, 2] > 0:
            assert out[b, 0, int(moved[b, 0, 1]), int(moved[b, 0, 0])] == 255
        else:
            assert out[b].max() == 0  # the mark was cropped away together with the joint


def test_mpii_left_right_swap_on_mirror():
    joints = torch.zeros(2, 16, 3)
    joints[:, :, 0] = torch.arange(16).float()  # x encodes the joint index
    joints[:, :, 2] = 1
    out = move_joints(joints, torch.zeros(2, 2), torch.tensor([True, False]), width=40, height=40)
    assert torch.equal(out[1], joints[1])
    # mirrored: right wrist (10) now holds the mirrored left wrist (15) position
    assert out[0, 10, 0] == 39 - 15 and out[0, 15, 0] == 39 - 10 and out[0, 7, 0] == 39 - 7


def test_configured_steps_inserted_and_checked():
    @TRANSFORM_STEPS.register("test_label_probe")
    class LabelProbe:
        name = "test_label_probe"
        uses_context = True

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale
            self.seen = None

        def __call__(self, images, modalities, generator, context=None):
            self.seen = context.labels
            return images

    transform = build_train_transform(8, 4, random_erasing=0.0)
    add_configured_steps(transform, [{"type": "test_label_probe", "after": "normalize", "scale": 2.0}])
    assert transform.names() == ["pad_crop_flip", "normalize", "test_label_probe"]
    labels = torch.tensor([3, 4])
    transform(torch.zeros(2, 3, 8, 4, dtype=torch.uint8), None, torch.Generator().manual_seed(0),
              context=BatchContext(labels=labels))
    assert torch.equal(transform.steps[-1].seen, labels)
    with pytest.raises(ConfigError, match="augment.steps\\[0\\].colour"):
        add_configured_steps(transform, [{"type": "test_label_probe", "colour": 1}])
    with pytest.raises(ConfigError, match="type"):
        add_configured_steps(transform, [{"after": "normalize"}])


def test_loader_passes_joints_as_extras(tiny_synth_root):
    from vireid.data.cache import ImageCache
    from vireid.data.loader import EvalLoader, TrainLoader

    cache = ImageCache.build([str(p) for p in sorted(tiny_synth_root.rglob("*.jpg"))[:8]], 16, 8)
    joints = torch.rand(8, 16, 3) * 6
    joints[..., 2] = 1
    batches = [[0, 1, 2, 3]]
    loader = TrainLoader(cache, np.zeros(8), np.zeros(8), batches, build_train_transform(16, 8, pad=0, flip=0.0,
                         random_erasing=0.0), extras={"joints": joints})
    batch = next(iter(loader))
    assert torch.allclose(batch.extras["joints"], joints[:4])
    images, indices, extras = next(iter(EvalLoader(cache, batch_size=5, extras={"joints": joints})))
    assert torch.equal(extras["joints"], joints[:5])
    with pytest.raises(ConfigError, match="joints"):
        EvalLoader(cache, extras={"joints": torch.zeros(3, 16, 3)})


def test_embedder_matches_model_and_normalises(tmp_path, tiny_synth_root):
    from vireid.inference.embedder import modality_codes
    from vireid.inference.loading import load_embedder
    from vireid.engine.trainer import build_model
    from vireid.config import load_config
    from vireid.data.images import decode_image
    from vireid.engine.checkpoint import atomic_torch_save
    from dataclasses import asdict

    cfg = load_config("configs/baseline_synth.yaml", ["model.params.backbone=resnet10t", "data.height=32", "data.width=16"])
    model = build_model(cfg, 5).eval()
    ckpt = {"model": model.state_dict(), "config": asdict(cfg), "num_classes": 5,
            "verification": {"metric": "cosine", "threshold": 0.5}}
    atomic_torch_save(ckpt, tmp_path / "best.pt")
    embedder = load_embedder(tmp_path, amp="none")  # compared with the fp32 model below (bf16: tests/engine/test_precision.py)
    assert embedder.input_size == (32, 16) and embedder.verification["threshold"] == 0.5
    paths = sorted(tiny_synth_root.rglob("*.jpg"))[:3]
    feats = embedder.embed_paths(paths, ["visible", "infrared", 0])
    assert feats.shape == (3, embedder.dim) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    pixels = torch.as_tensor(np.stack([decode_image(p, (32, 16)).transpose(2, 0, 1) for p in paths]))
    with torch.no_grad():
        ref = model(embedder.preprocess(pixels), torch.as_tensor(modality_codes(["visible", "infrared", 0], 3)))
    assert np.allclose(feats, torch.nn.functional.normalize(ref, dim=1).numpy(), atol=1e-5)
    same = embedder.embed_arrays([decode_image(paths[0])], "visible")
    assert np.allclose(same, feats[:1], atol=1e-5)
    with pytest.raises(ConfigError, match="modality"):
        modality_codes(["ultraviolet"], 1)
    with pytest.raises(ConfigError, match="does not exist"):
        load_embedder(tmp_path / "missing.pt")
