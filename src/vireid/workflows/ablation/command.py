"""``vireid ablate`` as one job: find the grid (a file or a shipped grid of configs/ablations/) and the
config its rows start from, choose the output folder, run the grid (:func:`.run.run_ablation`) and
write its tables, optionally into a named section of a Markdown file (:func:`.tables.write_markdown_section`)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, Optional, Sequence

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


def parse_seeds(seeds: Optional[str]) -> Optional[list[int]]:
    """``--seeds 0,1,2`` as a list of integers (None when not given)."""
    if not seeds:
        return None
    try:
        return [int(part) for part in seeds.replace(" ", "").split(",") if part]
    except ValueError:
        raise VireidError(f"--seeds {seeds!r} is not a comma-separated list of integers (e.g. --seeds 0,1,2)") from None


def ablate(grid: str, *, overrides: Sequence[str] = (), config: Optional[str] = None, out: Optional[Path] = None,
           append_to: Optional[Path] = None, section: Optional[str] = None, title: Optional[str] = None,
           rows: Sequence[str] = (), dry_run: bool = False, seeds: Optional[str] = None, jobs: int = 1,
           log: Callable[[str], None] = print) -> None:
    """Run an ablation grid like ``vireid ablate``; ``log`` gets every line the command prints (row states,
    the tables and the files written)."""
    from vireid.plugins import user_config
    from vireid.workflows.ablation import load_grid, run_ablation, write_markdown_section
    from vireid.workflows.train_run import resolve_config

    grid_path = resolve_grid(grid)
    spec = load_grid(grid_path)
    if config:
        config_path = resolve_config(config)
    elif spec.config:
        config_path = resolve_grid_config(spec.config, grid_path)
    else:
        raise VireidError(f"ablation grid {grid_path} names no config; pass --config CONFIG or add 'config:' to the grid")
    cli_overrides = list(overrides or [])
    seed_list = parse_seeds(seeds)
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
                          only=tuple(rows or ()), jobs=jobs, seeds=seed_list, log=log, dry_run=dry_run)
    if dry_run:
        return
    log(report.tables())
    log(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
    if append_to is not None:
        name = section or f"ablate-{grid_path.stem}"
        write_markdown_section(append_to, name, title or spec.title or f"Ablation {grid_path.stem}", report.markdown("###"))
        log(f"wrote section {name!r} of {append_to}")
