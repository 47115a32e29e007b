"""``vireid export``, ``vireid quantize`` and ``vireid prune``: lightweight deployment (the survey §6)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options
from vireid.errors import VireidError


def _check_calibration(method: str) -> None:
    from vireid.export.quantize import CALIBRATION_METHODS

    if method not in CALIBRATION_METHODS:
        raise VireidError(f"calibration method {method!r} is unknown; use one of {', '.join(CALIBRATION_METHODS)}")


def _int8_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.int8{out.suffix or '.onnx'}")


@app.command("export")
@plugin_options
def export_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="Run folder (its best.pt) or .pt checkpoint to export."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write, e.g. model.onnx."),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),  # noqa: A002
    int8: bool = typer.Option(False, "--int8", help="Also write an int8 (static, onnxruntime QDQ) model next to it: <out>.int8.onnx."),
    calib_images: int = typer.Option(256, "--calib-images", help="Training images used to calibrate int8 ranges."),
    calibration: str = typer.Option("minmax", "--calibration", help="int8 range calibration: minmax, percentile or entropy."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder for int8 calibration, if it moved since training."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 17)."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest allowed |onnxruntime - PyTorch| on the embeddings."),
) -> None:
    """Export a trained model's embedding to ONNX (dynamic batch; images + modalities), checked with onnxruntime."""
    if format.lower() != "onnx":
        raise VireidError(f"export format {format!r} is not supported; use --format onnx")
    if out.suffix.lower() != ".onnx":
        raise VireidError(f"--out {out} must end in .onnx (vireid eval and search recognise exported models by it)")
    from vireid.export.onnx import export_checkpoint

    if int8:
        _check_calibration(calibration)
    typer.echo(f"exporting {checkpoint} to ONNX (opset {opset}) ...")
    report = export_checkpoint(checkpoint, out, opset=opset, atol=atol)
    typer.echo(report.describe())
    if int8:
        from vireid.export.quantize import quantize_model_file

        q = quantize_model_file(out, _int8_path(out), images=calib_images, data_root=data_root, method=calibration,
                                progress=True)
        typer.echo(q.describe())


@app.command("quantize")
@plugin_options
def quantize_command(
    model: Path = typer.Argument(..., help="An fp32 model exported by vireid export (.onnx), or a run folder / .pt checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="int8 ONNX file to write, e.g. model.int8.onnx."),
    images: int = typer.Option(256, "--images", help="Training images for calibration (a quarter is held out to check fidelity)."),
    calibration: str = typer.Option("minmax", "--calibration", help="Range calibration: minmax, percentile or entropy."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One weight scale per tensor instead of per output channel."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder, if it moved since training."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration image draw."),
) -> None:
    """int8 post-training static quantization (onnxruntime, QDQ) calibrated on training images."""
    from vireid.export.quantize import quantize_model_file

    _check_calibration(calibration)
    if out.suffix.lower() != ".onnx":
        raise VireidError(f"--out {out} must end in .onnx")
    if not model.exists():
        raise VireidError(f"{model} does not exist; pass an exported .onnx model or a run folder / .pt checkpoint")
    with tempfile.TemporaryDirectory(prefix="vireid-export-") as work:
        source = model
        if model.suffix.lower() != ".onnx":  # a checkpoint: export fp32 first
            from vireid.export.onnx import export_checkpoint

            typer.echo(f"exporting {model} to ONNX first ...")
            source = Path(work) / "fp32.onnx"
            export_checkpoint(model, source)
        report = quantize_model_file(source, out, images=images, data_root=data_root, method=calibration,
                                     per_channel=not per_tensor, seed=seed, progress=True)
    typer.echo(report.describe())


@app.command("prune")
@plugin_options
def prune_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or .pt checkpoint to prune."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the pruned model (best.pt; a run folder when fine-tuned)."),
    amount: float = typer.Option(0.3, "--amount", help="Fraction of each block's inner channels to remove (0..1)."),
    criterion: str = typer.Option("l1", "--criterion", help="Channel importance: l1 (filter L1 norm, Li et al. 2017) or bn (|BN scale|, Liu et al. 2017)."),
    multiple: int = typer.Option(8, "--multiple", help="Round kept channel counts to a multiple of this (CPU kernels work on blocks of 8/16 channels; 1 = the exact amount)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Fine-tune the pruned model for N epochs on its training data."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tuning learning rate (default: a tenth of the run's optim.lr)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides for the fine-tuning, e.g. train.threads=2."),
    evaluate: bool = typer.Option(False, "--eval/--no-eval", help="Evaluate the pruned model on the test protocols afterwards."),
) -> None:
    """Structured channel pruning: remove the weakest inner channels of every block, optionally fine-tune."""
    from vireid.workflows.prune import prune_checkpoint

    summary = prune_checkpoint(run, out, amount, criterion=criterion, multiple=multiple,
                               finetune_epochs=finetune_epochs, lr=lr, overrides=overrides or [], progress=True)
    typer.echo(summary.describe())
    if summary.finetune:
        f = summary.finetune
        typer.echo(f"fine-tuned {f['epochs']} epoch(s) at lr {f['lr']:.2e}; best validation mAP "
                   f"{100 * f['best_val_mAP']:.2f} (epoch {f['best_epoch']})" if f["best_epoch"] > 0 else
                   f"fine-tuned {f['epochs']} epoch(s) at lr {f['lr']:.2e}")
    typer.echo(f"pruned model: {summary.checkpoint}")
    if evaluate:
        from vireid.workflows.train_run import evaluate_checkpoint

        evaluate_checkpoint(out)
