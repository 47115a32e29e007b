"""``vireid pose-cache``: run a pose estimator once over a dataset into a pose-cache file (PDFENet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app


@app.command("pose-cache")
def pose_cache_command(
    root: Path = typer.Argument(..., help="Dataset root (for csv: the manifest file)."),
    fmt: str = typer.Option("sysu-mm01", "--format", "-f", help="Dataset format: sysu-mm01, regdb, llcm, folder or csv."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Pose-cache file to write (default: <parent>/<root name>.pose.npz, which data.joints=auto reads)."
    ),
    estimator: str = typer.Option(
        "auto", "--estimator", help="synthetic (vireid synth joints), mediapipe (real images; needs the pose extra) or auto."
    ),
    split_dir: Optional[Path] = typer.Option(None, "--split-dir", help="Folder with the dataset's split files, if not in the root."),
    min_confidence: float = typer.Option(0.3, "--min-confidence", help="mediapipe: minimum person-detection confidence."),
    save_every: int = typer.Option(1000, "--save-every", min=1, help="Images between partial (resumable) writes."),
    workers: int = typer.Option(1, "--workers", min=1, help="Estimator processes (each runs its own model)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming an existing file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Estimate 16 MPII body joints for every image of a dataset once, into a resumable cache file."""
    from vireid.workflows.data_tools import make_pose_cache

    typer.echo(make_pose_cache(root, fmt, out=out, estimator=estimator, split_dir=split_dir,
                               min_confidence=min_confidence, save_every=save_every, workers=workers,
                               overwrite=overwrite, progress=progress))
