"""The grid file of an ablation: its rows, their overrides and run-folder names (the file format is
described in :mod:`vireid.workflows.ablation`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vireid.errors import ConfigError

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


@dataclass(frozen=True)
class AblationComparison:
    """A question the grid answers: does ``row`` differ from ``against`` (its reference row)?"""

    row: str
    against: str


@dataclass
class AblationGrid:
    """Rows plus what they share; ``path`` is the grid file (for relative config paths);
    ``comparisons`` are the row pairs whose difference the report reads out."""

    rows: list[AblationRow]
    overrides: list[str] = field(default_factory=list)
    config: str | None = None
    title: str = ""
    path: Path | None = None
    comparisons: list[AblationComparison] = field(default_factory=list)

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
    unknown = sorted(set(data) - {"compare", "config", "title", "overrides", "rows"})
    if unknown:
        raise ConfigError(
            f"ablation grid {path}: unknown key {unknown[0]!r}; valid keys: compare, config, overrides, rows, title")
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
                        None if config is None else str(config), str(data.get("title") or ""), path,
                        _comparisons(data.get("compare"), [r.name for r in rows], f"ablation grid {path}"))


def _comparisons(value: Any, names: list[str], where: str) -> list[AblationComparison]:
    """``compare: [[row, against], ...]`` or ``[{row: ..., against: ...}, ...]`` -> checked pairs."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: compare must be a list of [row, against] pairs, got {value!r}")
    pairs: list[AblationComparison] = []
    for index, item in enumerate(value):
        if isinstance(item, dict) and set(item) == {"row", "against"}:
            pair = (item["row"], item["against"])
        elif isinstance(item, list) and len(item) == 2:
            pair = (item[0], item[1])
        else:
            raise ConfigError(f"{where}: compare entry {index + 1} must be [row, against] or "
                              f"{{row: ..., against: ...}}, got {item!r}")
        for name in pair:
            if str(name) not in names:
                raise ConfigError(f"{where}: compare entry {index + 1} names {name!r}, which is not a row; "
                                  f"rows: {', '.join(names)}")
        if str(pair[0]) == str(pair[1]):
            raise ConfigError(f"{where}: compare entry {index + 1} compares {pair[0]!r} with itself")
        pairs.append(AblationComparison(str(pair[0]), str(pair[1])))
    return pairs


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
