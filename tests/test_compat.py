"""`import vireid` makes torchvision and timm usable next to the installed torch."""

from __future__ import annotations

import numpy as np

import vireid  # noqa: F401  (must come first)
from vireid import _compat


def test_ensure_torchvision_reports_and_is_idempotent() -> None:
    first = _compat.ensure_torchvision()
    assert isinstance(first, bool)
    assert _compat.ensure_torchvision() is first  # second call changes nothing
    assert first == bool(_compat._state["patched"])
    assert _compat._state["done"] is True
    if first:  # schemas were defined because the compiled extension does not load
        assert _compat._op_defined("nms") and _compat._state["library"] is not None


def test_timm_resnet50_builds_and_runs() -> None:
    import timm
    import torch

    model = timm.create_model("resnet50", pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 32))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_torchvision_transforms_work() -> None:
    import torch
    from PIL import Image
    from torchvision import transforms

    image = Image.fromarray(np.full((40, 20, 3), 128, dtype=np.uint8))
    pipeline = transforms.Compose(
        [
            transforms.Resize((32, 16)),
            transforms.RandomHorizontalFlip(p=1.0),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )
    tensor = pipeline(image)
    assert tensor.shape == (3, 32, 16)
    assert torch.allclose(tensor, torch.full_like(tensor, (128 / 255 - 0.5) / 0.5), atol=1e-6)
