"""Corruption robustness as a library: any extractor, any pool; which side gets corrupted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_mixed_gallery import SYSU, _pool
from vireid.data.corruptions import corrupt
from vireid.evaluation import run_protocol
from vireid.evaluation.robustness import evaluate_robustness


def _embed(cache, indices):
    images = cache[np.arange(len(cache))].float()
    return torch.nn.functional.avg_pool2d(images, 4).flatten(1)


def test_each_side_is_corrupted_as_asked_and_the_report_adds_up(tmp_path):
    pool = _pool(SYSU, ids=6)
    gen = torch.Generator().manual_seed(0)
    colours = torch.randint(0, 256, (7, 3, 1, 1), generator=gen)
    images = (colours[[r.pid for r in pool]] * 0.7 + torch.randint(0, 80, (len(pool), 3, 16, 8), generator=gen))
    images = images.clamp(0, 255).to(torch.uint8)
    clean = _embed(_Cache(images), None)
    corrupted = _embed(_Cache(corrupt(images, "occlusion", 5, seed=2, ids=range(len(pool)))), None)
    expected = {
        "query": run_protocol("sysu-all-mixed", (corrupted, clean), pool, trials=2).mean,
        "gallery": run_protocol("sysu-all-mixed", (clean, corrupted), pool, trials=2).mean,
        "both": run_protocol("sysu-all-mixed", corrupted, pool, trials=2).mean,
    }
    for apply, mean in expected.items():
        report = evaluate_robustness(_embed, images, pool, "sysu-all-mixed", corruptions=["occlusion"], severities=[5],
                                     apply=apply, seed=2, protocol_options={"trials": 2})
        assert report.rows[0]["mAP"] == pytest.approx(mean["mAP"]) and report.rows[0]["rank1"] == pytest.approx(mean["rank1"])
    assert len({round(m["mAP"], 6) for m in expected.values()}) == 3  # the three sides differ
    clean_map = run_protocol("sysu-all-mixed", clean, pool, trials=2).mean["mAP"]
    summary = report.summary()
    assert summary["clean_mAP"] == pytest.approx(clean_map)
    assert summary["mAP_drop"] == pytest.approx(100 * (clean_map - report.rows[0]["mAP"]) / clean_map)
    paths = report.write(tmp_path)
    assert "| occlusion |" in paths["md"].read_text() and paths["png"].stat().st_size > 0


class _Cache:
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[torch.as_tensor(idx)]
