"""CAJ (Ye et al., ICCV 2021): two views per visible image (the second channel-exchanged), the
enhanced squared-difference triplet, and the caj_* configs through the real loader and trainer."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import REPO, tiny_overrides
from vireid.data.transforms import (
    BatchContext,
    BatchTransform,
    DuplicateViews,
    Normalize,
    RandomChannelExchange,
    add_configured_steps,
    build_train_transform,
)
from vireid.errors import ConfigError
from vireid.modeling.losses.triplet import ADPTripletLoss, WeightedRegularizedTripletLoss

CONFIGS = REPO / "configs"


def _batch():
    images = torch.randint(0, 256, (4, 3, 8, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    modalities = torch.tensor([0, 0, 1, 1])  # two visible, two infrared
    labels = torch.tensor([7, 8, 7, 8])
    joints = torch.arange(4 * 2 * 3, dtype=torch.float32).view(4, 2, 3)
    return images, modalities, labels, joints


def test_duplicate_views_appends_a_copy_of_each_visible_row_with_its_side_information():
    images, modalities, labels, joints = _batch()
    context = BatchContext(labels=labels, extras={"joints": joints})
    out = BatchTransform([DuplicateViews()])(images, modalities, torch.Generator().manual_seed(1), context=context)
    assert out.shape[0] == 6 and torch.equal(out[:4], images) and torch.equal(out[4:], images[:2])
    assert context.rows.tolist() == [0, 1, 2, 3, 0, 1] and context.views.tolist() == [0, 0, 0, 0, 1, 1]
    assert context.labels.tolist() == [7, 8, 7, 8, 7, 8] and context.modalities.tolist() == [0, 0, 1, 1, 0, 0]
    assert torch.equal(context.extras["joints"][4:], joints[:2])
    two = BatchTransform([DuplicateViews(modalities=["visible", "infrared"], copies=2)])
    context = BatchContext(labels=labels)
    assert two(images, modalities, torch.Generator(), context=context).shape[0] == 12
    assert context.views.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ConfigError, match="copies"):
        DuplicateViews(copies=0)


def test_view_restricted_channel_exchange_changes_only_the_copies():
    images, modalities, labels, _ = _batch()
    exchange = RandomChannelExchange(p=1.0, views=[1])
    transform = BatchTransform([DuplicateViews(), Normalize(), exchange])
    out = transform(images, modalities, torch.Generator().manual_seed(3), context=BatchContext(labels=labels))
    plain = BatchTransform([Normalize()])(images, modalities)
    assert torch.equal(out[:4], plain)  # the sampled images (and the infrared ones) untouched
    for row, source in ((4, 0), (5, 1)):  # each copy: one of the source's normalised channels, three times
        channel = int(exchange.last_choice[row])
        assert 0 <= channel <= 2 and all(torch.equal(out[row, c], plain[source, channel]) for c in range(3))
    assert exchange.last_choice[:4].tolist() == [-1] * 4
    with pytest.raises(ConfigError, match="views"):
        RandomChannelExchange(views=1)


def test_caj_steps_from_config_give_independent_geometry_per_view():
    transform = add_configured_steps(build_train_transform(8, 4, pad=2, random_erasing=0.0), [
        {"type": "duplicate_views", "before": "pad_crop_flip"},
        {"type": "channel_exchange", "p": 1.0, "views": [1]},
    ])
    assert transform.names()[:2] == ["duplicate_views", "pad_crop_flip"]
    images, modalities, labels, _ = _batch()
    crop = transform.steps[1]
    transform(images, modalities, torch.Generator().manual_seed(5), context=BatchContext(labels=labels))
    assert crop.last_offsets.shape[0] == 6  # the copies drew crops of their own


def _wrt_by_hand(x, labels, alpha, gamma, squared):
    n = x.shape[0]
    d = torch.cdist(x, x)
    losses = []
    for i in range(n):
        pos = [j for j in range(n) if labels[j] == labels[i]]
        neg = [j for j in range(n) if labels[j] != labels[i]]
        wp = torch.softmax(alpha * d[i, pos], 0)
        wn = torch.softmax(-alpha * d[i, neg], 0)
        gap = float((wp * d[i, pos]).sum() - (wn * d[i, neg]).sum())
        if squared:
            sign = 1.0 if gap > 0 else -1.0
            losses.append(math.log1p(math.exp(sign * min(gamma * gap * gap, 88.0))))
        else:
            losses.append(math.log1p(math.exp(gamma * gap)))
    return sum(losses) / n


def test_adp_triplet_matches_the_squared_difference_by_hand_and_wrt_is_its_special_case():
    x = torch.tensor([[0.0, 0.0], [3.0, 0.1], [0.2, 0.1], [0.9, 2.0], [2.5, 0.0], [0.0, 1.5]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for alpha, gamma in ((1.0, 1.0), (2.0, 0.5)):
        loss = ADPTripletLoss(alpha=alpha, gamma=gamma)(x, labels)
        assert float(loss.detach()) == pytest.approx(_wrt_by_hand(x.detach(), labels, alpha, gamma, True), rel=1e-4)
        plain = ADPTripletLoss(alpha=alpha, gamma=gamma, squared=False)(x, labels)
        assert float(plain.detach()) == pytest.approx(_wrt_by_hand(x.detach(), labels, alpha, gamma, False), rel=1e-4)
    assert float(WeightedRegularizedTripletLoss()(x, labels).detach()) == pytest.approx(
        float(ADPTripletLoss(squared=False)(x, labels).detach()), rel=1e-6)
    ADPTripletLoss()(x, labels).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="alpha"):
        ADPTripletLoss(alpha=0)


def test_caj_synth_trains_with_two_visible_views(tmp_path, tiny_synth_root):
    from vireid.workflows.train_run import run_training
    from vireid.config import load_config
    from vireid.data.build import build_train_data

    cfg = load_config(CONFIGS / "caj_synth.yaml", tiny_overrides(tiny_synth_root, tmp_path) + ["train.epochs=1"])
    data = build_train_data(cfg, progress=False)
    batch = next(iter(data.train_loader))
    per_modality = cfg.sampler.num_ids * cfg.sampler.num_per_modality
    assert batch.images.shape[0] == 3 * per_modality  # 2 views x visible + infrared
    assert int((batch.modalities == 0).sum()) == 2 * per_modality
    copies = batch.indices[2 * per_modality:]  # the appended views point at their source images
    assert torch.equal(copies, batch.indices[:per_modality][batch.modalities[:per_modality] == 0])
    assert torch.equal(batch.labels, data.train_loader.labels[batch.indices].to(batch.labels.device))
    summary = run_training(cfg, tmp_path / "run")
    assert summary["test"] and all(math.isfinite(r["mean"]["mAP"]) for r in summary["test"])
    assert '"adp"' in (tmp_path / "run" / "metrics.jsonl").read_text()
