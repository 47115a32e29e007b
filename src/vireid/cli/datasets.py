"""``vireid datasets formats`` and ``vireid datasets check``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from vireid.cli.app import app

datasets_app = typer.Typer(
    help="Inspect dataset formats and validate a dataset on disk.", no_args_is_help=True, add_completion=False
)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("formats")
def formats_command() -> None:
    """List the dataset formats vireid reads and the options each accepts."""
    from vireid.data.datasets import DATASETS, dataset_options

    for name in DATASETS.names():
        reader = DATASETS.get(name)
        doc = (reader.__doc__ or "").strip().splitlines()
        options = ", ".join(dataset_options(name)) or "none"
        typer.echo(f"{name:10s} {doc[0] if doc else ''}")
        typer.echo(f"{'':10s} protocol family: {reader.protocol_family}; options: {options}")


def _cameras(cameras: dict[Any, int]) -> str:
    return " ".join(f"{cam}:{count}" for cam, count in cameras.items()) or "-"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary of :meth:`VIReIDDataset.summary` as a plain-text table."""
    lines = [
        f"{summary['format']} at {summary['root']} (protocol family: {summary['protocol_family']}, "
        f"training identities: {summary['num_train_ids']})",
        f"{'split':8s} {'modality':9s} {'ids':>6s} {'images':>8s}  cameras (camera:images)",
    ]
    for split, info in summary["splits"].items():
        lines.append(f"{split:8s} {'all':9s} {info['ids']:6d} {info['images']:8d}")
        for modality, sub in info["modalities"].items():
            lines.append(f"{'':8s} {modality:9s} {sub['ids']:6d} {sub['images']:8d}  {_cameras(sub['cameras'])}")
    return "\n".join(lines)


@datasets_app.command("check")
def check_command(
    path: Path = typer.Argument(..., help="Dataset root (for csv: the manifest file)."),
    fmt: str = typer.Option(..., "--format", "-f", help="Dataset format: sysu-mm01, regdb, llcm, folder or csv."),
    trial: Optional[int] = typer.Option(None, "--trial", help="RegDB trial 1..10 (default 1)."),
    split_dir: Optional[Path] = typer.Option(
        None, "--split-dir", help="Folder with the split files (SYSU-MM01 *_id.txt, RegDB_split.mat, LLCM idx files)."
    ),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="Decode every image (default) or only stat files."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding threads (default: CPU count)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Read a dataset, decode every image and report problems; exit code 1 if there are any."""
    from vireid.data.datasets import DATASETS, build_dataset, dataset_options
    from vireid.errors import ConfigError, DatasetError

    if fmt not in DATASETS:
        typer.secho(f"error: unknown format {fmt!r}; use one of {', '.join(DATASETS.names())}", err=True, fg="red")
        raise typer.Exit(2)
    accepted = dataset_options(fmt)
    options: dict[str, Any] = {}
    for flag, key, value in (("--trial", "trial", trial), ("--split-dir", "split_dir", split_dir)):
        if value is None:
            continue
        if key not in accepted:
            typer.secho(f"error: {flag} does not apply to format {fmt}", err=True, fg="red")
            raise typer.Exit(2)
        options[key] = value
    if "require_train" in accepted:
        options["require_train"] = False  # evaluation-only copies are valid; check() warns about them

    try:
        dataset = build_dataset(fmt, path, **options)
    except ConfigError as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        raise typer.Exit(2) from None
    except DatasetError as err:
        if as_json:
            failure = {"dataset": fmt, "root": str(path), "ok": False, "problems": [str(err)], "warnings": []}
            typer.echo(json.dumps(failure, indent=2))
        else:
            typer.echo(f"problem: {err}")
            typer.echo(f"FAILED: {fmt} dataset at {path} cannot be read")
        raise typer.Exit(1) from None

    report = dataset.check(decode=decode, workers=workers)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_summary(report.summary))
        for title, items in (("problems", report.problems), ("warnings", report.warnings)):
            if items:
                typer.echo(f"{title} ({len(items)}):")
                for item in items:
                    typer.echo(f"  - {item}")
        action = "decoded" if decode else "found"
        if report.ok:
            typer.echo(f"OK: {report.num_images} images {action}, no problems")
        else:
            typer.echo(f"FAILED: {len(report.problems)} problem(s) in {report.num_images} images")
    raise typer.Exit(0 if report.ok else 1)
