"""``vireid report RUN_DIR``: one self-contained HTML page about a run (see :mod:`vireid.viz.report`).

Missing test results are produced first (``--evaluate auto``): the run's best checkpoint is
evaluated on its dataset's test protocols with and without re-ranking by the same function as
``vireid eval --rerank`` (which also writes the verification figures), then the page is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options

EVALUATE_CHOICES = ("auto", "always", "never")


@app.command("report")
@plugin_options
def report_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by `vireid train`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.html and any evaluation it needs (or an .html file; its folder gets the evaluation); the run is then not written to. Default: RUN_DIR/report.html."),
    evaluate: str = typer.Option("auto", "--evaluate", help="auto: evaluate (with and without re-ranking) when test_results.json is missing; always: re-evaluate; never: only report what is missing."),
    pictures: bool = typer.Option(True, "--pictures/--no-pictures", help="Draw ranked lists, Grad-CAM heatmaps and t-SNE (needs the model and the test data)."),
    num_queries: int = typer.Option(6, "--num-queries", help="Queries in the ranked-list picture."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of queries / identities."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder, if it moved since training."),
    data: Optional[str] = typer.Option(None, "--data", help="Report on other data: FORMAT:ROOT, e.g. csv:mine/manifest.csv (needs --out)."),
    images: Optional[str] = typer.Option(None, "--images", help="Report on other data: a CSV manifest or dataset folder (needs --out)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Format of --images (default: detected)."),
    query: Optional[str] = typer.Option(None, "--query", help="Modality of the queries for other data (default infrared)."),
    gallery: Optional[str] = typer.Option(None, "--gallery", help="Modality of the gallery (default: the other one)."),
    gan: Optional[Path] = typer.Option(None, "--gan", help="A vireid gan train run: add its translation grids."),
) -> None:
    """Write an HTML report: config, environment, metrics per protocol (± re-ranking), curves and pictures."""
    from vireid.cli.train import data_choice
    from vireid.errors import VireidError
    from vireid.viz.report import build_report

    if evaluate not in EVALUATE_CHOICES:
        raise VireidError(f"--evaluate {evaluate!r} is unknown; use one of {', '.join(EVALUATE_CHOICES)}")
    if not run_dir.is_dir():
        raise VireidError(f"run folder {run_dir} does not exist; pass the folder written by `vireid train`")
    choice = data_choice(data, images, fmt, query, gallery, data_root)
    if gan is not None:  # a wrong --gan fails before any evaluation
        from vireid.viz.gan import gan_figures

        gan_figures(gan)
    if not choice.own and out is None:
        raise VireidError("a report on other data goes to its own folder; pass --out DIR (the run is not written to)")
    html_path = None
    folder = run_dir
    if out is not None:
        html_path = out if out.suffix.lower() in (".html", ".htm") else out / "report.html"
        folder = html_path.parent
        folder.mkdir(parents=True, exist_ok=True)
    has_ckpt = any((run_dir / name).is_file() for name in ("best.pt", "last.pt"))
    results_dir = folder if (folder / "test_results.json").is_file() or not choice.own else run_dir
    missing = not (results_dir / "test_results.json").is_file()
    if has_ckpt and (evaluate == "always" or (evaluate == "auto" and missing)):
        from vireid.workflows.train_run import evaluate_checkpoint

        typer.echo(f"evaluating {run_dir} on {choice.describe()} (with and without re-ranking) for the report ...")
        evaluate_checkpoint(run_dir, rerank=[False, True], device=device, progress=True, data=choice,
                            out=None if folder == run_dir else folder)
        results_dir = folder
    path = build_report(run_dir, html_path, pictures=pictures, device=device, num_queries=num_queries, seed=seed,
                        progress=True, choice=choice, results_dir=results_dir, gan_run=gan)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
