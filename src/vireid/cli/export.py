"""``vireid export``, ``vireid quantize`` and ``vireid prune``: lightweight deployment (the survey §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options


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
    from vireid.workflows.export import export_model

    export_model(checkpoint, out, format=format, int8=int8, calib_images=calib_images, calibration=calibration,
                 data_root=data_root, opset=opset, atol=atol, log=typer.echo)


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
    from vireid.workflows.export import quantize_model

    quantize_model(model, out, images=images, calibration=calibration, per_tensor=per_tensor, data_root=data_root,
                   seed=seed, log=typer.echo)


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
    from vireid.workflows.export import prune_model

    prune_model(run, out, amount, criterion=criterion, multiple=multiple, finetune_epochs=finetune_epochs, lr=lr,
                overrides=overrides or [], evaluate=evaluate, log=typer.echo)
