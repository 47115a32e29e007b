"""Ablation grids: train one config under several named sets of overrides, evaluate each on the
dataset's standard protocols, and tabulate Rank-1/10/20, mAP and mINP (mean over trials).

Grid file (YAML)::

    # optional: the config the rows start from (a path, relative to this file or the working
    # folder, or a shipped config name); `vireid ablate --config` takes precedence
    config: dfw_sln_synth
    title: DFW+SLN ablation (Table 1)         # optional, heads the tables
    overrides: [train.epochs=10]               # optional, applied to every row
    rows:
      - name: baseline                         # run-folder name: letters, digits, . _ + -
        label: Baseline                        # optional, shown in the table (default: name)
        marks: {DFW: false, SLN: false, RE: false}   # optional table columns (true ✓ / false ✗ / text)
        overrides: [model.params.num_branches=1, augment.random_erasing=0.0]
      - name: dfw_sln_re
        overrides: {model.params.num_branches: 2}   # a mapping of dotted keys works too

Overrides apply in this order: the config file, the grid's ``overrides``, the command line's, then
the row's (the row's own settings are what the ablation varies, so they win).

Each row trains in ``OUT/<name>/`` through the normal training path (the same function as
``vireid train``) with ``name=<name>``. The grid is resumable: a row whose folder holds
``test_results.json`` is not re-run; one whose training finished (``train_summary.json``) is only
evaluated; one with a ``last.pt`` (interrupted) is resumed. A folder made with a different config
(the grid was edited) is refused rather than reused. ``--seeds`` repeats every row per training seed
(``OUT/<row>.seed<S>/`` beside the config-seed run) and ``--jobs`` trains rows in parallel processes. Results go to ``OUT/ablation.md`` and
``OUT/ablation.json``, and optionally into a named section of another Markdown file
(:func:`write_markdown_section`, e.g. ``docs/results.md``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vireid.config import Config, config_from_dict, load_config
from vireid.engine.checkpoint import atomic_write_text
from vireid.errors import ConfigError, VireidError

#: Table columns: (result key, header).
METRIC_COLUMNS = (("rank1", "Rank-1"), ("rank10", "Rank-10"), ("rank20", "Rank-20"), ("mAP", "mAP"), ("mINP", "mINP"))
#: Config keys that do not change what a run computes (ignored when checking a folder's config).
RUNTIME_KEYS = ("output_dir", "train.progress", "train.threads", "train.device", "data.workers")
_ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class AblationRow:
    """One named set of overrides (one trained model)."""

    name: str
    overrides: list[str]
    label: str = ""
    marks: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass
class AblationGrid:
    """Rows plus what they share; ``path`` is the grid file (for relative config paths)."""

    rows: list[AblationRow]
    overrides: list[str] = field(default_factory=list)
    config: str | None = None
    title: str = ""
    path: Path | None = None

    def mark_columns(self) -> list[str]:
        """The union of the rows' mark names, in order of first appearance."""
        names: list[str] = []
        for row in self.rows:
            names += [k for k in row.marks if k not in names]
        return names


def _override_list(value: Any, where: str) -> list[str]:
    """Overrides given as ``["a.b=1", ...]`` or ``{"a.b": 1}`` -> ``["a.b=1", ...]``."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{key}={json.dumps(item)}" for key, item in value.items()]
    if isinstance(value, list) and all(isinstance(item, str) and "=" in item for item in value):
        return list(value)
    raise ConfigError(f"{where} must be a list of 'key=value' strings or a mapping of dotted keys to values, got {value!r}")


def load_grid(path: str | Path) -> AblationGrid:
    """Read and check a grid file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ablation grid {path} does not exist; pass a YAML grid file to --grid")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"ablation grid {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"ablation grid {path} must hold a mapping with a 'rows' list")
    unknown = sorted(set(data) - {"config", "title", "overrides", "rows"})
    if unknown:
        raise ConfigError(f"ablation grid {path}: unknown key {unknown[0]!r}; valid keys: config, overrides, rows, title")
    rows_data = data.get("rows")
    if not isinstance(rows_data, list) or not rows_data:
        raise ConfigError(f"ablation grid {path} needs a non-empty 'rows' list")
    rows: list[AblationRow] = []
    for index, item in enumerate(rows_data):
        where = f"ablation grid {path}, row {index + 1}"
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{where} must be a mapping with a 'name'")
        extra = sorted(set(item) - {"name", "label", "marks", "overrides"})
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r}; valid keys: label, marks, name, overrides")
        name = str(item["name"])
        if not _ROW_NAME.match(name):
            raise ConfigError(f"{where}: name {name!r} must be letters, digits, '.', '_', '+' or '-' (it names a folder)")
        if any(r.name == name for r in rows):
            raise ConfigError(f"{where}: the name {name!r} is used twice; row names must be unique")
        marks = item.get("marks") or {}
        if not isinstance(marks, dict):
            raise ConfigError(f"{where}: marks must be a mapping such as {{DFW: true, RE: false}}")
        rows.append(AblationRow(name, _override_list(item.get("overrides"), f"{where} overrides"),
                                str(item.get("label") or ""), dict(marks)))
    config = data.get("config")
    return AblationGrid(rows, _override_list(data.get("overrides"), f"ablation grid {path} overrides"),
                        None if config is None else str(config), str(data.get("title") or ""), path)


