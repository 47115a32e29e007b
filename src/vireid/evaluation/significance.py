"""Paired comparisons of two runs on the same protocol: bootstrap confidence interval and p-value.

Two models evaluated on the same pool and the same gallery draws give, per (query, trial), an AP, a
rank-1 hit and an INP (``ProtocolResult.per_query``). Their difference is *paired*: the same queries
and galleries, so the variation that matters is that of the per-query differences, not of each
model's figures alone.

:func:`paired_bootstrap` resamples units with replacement (Efron and Tibshirani, "An Introduction to
the Bootstrap", 1993, ch. 13 and 16; the paired form is the one used for IR/NLP system comparisons,
e.g. Koehn, "Statistical Significance Tests for Machine Translation Evaluation", EMNLP 2004):

* ``unit="query"``: a unit is a query; its figure is the mean over the trials in which it has a
  correct match. The statistic is the mean over queries of ``a - b``.
* ``unit="trial"``: a unit is a trial (gallery draw); its figure is the mean over its valid queries.
  With 10 trials this interval is coarse (only the draws vary); it answers "would another gallery
  draw change the verdict", the query bootstrap "would other people change it".

The interval is the percentile interval of the resampled mean differences; the two-sided p-value is
``min(1, 2 * min(P*(d <= 0), P*(d >= 0)))`` with the add-one estimate ``(count + 1) / (B + 1)`` (never 0).
The verdict calls the difference significant when the interval excludes 0. Everything is seeded
(``numpy.random.default_rng(seed)``) and chunked (bounded memory for large query sets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vireid.errors import VireidError

METRICS = ("mAP", "rank1", "mINP")
UNITS = ("query", "trial")
_CHUNK_ELEMENTS = 1 << 22


class SignificanceError(VireidError, ValueError):
    """Results that cannot be compared pairwise, or a bad option (one line in the CLI)."""


@dataclass
class Comparison:
    """A paired difference ``a - b`` (percent points) with its bootstrap interval and p-value."""

    metric: str
    unit: str
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    resamples: int
    units: int
    seed: int
    name_a: str = "A"
    name_b: str = "B"

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def verdict(self) -> str:
        if not self.significant:
            return f"not significant: the {100 * self.confidence:.0f}% interval contains 0 (within noise)"
        better = self.name_a if self.difference > 0 else self.name_b
        return f"significant: {better} is better ({100 * self.confidence:.0f}% interval excludes 0)"

    def summary(self) -> str:
        return (
            f"{self.metric}: {self.name_a} {self.a:.2f} vs {self.name_b} {self.b:.2f}, difference {self.difference:+.2f} "
            f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}] ({100 * self.confidence:.0f}% CI, paired bootstrap over "
            f"{self.units} {'queries' if self.unit == 'query' else 'trials'}, {self.resamples} resamples), "
            f"p = {self.p_value:.4f} -> {self.verdict}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "verdict": self.verdict}


def _check(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise SignificanceError(f"{name} must be a non-empty [units] or [queries, trials] array, got shape {arr.shape}")
    return arr


def paired_bootstrap(a: Any, b: Any, *, valid: Any = None, unit: str = "query", resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0, metric: str = "value",
                     names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Paired bootstrap of ``mean(a) - mean(b)`` over queries or trials (module docstring).

    ``a``, ``b``: per-query figures ``[Nq]`` or per (query, trial) ``[Nq, T]`` (same layout);
    ``valid`` (bool, same shape): which entries count (e.g. queries with a correct match).
    """
    if unit not in UNITS:
        raise SignificanceError(f"unknown bootstrap unit {unit!r}; use 'query' or 'trial'")
    if not 0.0 < confidence < 1.0:
        raise SignificanceError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if resamples < 1:
        raise SignificanceError(f"resamples must be at least 1, got {resamples}")
    a_arr, b_arr = _check(a, "a"), _check(b, "b")
    if a_arr.shape != b_arr.shape:
        raise SignificanceError(f"paired figures must have the same shape, got {a_arr.shape} and {b_arr.shape}")
    mask = np.ones(a_arr.shape, dtype=bool) if valid is None else _check(valid, "valid").astype(bool)
    if mask.shape != a_arr.shape:
        raise SignificanceError(f"valid has shape {mask.shape}, the figures {a_arr.shape}")
    if unit == "query":
        counts = mask.sum(axis=1)
        keep = counts > 0
        x = np.where(mask, a_arr, 0).sum(axis=1)[keep] / counts[keep]
        y = np.where(mask, b_arr, 0).sum(axis=1)[keep] / counts[keep]
    else:
        counts = mask.sum(axis=0)
        keep = counts > 0
        x = np.where(mask, a_arr, 0).sum(axis=0)[keep] / counts[keep]
        y = np.where(mask, b_arr, 0).sum(axis=0)[keep] / counts[keep]
    if x.size == 0:
        raise SignificanceError("no valid unit to compare (every entry is masked out)")
    d = x - y
    n = d.size
    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        boot[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    below = (np.count_nonzero(boot <= 0) + 1) / (resamples + 1)
    above = (np.count_nonzero(boot >= 0) + 1) / (resamples + 1)
    return Comparison(metric, unit, float(x.mean()), float(y.mean()), float(d.mean()), float(low), float(high),
                      float(min(1.0, 2 * min(below, above))), float(confidence), int(resamples), int(n), int(seed),
                      names[0], names[1])


def per_query_figures(result: Any, metric: str = "mAP") -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)`` ``[Nq, T]`` of a :class:`~vireid.evaluation.protocols.ProtocolResult`, in
    percent: AP (``mAP``), rank-1 hit (``rank1``) or INP (``mINP``); valid where the query has a match."""
    if metric not in METRICS:
        raise SignificanceError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    per_query = getattr(result, "per_query", None)
    if not per_query:
        raise SignificanceError(f"result {getattr(result, 'name', '?')} has no per-query figures; run it with vireid "
                                "0.x protocols (run_protocol) in this process, not from a saved JSON")
    if metric == "mAP":
        values = per_query["ap"]
    elif metric == "mINP":
        values = per_query["inp"]
    else:
        values = (np.asarray(per_query["first"]) == 1).astype(np.float64)
    return np.asarray(values, dtype=np.float64) * 100.0, np.asarray(per_query["num_rel"]) > 0


def compare_results(result_a: Any, result_b: Any, metric: str = "mAP", unit: str = "query", *,
                    resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                    names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Paired bootstrap between two results of the same protocol on the same pool and draws."""
    if result_a.name != result_b.name:
        raise SignificanceError(f"cannot pair {result_a.name} with {result_b.name}; compare results of one protocol")
    a, valid_a = per_query_figures(result_a, metric)
    b, valid_b = per_query_figures(result_b, metric)
    same_queries = np.array_equal(result_a.per_query["query_index"], result_b.per_query["query_index"])
    if a.shape != b.shape or not same_queries or not np.array_equal(valid_a, valid_b):
        raise SignificanceError(
            f"the two {result_a.name} results were not run on the same queries and galleries; evaluate both models "
            "on one dataset with the same trials and draw"
        )
    return paired_bootstrap(a, b, valid=valid_a, unit=unit, resamples=resamples, confidence=confidence, seed=seed,
                            metric=metric, names=names)


__all__ = ["METRICS", "UNITS", "Comparison", "SignificanceError", "compare_results", "paired_bootstrap",
           "per_query_figures"]
