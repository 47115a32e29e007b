"""CMC curves (rank-k matching rate against k) of one or several runs on one plot.

The curves are the mean CMC of each protocol result (``ProtocolResult.cmc``, percent, averaged over
the gallery-draw trials) read from the runs' ``test_results.json`` (written by ``vireid train`` /
``vireid eval``), so plotting never recomputes features. Default size 800 x 560 pixels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vireid.errors import VireidError
from vireid.viz._common import Output, new_figure, save_figure

DEFAULT_SIZE = (800, 560)


@dataclass
class CMCCurve:
    """One curve: its legend label, the CMC in percent (index 0 = rank 1) and the mAP (percent) or None."""

    label: str
    cmc: np.ndarray
    mAP: float | None = None


def read_test_results(run_dir: str | Path) -> list[dict]:
    """The protocol results of a run folder's ``test_results.json`` (entries with a ``cmc`` list)."""
    run_dir = Path(run_dir)
    path = (run_dir if run_dir.is_dir() else run_dir.parent) / "test_results.json"
    if not path.is_file():
        raise VireidError(f"{path} does not exist; evaluate the run first with `vireid eval {path.parent}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VireidError(f"{path} is not valid JSON ({err}); re-create it with `vireid eval {path.parent}`") from None
    entries = data if isinstance(data, list) else data.get("results", []) if isinstance(data, dict) else []
    return [e for e in entries if isinstance(e, dict) and "name" in e and isinstance(e.get("cmc"), list)]


def cmc_curves_from_runs(run_dirs: Sequence[str | Path], protocols: Sequence[str] = (),
                         rerank: bool | None = None, results: Sequence[Sequence[dict]] | None = None) -> list[CMCCurve]:
    """Curves of every protocol result of ``run_dirs`` (filtered by ``protocols`` names and ``rerank``).

    Labels are ``"<run> · <protocol>"`` plus ``" + re-rank"`` (and ``" + flip"`` for test-time
    flip); the run name is left out when only one run is plotted. ``results`` (one list of result
    dicts per run, e.g. just evaluated on other data) replaces the runs' ``test_results.json``.
    """
    curves: list[CMCCurve] = []
    for i, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        for entry in (results[i] if results is not None else read_test_results(run_dir)):
            settings = entry.get("settings", {}) or {}
            rr = bool(settings.get("rerank", False))
            if protocols and entry["name"] not in protocols:
                continue
            if rerank is not None and rr != rerank:
                continue
            name = run_dir.name if run_dir.is_dir() else run_dir.parent.name
            label = entry["name"] + (" + re-rank" if rr else "") + (" + flip" if settings.get("flip") else "")
            if len(run_dirs) > 1:
                label = f"{name} · {label}"
            mean = entry.get("mean", {}) or {}
            curves.append(CMCCurve(label, np.asarray(entry["cmc"], dtype=np.float64), mean.get("mAP")))
    if not curves:
        wanted = f" for protocol(s) {', '.join(protocols)}" if protocols else ""
        raise VireidError(f"no CMC curves{wanted} in the test results of {', '.join(map(str, run_dirs))}; "
                          "check --protocol or evaluate with `vireid eval RUN_DIR`")
    return curves


def plot_cmc(curves: Sequence[CMCCurve] | Mapping[str, Sequence[float]], out: Output, *, max_rank: int = 20,
             title: str = "CMC", size: Sequence[int] = DEFAULT_SIZE) -> Path | None:
    """Plot CMC curves (percent, or fractions 0..1 which are scaled to percent) as a ``size`` PNG.

    ``curves`` is a list of :class:`CMCCurve` or a mapping label -> CMC values. The legend shows
    each curve's rank-1 (and mAP when known).
    """
    items = [CMCCurve(k, np.asarray(v, dtype=np.float64)) for k, v in curves.items()] if isinstance(curves, Mapping) else list(curves)
    if not items:
        raise ValueError("plot_cmc needs at least one curve")
    fig = new_figure(size)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>ph*"
    for i, curve in enumerate(items):
        values = np.asarray(curve.cmc, dtype=np.float64)
        if values.size == 0:
            continue
        if values.max() <= 1.0 + 1e-9:
            values = values * 100.0
        values = values[:max_rank]
        ranks = np.arange(1, len(values) + 1)
        label = f"{curve.label} (R1 {values[0]:.1f}" + (f", mAP {curve.mAP:.1f})" if curve.mAP is not None else ")")
        ax.plot(ranks, values, marker=markers[i % len(markers)], markersize=4, lw=1.5, label=label)
    ax.set_xlabel("rank k")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_xticks([1, 5, 10, 15, 20] if max_rank == 20 else list(range(1, max_rank + 1, max(max_rank // 10, 1))))
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out)
