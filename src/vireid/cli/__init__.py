"""The ``vireid`` command. The CLI only parses arguments and calls a workflow (:mod:`vireid.workflows`):
each sub-command lives in its own module of this package and registers itself on
:data:`vireid.cli.app.app`; ``vireid list`` prints every registry."""

from __future__ import annotations

import sys

import typer

from vireid.cli.app import app, plugin_options
from vireid.errors import VireidError


def _register() -> None:
    from vireid.cli import commands  # noqa: F401  (registers the commands on ``app``)


def main() -> None:
    """Entry point: expected user mistakes (VireidError) print one line, no traceback. Process-wide settings
    (:func:`vireid.workflows.process.prepare_process`: subnormal floats flushed to zero) are made before any
    command runs, so torch's thread pool inherits them."""
    from vireid.workflows.process import prepare_process

    prepare_process()
    _register()
    try:
        app()
    except VireidError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)


__all__ = ["app", "main", "plugin_options"]
