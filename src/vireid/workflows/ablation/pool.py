"""Ablation rows trained in parallel processes (``vireid ablate --jobs``), each a ``vireid train`` command
with its own log file and share of the CPU threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


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
