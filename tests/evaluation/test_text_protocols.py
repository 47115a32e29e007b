"""The text protocols against a plain loop reference, and the text-assisted twins against their base protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vireid.builtins  # noqa: F401
from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.evaluation.protocols import PROTOCOLS, ProtocolError, run_protocol
from vireid.workflows.evaluate_model import protocols_for


def _pool(num_ids: int = 5, per_cam: int = 2) -> list[ImageRecord]:
    pool = []
    for pid in range(1, num_ids + 1):
        for cam in range(1, 7):
            modality = INFRARED if cam in (3, 6) else VISIBLE
            for k in range(per_cam):
                pool.append(ImageRecord(f"cam{cam}/{pid:04d}/{k:04d}.jpg", pid, cam, modality))
    return pool


def _loop_reference(text: np.ndarray, image: np.ndarray, pool: list[ImageRecord], modality: str) -> dict:
    """Per description: cosine distances to every image of ``modality``, same identity + same camera ignored."""
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    text, image = unit(text.astype(np.float64)), unit(image.astype(np.float64))
    gallery = [j for j, r in enumerate(pool) if r.modality == modality]
    r1, aps, inps = [], [], []
    for i, q in enumerate(pool):
        kept = [j for j in gallery if not (pool[j].orig_pid == q.orig_pid and pool[j].camid == q.camid)]
        dist = [1.0 - float(text[i] @ image[j]) for j in kept]
        order = [kept[k] for k in sorted(range(len(kept)), key=lambda k: (dist[k], k))]
        good = [pool[j].orig_pid == q.orig_pid for j in order]
        if not any(good):
            continue
        hits = np.flatnonzero(good)
        r1.append(float(good[0]))
        aps.append(np.mean([(n + 1) / (pos + 1) for n, pos in enumerate(hits)]))
        inps.append(len(hits) / (hits[-1] + 1))
    return {"rank1": 100 * np.mean(r1), "mAP": 100 * np.mean(aps), "mINP": 100 * np.mean(inps)}


@pytest.mark.parametrize("modality", [VISIBLE, INFRARED])
def test_text_to_image_matches_a_loop_reference(modality):
    pool = _pool()
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([r.orig_pid for r in pool])
    centres = torch.randn(6, 16, generator=gen)
    image = centres[ids] + 1.2 * torch.randn(len(pool), 16, generator=gen)
    text = centres[ids] + 1.2 * torch.randn(len(pool), 16, generator=gen)
    result = run_protocol(f"text-to-{modality}", torch.cat([image, text], dim=1), pool, metric="cosine")
    expected = _loop_reference(text.numpy(), image.numpy(), pool, modality)
    for key in ("rank1", "mAP", "mINP"):
        assert result.mean[key] == pytest.approx(expected[key], abs=1e-6), key
    assert result.settings["query"] == "description" and result.trials[0]["num_query"] == len(pool)
    assert 0 < result.mean["rank1"] < 100  # a real ranking, not a degenerate one


def test_text_assisted_is_the_base_protocol_with_fused_queries_and_reports_image_only():
    pool = _pool(per_cam=3)
    gen = torch.Generator().manual_seed(1)
    ids = torch.tensor([r.orig_pid for r in pool])
    image = torch.randn(7, 8, generator=gen)[ids] + torch.randn(len(pool), 8, generator=gen)
    fused = image + 0.3 * torch.randn(len(pool), 8, generator=gen)
    result = run_protocol("sysu-all-single+text", torch.cat([image, fused], dim=1), pool, trials=3)
    base_fused = run_protocol("sysu-all-single", (fused, image), pool, trials=3)
    base_image = run_protocol("sysu-all-single", image, pool, trials=3)
    assert result.mean == base_fused.mean
    assert result.settings["image_only"] == {k: base_image.mean[k] for k in result.settings["image_only"]}
    assert result.settings["query"] == "image+description"


def test_text_protocols_refuse_image_only_features_and_fit_every_dataset():
    pool = _pool()
    with pytest.raises(ProtocolError, match="needs a text method's features .* data.extras.tokens"):
        run_protocol("text-to-visible", torch.randn(len(pool), 5), pool)

    class Regdb:
        protocol_family = "regdb"

    assert protocols_for(Regdb(), ["text-to-infrared", "regdb-v2t+text"]) == ["text-to-infrared", "regdb-v2t+text"]
    assert {"text-to-visible", "text-to-infrared", "llcm-i2v+text"} <= set(PROTOCOLS.names())
