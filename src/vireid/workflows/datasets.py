"""Inspect dataset formats and validate a dataset on disk (``vireid datasets formats|check``):
the registered readers of :mod:`vireid.data.datasets` and :meth:`VIReIDDataset.check`, as text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import vireid.builtins  # noqa: F401  (the dataset readers a command names)


def format_listing() -> str:
    """Every registered dataset format, its one-line description, protocol family and options."""
    from vireid.data.datasets import DATASETS, dataset_options

    lines = []
    for name in DATASETS.names():
        reader = DATASETS.get(name)
        doc = (reader.__doc__ or "").strip().splitlines()
        options = ", ".join(dataset_options(name)) or "none"
        lines.append(f"{name:10s} {doc[0] if doc else ''}")
        lines.append(f"{'':10s} protocol family: {reader.protocol_family}; options: {options}")
    return "\n".join(lines)


def _cameras(cameras: dict[Any, int]) -> str:
    return " ".join(f"{cam}:{count}" for cam, count in cameras.items()) or "-"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary of :meth:`VIReIDDataset.summary` as a plain-text table."""
    lines = [
        f"{summary['format']} at {summary['root']} (protocol family: {summary['protocol_family']}, "
        f"training identities: {summary['num_train_ids']})",
        f"{'split':8s} {'modality':9s} {'ids':>6s} {'images':>8s}  cameras (camera:images)",
    ]
    for split, info in summary["splits"].items():
        tracklets = f"  tracklets: {info['tracklets']}" if "tracklets" in info else ""  # video data
        lines.append(f"{split:8s} {'all':9s} {info['ids']:6d} {info['images']:8d}{tracklets}")
        for modality, sub in info["modalities"].items():
            lines.append(f"{'':8s} {modality:9s} {sub['ids']:6d} {sub['images']:8d}  {_cameras(sub['cameras'])}")
    for direction, counts in (summary.get("directions") or {}).items():  # video data: both query/gallery directions
        lines.append(f"{direction}: {counts['query_tracklets']} query tracklets, "
                     f"{counts['gallery_tracklets']} gallery tracklets")
    return "\n".join(lines)


@dataclass
class CheckOutcome:
    """What ``vireid datasets check`` reports: its exit code (0 fine, 1 problems, 2 wrong usage), the
    report for stdout and an error for stderr (either may be None)."""

    code: int
    report: Optional[str] = None
    error: Optional[str] = None


def check_dataset(path: Path, fmt: str, *, trial: Optional[int] = None, split_dir: Optional[Path] = None,
                  decode: bool = True, workers: Optional[int] = None, as_json: bool = False) -> CheckOutcome:
    """Read a dataset, decode every image (or only stat the files) and report its problems."""
    from vireid.data.datasets import DATASETS, build_dataset, dataset_options
    from vireid.errors import ConfigError, DatasetError

    if fmt not in DATASETS:
        return CheckOutcome(2, error=f"error: unknown format {fmt!r}; use one of {', '.join(DATASETS.names())}")
    accepted = dataset_options(fmt)
    options: dict[str, Any] = {}
    for flag, key, value in (("--trial", "trial", trial), ("--split-dir", "split_dir", split_dir)):
        if value is None:
            continue
        if key not in accepted:
            return CheckOutcome(2, error=f"error: {flag} does not apply to format {fmt}")
        options[key] = value
    if "require_train" in accepted:
        options["require_train"] = False  # evaluation-only copies are valid; check() warns about them

    try:
        dataset = build_dataset(fmt, path, **options)
    except ConfigError as err:
        return CheckOutcome(2, error=f"error: {err}")
    except DatasetError as err:
        if as_json:
            failure = {"dataset": fmt, "root": str(path), "ok": False, "problems": [str(err)], "warnings": []}
            return CheckOutcome(1, report=json.dumps(failure, indent=2))
        return CheckOutcome(1, report=f"problem: {err}\nFAILED: {fmt} dataset at {path} cannot be read")

    report = dataset.check(decode=decode, workers=workers)
    if as_json:
        return CheckOutcome(0 if report.ok else 1, report=json.dumps(report.to_dict(), indent=2))
    lines = [format_summary(report.summary)]
    for title, items in (("problems", report.problems), ("warnings", report.warnings)):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  - {item}" for item in items]
    action = "decoded" if decode else "found"
    if report.ok:
        lines.append(f"OK: {report.num_images} images {action}, no problems")
    else:
        lines.append(f"FAILED: {len(report.problems)} problem(s) in {report.num_images} images")
    return CheckOutcome(0 if report.ok else 1, report="\n".join(lines))
