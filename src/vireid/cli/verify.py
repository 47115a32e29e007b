"""``vireid verify`` (same person or not, for two images) and ``vireid calibrate`` (choose its threshold)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vireid.cli import app, plugin_options
from vireid.errors import VireidError

MODALITY_HELP = "visible or infrared"


def _check_image(path: Path, which: str) -> None:
    if not path.exists():
        raise VireidError(f"image {which} {path} does not exist; pass the path of an image file")
    if not path.is_file():
        raise VireidError(f"image {which} {path} is not a file; pass the path of an image file")


def decide(similarity: float, threshold: float) -> bool:
    """The verification rule: the same person when the cosine similarity reaches the threshold."""
    return bool(similarity >= threshold)


@app.command("verify")
@plugin_options
def verify_command(
    image_a: Path = typer.Argument(..., help="First image (by default an infrared image, see --modality-a)."),
    image_b: Path = typer.Argument(..., help="Second image (by default a visible image, see --modality-b)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-m", help="Run folder (its best.pt), .pt checkpoint or exported model."),
    modality_a: str = typer.Option("infrared", "--modality-a", help=f"Modality of the first image: {MODALITY_HELP}."),
    modality_b: str = typer.Option("visible", "--modality-b", help=f"Modality of the second image: {MODALITY_HELP}."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cosine-similarity threshold to use instead of the calibrated one."),
    operating_point: str = typer.Option("calibrated", "--operating-point", help="calibrated (the stored threshold), far (the FAR-target threshold) or eer (the equal-error threshold)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as one JSON object."),
) -> None:
    """Same person or not? Compares the cosine similarity of the two embeddings with the threshold
    calibrated on held-out identities (vireid calibrate). Defaults: image A infrared, image B visible."""
    from vireid.engine.embedder import load_embedder, modality_codes

    _check_image(image_a, "A")
    _check_image(image_b, "B")
    modality_codes([modality_a, modality_b], 2)  # unknown modality names fail before the model loads
    if operating_point not in ("calibrated", "far", "eer"):
        raise VireidError(f"--operating-point {operating_point!r} is unknown; use calibrated, far or eer")
    embedder = load_embedder(checkpoint, device=device)
    calib = embedder.verification
    if threshold is not None:
        used, source = float(threshold), "given with --threshold"
    elif calib is None:
        raise VireidError(
            f"model {checkpoint} has no calibrated verification threshold; run `vireid calibrate` on its run folder "
            "(before exporting it) or pass --threshold"
        )
    else:
        key = {"calibrated": "threshold", "far": "threshold_far", "eer": "threshold_eer"}[operating_point]
        if key not in calib:
            raise VireidError(f"the calibration stored in {checkpoint} has no {operating_point} threshold; recalibrate it")
        used = float(calib[key])
        by_far = key == "threshold_far" or (key == "threshold" and calib.get("criterion", "far") == "far")
        rule = f"FAR {calib['far_target']:g}" if by_far else "the equal error rate"
        source = f"calibrated on {calib.get('split', '?')} at {rule}"
    feats = embedder.embed_paths([image_a, image_b], [modality_a, modality_b])
    similarity = float(feats[0] @ feats[1])
    same = decide(similarity, used)
    if as_json:
        typer.echo(json.dumps({
            "same_person": same, "similarity": similarity, "threshold": used, "threshold_source": source,
            "image_a": str(image_a), "modality_a": modality_a, "image_b": str(image_b), "modality_b": modality_b,
        }))
        return
    verdict = "same person" if same else "different persons"
    sign = ">=" if same else "<"
    typer.echo(f"{verdict}: similarity {similarity:.4f} {sign} threshold {used:.4f} ({source})")


@app.command("calibrate")
@plugin_options
def calibrate_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or .pt checkpoint; the threshold is stored in it."),
    far: float = typer.Option(0.01, "--far", help="Target false-accept rate of the stored threshold (also reported: 1e-3, 1e-2, 1e-1)."),
    criterion: str = typer.Option("far", "--criterion", help="Stored threshold: far (lowest with FAR <= --far) or eer (equal error rate)."),
    split: str = typer.Option("val", "--split", help="val (held-out identities) or test (optimistic; for reporting only)."),
    max_impostors: int = typer.Option(2_000_000, "--max-impostors", help="Impostor pairs kept at most (beyond: a seeded random sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the impostor sample."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder, if it moved since training."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Calibrate the verification threshold (ROC over infrared x visible pairs of held-out identities:
    EER, TAR at a FAR) and store it with the model; writes verification.json and roc.png beside it."""
    from vireid.engine.calibration import calibrate, checkpoint_file, run_folder

    if criterion not in ("far", "eer"):
        raise VireidError(f"--criterion {criterion!r} is unknown; use far or eer")
    if not 0.0 < far < 1.0:
        raise VireidError(f"--far must be between 0 and 1 (e.g. 0.01), got {far}")
    if not run.exists():
        raise VireidError(f"{run} does not exist; pass a run folder or a .pt checkpoint")
    record = calibrate(run, split=split, far=far, criterion=criterion, max_impostors=max_impostors, seed=seed,
                       device=device, data_root=data_root)
    path = checkpoint_file(run)
    tars = ", ".join(f"{100 * v:.2f}% at FAR {k}" for k, v in record["tar_at"].items())
    sampled = " (impostors sampled)" if record["impostors_sampled"] else ""
    typer.echo(
        f"calibrated on {record['split']}: {record['num_identities']} identities, {record['num_genuine']:,} genuine / "
        f"{record['num_impostor']:,} impostor pairs{sampled}\n"
        f"  EER {100 * record['eer']:.2f}% (threshold {record['threshold_eer']:.4f});  TAR {tars}\n"
        f"  stored threshold {record['threshold']:.4f} ({record['criterion']}: FAR {100 * record['operating_point']['far']:.3f}%, "
        f"TAR {100 * record['operating_point']['tar']:.2f}%) in {path}\n"
        f"  ROC curve: {run_folder(run) / 'roc.png'}"
    )
