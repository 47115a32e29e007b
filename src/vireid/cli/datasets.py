"""``vireid datasets formats`` and ``vireid datasets check``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app

datasets_app = typer.Typer(
    help="Inspect dataset formats and validate a dataset on disk.", no_args_is_help=True, add_completion=False
)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("formats")
def formats_command() -> None:
    """List the dataset formats vireid reads and the options each accepts."""
    from vireid.workflows.datasets import format_listing

    typer.echo(format_listing())


@datasets_app.command("check")
def check_command(
    path: Path = typer.Argument(..., help="Dataset root (for csv: the manifest file)."),
    fmt: str = typer.Option(..., "--format", "-f", help="Dataset format: sysu-mm01, regdb, llcm, npu-reid, hitsz-vcm, folder or csv."),
    trial: Optional[int] = typer.Option(None, "--trial", help="RegDB trial 1..10 (default 1)."),
    split_dir: Optional[Path] = typer.Option(
        None, "--split-dir", help="Folder with the split files (SYSU-MM01 *_id.txt, RegDB_split.mat, LLCM idx files, HITSZ-VCM info files)."
    ),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Decode every image (default) or only stat files."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding threads (default: CPU count)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Read a dataset, decode every image and report problems; exit code 1 if there are any."""
    from vireid.workflows.datasets import check_dataset

    outcome = check_dataset(path, fmt, trial=trial, split_dir=split_dir, decode=decode, workers=workers,
                            as_json=as_json)
    if outcome.error is not None:
        typer.secho(outcome.error, err=True, fg="red")
    if outcome.report is not None:
        typer.echo(outcome.report)
    raise typer.Exit(outcome.code)
