"""``vireid report RUN_DIR``: one self-contained HTML page about a run (see :mod:`vireid.viz.report`).

Missing test results are produced first (``--evaluate auto``): the run's best checkpoint is
evaluated on its dataset's test protocols with and without re-ranking by the same function as
``vireid eval --rerank`` (which also writes the verification figures), then the page is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli import app, plugin_options

EVALUATE_CHOICES = ("auto", "always", "never")


@app.command("report")
@plugin_options
def report_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `vireid train`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN_DIR/report.html)."),
    evaluate: str = typer.Option("auto", "--evaluate", help="auto: evaluate (with and without re-ranking) when test_results.json is missing; always: re-evaluate; never: only report what is missing."),
    pictures: bool = typer.Option(True, "--pictures/--no-pictures", help="Draw ranked lists, Grad-CAM heatmaps and t-SNE (needs the model and the test data)."),
    num_queries: int = typer.Option(6, "--num-queries", help="Queries in the ranked-list picture."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of queries / identities."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder, if it moved since training."),
) -> None:
    """Write an HTML report: config, environment, metrics per protocol (± re-ranking), curves and pictures."""
    from vireid.errors import VireidError
    from vireid.viz.report import build_report

    if evaluate not in EVALUATE_CHOICES:
        raise VireidError(f"--evaluate {evaluate!r} is unknown; use one of {', '.join(EVALUATE_CHOICES)}")
    if not run_dir.is_dir():
        raise VireidError(f"run folder {run_dir} does not exist; pass the folder written by `vireid train`")
    has_ckpt = any((run_dir / name).is_file() for name in ("best.pt", "last.pt"))
    if has_ckpt and (evaluate == "always" or (evaluate == "auto" and not (run_dir / "test_results.json").is_file())):
        from vireid.cli.train import evaluate_checkpoint

        typer.echo(f"evaluating {run_dir} (with and without re-ranking) for the report ...")
        evaluate_checkpoint(run_dir, rerank=[False, True], data_root=data_root, device=device, progress=True)
    path = build_report(run_dir, out, pictures=pictures, device=device, data_root=data_root,
                        num_queries=num_queries, seed=seed, progress=True)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
