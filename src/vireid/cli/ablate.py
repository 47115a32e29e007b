"""``vireid ablate``: train and evaluate a grid of config variants and tabulate them
(the logic is :mod:`vireid.workflows.ablation`)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from vireid.cli.app import app
from vireid.config import SHIPPED_CONFIGS, find_yaml, shipped_names
from vireid.errors import VireidError

GRIDS = SHIPPED_CONFIGS / "ablations"


def resolve_grid(path: str) -> Path:
    """A grid file, or the name of a grid shipped in configs/ablations/ (``dfw_sln_synth``)."""
    found = find_yaml(path, GRIDS)
    if found is None:
        raise VireidError(f"ablation grid {path!r} is neither a file nor a shipped grid; shipped grids: {shipped_names(GRIDS)}")
    return found


def resolve_grid_config(name: str, grid_file: Path) -> Path:
    """The grid's ``config``: a path (as given, or relative to the grid file) or a shipped config name."""
    from vireid.workflows.train_run import resolve_config

    return find_yaml(name, SHIPPED_CONFIGS, beside=grid_file.parent) or resolve_config(name)


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
    from vireid.workflows.train_run import resolve_config
    from vireid.plugins import user_config
    from vireid.workflows.ablation import load_grid, run_ablation, write_markdown_section

    grid_path = resolve_grid(grid)
    spec = load_grid(grid_path)
    if config:
        config_path = resolve_config(config)
    elif spec.config:
        config_path = resolve_grid_config(spec.config, grid_path)
    else:
        raise VireidError(f"ablation grid {grid_path} names no config; pass --config CONFIG or add 'config:' to the grid")
    cli_overrides = list(overrides or [])
    seed_list = None
    if seeds:
        try:
            seed_list = [int(part) for part in seeds.replace(" ", "").split(",") if part]
        except ValueError:
            raise VireidError(f"--seeds {seeds!r} is not a comma-separated list of integers (e.g. --seeds 0,1,2)") from None
    if out is None:
        base = user_config(config_path, [*spec.overrides, *cli_overrides])
        out = Path(base.output_dir) / f"ablate-{grid_path.stem}"
    # how the rows' `vireid train` commands name the config: as typed, unless only the grid's folder finds it
    config_label = config or (str(config_path) if not Path(spec.config or "").is_file()
                              and (grid_path.parent / (spec.config or "")).is_file() else spec.config)
    words = ["vireid", "ablate", "--config", config_label, "--grid", grid, "--out", str(out)]
    if seed_list:
        words += ["--seeds", ",".join(map(str, seed_list))]
    if append_to is not None:
        words += ["--append-to", str(append_to), "--section", section or f"ablate-{grid_path.stem}"]
    command = shlex.join(words + cli_overrides)
    report = run_ablation(config_path, spec, out, cli_overrides, command=command, config_label=config_label,
                          only=tuple(row or ()), jobs=jobs, seeds=seed_list,
                          log=lambda line: typer.echo(line), dry_run=dry_run)
    if dry_run:
        return
    typer.echo(report.tables())
    typer.echo(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
    if append_to is not None:
        name = section or f"ablate-{grid_path.stem}"
        write_markdown_section(append_to, name, title or spec.title or f"Ablation {grid_path.stem}", report.markdown("###"))
        typer.echo(f"wrote section {name!r} of {append_to}")
