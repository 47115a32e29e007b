"""Same person or not for two images (``vireid verify``) and the summary of a threshold calibration
(``vireid calibrate``; the calibration itself is :mod:`vireid.workflows.calibration`).

The verification rule compares the cosine similarity of the two embeddings with a threshold chosen on
the ROC of held-out infrared x visible pairs (at a target false-accept rate, or the equal error rate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from vireid.errors import VireidError

OPERATING_POINTS = {"calibrated": "threshold", "far": "threshold_far", "eer": "threshold_eer"}


def _check_image(path: Path, which: str) -> None:
    if not path.exists():
        raise VireidError(f"image {which} {path} does not exist; pass the path of an image file")
    if not path.is_file():
        raise VireidError(f"image {which} {path} is not a file; pass the path of an image file")


def decide(similarity: float, threshold: float) -> bool:
    """The verification rule: the same person when the cosine similarity reaches the threshold."""
    return bool(similarity >= threshold)


def verify_pair(image_a: Path, image_b: Path, checkpoint: Path, *, modality_a: str = "auto",
                modality_b: str = "auto", threshold: Optional[float] = None, calibration: Optional[Path] = None,
                operating_point: str = "calibrated", device: str = "cpu",
                as_json: bool = False) -> tuple[list[str], str]:
    """Compare two images with the model's calibrated (or the given) threshold.

    Returns (notes, answer): with ``as_json`` no notes and one JSON object holding them; else the
    modality guesses and warnings (for stderr) and the one-line verdict."""
    from vireid.data.images import decode_image
    from vireid.data.modality import describe, parse, resolve_modalities
    from vireid.inference.loading import load_embedder

    _check_image(image_a, "A")
    _check_image(image_b, "B")
    requested = [parse(modality_a), parse(modality_b)]  # unknown modality names fail before the model loads
    if operating_point not in OPERATING_POINTS:
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
        key = OPERATING_POINTS[operating_point]
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
        return [], json.dumps({
            "same_person": same_person, "similarity": similarity, "threshold": used, "threshold_source": source,
            "image_a": str(image_a), "modality_a": mods[0], "image_b": str(image_b), "modality_b": mods[1],
            "modalities_guessed": guessed, "pair": pair, "notes": notes,
        })
    verdict = "same person" if same_person else "different persons"
    sign = ">=" if same_person else "<"
    return notes, f"{verdict}: similarity {similarity:.4f} {sign} threshold {used:.4f} ({source})"


def calibrate_run(run: Path, *, data: Optional[str] = None, images: Optional[str] = None,
                  fmt: Optional[str] = None, data_root: Optional[str] = None, far: float = 0.01, criterion: str = "far", split: str = "val",
                  max_impostors: int = 2_000_000, seed: int = 0, out: Optional[Path] = None,
                  device: str = "auto") -> str:
    """Calibrate and store the verification threshold (:func:`vireid.workflows.calibration.calibrate`);
    the summary the command prints (EER, TAR at FARs, the stored threshold, where it went). ``data``,
    ``images``/``fmt`` name other data than the run's own validation identities (``data_root``: where
    they moved), as :class:`~vireid.workflows.eval_data.DataChoice`."""
    from vireid.workflows.calibration import CALIBRATION_ROC, calibrate, checkpoint_file, run_folder
    from vireid.workflows.eval_data import DataChoice, check_choice

    if criterion not in ("far", "eer"):
        raise VireidError(f"--criterion {criterion!r} is unknown; use far or eer")
    if not 0.0 < far < 1.0:
        raise VireidError(f"--far must be between 0 and 1 (e.g. 0.01), got {far}")
    if not run.exists():
        raise VireidError(f"{run} does not exist; pass a run folder or a .pt checkpoint")
    choice = check_choice(DataChoice(data=data, images=images, fmt=fmt, data_root=data_root))
    record = calibrate(run, split=split, far=far, criterion=criterion, max_impostors=max_impostors, seed=seed,
                       device=device, choice=choice, out=out)
    folder = out if out is not None else run_folder(run)
    stored = f"in {checkpoint_file(run)}" if out is None else f"in {folder / 'calibration.json'} (checkpoint unchanged)"
    tars = ", ".join(f"{100 * v:.2f}% at FAR {k}" for k, v in record["tar_at"].items())
    sampled = " (impostors sampled)" if record["impostors_sampled"] else ""
    same = record.get("same_modality") or {}
    same_line = "".join(f"\n  {m} x {m}: threshold {r['threshold']:.4f} (EER {100 * r['eer']:.2f}%)" for m, r in same.items())
    return (
        f"calibrated on {record['split']}: {record['num_identities']} identities, {record['num_genuine']:,} genuine / "
        f"{record['num_impostor']:,} impostor pairs{sampled}\n"
        f"  EER {100 * record['eer']:.2f}% (threshold {record['threshold_eer']:.4f});  TAR {tars}\n"
        f"  stored threshold {record['threshold']:.4f} ({record['criterion']}: FAR {100 * record['operating_point']['far']:.3f}%, "
        f"TAR {100 * record['operating_point']['tar']:.2f}%) {stored}{same_line}\n"
        f"  ROC curve: {folder / CALIBRATION_ROC}"
    )
