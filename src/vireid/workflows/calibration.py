"""Calibration of the verification threshold of a trained model, and its report in ``vireid eval``.

``vireid verify`` answers "same person?" for two images by comparing their cosine similarity
(of the L2-normalised embeddings, as :class:`vireid.inference.embedder.Embedder` returns them) with a
threshold stored in the checkpoint under ``"verification"``
(:func:`vireid.evaluation.verification.summarize_verification` describes the record). The
threshold is chosen here, on the *held-out validation identities* (never the test set, never the
training identities): all infrared x visible pairs of those identities, all genuine pairs and all
impostor pairs (a seeded sample beyond ``max_impostors``).

When: automatically at the end of ``vireid train`` when the run held validation identities out,
and on demand with ``vireid calibrate RUN [--far 0.01]``. ``vireid eval`` reports it next to the
test set's own ROC (EER, TAR@FAR, and the TAR/FAR the calibrated threshold gives on the test
identities) and draws both curves into ``roc.png`` in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.engine.checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint
from vireid.errors import VireidError
from vireid.evaluation.verification import (
    DEFAULT_FAR,
    DEFAULT_MAX_IMPOSTORS,
    PairScores,
    cross_modality_pair_scores,
    rates_at_threshold,
    summarize_verification,
)

SPLITS = ("val", "test")


def checkpoint_file(path: str | Path) -> Path:
    """The ``.pt`` file a run folder stands for (best.pt, else last.pt), or ``path`` itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise VireidError(f"run folder {path} holds no best.pt or last.pt checkpoint; train first or pass a .pt file")
    return path


