"""Protocol results: per-trial figures, their mean and standard deviation, and the results table.

Figures are in percent; mean and std over trials use ``numpy.std`` with ``ddof=0``, as papers print
them (the AGW / CAJ test loops average their 10 trials the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vireid.errors import VireidError

#: Keys of every per-trial, mean and std dict (percent).
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


class ProtocolError(VireidError, ValueError):
    """A protocol option or a pool that does not fit the protocol (printed by the CLI as one line)."""


@dataclass
class ProtocolResult:
    """Figures of one protocol setting: per trial, mean and std, in percent (0..100).

    ``trials[i]`` holds :data:`METRIC_KEYS` plus ``trial``, ``num_query``, ``num_gallery`` and
    ``num_valid_queries``; ``cmc`` is the mean CMC curve (percent, length ``max_rank``).
    """

    name: str
    settings: dict
    trials: list[dict]
    mean: dict
    std: dict
    cmc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Per (query, trial) figures for paired comparisons (:mod:`vireid.evaluation.significance`):
    #: ``query_index`` [Nq] pool indices and ``num_rel``, ``first``, ``ap``, ``inp`` [Nq, T] arrays.
    #: Not written by :meth:`to_dict`.
    per_query: dict | None = field(default=None, repr=False, compare=False)

    def summary(self) -> str:
        """One line: name, then mean ± std of each metric."""
        parts = [f"{key} {self.mean[key]:.2f} ± {self.std[key]:.2f}" for key in METRIC_KEYS]
        return f"{self.name} ({len(self.trials)} trials): " + ", ".join(parts)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        per_query, self.per_query = self.per_query, None
        try:
            out = asdict(self)
        finally:
            self.per_query = per_query
        out.pop("per_query", None)
        out["cmc"] = [float(v) for v in np.asarray(self.cmc)]
        return out

    def __str__(self) -> str:
        return self.summary()


def _trial_figures(metrics: dict, **extra: Any) -> dict:
    cmc = metrics["cmc"]

    def at(rank: int) -> float:
        return float(cmc[min(rank, len(cmc)) - 1] * 100.0)

    figures = {
        "rank1": at(1),
        "rank5": at(5),
        "rank10": at(10),
        "rank20": at(20),
        "mAP": metrics["mAP"] * 100.0,
        "mINP": metrics["mINP"] * 100.0,
        "num_valid_queries": metrics["num_valid_queries"],
    }
    figures.update(extra)
    return figures


def _summarise(name: str, settings: dict, trials: list[dict], cmcs: list[np.ndarray]) -> ProtocolResult:
    table = np.array([[t[key] for key in METRIC_KEYS] for t in trials], dtype=np.float64)
    mean = dict(zip(METRIC_KEYS, table.mean(axis=0).tolist()))
    std = dict(zip(METRIC_KEYS, table.std(axis=0).tolist()))
    return ProtocolResult(name, settings, trials, mean, std, np.mean(np.stack(cmcs), axis=0))


def aggregate_results(results: Sequence[ProtocolResult]) -> ProtocolResult:
    """Pool the trials of several results of the same setting (e.g. the 10 RegDB splits, one
    model each) into one result with mean ± std over all of them."""
    if not results:
        raise ProtocolError("aggregate_results needs at least one result")
    names = {r.name for r in results}
    if len(names) != 1:
        raise ProtocolError(f"aggregate_results got results of different settings {sorted(names)}; pass one setting")
    trials = [dict(t) for r in results for t in r.trials]
    cmcs = [np.asarray(r.cmc) for r in results for _ in r.trials]
    settings = dict(results[0].settings)
    settings["aggregated_from"] = len(results)
    return _summarise(results[0].name, settings, trials, cmcs)


def format_results_table(results: Sequence[ProtocolResult]) -> str:
    """Markdown table: one row per result, mean ± std (percent) of each metric.

    A ``method`` column is added when any result names one in ``settings["method"]``, a
    ``re-rank`` column when any result was re-ranked, and a ``flip`` column when any used
    test-time flip.
    """
    with_method = any(r.settings.get("method") for r in results)
    with_rerank = any(r.settings.get("rerank") for r in results)
    with_flip = any(r.settings.get("flip") for r in results)
    head = (["method"] if with_method else []) + ["protocol"] + (["re-rank"] if with_rerank else [])
    head += ["flip"] if with_flip else []
    head += ["draw", "trials", "Rank-1", "Rank-5", "Rank-10", "Rank-20", "mAP", "mINP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [str(r.settings.get("method", "")) or "-"] if with_method else []
        cells.append(r.name)
        if with_rerank:
            cells.append(str(r.settings["rerank"].get("method", "yes")) if r.settings.get("rerank") else "no")
        if with_flip:
            cells.append("yes" if r.settings.get("flip") else "no")
        cells += [str(r.settings.get("draw", "-")), str(len(r.trials))]
        cells += [f"{r.mean[k]:.2f} ± {r.std[k]:.2f}" for k in METRIC_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["METRIC_KEYS", "ProtocolError", "ProtocolResult", "aggregate_results", "format_results_table"]
