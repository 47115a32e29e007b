"""``vireid eval-fusion``: fused multi-modal queries against fused and single-modality galleries."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options


@app.command("eval-fusion")
@plugin_options
def eval_fusion_command(
    checkpoint: Path = typer.Argument(..., help="Run folder (its best.pt) or checkpoint file of a trained model."),
    query: Optional[list[str]] = typer.Option(None, "--query", "-q", help="Query kind(s): fused, visible, infrared (default: all)."),
    gallery: Optional[list[str]] = typer.Option(None, "--gallery", "-g", help="Gallery kind(s): fused, visible, infrared (default: all)."),
    fusion: str = typer.Option("auto", "--fusion", help="auto (the model's own), embedding, average or vote (decision-level late fusion)."),
    trials: int = typer.Option(10, "--trials", help="Random query/gallery splits of each identity's moments."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query/gallery splits."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Paired dataset folder, if it moved or differs from training."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Format of --data-root (regdb or synthetic-regdb), if it differs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Evaluate fused visible+infrared queries (the survey §4.1/§4.2) on a paired dataset's test moments.

    Each test identity's registered pairs are split into query and gallery moments; fused entries use
    both images, single ones only one. Results (mean ± std over trials) are printed and written to the
    run folder as fusion_results.json / fusion_results.md.
    """
    from vireid.workflows.evaluate_fusion import fusion_report

    typer.echo(fusion_report(checkpoint, queries=query, galleries=gallery, fusion=fusion, trials=trials, seed=seed,
                             data_root=data_root, data_format=data_format, device=device))