def row_overrides(grid: AblationGrid, row: AblationRow, cli_overrides: Sequence[str], out: Path,
                  seed: int | None = None) -> list[str]:
    """All overrides of one row, in the order they apply (grid, command line, row, then its seed and
    folder: ``OUT/<row>``, or ``OUT/<row>.seed<seed>`` for a seed other than the config's)."""
    own = [] if seed is None else [f"seed={seed}"]
    return [*grid.overrides, *cli_overrides, *row.overrides, *own, f"name={row_folder_name(row, seed)}",
            f"output_dir={out}"]


def row_folder_name(row: AblationRow, seed: int | None = None) -> str:
    """``<row>``, or ``<row>.seed<seed>`` for a run under a seed other than the config's."""
    return row.name if seed is None else f"{row.name}.seed{seed}"


def _comparable(tree: dict) -> dict:
    tree = json.loads(json.dumps(tree, default=str))
    data = tree.get("data")
    if isinstance(data, dict) and isinstance(data.get("root"), str):  # training stores data.root absolute
        data["root"] = str(Path(data["root"]).expanduser().absolute())
    for dotted in RUNTIME_KEYS:
        *parents, key = dotted.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return tree


def _row_state(cfg: Config, folder: Path) -> str:
    """``done``, ``evaluate``, ``resume`` or ``new``; refuses a folder made with another config (unless
    that run died before saving anything: then the row starts afresh)."""
    saved = folder / "config.yaml"
    if not saved.is_file():
        if (folder / "last.pt").exists() or (folder / "test_results.json").exists():
            raise VireidError(f"{folder} holds a run without its config.yaml; delete the folder to re-run this row")
        return "new"
    previous = yaml.safe_load(saved.read_text()) or {}
    try:  # fill in keys a newer vireid added since that run (with their defaults), so they compare equal
        previous = config_from_dict(previous).to_dict()
    except VireidError:
        pass  # an old key that no longer exists: compared as saved, so the folder is refused below
    finished_nothing = not any((folder / f).exists() for f in ("last.pt", "train_summary.json", "test_results.json"))
    if finished_nothing:
        return "new"  # an attempt that failed before its first checkpoint (e.g. bad data): start afresh
    if _comparable(previous) != _comparable(cfg.to_dict()):
        raise VireidError(
            f"{folder} holds a run made with a different config (the grid or the overrides changed); "
            "delete that folder to re-run the row, or pass another --out"
        )
    if (folder / "test_results.json").is_file():
        return "done"
    summary = folder / "train_summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("epochs", -1) >= cfg.train.epochs:
        return "evaluate"
    if (folder / "last.pt").is_file():
        return "resume"
    return "new"


def row_results(folder: Path) -> dict[str, dict]:
    """``{protocol: {"mean": {...}, "std": {...}, "trials": n}}`` from a run's test_results.json
    (without re-ranking)."""
    rows = json.loads((folder / "test_results.json").read_text())
    out: dict[str, dict] = {}
    for item in rows:
        if (item.get("settings") or {}).get("rerank"):
            continue
        out[item["name"]] = {"mean": item["mean"], "std": item["std"], "trials": len(item.get("trials", []))}
    return out


