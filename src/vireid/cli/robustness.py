"""``vireid robustness`` (corruption suite on a trained run) and ``vireid compare`` (paired bootstrap)."""

from __future__ import annotations

import json
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
    from vireid.data.corruptions import check_corruptions, check_severities
    from vireid.workflows.robustness import robustness_checkpoint
    from vireid.evaluation.robustness import APPLY
    from vireid.errors import ConfigError

    if apply not in APPLY:
        raise ConfigError(f"--apply {apply!r} is unknown; use query, gallery or both")
    names, levels = check_corruptions(corruptions), check_severities(severities)
    _check_rerank(rerank)
    report = robustness_checkpoint(run, protocol=protocol, corruptions=names, severities=levels, apply=apply, seed=seed,
                                   trials=trials, rerank=rerank or False, device=device, progress=True)
    folder = out or (run if run.is_dir() else run.parent) / "robustness"
    paths = report.write(folder)
    typer.echo(report.table())
    typer.echo(f"written: {paths['md']}, {paths['json']}, {paths['png']}")


def _check_rerank(rerank: Optional[str]) -> None:
    if rerank:
        from vireid.evaluation.rerank_modality import rerank_settings

        rerank_settings(rerank)


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
    from vireid.workflows.robustness import compare_checkpoints
    from vireid.evaluation.significance import METRICS, UNITS, SignificanceError

    if metric not in METRICS:
        raise SignificanceError(f"--metric {metric!r} is unknown; use one of {', '.join(METRICS)}")
    if unit not in UNITS:
        raise SignificanceError(f"--unit {unit!r} is unknown; use query or trial")
    _check_rerank(rerank)
    comparison, _, _ = compare_checkpoints(run_a, run_b, protocol=protocol, metric=metric, unit=unit, resamples=resamples,
                                           confidence=confidence, seed=seed, trials=trials, rerank=rerank or False,
                                           device=device)
    typer.echo(comparison.summary())
    if json_out is not None:
        json_out.write_text(json.dumps(comparison.to_dict(), indent=2))
