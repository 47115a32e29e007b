"""``vireid demo``: the end-to-end job on synthetic data (:func:`vireid.workflows.demo.run_demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app


@app.command("demo")
def demo_command(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides key=value (e.g. train.epochs=4)."),
    config: str = typer.Option("demo_synth", "--config", "-c", help="Config to train (default: demo_synth, the CPU demo config)."),
    run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir", help="Run folder (replaced on every demo run)."),
) -> None:
    """Generate synthetic data, evaluate reference matchers, train a two-stream model and evaluate it."""
    from vireid.workflows.demo import run_demo

    run_demo(config, list(overrides or []), run_dir, say=lambda text, bold=False: typer.secho(text, bold=bold))
