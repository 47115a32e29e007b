"""Running a grid (:func:`run_ablation`): the rows' training and evaluation in order or in parallel, resuming what
a row's folder holds, then the tables. The grid file format and the resume rules are in the package
docstring (:mod:`vireid.workflows.ablation`)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vireid.config import Config
from vireid.engine.checkpoint import atomic_write_text
from vireid.errors import ConfigError, VireidError
from vireid.plugins import user_config
from vireid.workflows.ablation.grid import AblationGrid, AblationRow, row_folder_name, row_overrides
from vireid.workflows.ablation.pool import RowJob, run_rows_in_processes
from vireid.workflows.ablation.state import row_state, row_results
from vireid.workflows.ablation.tables import AblationReport, combine_seeds


@dataclass
class _Unit:
    """One training run of a grid: a row under one seed."""

    row: AblationRow
    seed: int
    cfg: Config
    overrides: list[str]
    folder: Path


def _unique(values: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(int(v) for v in values))


def run_ablation(
    config_path: str | Path,
    grid: AblationGrid,
    out: str | Path,
    cli_overrides: Sequence[str] = (),
    *,
    command: str = "",
    config_label: str | None = None,
    only: Sequence[str] = (),
    train_fn: Callable[..., dict] | None = None,
    evaluate_fn: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
    dry_run: bool = False,
    jobs: int = 1,
    seeds: Sequence[int] | None = None,
) -> AblationReport:
    """Train and evaluate every row not finished yet; write ``OUT/ablation.{md,json}``.

    ``train_fn(cfg, folder, resume=bool, evaluate=True)`` and ``evaluate_fn(folder, progress=bool)``
    default to :func:`vireid.workflows.train_run.run_training` and :func:`~vireid.workflows.train_run.evaluate_checkpoint`
    (the ``vireid train`` path). ``only`` restricts the run to some row names (the report still lists
    every finished row). ``dry_run`` only reports what each row would do. ``config_label`` is how
    the config is written in the rows' ``vireid train`` commands (default: ``config_path``).

    ``jobs > 1`` trains that many rows at once, each as its own ``vireid train`` / ``vireid eval``
    process (:func:`run_rows_in_processes`; ``train_fn``/``evaluate_fn`` are then not used). A row
    that fails there does not stop the others: the table is still written with every finished row,
    then a :class:`VireidError` names the failed rows and their logs.

    ``seeds`` trains every row once per seed: the config's own seed in ``OUT/<row>/``, each other
    seed ``s`` in ``OUT/<row>.seed<s>/`` (override ``seed=s``); the tables then show the mean over
    the seeds ± their standard deviation (:func:`combine_seeds`), so a difference can be set against
    the spread that training randomness alone gives.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if train_fn is None or evaluate_fn is None:
        from vireid.workflows.train_run import evaluate_checkpoint, run_training

        train_fn = train_fn or run_training
        evaluate_fn = evaluate_fn or evaluate_checkpoint
    from vireid.engine.trainer import validate_config

    out = Path(out)
    unknown = [name for name in only if name not in {row.name for row in grid.rows}]
    if unknown:
        raise ConfigError(f"--row {unknown[0]!r} is not a row of the grid; rows: {', '.join(r.name for r in grid.rows)}")
    units: list[_Unit] = []
    for row in grid.rows:  # build and check every row before training any (a typo in row 8 fails at once)
        overrides = row_overrides(grid, row, cli_overrides, out)
        try:
            cfg = user_config(config_path, overrides)
            validate_config(cfg)
        except ConfigError as err:
            raise ConfigError(f"ablation row {row.name!r}: {err}") from None
        for seed in _unique(seeds) if seeds else [cfg.seed]:
            if seed == cfg.seed:  # the config's own seed keeps the plain folder (runs made without --seeds)
                units.append(_Unit(row, seed, cfg, overrides, out / row_folder_name(row)))
                continue
            seeded = row_overrides(grid, row, cli_overrides, out, seed=seed)
            units.append(_Unit(row, seed, user_config(config_path, seeded), seeded, out / row_folder_name(row, seed)))
    total = len(units)
    states = [row_state(unit.cfg, unit.folder) for unit in units]
    labels = [f"[{i}/{total}] {unit.folder.name}" for i, unit in enumerate(units, start=1)]
    failures: list[str] = []
    if jobs > 1 and not dry_run:
        work = [
            RowJob(label, unit.folder, state, unit.overrides, unit.cfg.train.threads, list(unit.cfg.plugins))
            for label, unit, state in zip(labels, units, states)
            if (not only or unit.row.name in only) and state != "done"
        ]
        failures = run_rows_in_processes(Path(config_path), work, jobs, log)
    for prefix, unit, state in zip(labels, units, states):
        folder, cfg = unit.folder, unit.cfg
        selected = not only or unit.row.name in only
        if dry_run or not selected:
            log(f"{prefix}: {state}{'' if selected else ' (not selected)'} -> {folder}")
        elif state == "done":
            log(f"{prefix}: done, results read from {folder / 'test_results.json'}")
        elif jobs > 1:
            pass  # trained above, in its own process
        elif state == "evaluate":
            log(f"{prefix}: trained, evaluating -> {folder}")
            evaluate_fn(folder, progress=cfg.train.progress)
        else:
            log(f"{prefix}: {'resuming' if state == 'resume' else 'training'} -> {folder}")
            train_fn(cfg, folder, resume=state == "resume", evaluate=True)
    records = []
    for row in grid.rows:
        mine = [unit for unit in units if unit.row is row]
        per_seed = {unit.seed: row_results(unit.folder) for unit in mine if (unit.folder / "test_results.json").is_file()}
        records.append({
            "name": row.name,
            "label": row.label,
            "marks": row.marks,
            "overrides": row.overrides,
            "run_dir": str(mine[0].folder),
            "train_command": shlex.join(["vireid", "train", "--config", config_label or str(config_path),
                                         *mine[0].overrides]),
            "results": combine_seeds(list(per_seed.values())),
            "seeds": {str(seed): results for seed, results in per_seed.items()},
        })
    report = AblationReport(grid, config_label or str(config_path), command, out, records)
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        title = grid.title or f"Ablation: {grid.path.stem if grid.path else 'grid'}"
        atomic_write_text(out / "ablation.md", f"# {title}\n\n{report.markdown('##')}")
        atomic_write_text(out / "ablation.json", json.dumps(report.to_dict(), indent=2))
    if failures:
        raise VireidError(
            f"{len(failures)} ablation row(s) failed: {'; '.join(failures)}. The table in {out / 'ablation.md'} "
            "holds the finished rows; fix the cause and run the same command again to finish the rest"
        )
    return report
