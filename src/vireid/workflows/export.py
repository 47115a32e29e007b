"""Lightweight deployment (the survey §6): ``vireid export`` (ONNX, optionally int8), ``vireid quantize``
(int8 post-training static quantization) and ``vireid prune`` (structured channel pruning, optional
fine-tuning and evaluation). Each function reports its progress through ``log``, one line at a time."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from vireid.errors import VireidError

Log = Callable[[str], None]


def check_calibration_method(method: str) -> None:
    """One sentence for an int8 range-calibration method :mod:`vireid.export.quantize` does not know."""
    from vireid.export.quantize import CALIBRATION_METHODS

    if method not in CALIBRATION_METHODS:
        raise VireidError(f"calibration method {method!r} is unknown; use one of {', '.join(CALIBRATION_METHODS)}")


def int8_path(out: Path) -> Path:
    """Where ``vireid export --int8`` writes the int8 model: ``<out>.int8.onnx``."""
    return out.with_name(f"{out.stem}.int8{out.suffix or '.onnx'}")


def export_model(checkpoint: Path, out: Path, *, format: str = "onnx", int8: bool = False,  # noqa: A002
                 calib_images: int = 256, calibration: str = "minmax", data_root: Optional[str] = None,
                 opset: int = 18, atol: float = 1e-4, log: Log = print) -> None:
    """Export a trained model's embedding to ONNX, checked with onnxruntime
    (:func:`vireid.export.onnx.export_checkpoint`), and with ``int8`` also a quantized copy."""
    if format.lower() != "onnx":
        raise VireidError(f"export format {format!r} is not supported; use --format onnx")
    if out.suffix.lower() != ".onnx":
        raise VireidError(f"--out {out} must end in .onnx (vireid eval and search recognise exported models by it)")
    from vireid.export.onnx import export_checkpoint

    if int8:
        check_calibration_method(calibration)
    log(f"exporting {checkpoint} to ONNX (opset {opset}) ...")
    report = export_checkpoint(checkpoint, out, opset=opset, atol=atol)
    log(report.describe())
    if int8:
        from vireid.export.quantize import quantize_model_file

        q = quantize_model_file(out, int8_path(out), images=calib_images, data_root=data_root, method=calibration,
                                progress=True)
        log(q.describe())


def quantize_model(model: Path, out: Path, *, images: int = 256, calibration: str = "minmax",
                   per_tensor: bool = False, data_root: Optional[str] = None, seed: int = 0,
                   log: Log = print) -> None:
    """int8 static quantization (:func:`vireid.export.quantize.quantize_model_file`) of an exported
    model, or of a checkpoint exported to fp32 ONNX first."""
    from vireid.export.quantize import quantize_model_file

    check_calibration_method(calibration)
    if out.suffix.lower() != ".onnx":
        raise VireidError(f"--out {out} must end in .onnx")
    if not model.exists():
        raise VireidError(f"{model} does not exist; pass an exported .onnx model or a run folder / .pt checkpoint")
    with tempfile.TemporaryDirectory(prefix="vireid-export-") as work:
        source = model
        if model.suffix.lower() != ".onnx":  # a checkpoint: export fp32 first
            from vireid.export.onnx import export_checkpoint

            log(f"exporting {model} to ONNX first ...")
            source = Path(work) / "fp32.onnx"
            export_checkpoint(model, source)
        report = quantize_model_file(source, out, images=images, data_root=data_root, method=calibration,
                                     per_channel=not per_tensor, seed=seed, progress=True)
    log(report.describe())


def prune_model(run: Path, out: Path, amount: float, *, criterion: str = "l1", multiple: int = 8,
                finetune_epochs: int = 0, lr: Optional[float] = None, overrides: Sequence[str] = (),
                evaluate: bool = False, log: Log = print) -> None:
    """Structured channel pruning (:func:`vireid.workflows.prune.prune_checkpoint`), optionally
    fine-tuned, then optionally evaluated on the test protocols."""
    from vireid.workflows.prune import prune_checkpoint

    summary = prune_checkpoint(run, out, amount, criterion=criterion, multiple=multiple,
                               finetune_epochs=finetune_epochs, lr=lr, overrides=list(overrides), progress=True)
    log(summary.describe())
    if summary.finetune:
        f = summary.finetune
        log(f"fine-tuned {f['epochs']} epoch(s) at lr {f['lr']:.2e}; best validation mAP "
            f"{100 * f['best_val_mAP']:.2f} (epoch {f['best_epoch']})" if f["best_epoch"] > 0 else
            f"fine-tuned {f['epochs']} epoch(s) at lr {f['lr']:.2e}")
    log(f"pruned model: {summary.checkpoint}")
    if evaluate:
        from vireid.workflows.train_run import evaluate_checkpoint

        evaluate_checkpoint(out)
