"""Training curves of a run folder (loss, learning rate, validation mAP/rank-1) in one PNG.

The picture is 1430 x 396 pixels (13 x 3.6 inches at 110 dpi): loss per step and per epoch (with
each loss term), learning rate, and the validation mAP / rank-1 of each evaluation (with, for runs trained on
pseudo-labels, their ARI and pairwise precision at each re-clustering).
"""

from __future__ import annotations

from pathlib import Path

from vireid.engine.run_logging import read_metrics
from vireid.viz._common import Output, pyplot, save_figure

#: Pixel size (width, height) of :func:`plot_training_curves`.
CURVES_SIZE = (1430, 396)
_DPI = 110


def plot_training_curves(run_dir: str | Path, out: Output | None = None) -> Path | None:
    """Draw ``metrics.jsonl`` of ``run_dir`` into ``curves.png`` (or ``out``: a path or a binary file
    object) and return its path (None for a file object). The write to a path is atomic."""
    plt = pyplot()
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    vals = [r for r in records if r["kind"] == "val"]
    fig, axes = plt.subplots(1, 3, figsize=(CURVES_SIZE[0] / _DPI, CURVES_SIZE[1] / _DPI), dpi=_DPI)
    ax = axes[0]
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.5, label="loss (step)")
    if epochs:
        ax.plot([r["step"] for r in epochs], [r["loss"] for r in epochs], "o-", label="loss (epoch mean)")
        for key in sorted({k for r in epochs for k in r} - {"kind", "epoch", "step", "time", "loss", "lr", "images_per_s", "seconds"}):
            ax.plot([r["step"] for r in epochs], [r.get(key, float("nan")) for r in epochs], "--", lw=1, label=key)
    ax.set_xlabel("step")
    ax.set_title("training loss")
    ax.legend(fontsize=7)
    ax = axes[1]
    src = steps or epochs
    if src:
        ax.plot([r["step"] for r in src], [r["lr"] for r in src])
    ax.set_xlabel("step")
    ax.set_title("learning rate")
    ax = axes[2]
    if vals:
        ax.plot([r["epoch"] for r in vals], [100 * r["mAP"] for r in vals], "o-", label="val mAP")
        ax.plot([r["epoch"] for r in vals], [100 * r["rank1"] for r in vals], "s-", label="val rank-1")
    # pseudo-label quality at each re-clustering (the cluster_memory loss's "cluster" records)
    clusters = [r for r in records if r["kind"] == "cluster" and "ari" in r]
    for key, label in (("ari", "pseudo-label ARI"), ("pair_precision", "pseudo-label pair precision")):
        if clusters:
            ax.plot([r["epoch"] for r in clusters], [100 * r[key] for r in clusters], "^--", lw=1, label=label)
    if vals or clusters:
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_title("validation (held-out identities)")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    return save_figure(fig, out if out is not None else run_dir / "curves.png", dpi=_DPI)
