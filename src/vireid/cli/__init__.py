"""The ``vireid`` command. The CLI only wires things together: each sub-command lives in its
own module of this package and calls into the library."""

from __future__ import annotations

import sys

import typer

from vireid.errors import VireidError

app = typer.Typer(
    name="vireid",
    help="Visible-infrared person re-identification: data, training, evaluation and search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from vireid.cli import commands  # noqa: F401  (registers the commands on ``app``)


def main() -> None:
    """Entry point: expected user mistakes (VireidError) print one line, no traceback."""
    _register()
    try:
        app()
    except VireidError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
