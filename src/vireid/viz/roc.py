"""Verification ROC curves (true-accept rate against false-accept rate, log FAR axis) in one PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def plot_roc(curves: Mapping[str, Mapping[str, list[float]]], out: str | Path, *,
             points: Mapping[str, tuple[float, float]] | None = None, title: str = "verification ROC") -> Path:
    """Draw ROC ``curves`` (name -> ``{"far": [...], "tar": [...]}``, as
    :func:`vireid.evaluation.verification.downsample_roc` stores them) and marked operating
    ``points`` (name -> (FAR, TAR)) into ``out`` (written atomically); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    floor = 1.0
    for name, roc in curves.items():
        far, tar = np.asarray(roc["far"], dtype=float), np.asarray(roc["tar"], dtype=float)
        positive = far > 0
        if positive.any():
            floor = min(floor, float(far[positive].min()))
        ax.plot(far[positive], 100 * tar[positive], lw=1.6, label=name)
    for name, (far, tar) in (points or {}).items():
        ax.plot([max(far, floor)], [100 * tar], "o", ms=6, label=f"{name}: FAR {100 * far:.2f}%, TAR {100 * tar:.1f}%")
    grid = np.logspace(np.log10(floor), 0, 50)
    ax.plot(grid, 100 * grid, ":", color="grey", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0, 100)
    ax.set_xlabel("false-accept rate (impostor pairs accepted)")
    ax.set_ylabel("true-accept rate (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
