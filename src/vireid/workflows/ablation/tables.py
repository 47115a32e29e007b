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
from vireid.workflows.ablation.grid import AblationComparison, AblationGrid

#: Table columns: (result key, header).
METRIC_COLUMNS = (("rank1", "Rank-1"), ("rank10", "Rank-10"), ("rank20", "Rank-20"), ("mAP", "mAP"), ("mINP", "mINP"))

#: Two-sided 95 % critical values of Student's t for 1-30 degrees of freedom (the standard table, e.g.
#: NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.6.7.2); 1.96 (the normal value) beyond.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


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
            "comparisons": [compare_rows(self.rows, self.grid.comparisons, protocol) for protocol in self.protocols()],
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

    def comparison_tables(self, heading: str = "###", metric: str = "mAP") -> str:
        """The grid's ``compare`` pairs read out per protocol (see :func:`compare_rows`); '' without pairs."""
        if not self.grid.comparisons:
            return ""
        titles = {row["name"]: row["label"] or row["name"] for row in self.rows}
        parts = []
        for protocol in self.protocols():
            lines = [
                f"{heading} {protocol}: each row against its reference ({metric}, %)",
                "",
                f"Paired by training seed: the mean ± standard deviation of the per-seed differences, and its 95 % "
                f"interval from Student's t over the seeds (an interval that holds 0 is no finding).",
                "",
                f"| row | against | seeds | Δ {metric} | 95 % interval | reading |",
                "|---|---|---|---|---|---|",
            ]
            for item in compare_rows(self.rows, self.grid.comparisons, protocol, metric):
                if item["seeds"] == 0:
                    delta = interval = "-"
                elif item["seeds"] == 1:
                    delta, interval = f"{item['diff']:+.2f}", "-"
                else:
                    delta = f"{item['diff']:+.2f} ± {item['sd']:.2f}"
                    interval = f"[{item['low']:+.2f}, {item['high']:+.2f}]"
                lines.append(f"| {titles[item['row']]} | {titles[item['against']]} | {item['seeds']} | {delta} | "
                             f"{interval} | {item['reading']} |")
            parts.append("\n".join(lines))
        return "\n\n".join(parts)

    def markdown(self, heading: str = "###") -> str:
        """Tables, the comparisons, the command that made them and each row's ``vireid train`` command."""
        commands = "\n".join(f"- {row['label'] or row['name']}: `{row['train_command']}`" for row in self.rows)
        comparisons = self.comparison_tables(heading)
        return (
            f"Command: `{self.command}`  \nConfig: `{self.config_path}`\n\n{self.tables(heading)}\n\n"
            + (f"{comparisons}\n\n" if comparisons else "")
            + f"Each row alone (the same run):\n\n{commands}\n"
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


def compare_rows(rows: Sequence[dict], comparisons: Sequence[AblationComparison], protocol: str,
                 metric: str = "mAP") -> list[dict]:
    """Each pair's difference in ``metric`` on ``protocol``, paired by training seed.

    ``rows`` are report rows (their ``seeds`` map a seed to that run's per-protocol results). Only the
    seeds both rows ran count. Per pair: ``seeds`` (how many), ``diff`` (mean of row - against over those
    seeds), ``sd`` (sample standard deviation of the per-seed differences), ``low``/``high`` (the 95 %
    interval diff ± t * sd / sqrt(n), Student's t with n - 1 degrees of freedom; :data:`T95`) and a
    one-phrase ``reading``: *higher*/*lower* only when the interval excludes 0, *level* when it holds
    0; one seed is no conclusion (training randomness alone moves this data's mAP by 1-2 points).
    Pairing by seed removes what two rows share under one seed (the data order, most of the
    initialisation), so it is tighter than comparing the two rows' spreads.
    """
    import math
    import statistics

    by_name = {row["name"]: row for row in rows}
    found = []
    for pair in comparisons:
        runs = [by_name.get(pair.row, {}).get("seeds", {}), by_name.get(pair.against, {}).get("seeds", {})]
        shared = [seed for seed in runs[0] if seed in runs[1] and protocol in runs[0][seed] and protocol in runs[1][seed]]
        diffs = [runs[0][s][protocol]["mean"][metric] - runs[1][s][protocol]["mean"][metric] for s in shared]
        item: dict[str, Any] = {"row": pair.row, "against": pair.against, "protocol": protocol, "metric": metric,
                                "seeds": len(diffs), "diff": None, "sd": None, "low": None, "high": None}
        if not diffs:
            item["reading"] = "not run yet"
        elif len(diffs) == 1:
            item.update(diff=diffs[0], reading="one seed: no conclusion")
        else:
            mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
            dof = len(diffs) - 1
            half = (T95[dof - 1] if dof <= len(T95) else 1.96) * sd / math.sqrt(len(diffs))
            low, high = mean - half, mean + half
            reading = ("higher: the interval excludes 0" if low > 0 else
                       "lower: the interval excludes 0" if high < 0 else "level: the interval holds 0")
            item.update(diff=mean, sd=sd, low=low, high=high, reading=reading)
        found.append(item)
    return found


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
