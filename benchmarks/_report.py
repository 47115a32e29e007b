"""Writes one benchmark's section of docs/benchmarks.md, leaving the other sections as they are.

Each script calls :func:`write_section` with its own name; the section sits between
``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers and is replaced on every run, so the
document always holds the figures of the last run of each script. The machine the figures came
from is recorded with them (:func:`machine_description`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import time
from pathlib import Path

# Every script here imports this module first: the registries (dataset readers, methods, losses, ...) are
# filled by importing vireid.builtins, which a script run as `python benchmarks/x.py` would otherwise not do.
import vireid.builtins  # noqa: E402,F401

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every figure below is written by a script in `benchmarks/` (named in each section); run it "
    "again to refresh its section. `make bench` runs them all.\n"
)
#: The accuracy tables (fusion, deployment mAP) go to docs/results.md, which starts with its own header.
RESULTS_DOC = DOC.parent / "results.md"
RESULTS_HEADER = (
    "# Results\n\nAccuracy tables, each written by the script named in its section; run it again to "
    "refresh the section.\n"
)


#: Put before a table section's body when its script ran with --quick (tiny data, one short epoch).
SMOKE_BANNER = "**Smoke run (--quick): tiny data, one short epoch; the numbers mean nothing.**\n\n"


def machine_description() -> str:
    """One line naming the CPU, the core count and the torch build."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            torch_info += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        torch_info = "torch not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores; {torch_info}; Python {platform.python_version()}"


def times_by_threads(fn, repeats: int) -> dict[int, list[float]]:
    """Wall times of ``repeats`` calls of ``fn()`` with 1 torch thread and with the default count.

    The default thread count is restored afterwards. Returns ``{threads: [seconds, ...]}``.
    """
    import torch

    default_threads = torch.get_num_threads()
    out: dict[int, list[float]] = {}
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            out[threads] = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                out[threads].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(default_threads)
    return out


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far in GB: VmHWM (Linux; unlike ``ru_maxrss`` it is not
    inherited from the parent across fork + exec), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_precision(run_dir: Path) -> str | None:
    """The precision a training run used ("bf16 autocast"), from its train_summary.json (or, for runs made
    before it recorded that, the log.txt of a `vireid train` run), or None."""
    return _run_fact(Path(run_dir), "precision", r"; precision: ([^;\n]+)")


def run_threads(run_dir: Path) -> str | None:
    """The torch CPU threads a training run used, from its train_summary.json or log.txt, or None."""
    return _run_fact(Path(run_dir), "threads", r"device: \S+ \((\d+) threads?\)")


def _run_fact(run_dir: Path, key: str, pattern: str) -> str | None:
    summary = run_dir / "train_summary.json"
    if summary.is_file():
        value = json.loads(summary.read_text()).get(key)
        if value is not None:
            if key == "precision":  # "bf16 autocast + channels_last on cpu (auto: ...)" -> "bf16 autocast", as logged
                return str(value).split(" (")[0].split(" on ")[0].split(" + ")[0]
            return str(value)
    log = run_dir / "log.txt"
    found = re.search(pattern, log.read_text()) if log.is_file() else None
    return found.group(1).strip() if found else None


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=DOC.parent, timeout=5
        )
        return out.stdout.strip() or "uncommitted"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_section(name: str, title: str, body: str, command: str, doc: Path = DOC) -> None:
    """Replace (or append) section ``name`` of the benchmarks document.

    ``body`` is Markdown (tables, notes); ``command`` is the shell command that reproduces it.
    """
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMachine: {machine_description()}  \n"
        f"Run: {stamp}, revision {_git_revision()}\n\n{body.strip()}\n<!-- END {name} -->"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else (RESULTS_HEADER if doc.name == RESULTS_DOC.name else HEADER)
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def train_once(folder: Path, make_config, retrain: bool = False) -> tuple[Path, float]:
    """Train the config ``make_config()`` returns into ``folder`` unless a finished run with its recorded
    CPU time is already there (or ``retrain``); returns the folder and the training's process CPU
    seconds (kept in ``folder/table_train_cpu_seconds.txt`` so a re-run reuses it)."""
    from vireid.engine.trainer import Trainer

    timing = folder / "table_train_cpu_seconds.txt"
    if retrain or not (folder / "best.pt").is_file() or not timing.is_file():
        cfg = make_config()
        t0 = time.process_time()
        trainer = Trainer(cfg, folder)
        try:
            trainer.fit()
        finally:
            trainer.close()
        timing.write_text(f"{time.process_time() - t0:.1f}\n")
    return folder, float(timing.read_text())


def shipped_config(config: str, overrides: list[str]):
    """A shipped config (name or path) with ``key=value`` overrides, for :func:`train_once`."""
    from vireid.workflows.train_run import resolve_config
    from vireid.config import load_config

    return lambda: load_config(resolve_config(config), overrides)


def command_line(script: str, parser: argparse.ArgumentParser, args: argparse.Namespace, options: list[str]) -> str:
    """``python benchmarks/SCRIPT`` plus each of ``options`` (argparse dests) whose value differs from its
    default: a flag alone for a true ``store_true`` option, ``--name value`` otherwise (the command a table's
    section quotes to reproduce it)."""
    parts = [f"python benchmarks/{script}"]
    for dest in options:
        value, default = getattr(args, dest), parser.get_default(dest)
        if value == default or value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts)


def table_parser(description: str, out: Path, quick: str = "tiny data, one short epoch (a smoke test)") -> argparse.ArgumentParser:
    """The arguments every accuracy-table script shares: ``--out`` (folder of its runs and data), ``--retrain``,
    ``--quick`` (what its smoke run does) and ``--doc`` (the Markdown file its section goes into); a script adds
    its own after these."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=out, help="folder of the runs and data")
    ap.add_argument("--retrain", action="store_true", help="train again even where a finished run exists")
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--doc", type=Path, default=RESULTS_DOC, help="Markdown file to write the section into")
    return ap
