"""The tables of an ablation: one row per grid row (marks, Rank-1/10/20, mAP, mINP), seeds combined, written
to ``ablation.md`` or a named section of another Markdown file."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vireid.engine.checkpoint import atomic_write_text
from vireid.errors import ConfigError
from vireid.workflows.ablation.grid import AblationGrid

#: Table columns: (result key, header).
METRIC_COLUMNS = (("rank1", "Rank-1"), ("rank10", "Rank-10"), ("rank20", "Rank-20"), ("mAP", "mAP"), ("mINP", "mINP"))


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
