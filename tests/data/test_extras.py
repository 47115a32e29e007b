"""Named side inputs (vireid.data.extras): the registry, the geometry of each kind under the batch steps,
and a kind no data or engine file knows passing through the loaders and feature extraction."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vireid.data.extras import (
    EXTRAS,
    ExtraKind,
    JointsExtra,
    PixelMapExtra,
    check_configured_extras,
    configured_extras,
    load_extras,
    mirror_extras,
    resize_extras,
    retarget_extras,
)
from vireid.data.transforms import BatchContext, BatchTransform, DuplicateViews, RandomPadCropFlip
from vireid.errors import ConfigError


class _Mask(PixelMapExtra):
    """A test mask kind: the pixels of the image's first channel that are lit."""


class _Frame(ExtraKind):
    """A test frame-index kind read from the record's path."""

    def __init__(self, source=None, offset: int = 0) -> None:
        super().__init__(source)
        self.offset = offset

    def load(self, records, data_cfg):
        return torch.tensor([int(r.path.split("/")[-1].split(".")[0]) + self.offset for r in records])


@pytest.fixture
def kinds(monkeypatch):
    """``test_mask`` and ``test_frame`` registered for one test only."""
    monkeypatch.setitem(EXTRAS._items, "test_mask", _Mask)
    monkeypatch.setitem(EXTRAS._items, "test_frame", _Frame)


