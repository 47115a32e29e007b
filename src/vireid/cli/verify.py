"""``vireid verify`` (same person or not, for two images) and ``vireid calibrate`` (choose its threshold)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
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
    from vireid.data.images import decode_image
    from vireid.data.modality import describe, parse, resolve_modalities
    from vireid.inference.loading import load_embedder

    _check_image(image_a, "A")
    _check_image(image_b, "B")
    requested = [parse(modality_a), parse(modality_b)]  # unknown modality names fail before the model loads
    if operating_point not in ("calibrated", "far", "eer"):
        raise VireidError(f"--operating-point {operating_point!r} is unknown; use calibrated, far or eer")
    if threshold is not None and calibration is not None:
        raise VireidError("--threshold and --calibration both give the threshold; pass only one")
    calib_file = None
    if calibration is not None:
        from vireid.workflows.calibration import read_calibration

        calib_file = read_calibration(calibration)
    pixels = [decode_image(image_a), decode_image(image_b)]
    names = [f"image A ({image_a.name})", f"image B ({image_b.name})"]
    mods, warnings, guessed = resolve_modalities(pixels, requested, names)
    embedder = load_embedder(checkpoint, device=device)
    calib = calib_file if calib_file is not None else embedder.verification
    notes = [line for line, g in zip(describe(mods, guessed, names), guessed) if g] + list(warnings)
    pair = "cross-modality" if mods[0] != mods[1] else f"{mods[0]} x {mods[0]}"
    if threshold is not None:
        used, source = float(threshold), "given with --threshold"
    elif calib is None:
        raise VireidError(
            f"model {checkpoint} has no calibrated verification threshold; run `vireid calibrate` on its run folder "
            "(before exporting it), pass --calibration FILE or --threshold"
        )
    else:
        key = {"calibrated": "threshold", "far": "threshold_far", "eer": "threshold_eer"}[operating_point]
        record = calib
        where = "the --calibration file" if calib_file is not None else str(checkpoint)
        if mods[0] == mods[1]:
            same = (calib.get("same_modality") or {}).get(mods[0])
            if same is not None and key in same:
                record = same
                notes.append(f"both images are {mods[0]}: using the {mods[0]} x {mods[0]} threshold")
            else:
                notes.append(f"warning: both images are {mods[0]}, but the threshold was calibrated on infrared x "
                             "visible pairs (same-modality scores run higher, so expect more false matches); "
                             "recalibrate with vireid calibrate to get a same-modality threshold")
        if key not in record:
            raise VireidError(f"the calibration of {where} has no {operating_point} threshold; recalibrate it")
        used = float(record[key])
        by_far = key == "threshold_far" or (key == "threshold" and record.get("criterion", "far") == "far")
        rule = f"FAR {record.get('far_target', calib.get('far_target', 0.01)):g}" if by_far else "the equal error rate"
        kind = f"{mods[0]} x {mods[0]} pairs" if record is not calib else "infrared x visible pairs"
        source = f"calibrated on {calib.get('split', '?')} {kind} at {rule}"
    feats = embedder.embed_paths([image_a, image_b], mods)
    similarity = float(feats[0] @ feats[1])
    same_person = decide(similarity, used)
    if as_json:
        typer.echo(json.dumps({
            "same_person": same_person, "similarity": similarity, "threshold": used, "threshold_source": source,
            "image_a": str(image_a), "modality_a": mods[0], "image_b": str(image_b), "modality_b": mods[1],
            "modalities_guessed": guessed, "pair": pair, "notes": notes,
        }))
        return
    for note in notes:
        typer.echo(note, err=True)
    verdict = "same person" if same_person else "different persons"
    sign = ">=" if same_person else "<"
    typer.echo(f"{verdict}: similarity {similarity:.4f} {sign} threshold {used:.4f} ({source})")


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
    from vireid.cli.train import data_choice
    from vireid.workflows.calibration import CALIBRATION_ROC, calibrate, checkpoint_file, run_folder

    if criterion not in ("far", "eer"):
        raise VireidError(f"--criterion {criterion!r} is unknown; use far or eer")
    if not 0.0 < far < 1.0:
        raise VireidError(f"--far must be between 0 and 1 (e.g. 0.01), got {far}")
    if not run.exists():
        raise VireidError(f"{run} does not exist; pass a run folder or a .pt checkpoint")
    choice = data_choice(data, images, fmt, None, None, data_root)
    record = calibrate(run, split=split, far=far, criterion=criterion, max_impostors=max_impostors, seed=seed,
                       device=device, choice=choice, out=out)
    folder = out if out is not None else run_folder(run)
    stored = f"in {checkpoint_file(run)}" if out is None else f"in {folder / 'calibration.json'} (checkpoint unchanged)"
    tars = ", ".join(f"{100 * v:.2f}% at FAR {k}" for k, v in record["tar_at"].items())
    sampled = " (impostors sampled)" if record["impostors_sampled"] else ""
    same = record.get("same_modality") or {}
    same_line = "".join(f"\n  {m} x {m}: threshold {r['threshold']:.4f} (EER {100 * r['eer']:.2f}%)" for m, r in same.items())
    typer.echo(
        f"calibrated on {record['split']}: {record['num_identities']} identities, {record['num_genuine']:,} genuine / "
        f"{record['num_impostor']:,} impostor pairs{sampled}\n"
        f"  EER {100 * record['eer']:.2f}% (threshold {record['threshold_eer']:.4f});  TAR {tars}\n"
        f"  stored threshold {record['threshold']:.4f} ({record['criterion']}: FAR {100 * record['operating_point']['far']:.3f}%, "
        f"TAR {100 * record['operating_point']['tar']:.2f}%) {stored}{same_line}\n"
        f"  ROC curve: {folder / CALIBRATION_ROC}"
    )
