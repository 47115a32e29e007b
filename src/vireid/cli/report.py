"""``vireid report RUN_DIR``: one self-contained HTML page about a run (see :mod:`vireid.viz.report`).

Missing test results are produced first (:mod:`vireid.workflows.report`) (``--evaluate auto``): the run's best checkpoint is
evaluated on its dataset's test protocols with and without re-ranking by the same function as
``vireid eval --rerank`` (which also writes the verification figures), then the page is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app, plugin_options

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
    from vireid.workflows.report import describe_written, write_report

    path = write_report(run_dir, data=data, images=images, fmt=fmt, query=query, gallery=gallery, data_root=data_root,
                        out=out, evaluate=evaluate, pictures=pictures, num_queries=num_queries, seed=seed,
                        device=device, gan=gan, log=typer.echo)
    typer.echo(describe_written(path))
