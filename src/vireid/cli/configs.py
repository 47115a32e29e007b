"""``vireid configs``: the shipped recipes and ablation grids, and any config printed in full."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from vireid.cli.app import app
from vireid.config import SHIPPED_CONFIGS


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of a YAML file's leading comment (its description), cut to ``width``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(part for part in lines if part)
    end = text.find(". ")
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _list(title: str, paths: list[Path]) -> None:
    if not paths:
        return
    typer.echo(title)
    wide = max(len(p.stem) for p in paths)
    for path in paths:
        typer.echo(f"  {path.stem:<{wide}}  {describe(path)}")


@app.command("configs")
def configs_command(
    name: Optional[str] = typer.Argument(None, help="A config file or shipped name: print it in full, its _base_ chain merged."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Overrides key=value applied before printing."),
) -> None:
    """List the shipped configs and ablation grids, or print one config in full (defaults filled in)."""
    if name is None:
        from vireid.cli.ablate import GRIDS

        _list("Shipped configs (vireid train --config NAME):", sorted(SHIPPED_CONFIGS.glob("*.yaml")))
        _list("\nAblation grids (vireid ablate --grid NAME):", sorted(GRIDS.glob("*.yaml")))
        _list("\nGAN configs (vireid gan train --config NAME):", sorted((SHIPPED_CONFIGS / "gan").glob("*.yaml")))
        typer.echo(f"\nFiles: {SHIPPED_CONFIGS}. Print one in full: vireid configs NAME [key=value ...]")
        return
    from vireid.workflows.train_run import resolve_config
    from vireid.plugins import user_config

    cfg = user_config(resolve_config(name), list(overrides or []))
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
