"""``vireid configs``: the shipped recipes and ablation grids, and any config printed in full."""

from __future__ import annotations

from typing import Optional

import typer

from vireid.cli.app import app


@app.command("configs")
def configs_command(
    name: Optional[str] = typer.Argument(None, help="A config file or shipped name: print it in full, its _base_ chain merged."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Overrides key=value applied before printing."),
) -> None:
    """List the shipped configs and ablation grids, or print one config in full (defaults filled in)."""
    from vireid.workflows.configs import config_listing, config_yaml

    typer.echo(config_listing() if name is None else config_yaml(name, overrides or []))
