"""``vireid list``: what every registry holds (methods, losses, backbones, modules, heads, batch steps,
dataset readers, protocols), one line per entry from its docstring."""

from __future__ import annotations

from typing import Optional

import typer

from vireid.cli.app import app, plugin_options


@app.command("list")
@plugin_options
def list_command(
    registries: Optional[list[str]] = typer.Argument(None, help="Registries to print (default: all): methods, losses, backbones, modules, heads, steps, datasets, protocols."),
) -> None:
    """List the registered parts a config can name, with a one-line summary each (plugins: --plugins)."""
    from vireid.workflows.data_tools import list_registries

    typer.echo(list_registries(tuple(registries or ())))
