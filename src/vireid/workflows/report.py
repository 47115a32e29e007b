"""One self-contained HTML page about a run (``vireid report``; the page is :mod:`vireid.viz.report`).

Missing test results are produced first (``evaluate="auto"``): the run's best checkpoint is evaluated on
its dataset's test protocols with and without re-ranking by the same function as ``vireid eval --rerank``
(:func:`vireid.workflows.train_run.evaluate_checkpoint`), then the page is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from vireid.errors import VireidError

EVALUATE_CHOICES = ("auto", "always", "never")


def write_report(run_dir: Path, *, data: Optional[str] = None, images: Optional[str] = None,
                 fmt: Optional[str] = None, query: Optional[str] = None, gallery: Optional[str] = None,
                 data_root: Optional[str] = None, out: Optional[Path] = None, evaluate: str = "auto",
                 pictures: bool = True, num_queries: int = 6, seed: int = 0, device: str = "auto",
                 gan: Optional[Path] = None, log: Callable[[str], None] = print) -> Path:
    """Write the report of ``run_dir`` and return its path; ``data``, ``images``/``fmt``, ``query``,
    ``gallery`` and ``data_root`` choose other data as :class:`~vireid.workflows.eval_data.DataChoice`.
    ``log`` gets the line announcing an evaluation."""
    from vireid.viz.report import build_report
    from vireid.workflows.eval_data import DataChoice, check_choice

    if evaluate not in EVALUATE_CHOICES:
        raise VireidError(f"--evaluate {evaluate!r} is unknown; use one of {', '.join(EVALUATE_CHOICES)}")
    if not run_dir.is_dir():
        raise VireidError(f"run folder {run_dir} does not exist; pass the folder written by `vireid train`")
    choice = check_choice(DataChoice(data=data, images=images, fmt=fmt, query=query, gallery=gallery,
                                     data_root=data_root))
    if gan is not None:  # a wrong --gan fails before any evaluation
        from vireid.viz.gan import gan_figures

        gan_figures(gan)
    if not choice.own and out is None:
        raise VireidError("a report on other data goes to its own folder; pass --out DIR (the run is not written to)")
    html_path = None
    folder = run_dir
    if out is not None:
        html_path = out if out.suffix.lower() in (".html", ".htm") else out / "report.html"
        folder = html_path.parent
        folder.mkdir(parents=True, exist_ok=True)
    has_ckpt = any((run_dir / name).is_file() for name in ("best.pt", "last.pt"))
    results_dir = folder if (folder / "test_results.json").is_file() or not choice.own else run_dir
    missing = not (results_dir / "test_results.json").is_file()
    if has_ckpt and (evaluate == "always" or (evaluate == "auto" and missing)):
        from vireid.workflows.train_run import evaluate_checkpoint

        log(f"evaluating {run_dir} on {choice.describe()} (with and without re-ranking) for the report ...")
        evaluate_checkpoint(run_dir, rerank=[False, True], device=device, progress=True, data=choice,
                            out=None if folder == run_dir else folder)
        results_dir = folder
    return build_report(run_dir, html_path, pictures=pictures, device=device, num_queries=num_queries, seed=seed,
                        progress=True, choice=choice, results_dir=results_dir, gan_run=gan)


def describe_written(path: Path) -> str:
    """``wrote PATH (N KiB)``."""
    return f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)"