def run_folder(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent


def calibration_records(dataset: Any, ckpt: dict, split: str = "val", check_overlap: bool = True) -> list[ImageRecord]:
    """The images to calibrate on: the validation identities (which must not be training identities
    of the checkpoint, unless ``check_overlap`` is off: other data than the run's, whose identity
    numbers mean other people) or, with ``split="test"``, the test pool (optimistic for test reporting)."""
    if split not in SPLITS:
        raise VireidError(f"calibration split {split!r} is unknown; use val or test")
    if split == "test":
        records = list(getattr(dataset, "test", []) or [])
        if not records:
            records = list(getattr(dataset, "query", []) or []) + list(getattr(dataset, "gallery", []) or [])
        if not records:
            raise VireidError(f"dataset {dataset.root} has no test images to calibrate on")
        return records
    records = list(getattr(dataset, "val", []) or [])
    if not records:
        raise VireidError(
            f"dataset {dataset.root} has no validation identities to calibrate the threshold on; use a split with "
            "held-out identities (e.g. SYSU-MM01 with data.options.train_includes_val=false) or pass --split test"
        )
    if not check_overlap:
        return records
    train_ids = set((ckpt.get("train_ids") or {}).keys()) or {int(r.orig_pid) for r in getattr(dataset, "train", [])}
    overlap = {int(r.orig_pid) for r in records} & {int(i) for i in train_ids}
    if overlap:
        raise VireidError(
            f"the validation identities of {dataset.root} were trained on ({len(overlap)} shared), so a threshold "
            "calibrated on them would be optimistic; train with data.options.train_includes_val=false or pass --split test"
        )
    return records


def pair_scores(features: torch.Tensor | np.ndarray, records: list[ImageRecord], *,
                max_impostors: int | None = DEFAULT_MAX_IMPOSTORS, seed: int = 0) -> PairScores:
    """Cross-modality pair scores (infrared x visible) of embedded ``records``."""
    mods = np.asarray([r.modality for r in records])
    pids = np.asarray([r.orig_pid for r in records])
    ir, vis = np.flatnonzero(mods == INFRARED), np.flatnonzero(mods == VISIBLE)
    if len(ir) == 0 or len(vis) == 0:
        raise VireidError("verification pairs need infrared and visible images; the split has only one modality")
    feats = torch.as_tensor(np.asarray(features)) if not isinstance(features, torch.Tensor) else features
    scores = cross_modality_pair_scores(feats[torch.as_tensor(ir)], pids[ir], feats[torch.as_tensor(vis)], pids[vis],
                                        max_impostors=max_impostors, seed=seed)
    if scores.genuine.size == 0 or scores.impostor.size == 0:
        raise VireidError(
            f"the split gives {scores.genuine.size} genuine and {scores.impostor.size} impostor pairs; calibration "
            "needs identities seen in both modalities and at least two identities"
        )
    return scores


#: images per modality used for the same-modality thresholds at most (a seeded sample beyond)
SAME_MODALITY_MAX_IMAGES = 4000


def same_modality_pair_scores(features: torch.Tensor | np.ndarray, records: list[ImageRecord], modality: str, *,
                              max_impostors: int | None = DEFAULT_MAX_IMPOSTORS, seed: int = 0) -> PairScores | None:
    """Scores of the pairs of two different images of ``modality`` (each unordered pair once):
    genuine when they show the same identity. None when there are no genuine or no impostor pairs.
    Beyond :data:`SAME_MODALITY_MAX_IMAGES` images a seeded sample is used."""
    rows = np.flatnonzero(np.asarray([r.modality for r in records]) == modality)
    rng = np.random.default_rng(seed)
    if len(rows) > SAME_MODALITY_MAX_IMAGES:
        rows = np.sort(rng.choice(rows, SAME_MODALITY_MAX_IMAGES, replace=False))
    if len(rows) < 2:
        return None
    feats = torch.as_tensor(np.asarray(features))[torch.as_tensor(rows)].float()
    feats = torch.nn.functional.normalize(feats, dim=1)
    pids = torch.as_tensor(np.asarray([records[i].orig_pid for i in rows]))
    sims = (feats @ feats.T).numpy()
    upper = np.triu_indices(len(rows), k=1)
    same = (pids[:, None] == pids[None, :]).numpy()[upper]
    scores = sims[upper]
    genuine, impostor = scores[same], scores[~same]
    total = int(impostor.size)
    if max_impostors is not None and impostor.size > max_impostors:
        impostor = rng.choice(impostor, int(max_impostors), replace=False)
    if genuine.size == 0 or impostor.size == 0:
        return None
    return PairScores(genuine.astype(np.float32), impostor.astype(np.float32), total)


def embed_records(model: torch.nn.Module, records: list[ImageRecord], cfg: Any, device: torch.device | str,
                  progress: bool = False, cache: Any = None) -> torch.Tensor:
    """Model embeddings of ``records`` (evaluation preprocessing, decoded-image cache; the configured side
    inputs, e.g. joints for pose-guided models), as :func:`vireid.inference.extract.extract_features` computes them,
    in the precision ``vireid verify`` / ``vireid.load`` use for this run on ``device`` (the run's ``train.amp`` where
    it runs well there, :func:`vireid.engine.precision.inference_amp`), so a threshold is calibrated on the
    similarities it will be compared with."""
    from vireid.data import build as data_build
    from vireid.engine.precision import inference_amp, resolve_precision
    from vireid.inference.extract import extract_features

    if cache is None:
        cache = data_build.build_image_cache(records, cfg.data, progress=progress)
    precision = resolve_precision(inference_amp(cfg.train.amp, device), device, cfg.train.channels_last)
    feats = extract_features(model, cache, data_build.modality_codes(records), device, cfg.eval.batch_size,
                             progress=progress, extras=data_build.extras_for_records(records, cfg.data),
                             precision=precision)
    return image_columns(model, feats)


def image_columns(model: torch.nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The image embedding of evaluation features: a model whose evaluation output carries more than it (the
    text methods: image + query-side columns) names its leading image columns in ``gallery_columns``."""
    width = getattr(model, "gallery_columns", None)
    return feats[:, : int(width)] if width and feats.shape[1] > int(width) else feats


def store_verification(checkpoint: str | Path, record: dict) -> Path:
    """Write ``record`` into the checkpoint dict under ``"verification"`` (atomically) and return its file."""
    path = checkpoint_file(checkpoint)
    ckpt = load_checkpoint(path)
    ckpt["verification"] = record
    atomic_torch_save(ckpt, path)
    return path


def calibrate_model(model: torch.nn.Module, cfg: Any, ckpt: dict, dataset: Any, device: torch.device | str, *,
                    split: str = "val", far: float = DEFAULT_FAR, criterion: str = "far",
                    max_impostors: int | None = DEFAULT_MAX_IMPOSTORS, seed: int = 0, progress: bool = False,
                    records: list[ImageRecord] | None = None, cache: Any = None) -> dict:
    """The calibration record of an in-memory model on ``split`` of ``dataset`` (nothing is written)."""
    if records is None:
        records = calibration_records(dataset, ckpt, split)
    feats = embed_records(model, records, cfg, device, progress=progress, cache=cache)
    scores = pair_scores(feats, records, max_impostors=max_impostors, seed=seed)
    record = summarize_verification(scores, far, criterion=criterion, split=split)
    record["num_identities"] = len({r.orig_pid for r in records})
    # same-modality thresholds (visible x visible, infrared x infrared), used by `vireid verify` when both
    # images have one modality: their scores run higher than cross-modality ones, so the cross-modality
    # threshold would accept too many impostors there
    same: dict = {}
    for modality in (VISIBLE, INFRARED):
        pairs = same_modality_pair_scores(feats, records, modality, max_impostors=max_impostors, seed=seed)
        if pairs is not None:
            sub = summarize_verification(pairs, far, criterion=criterion, split=split)
            same[modality] = {k: sub[k] for k in ("threshold", "criterion", "eer", "threshold_eer", "threshold_far",
                                                  "far_target", "tar_at_far", "num_genuine", "num_impostor")
                              if k in sub}
    if same:
        record["same_modality"] = same
    return record


def calibrate(checkpoint: str | Path, *, split: str = "val", far: float = DEFAULT_FAR, criterion: str = "far",
              max_impostors: int | None = DEFAULT_MAX_IMPOSTORS, seed: int = 0, device: str = "auto",
              data_root: str | None = None, progress: bool = True, write: bool = True, choice: Any = None,
              out: str | Path | None = None) -> dict:
    """Calibrate a checkpoint (or run folder: its best.pt).

    ``choice`` (a :class:`vireid.workflows.eval_data.DataChoice`) picks the data: the run's own
    validation identities by default, or e.g. the user's manifest. With ``write`` and no ``out``
    the record is stored in the checkpoint (what ``vireid verify``, export and the web service use)
    and ``calibration.json`` / ``calibration_roc.png`` go into the run folder (never over the
    ``verification.json`` / ``roc.png`` of ``vireid eval``). With ``out`` those two files (and the
    full record, which ``vireid verify --calibration`` reads) go to that folder instead and the
    checkpoint is left as it was.
    """
    from vireid.data.build import prepare_dataset
    from vireid.workflows.eval_data import DataChoice, select_data
    from vireid.engine.trainer import load_model_from_checkpoint, resolve_device

    choice = choice or DataChoice()
    if data_root is not None:
        choice.data_root = data_root
    path = checkpoint_file(checkpoint)
    dev = resolve_device(device)
    model, cfg, ckpt = load_model_from_checkpoint(path, dev)
    cfg = select_data(cfg, choice, run_folder(checkpoint))
    dataset = prepare_dataset(cfg.data, progress=progress, generate=False)
    records = calibration_records(dataset, ckpt, split, check_overlap=choice.own)
    record = calibrate_model(model, cfg, ckpt, dataset, dev, split=split, far=far, criterion=criterion,
                             max_impostors=max_impostors, seed=seed, progress=progress, records=records)
    if not choice.own:
        record["data"] = f"{cfg.data.format}:{cfg.data.root}"
    if write:
        folder = Path(out) if out is not None else run_folder(checkpoint)
        folder.mkdir(parents=True, exist_ok=True)
        if out is None:
            store_verification(path, record)
            atomic_write_text(folder / "calibration.json", json.dumps({"calibration": _brief(record)}, indent=2))
        else:
            atomic_write_text(folder / "calibration.json", json.dumps({"calibration": record}, indent=2))
        from vireid.viz.roc import plot_roc

        plot_roc({f"{split} (calibration)": record["roc"]}, folder / CALIBRATION_ROC,
                 points={f"{split}: threshold {record['threshold']:.3f}": _point(record["operating_point"])},
                 title=f"{run_folder(checkpoint).name}: verification ROC (infrared vs visible)")
    return record


#: the ROC picture ``vireid calibrate`` writes (``vireid eval`` writes ``roc.png``)
CALIBRATION_ROC = "calibration_roc.png"


def read_calibration(path: str | Path) -> dict:
    """The calibration record of a ``calibration.json`` written by ``vireid calibrate --out``."""
    path = Path(path)
    if path.is_dir():
        path = path / "calibration.json"
    try:
        record = json.loads(path.read_text()).get("calibration")
    except (OSError, ValueError, AttributeError):
        record = None
    if not isinstance(record, dict) or "threshold" not in record:
        raise VireidError(f"{path} holds no calibration; pass the calibration.json written by vireid calibrate --out")
    return record


def calibrate_after_training(run_dir: str | Path, data: Any, device: torch.device | str, *,
                             progress: bool = False) -> dict | None:
    """Calibrate a finished run's best.pt on its held-out validation identities (``data``: the
    trainer's :class:`~vireid.data.build.TrainData`, whose decoded validation images are reused).
    Returns the stored record without its curve, or None (and says why) when the run held no
    identities out."""
    from vireid.engine.trainer import load_model_from_checkpoint

    run_dir = Path(run_dir)
    if not data.val_records or data.val_cache is None:
        print("verification threshold not calibrated: the run has no held-out validation identities "
              "(calibrate later with `vireid calibrate RUN --split test` if that is acceptable)", flush=True)
        return None
    path = checkpoint_file(run_dir)
    model, cfg, ckpt = load_model_from_checkpoint(path, device)
    try:
        record = calibrate_model(model, cfg, ckpt, data.dataset, device, records=list(data.val_records),
                                 cache=data.val_cache, progress=progress)
    except VireidError as err:  # e.g. a single validation identity: no impostor pairs; training itself succeeded
        print(f"verification threshold not calibrated: {err}", flush=True)
        return None
    store_verification(path, record)
    atomic_write_text(run_dir / "verification.json", json.dumps({"calibration": _brief(record)}, indent=2))
    print(f"verification threshold {record['threshold']:.4f} (cosine; val EER {100 * record['eer']:.2f}%, "
          f"TAR {100 * record['tar_at_far']:.2f}% at FAR {record['far_target']:g}) stored in {path.name}", flush=True)
    return _brief(record)


def _point(rates: dict) -> tuple[float, float]:
    return float(rates["far"]), float(rates["tar"])


def _brief(record: dict) -> dict:
    """The record without the stored curve (for JSON reports)."""
    return {k: v for k, v in record.items() if k != "roc"}


def report_verification(checkpoint: str | Path, model: torch.nn.Module, cfg: Any, ckpt: dict, dataset: Any,
                        test_features: torch.Tensor, test_records: list[ImageRecord], device: torch.device | str, *,
                        progress: bool = False, quiet: bool = False, folder: str | Path | None | bool = True,
                        own_data: bool = True) -> dict:
    """Verification figures of an evaluation: the stored (or, when missing, a fresh validation)
    calibration, the test identities' own ROC, and the calibrated threshold applied to the test pairs.

    Writes ``verification.json`` and ``roc.png`` into ``folder`` (``True``: the run folder; ``None``:
    nowhere) and returns the report. ``own_data=False`` (other data than the run's, e.g. another
    dataset's test protocol): its identity numbers mean other people, so they are not compared with
    the run's training identities. Nothing is written into the checkpoint: a threshold computed
    here because the model carries none is reported, not stored (``vireid calibrate`` stores one).
    """
    if folder is True:
        folder = run_folder(checkpoint)
    calib = ckpt.get("verification")
    note = None
    if calib is None:
        try:
            records = calibration_records(dataset, ckpt, "val", check_overlap=own_data)
            calib = calibrate_model(model, cfg, ckpt, dataset, device, progress=progress, records=records)
            note = "threshold computed for this report only; store one with vireid calibrate"
        except VireidError as err:
            note = f"no calibrated threshold: {err}"
    far = float(calib["far_target"]) if calib else DEFAULT_FAR
    try:
        test_scores = pair_scores(image_columns(model, test_features), test_records)
    except VireidError as err:  # e.g. a single-modality test set: no cross-modality pairs to report
        if not quiet:
            print(f"verification not reported: {err}")
        return {"calibration": _brief(calib) if calib else None, "test": None, "note": str(err)}
    test = summarize_verification(test_scores, far, split="test")
    report: dict[str, Any] = {"calibration": _brief(calib) if calib else None, "test": _brief(test)}
    curves = {"test": test["roc"]}
    points = {}
    if calib:
        tar, far_at = rates_at_threshold(test_scores.genuine, test_scores.impostor, calib["threshold"])
        report["test_at_calibrated_threshold"] = {"threshold": calib["threshold"], "tar": tar, "far": far_at}
        curves = {f"{calib['split']} (calibration)": calib["roc"], **curves}
        if "operating_point" in calib:
            points[f"{calib['split']} at its threshold {calib['threshold']:.3f}"] = _point(calib["operating_point"])
        points["test at that threshold"] = (far_at, tar)
    if note:
        report["note"] = note
    if not quiet:
        print(format_verification(report))
    if folder is not None and folder is not False:
        folder = Path(folder)
        atomic_write_text(folder / "verification.json", json.dumps(report, indent=2))
        from vireid.viz.roc import plot_roc

        name = run_folder(checkpoint).name
        plot_roc(curves, folder / "roc.png", points=points, title=f"{name}: verification ROC (infrared vs visible)")
        if not quiet:
            print(f"ROC curves: {folder / 'roc.png'}")
    return report


def format_verification(report: dict) -> str:
    """A few lines for the terminal: calibration, test ROC, test rates at the calibrated threshold."""
    def line(name: str, r: dict) -> str:
        return (f"  {name:<12} EER {100 * r['eer']:6.2f}%   TAR@FAR={r['far_target']:g} {100 * r['tar_at_far']:6.2f}%   "
                f"threshold {r['threshold']:.4f}   ({r['num_genuine']:,} genuine / {r['num_impostor']:,} impostor pairs)")

    lines = ["verification (cosine similarity of infrared x visible pairs):"]
    if report.get("calibration"):
        lines.append(line(f"{report['calibration']['split']} (calib.)", report["calibration"]))
    lines.append(line("test", report["test"]))
    at = report.get("test_at_calibrated_threshold")
    if at:
        lines.append(f"  test at the calibrated threshold {at['threshold']:.4f}: TAR {100 * at['tar']:.2f}%   FAR {100 * at['far']:.3f}%")
    if report.get("note"):
        lines.append(f"  ({report['note']})")
    return "\n".join(lines)


__all__ = [
    "calibrate",
    "calibrate_after_training",
    "calibrate_model",
    "calibration_records",
    "checkpoint_file",
    "embed_records",
    "format_verification",
    "pair_scores",
    "read_calibration",
    "report_verification",
    "same_modality_pair_scores",
    "store_verification",
]
