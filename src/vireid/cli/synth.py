"""``vireid synth``: write the synthetic visible-infrared dataset in a real dataset layout."""

from __future__ import annotations

from pathlib import Path

import typer

from vireid.cli.app import app


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset into (new or empty)."),
    ids: int = typer.Option(200, "--ids", help="Number of identities."),
    format: str = typer.Option(  # noqa: A002
        "sysu-mm01", "--format", help="Layout to write: sysu-mm01 (6 cameras), regdb (visible/thermal pair), npu-reid (8 cameras, as in the dual-path Swin paper) or hitsz-vcm (video tracklets, as HITSZ-VCM)."
    ),
    images_per_camera: int = typer.Option(10, "--images-per-camera", help="Images per identity and camera (hitsz-vcm: tracklets, i.e. walks)."),
    height: int | None = typer.Option(None, "--height", help="Image height (default 288 sysu-mm01, 128 regdb)."),
    width: int | None = typer.Option(None, "--width", help="Image width (default 144 sysu-mm01, 64 regdb)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed and arguments give the same bytes."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (default: one per core)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synth dataset made with other arguments."),
    depth: bool = typer.Option(False, "--depth", help="regdb layout: also a co-located depth image per moment (Depth/)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    frames: int = typer.Option(12, "--frames", help="hitsz-vcm layout: consecutive frames per tracklet (12: the HITSZ-VCM reader keeps tracklets of 12 or more by default)."),
) -> None:
    """Generate synthetic people seen by visible and infrared cameras, with body joints, attribute labels
    (attributes.csv), a text description per image (Text/descriptions.json) and split files."""
    from vireid.workflows.data_tools import make_synthetic_dataset

    typer.echo(make_synthetic_dataset(out, ids, format=format, images_per_camera=images_per_camera, height=height,
                                      width=width, seed=seed, workers=workers, overwrite=overwrite, depth=depth,
                                      progress=progress, frames_per_tracklet=frames))
