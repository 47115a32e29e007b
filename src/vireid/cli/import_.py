"""``vireid import agw``: turn a checkpoint of the AGW / CAJ reference code into a vireid run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app

import_app = typer.Typer(
    help="Bring models trained by other code into vireid run folders (then eval, extract, search, serve, export, verify).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@import_app.command("agw")
def import_agw_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint saved by AGW's train.py or CAJ's train_ext.py ({'net': state_dict, 'cmc', 'mAP', 'epoch'}), with or without a module. prefix."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (config.yaml + best.pt)."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Config (file or shipped name) for the run's data and evaluation settings; default by class count: agw_sysu (395), agw_regdb (206)."),
    embedding: str = typer.Option("fc", "--embedding", help="fc: the reference's test feature after the BN neck (default); pool: the pooled feature before it."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value for the run, e.g. data.root=/data/SYSU-MM01."),
) -> None:
    """Import an AGW / CAJ checkpoint (mangye16/Cross-Modal-Re-ID-baseline) as a vireid run folder.

    The network is rebuilt in vireid (two-stream ResNet-50, AGW's one-channel non-local blocks, GeM,
    BN neck); vireid extract then returns the reference's own test embeddings. The file is read with
    weights_only=True: tensors and numpy arrays only, never pickled code.
    """
    from vireid.workflows.import_agw import import_reference_checkpoint

    summary = import_reference_checkpoint(checkpoint, out, config=config, embedding=embedding,
                                          overrides=tuple(overrides or ()))
    reported = ", ".join(f"{k} {summary[k]:.4f}" for k in ("rank1", "mAP", "mINP") if summary.get(k) is not None)
    epoch = f"epoch {summary['epoch']}, " if summary.get("epoch") is not None else ""
    typer.echo(
        f"imported {checkpoint} ({epoch}{summary['num_classes']} classes, non_local {summary['non_local']}, "
        f"pooling {summary['pooling']}, {summary['mapped']} tensors; {summary['unused_reference_keys']} reference "
        f"tensors its forward never uses were left out) -> {summary['run']} (config {Path(summary['config']).name}, "
        f"embedding {summary['embedding']})"
    )
    if reported:
        typer.echo(f"the reference recorded at save time: {reported} (its own test-set evaluation)")
