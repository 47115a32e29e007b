"""``vireid generalisation``: the cross-dataset table (:mod:`vireid.workflows.generalisation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app


@app.command("generalisation")
def generalisation_command(
    runs: list[Path] = typer.Argument(..., help="Run folder(s) (their best.pt) or .pt checkpoint(s) written by vireid train."),
    data: Optional[list[str]] = typer.Option(None, "--data", help="Another dataset as FORMAT:ROOT (e.g. regdb:/data/RegDB, sysu-mm01:/data/SYSU-MM01, llcm:/data/LLCM, csv:manifest.csv); repeat for several."),
    protocol: Optional[list[str]] = typer.Option(None, "--protocol", "-p", help="Protocol(s); each dataset is evaluated under those that fit it (its standard ones when none does)."),
    in_domain: bool = typer.Option(True, "--in-domain/--no-in-domain", help="Include each run's own test data (the in-domain row)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Gallery-draw trials (default: each run's eval.trials)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Test-time flip (default: each run's eval.flip)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for generalisation.md and generalisation.json (default: printed only; nothing is written into a run)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Cross-dataset generalisation: R1/mAP/mINP of each run on its own and on other datasets' test protocols."""
    from vireid.workflows.generalisation import format_table, generalisation_table, write_table

    rows = generalisation_table(runs, list(data or []), protocols=tuple(protocol or ()), in_domain=in_domain,
                                trials=trials, flip=flip, device=device, progress=False)
    typer.echo(format_table(rows))
    if out is not None:
        paths = write_table(rows, out)
        typer.echo(f"written: {paths['md']}, {paths['json']}")
    else:
        typer.echo("(pass --out DIR to keep the table as markdown and JSON)")
