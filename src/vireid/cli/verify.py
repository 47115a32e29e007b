"""``vireid verify`` (same person or not, for two images) and ``vireid calibrate`` (choose its threshold)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options

MODALITY_HELP = "visible or infrared"


@app.command("verify")
@plugin_options
def verify_command(
    image_a: Path = typer.Argument(..., help="First image."),
    image_b: Path = typer.Argument(..., help="Second image."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-m", help="Run folder (its best.pt), .pt checkpoint or exported model."),
    modality_a: str = typer.Option("auto", "--modality-a", help=f"Modality of the first image: {MODALITY_HELP}, or auto (grey-level images are infrared; the decision is printed)."),
    modality_b: str = typer.Option("auto", "--modality-b", help=f"Modality of the second image: {MODALITY_HELP}, or auto."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cosine-similarity threshold to use instead of the calibrated one."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="calibration.json written by `vireid calibrate --out` (e.g. on your own cameras), instead of the threshold stored with the model."),
    operating_point: str = typer.Option("calibrated", "--operating-point", help="calibrated (the stored threshold), far (the FAR-target threshold) or eer (the equal-error threshold)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as one JSON object."),
) -> None:
    """Same person or not? Compares the cosine similarity of the two embeddings with the threshold
    calibrated on held-out identities (vireid calibrate). Modalities are guessed unless given; a pair
    of one modality uses the same-modality threshold when one was calibrated, and is warned about."""
    from vireid.workflows.verify import verify_pair

    notes, answer = verify_pair(image_a, image_b, checkpoint, modality_a=modality_a, modality_b=modality_b,
                                threshold=threshold, calibration=calibration, operating_point=operating_point,
                                device=device, as_json=as_json)
    for note in notes:
        typer.echo(note, err=True)
    typer.echo(answer)


@app.command("calibrate")
@plugin_options
def calibrate_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or .pt checkpoint; the threshold is stored in it (unless --out)."),
    far: float = typer.Option(0.01, "--far", help="Target false-accept rate of the stored threshold (also reported: 1e-3, 1e-2, 1e-1)."),
    criterion: str = typer.Option("far", "--criterion", help="Stored threshold: far (lowest with FAR <= --far) or eer (equal error rate)."),
    split: str = typer.Option("val", "--split", help="val (held-out identities; a manifest without a split column is read as val) or test (optimistic; for reporting only)."),
    max_impostors: int = typer.Option(2_000_000, "--max-impostors", help="Impostor pairs kept at most (beyond: a seeded random sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the impostor sample."),
    data: Optional[str] = typer.Option(None, "--data", help="Calibrate on other data: FORMAT:ROOT, e.g. csv:mine/manifest.csv (default: the run's own validation identities)."),
    images: Optional[str] = typer.Option(None, "--images", help="Calibrate on other data: a CSV manifest or dataset folder, its format detected (or --format)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Format of --images (default: detected)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="The run's own dataset folder, if it moved since training."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write calibration.json and calibration_roc.png here and leave the checkpoint unchanged (use the file with vireid verify --calibration)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Calibrate the verification threshold (ROC over infrared x visible pairs of held-out identities:
    EER, TAR at a FAR; also visible x visible and infrared x infrared thresholds) and store it with the
    model; writes calibration.json and calibration_roc.png beside it (or into --out, checkpoint untouched)."""
    from vireid.workflows.verify import calibrate_run

    typer.echo(calibrate_run(run, data=data, images=images, fmt=fmt, data_root=data_root, far=far,
                             criterion=criterion, split=split, max_impostors=max_impostors, seed=seed, out=out,
                             device=device))