def _marked_batch(batch: int, height: int, width: int, seed: int = 0):
    """uint8 images with one lit 2x1 mark each, its mask, and a joint on the mark's upper pixel."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randint(2, width - 2, (batch,), generator=gen)
    ys = torch.randint(2, height - 3, (batch,), generator=gen)
    images = torch.zeros(batch, 3, height, width, dtype=torch.uint8)
    images[torch.arange(batch), 0, ys, xs] = 255
    images[torch.arange(batch), 0, ys + 1, xs] = 255
    mask = images[:, 0] > 0
    joints = torch.zeros(batch, 1, 3)
    joints[:, 0, 0], joints[:, 0, 1], joints[:, 0, 2] = xs.float(), ys.float(), 1.0
    return images, mask, joints


def test_crop_and_flip_move_each_kind_as_it_says(kinds):
    """One context carries a mask, joints and a geometry-free value: after pad + crop + mirror the mask
    is exactly the moved image's mark, the joint sits on it (or left the image with it), the frame index
    is untouched."""
    batch, height, width = 24, 20, 12
    images, mask, joints = _marked_batch(batch, height, width)
    frames = torch.arange(batch) * 7
    step = RandomPadCropFlip(pad=3, flip=0.5)
    context = BatchContext(extras={"test_mask": mask.clone(), "joints": joints.clone(), "test_frame": frames.clone()})
    out = step(images, None, torch.Generator().manual_seed(4), context=context)
    assert step.last_flipped.any() and (~step.last_flipped).any() and (step.last_offsets != 3).any()
    moved_mask, moved_joints = context.extras["test_mask"], context.extras["joints"]
    assert moved_mask.dtype == torch.bool and torch.equal(moved_mask, out[:, 0] > 0)
    assert torch.equal(context.extras["test_frame"], frames)
    for b in range(batch):
        if moved_joints[b, 0, 2] > 0:
            x, y = int(moved_joints[b, 0, 0]), int(moved_joints[b, 0, 1])
            assert moved_mask[b, y, x]
        else:
            assert not moved_mask[b].any()  # the joint left the image with the whole mark


def test_mirror_swaps_left_and_right_joints_and_mirrors_masks():
    joints = torch.zeros(1, 16, 3)
    joints[0, :, 0] = torch.arange(16).float()
    joints[0, :, 2] = 1
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, 1, 0] = True
    out = mirror_extras({"joints": joints, "mask": mask}, width=40, height=40)
    assert out["joints"][0, 10, 0] == 39 - 15 and out["joints"][0, 15, 0] == 39 - 10  # wrists swap sides
    assert torch.equal(out["mask"], mask)  # "mask" is not registered: no geometry
    mirrored = PixelMapExtra.shift_flip(mask, torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, dtype=torch.bool), 6, 4)
    assert mirrored[0, 1, 5] and mirrored.sum() == 1


def test_resize_scales_joints_and_resamples_masks():
    joints = torch.tensor([[[0.0, 0.0, 1.0], [31.0, 63.0, 1.0]]])
    scaled = resize_extras({"joints": joints}, (64, 32), (128, 64))["joints"]
    assert torch.allclose(scaled[0, :, :2], torch.tensor([[0.5, 0.5], [62.5, 126.5]]))  # pixel centres
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    mask[0, 0, 1] = True
    big = PixelMapExtra.resize(mask, (2, 2), (4, 4))
    assert big.dtype == torch.bool and big[0, :2, 2:].all() and big.sum() == 4


def test_duplicate_views_repeat_every_extra_with_its_row():
    images = torch.zeros(4, 3, 8, 4, dtype=torch.uint8)
    frames = torch.tensor([10, 11, 12, 13])
    context = BatchContext(labels=torch.tensor([1, 2, 1, 2]), extras={"frame": frames})
    out = BatchTransform([DuplicateViews()])(images, torch.tensor([0, 0, 1, 1]), torch.Generator(), context=context)
    assert out.shape[0] == 6 and context.extras["frame"].tolist() == [10, 11, 12, 13, 10, 11]


def test_an_unregistered_kind_passes_through_loaders_and_feature_extraction(tiny_synth_root):
    from vireid.data.cache import ImageCache
    from vireid.data.loader import EvalLoader, TrainLoader
    from vireid.data.transforms import build_train_transform
    from vireid.inference.extract import extract_features

    paths = [str(p) for p in sorted(tiny_synth_root.rglob("*.jpg"))[:8]]
    cache = ImageCache.build(paths, 16, 8)
    frame = torch.arange(8) * 3 + 1  # a side input named nowhere in vireid
    loader = TrainLoader(cache, np.zeros(8), np.zeros(8), [[5, 2, 7]], build_train_transform(16, 8),
                         extras={"frame": frame})
    batch = next(iter(loader))
    assert batch.extras["frame"].tolist() == [16, 7, 22]
    _, _, extras = next(iter(EvalLoader(cache, batch_size=3, extras={"frame": frame})))
    assert extras["frame"].tolist() == [1, 4, 7]
    with pytest.raises(ConfigError, match="side input 'frame'.*one row per image"):
        EvalLoader(cache, extras={"frame": frame[:5]})

    class FrameEcho(nn.Module):
        def forward(self, images, modalities, frame=None):
            return torch.stack([frame.float(), images.mean(dim=(1, 2, 3))], dim=1)

    feats = extract_features(FrameEcho(), cache, np.zeros(8), batch_size=3, extras={"frame": frame}, flip=True)
    assert torch.equal(feats[:, 0], frame.float())  # every row got its own value, mirrored or not


def test_configured_extras_are_loaded_checked_and_given_to_methods_that_read_them(kinds):
    records = [SimpleNamespace(path=f"cam1/0001/{k:04d}.jpg") for k in (3, 1, 2)]
    cfg = SimpleNamespace(joints=None, extras={"test_frame": {"offset": 100}}, height=8, width=4)
    assert configured_extras(cfg) == {"test_frame": {"offset": 100}}
    assert load_extras(records, cfg)["test_frame"].tolist() == [103, 101, 102]
    assert configured_extras(SimpleNamespace(joints="synthetic", extras={})) == {"joints": "synthetic"}
    with pytest.raises(ConfigError, match=r"'data.extras.depth' names no registered side input"):
        load_extras(records, SimpleNamespace(joints=None, extras={"depth": "x"}))
    with pytest.raises(ConfigError, match=r"'data.extras.test_frame' has parameters .* it takes: source, offset"):
        load_extras(records, SimpleNamespace(joints=None, extras={"test_frame": {"shift": 1}}))

    from vireid.modeling.methods.baseline import BaselineReID
    from vireid.modeling.methods.pdfenet import PDFENet

    check_configured_extras(SimpleNamespace(joints="synthetic", extras={}), PDFENet, "pdfenet")
    with pytest.raises(ConfigError, match=r"'data.joints' gives baseline the side input 'joints', which it does not read"):
        check_configured_extras(SimpleNamespace(joints="synthetic", extras={}), BaselineReID, "baseline")
    moved = SimpleNamespace(joints="/data/a.pose.npz", extras={"test_frame": {"offset": 1}})
    retarget_extras(moved)
    assert moved.joints == "auto" and moved.extras == {"test_frame": {"offset": 1}}


def test_joints_kind_checks_its_shape():
    with pytest.raises(ConfigError, match=r"joints of shape \(3, 16\).*\[N, J, 3\]"):
        JointsExtra.check("joints", torch.zeros(3, 16), 3)
