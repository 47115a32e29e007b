"""Corruption robustness of any feature extractor under any protocol (SYSU-MM01-C / RegDB-C style).

For every corruption of :mod:`vireid.data.corruptions` and every requested severity, the pool's
images are corrupted deterministically (seeded per image, :func:`~vireid.data.corruptions.corrupt`
with the pool index as image id), embedded again, and the protocol is run with

* ``apply="query"``: corrupted images as queries against the clean gallery,
* ``apply="gallery"``: clean queries against a corrupted gallery,
* ``apply="both"``: everything corrupted,

using the protocols' ``(query_side, gallery_side)`` feature pairs, so an image that is both a query
and a gallery item (mixed galleries) is corrupted on the requested side only. As in the re-ID
corruption benchmarks (Chen, Wang and Zheng, NeurIPS 2021 Datasets and Benchmarks), the figures
are the mean over corruptions and severities of mAP / rank-1 ("mean corruption mAP / R1") and,
per corruption, the relative drop ``(clean - corrupted) / clean`` in percent.

The extractor is a callable ``features_of(images, indices) -> [B, D]`` taking an
:class:`~vireid.data.cache.ImageCache` of uint8 images and their pool indices, so the suite serves
PyTorch models, exported models or any other embedder, on the run's own test set or any other pool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.cache import ImageCache
from vireid.data.corruptions import check_corruptions, check_severities, corrupt
from vireid.errors import ConfigError

APPLY = ("query", "gallery", "both")
_BLOCK = 512  # images corrupted and embedded at once (bounded memory on real test sets)

FeaturesOf = Callable[[ImageCache, np.ndarray], torch.Tensor]


@dataclass
class RobustnessReport:
    """Clean and corrupted figures of one protocol (percent)."""

    protocol: str
    apply: str
    seed: int
    clean: dict
    rows: list[dict] = field(default_factory=list)  # one per (corruption, severity)
    seconds: dict = field(default_factory=dict)

    def per_corruption(self) -> list[dict]:
        """Per corruption: mean mAP / rank-1 over its severities and the relative drops."""
        out = []
        for name in dict.fromkeys(r["corruption"] for r in self.rows):
            rows = [r for r in self.rows if r["corruption"] == name]
            m_ap = float(np.mean([r["mAP"] for r in rows]))
            r1 = float(np.mean([r["rank1"] for r in rows]))
            out.append({"corruption": name, "mAP": m_ap, "rank1": r1, "mAP_drop": _drop(self.clean["mAP"], m_ap),
                        "rank1_drop": _drop(self.clean["rank1"], r1)})
        return out

    def summary(self) -> dict:
        """Mean corruption mAP / R1 over every (corruption, severity) and their relative drops."""
        m_ap = float(np.mean([r["mAP"] for r in self.rows]))
        r1 = float(np.mean([r["rank1"] for r in self.rows]))
        return {"clean_mAP": self.clean["mAP"], "clean_rank1": self.clean["rank1"], "mean_corruption_mAP": m_ap,
                "mean_corruption_rank1": r1, "mAP_drop": _drop(self.clean["mAP"], m_ap),
                "rank1_drop": _drop(self.clean["rank1"], r1)}

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "apply": self.apply, "seed": self.seed, "clean": self.clean,
                "rows": self.rows, "per_corruption": self.per_corruption(), "summary": self.summary(),
                "seconds": self.seconds}

    def table(self) -> str:
        """Markdown: one row per corruption (mAP / R1 per severity, mean, relative drop), then the mean."""
        severities = sorted({r["severity"] for r in self.rows})
        head = ["corruption"] + [f"s{s} mAP / R1" for s in severities] + ["mean mAP / R1", "mAP drop %", "R1 drop %"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines.append("| clean | " + " | ".join(["-"] * len(severities))
                     + f" | {self.clean['mAP']:.2f} / {self.clean['rank1']:.2f} | - | - |")
        for pc in self.per_corruption():
            cells = []
            for s in severities:
                row = next((r for r in self.rows if r["corruption"] == pc["corruption"] and r["severity"] == s), None)
                cells.append("-" if row is None else f"{row['mAP']:.2f} / {row['rank1']:.2f}")
            lines.append(f"| {pc['corruption']} | " + " | ".join(cells)
                         + f" | {pc['mAP']:.2f} / {pc['rank1']:.2f} | {pc['mAP_drop']:.1f} | {pc['rank1_drop']:.1f} |")
        s = self.summary()
        lines.append("| **mean** | " + " | ".join(["-"] * len(severities))
                     + f" | {s['mean_corruption_mAP']:.2f} / {s['mean_corruption_rank1']:.2f} | {s['mAP_drop']:.1f}"
                     + f" | {s['rank1_drop']:.1f} |")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Two panels: mAP against severity per corruption (clean dashed), relative drop per corruption."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for pc in self.per_corruption():
            rows = sorted((r for r in self.rows if r["corruption"] == pc["corruption"]), key=lambda r: r["severity"])
            left.plot([r["severity"] for r in rows], [r["mAP"] for r in rows], marker="o", label=pc["corruption"])
        left.axhline(self.clean["mAP"], color="black", linestyle="--", label="clean")
        left.set_xlabel("severity")
        left.set_ylabel("mAP (%)")
        left.set_title(f"{self.protocol}: corrupted {self.apply}")
        left.legend(fontsize=7, ncol=2)
        per = self.per_corruption()
        right.barh([p["corruption"] for p in per], [p["mAP_drop"] for p in per], color="tab:red")
        right.set_xlabel("relative mAP drop (%)")
        right.invert_yaxis()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, folder: str | Path) -> dict[str, Path]:
        """``robustness.md``, ``robustness.json`` and ``robustness.png`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        s = self.summary()
        text = (f"# Corruption robustness: {self.protocol}, corrupted {self.apply}\n\n{self.table()}\n\n"
                f"Mean corruption mAP {s['mean_corruption_mAP']:.2f} (clean {s['clean_mAP']:.2f}, relative drop "
                f"{s['mAP_drop']:.1f} %); mean corruption R1 {s['mean_corruption_rank1']:.2f} (clean "
                f"{s['clean_rank1']:.2f}, drop {s['rank1_drop']:.1f} %). Seed {self.seed}.\n")
        paths = {"md": folder / "robustness.md", "json": folder / "robustness.json", "png": folder / "robustness.png"}
        paths["md"].write_text(text)
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2))
        self.plot(paths["png"])
        return paths


def _drop(clean: float, value: float) -> float:
    return 100.0 * (clean - value) / clean if clean > 0 else 0.0


def _features(features_of: FeaturesOf, images: ImageCache, transform=None) -> torch.Tensor:
    parts = []
    for start in range(0, len(images), _BLOCK):
        idx = np.arange(start, min(start + _BLOCK, len(images)))
        block = images[idx]
        if transform is not None:
            block = transform(block, idx)
        parts.append(features_of(ImageCache(block.numpy()), idx).float().cpu())
    return torch.cat(parts)


def evaluate_robustness(
    features_of: FeaturesOf,
    images: ImageCache | Any,
    pool: Sequence,
    protocol: str,
    *,
    corruptions: Sequence[str] | str | None = None,
    severities: Sequence[int] | str | None = (1, 3, 5),
    apply: str = "query",
    seed: int = 0,
    protocol_options: dict | None = None,
    progress: bool = False,
) -> RobustnessReport:
    """Run ``protocol`` on clean and corrupted features of ``pool`` (module docstring).

    ``images``: the pool's uint8 images ``[N, 3, H, W]`` (an ImageCache, a tensor or an array), in
    pool order; ``protocol_options`` go to :func:`~vireid.evaluation.protocols.run_protocol`
    (trials, draw, rerank, ...). Returns a :class:`RobustnessReport` (figures = means over trials).
    """
    from vireid.evaluation import run_protocol

    if apply not in APPLY:
        raise ConfigError(f"--apply {apply!r} is unknown; use query, gallery or both")
    names = check_corruptions(corruptions)
    levels = check_severities(severities)
    if not isinstance(images, ImageCache):
        array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        images = ImageCache(np.ascontiguousarray(array))
    if len(images) != len(pool):
        raise ConfigError(f"got {len(images)} images for a pool of {len(pool)} records; pass them in pool order")
    options = dict(protocol_options or {})
    t0 = time.perf_counter()
    clean_feats = _features(features_of, images)
    clean_s = time.perf_counter() - t0
    clean = run_protocol(protocol, clean_feats, list(pool), **options)
    report = RobustnessReport(protocol, apply, seed, {k: clean.mean[k] for k in ("mAP", "rank1", "mINP")})
    corrupt_s = embed_s = 0.0
    for name in names:
        for level in levels:
            t1 = time.perf_counter()
            timing = {"corrupt": 0.0}

            def transform(block, idx, name=name, level=level, timing=timing):
                t = time.perf_counter()
                out = corrupt(block, name, level, seed=seed, ids=idx)
                timing["corrupt"] += time.perf_counter() - t
                return out

            feats = _features(features_of, images, transform)
            corrupt_s += timing["corrupt"]
            embed_s += time.perf_counter() - t1 - timing["corrupt"]
            pair = {"query": (feats, clean_feats), "gallery": (clean_feats, feats), "both": feats}[apply]
            res = run_protocol(protocol, pair, list(pool), **options)
            report.rows.append({"corruption": name, "severity": level, "mAP": res.mean["mAP"],
                                "rank1": res.mean["rank1"], "mINP": res.mean["mINP"]})
            if progress:
                print(f"{name} s{level}: mAP {res.mean['mAP']:.2f}, R1 {res.mean['rank1']:.2f}", flush=True)
    report.seconds = {"clean_features": clean_s, "corrupting": corrupt_s, "corrupted_features": embed_s,
                      "images": len(images), "settings": len(report.rows)}
    return report


__all__ = ["APPLY", "RobustnessReport", "evaluate_robustness"]