@dataclass
class AblationReport:
    """What a finished grid produced: per row its overrides, train command and results."""

    grid: AblationGrid
    config_path: str
    command: str
    out: Path
    rows: list[dict]

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "config": self.config_path,
            "grid": str(self.grid.path) if self.grid.path else None,
            "title": self.grid.title,
            "out": str(self.out),
            "rows": self.rows,
        }

    def protocols(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names += [p for p in row["results"] if p not in names]
        return names

    def tables(self, heading: str = "###") -> str:
        """One Markdown table per protocol: marks, then Rank-1/10/20, mAP, mINP (%, mean over trials)."""
        marks = self.grid.mark_columns()
        parts = []
        for protocol in self.protocols():
            found = [row["results"][protocol] for row in self.rows if protocol in row["results"]]
            trials = sorted({result["trials"] for result in found})
            seeds = sorted({result.get("seeds", 1) for result in found})
            over = f"mean over {'/'.join(map(str, trials))} trials"
            if seeds != [1]:
                over += f", then mean ± std over {'/'.join(map(str, seeds))} training seeds"
            header = ["row", *marks, *(title for _, title in METRIC_COLUMNS)]
            lines = [
                f"{heading} {protocol} ({over}, %)",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
            for row in self.rows:
                result = row["results"].get(protocol)
                cells = [row["label"] or row["name"], *(_mark(row["marks"].get(m)) for m in marks)]
                cells += [_cell(result, key) for key, _ in METRIC_COLUMNS]
                lines.append("| " + " | ".join(cells) + " |")
            parts.append("\n".join(lines))
        return "\n\n".join(parts)

    def markdown(self, heading: str = "###") -> str:
        """Tables, the command that made them and each row's equivalent ``vireid train`` command."""
        commands = "\n".join(f"- {row['label'] or row['name']}: `{row['train_command']}`" for row in self.rows)
        return (
            f"Command: `{self.command}`  \nConfig: `{self.config_path}`\n\n{self.tables(heading)}\n\n"
            f"Each row alone (the same run):\n\n{commands}\n"
        )


def _cell(result: dict | None, key: str) -> str:
    if not result:
        return "-"
    if result.get("seeds", 1) > 1:
        return f"{result['mean'][key]:.2f} ± {result['seed_std'][key]:.2f}"
    return f"{result['mean'][key]:.2f}"


def _mark(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "✓" if value else "✗"
    return str(value)


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


def combine_seeds(runs: Sequence[dict[str, dict]]) -> dict[str, dict]:
    """Per protocol, the mean over seeds of each run's trial mean, ``seed_std`` (sample standard
    deviation over seeds, 0 for one seed) and ``seeds`` (how many runs); ``std`` and ``trials``
    are those of the first run (the spread over gallery draws)."""
    import statistics

    combined: dict[str, dict] = {}
    for protocol in dict.fromkeys(p for run in runs for p in run):
        present = [run[protocol] for run in runs if protocol in run]
        keys = present[0]["mean"].keys()
        combined[protocol] = {
            "mean": {k: statistics.fmean(r["mean"][k] for r in present) for k in keys},
            "seed_std": {k: statistics.stdev([r["mean"][k] for r in present]) if len(present) > 1 else 0.0
                         for k in keys},
            "seeds": len(present),
            "std": present[0]["std"],
            "trials": present[0]["trials"],
        }
    return combined


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
    default to :func:`vireid.cli.train.run_training` and :func:`~vireid.cli.train.evaluate_checkpoint`
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
        from vireid.cli.train import evaluate_checkpoint, run_training

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
            cfg = load_config(config_path, overrides)
            validate_config(cfg)
        except ConfigError as err:
            raise ConfigError(f"ablation row {row.name!r}: {err}") from None
        for seed in _unique(seeds) if seeds else [cfg.seed]:
            if seed == cfg.seed:  # the config's own seed keeps the plain folder (runs made without --seeds)
                units.append(_Unit(row, seed, cfg, overrides, out / row_folder_name(row)))
                continue
            seeded = row_overrides(grid, row, cli_overrides, out, seed=seed)
            units.append(_Unit(row, seed, load_config(config_path, seeded), seeded, out / row_folder_name(row, seed)))
    total = len(units)
    states = [_row_state(unit.cfg, unit.folder) for unit in units]
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


@dataclass
class RowJob:
    """One row to run in its own process (``jobs > 1``)."""

    prefix: str
    folder: Path
    state: str  # new | resume | evaluate
    overrides: list[str]
    threads: int | None
    plugins: list[str] = field(default_factory=list)  # the grid config's own plugins (named by the user)

    @property
    def log_path(self) -> Path:
        return self.folder.parent / f"{self.folder.name}.log"

    def command(self, config_path: Path, threads: int) -> list[str]:
        """The ``vireid`` command that does this row's work (the same as the table's train command)."""
        import sys

        base = [sys.executable, "-m", "vireid"]
        # the row's stored run names the grid config's plugins: the user's own, so they are passed on
        own = [word for entry in self.plugins for word in ("--plugins", entry)]
        if self.state == "evaluate":
            return [*base, "eval", str(self.folder), *own]
        if self.state == "resume":
            return [*base, "train", "--resume", str(self.folder), *own]
        extra = [] if self.threads else [f"train.threads={threads}"]
        return [*base, "train", "--config", str(config_path), "--run-dir", str(self.folder),
                *self.overrides, "train.progress=false", *extra]


def run_rows_in_processes(config_path: Path, work: Sequence[RowJob], jobs: int,
                          log: Callable[[str], None] = print) -> list[str]:
    """Run rows ``jobs`` at a time, each as a ``vireid`` process writing ``OUT/<row>.log``.

    Each process gets ``cpu_count // jobs`` torch threads unless the config sets ``train.threads``;
    with several CUDA devices, process slot ``k`` sees only device ``k mod n``
    (``CUDA_VISIBLE_DEVICES``). Returns one line per failed row (empty when all succeeded).
    """
    import os
    import queue
    import subprocess
    import threading
    import time

    if not work:
        return []
    threads = max(1, (os.cpu_count() or 1) // jobs)
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no CUDA runtime: CPU only
        gpus = 0
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(min(jobs, len(work))):
        slots.put(slot)
    failures: list[str] = []
    lock = threading.Lock()

    def run(job: RowJob) -> None:
        slot = slots.get()
        try:
            env = dict(os.environ)
            if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
                env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            job.folder.parent.mkdir(parents=True, exist_ok=True)
            verb = {"evaluate": "evaluating", "resume": "resuming"}.get(job.state, "training")
            with lock:
                log(f"{job.prefix}: {verb} in a process of its own -> {job.folder} (log: {job.log_path})")
            start = time.monotonic()
            with open(job.log_path, "w") as handle:
                code = subprocess.run(job.command(config_path, threads), stdout=handle, stderr=subprocess.STDOUT,
                                      env=env).returncode
            minutes = (time.monotonic() - start) / 60.0
            with lock:
                if code == 0:
                    log(f"{job.prefix}: finished in {minutes:.1f} min")
                else:
                    failures.append(f"{job.folder.name} (exit {code}, log {job.log_path})")
                    log(f"{job.prefix}: FAILED (exit {code}) after {minutes:.1f} min; see {job.log_path}")
        finally:
            slots.put(slot)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(jobs, len(work))) as pool:
        list(pool.map(run, work))
    return failures


def write_markdown_section(path: str | Path, name: str, title: str, body: str) -> None:
    """Write (or replace) section ``name`` of a Markdown file, between ``<!-- BEGIN name -->`` and
    ``<!-- END name -->`` markers, leaving the rest of the file as it is (atomic)."""
    if not re.match(r"^[A-Za-z0-9_.+-]+$", name):
        raise ConfigError(f"section name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    path = Path(path)
    block = f"<!-- BEGIN {name} -->\n## {title}\n\n{body.strip()}\n<!-- END {name} -->"
    text = path.read_text() if path.exists() else "# Results\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


__all__ = [
    "METRIC_COLUMNS",
    "AblationGrid",
    "AblationReport",
    "AblationRow",
    "load_grid",
    "row_overrides",
    "row_results",
    "run_ablation",
    "write_markdown_section",
]
