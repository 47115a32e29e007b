"""``vireid ablate``: train and evaluate a grid of config variants and tabulate them
(the logic is :mod:`vireid.workflows.ablation`, the command :mod:`vireid.workflows.ablation.command`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app


@app.command("ablate")
def ablate_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Overrides key=value applied to every row (e.g. train.epochs=5)."),
    grid: str = typer.Option(..., "--grid", "-g", help="Grid YAML file or shipped grid name (configs/ablations/)."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Config the rows start from (default: the grid's 'config')."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of the row runs and ablation.md/json (default: OUTPUT_DIR/ablate-GRID)."),
    append_to: Optional[Path] = typer.Option(None, "--append-to", help="Also write the tables into a named section of this Markdown file (e.g. docs/results.md)."),
    section: Optional[str] = typer.Option(None, "--section", help="Section name for --append-to (default: ablate-GRID)."),
    title: Optional[str] = typer.Option(None, "--title", help="Section title for --append-to (default: the grid's title)."),
    row: Optional[list[str]] = typer.Option(None, "--row", help="Run only this row (repeatable); finished rows still appear in the table."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show each row's state (new/resume/evaluate/done) and run nothing."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Train every row once per seed, e.g. 0,1,2 (the config's own seed keeps OUT/<row>, others OUT/<row>.seed<S>); tables show mean ± std over seeds."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Rows trained at once, each in its own process with CPU cores // JOBS threads (and its own GPU when there are several); logs in OUT/<row>.log."),
) -> None:
    """Run an ablation grid: each row is a named set of overrides, trained and evaluated like
    `vireid train`; writes OUT/ablation.md and .json. Re-running skips finished rows and resumes
    interrupted ones."""
    from vireid.workflows.ablation.command import ablate

    ablate(grid, overrides=overrides or [], config=config, out=out, append_to=append_to, section=section, title=title,
           rows=row or (), dry_run=dry_run, seeds=seeds, jobs=jobs, log=typer.echo)
