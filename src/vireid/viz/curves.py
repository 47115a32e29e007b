"""Training curves of a run folder (loss, learning rate, validation mAP/rank-1) in one PNG."""

from __future__ import annotations

from pathlib import Path

from vireid.engine.run_logging import read_metrics


def plot_training_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``metrics.jsonl`` of ``run_dir`` into ``curves.png`` (or ``out``) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    vals = [r for r in records if r["kind"] == "val"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
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
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_title("validation (held-out identities)")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = Path(out) if out is not None else run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
