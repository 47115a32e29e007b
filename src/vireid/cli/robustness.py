"""``vireid robustness`` (corruption suite on a trained run) and ``vireid compare`` (paired bootstrap)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app


@app.command("robustness")
def robustness_command(
    run: Path = typer.Argument(..., help="Run folder (its best.pt) or checkpoint file."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Protocol, e.g. sysu-all-single or sysu-all-mixed (default: the dataset's first standard one)."),
    corruptions: str = typer.Option("all", "--corruptions", help="Comma-separated corruptions or 'all': gaussian_noise, shot_noise, motion_blur, defocus_blur, jpeg, contrast, low_light, fog, rain, occlusion."),
    severities: str = typer.Option("1,3,5", "--severities", help="Comma-separated severities 1..5."),
    apply: str = typer.Option("query", "--apply", help="Corrupt the query side, the gallery side, or both."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruptions (per image, reproducible)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Gallery-draw trials (default: the run's eval.trials)."),
    rerank: Optional[str] = typer.Option(None, "--rerank-method", help="Re-rank every evaluation: k-reciprocal or modality."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for robustness.md/.json/.png (default: <run>/robustness)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Corruption robustness: mAP/R1 per corruption and severity, mean corruption mAP/R1 and relative drops."""
    from vireid.workflows.robustness import robustness_report

    typer.echo(robustness_report(run, protocol=protocol, corruptions=corruptions, severities=severities, apply=apply,
                                 seed=seed, trials=trials, rerank=rerank, out=out, device=device))


@app.command("compare")
def compare_command(
    run_a: Path = typer.Argument(..., help="First run folder or checkpoint (A)."),
    run_b: Path = typer.Argument(..., help="Second run folder or checkpoint (B), evaluated on A's test set."),
    protocol: Optional[str] = typer.Option(None, "--protocol", "-p", help="Protocol (default: the dataset's first standard one)."),
    metric: str = typer.Option("mAP", "--metric", help="mAP, rank1 or mINP."),
    unit: str = typer.Option("query", "--unit", help="Bootstrap over queries or over trials (gallery draws)."),
    resamples: int = typer.Option(10000, "--resamples", help="Bootstrap resamples."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Gallery-draw trials (default: A's eval.trials)."),
    rerank: Optional[str] = typer.Option(None, "--rerank-method", help="Compare re-ranked results: k-reciprocal or modality."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the comparison as JSON here."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Paired difference A - B on the same queries and galleries, with a bootstrap CI and a verdict."""
    from vireid.workflows.robustness import comparison_report

    typer.echo(comparison_report(run_a, run_b, protocol=protocol, metric=metric, unit=unit, resamples=resamples,
                                 confidence=confidence, seed=seed, trials=trials, rerank=rerank, json_out=json_out,
                                 device=device))
