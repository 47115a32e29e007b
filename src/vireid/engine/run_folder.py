"""A training run's folder: one training at a time, never an unrelated folder, clean after a crash.

* :class:`RunLock` - ``.vireid-lock`` in the run folder holds ``PID HOST`` of the training that owns
  it; it is created atomically (``O_CREAT | O_EXCL``), so a second ``vireid train`` on the same folder
  is refused instead of interleaving ``metrics.jsonl`` and the checkpoints. A lock whose process no
  longer runs on this host (a crash, ``kill -9``) is removed with a message. In a distributed run
  only rank 0 takes it.
* :func:`check_fresh_run_folder` - a new run only goes into an absent or empty folder, or one that
  holds an earlier attempt of a vireid run that died before its first checkpoint.
* :func:`trim_metrics` - on resume, the records written after the checkpoint (the epoch the crash
  interrupted) are dropped, so the resumed run does not log its steps twice.
* :func:`repair_best_checkpoint` - ``last.pt`` is written before ``best.pt``; a kill between the two
  leaves ``best.pt`` missing or one epoch behind ``last.pt``'s record of the best epoch; on resume the
  pair is made consistent again.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import yaml

from vireid.engine.checkpoint import _pid_alive, atomic_write_text
from vireid.errors import VireidError

LOCK_NAME = ".vireid-lock"

# what `vireid train` (and the commands that complete a run) write into a run folder; a folder holding
# only these, without a checkpoint, is an earlier attempt that may be started afresh
RUN_FILES = {"config.yaml", "metrics.jsonl", "tensorboard", "curves.png", "train_summary.json", "log.txt",
             "test_results.json", "test_results.md", "roc.png", LOCK_NAME}


class RunLock:
    """The lock of one run folder, held by this process until :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        lock = cls(Path(folder))
        host = socket.gethostname()
        for _ in range(3):  # a stale lock removed in between: try again
            try:
                fd = os.open(lock.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                lock._break_if_stale(host)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {host}\n")
            lock.held = True
            return lock
        raise VireidError(f"cannot take the lock {lock.path}; another training keeps creating it, stop it first")

    def _break_if_stale(self, host: str) -> None:
        try:
            owner = self.path.read_text().split()
        except FileNotFoundError:
            return
        pid = int(owner[0]) if owner and owner[0].isdigit() else -1
        owner_host = owner[1] if len(owner) > 1 else "?"
        folder = self.path.parent
        if owner_host == host and not _pid_alive(pid):
            self.path.unlink(missing_ok=True)
            print(f"removed the stale lock of {folder} (process {pid} on {host} no longer runs)", flush=True)
            return
        where = f"process {pid} on this machine" if owner_host == host else f"process {pid} on host {owner_host}"
        raise VireidError(
            f"run folder {folder} is in use by another training ({where}); wait for it to finish, or choose "
            f"another folder with --run-dir DIR or name=NEW (delete {self.path} only if that training is gone)"
        )

    def release(self) -> None:
        if self.held:
            try:
                owner = self.path.read_text().split()
                if owner and owner[0] == str(os.getpid()):
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False


def _is_vireid_config(path: Path) -> bool:
    """Whether ``path`` is a config.yaml that vireid saved (every top-level key of a Config present)."""
    from vireid.config import Config

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    import dataclasses

    return isinstance(data, dict) and set(data) == {f.name for f in dataclasses.fields(Config)}


def check_fresh_run_folder(folder: str | Path) -> None:
    """Refuse to start a new run in a folder that holds anything but an earlier attempt of a vireid run
    that stopped before its first checkpoint (absent and empty folders are fine)."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise VireidError(f"run folder {folder} is a file; choose another folder with --run-dir DIR or name=NEW")
    entries = [e.name for e in folder.iterdir() if not (e.name.startswith(".") and ".tmp" in e.name)]
    if not entries or entries == ["log.txt"]:  # empty, or only the log this start (or a start that died early) opened
        return
    foreign = sorted(n for n in entries if n not in RUN_FILES)
    if not foreign and set(entries) <= {"log.txt", LOCK_NAME}:
        return  # only the log this command opened (or a lock): nothing to lose
    if foreign or not (folder / "config.yaml").is_file() or not _is_vireid_config(folder / "config.yaml"):
        shown = ", ".join(foreign[:3]) if foreign else "config.yaml not saved by vireid"
        raise VireidError(
            f"run folder {folder} already exists and does not hold a vireid run ({shown}); choose another folder "
            "with --run-dir DIR or name=NEW, or empty it"
        )


def trim_metrics(folder: str | Path, step: int, epoch: int) -> int:
    """Drop the ``metrics.jsonl`` records written after the checkpoint a run resumes from (step
    ``step``, ``epoch`` epochs done) and any torn line; returns how many lines went."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        late = int(record.get("step", 0)) > step or (
            record.get("kind") in ("epoch", "val") and int(record.get("epoch", 0)) > epoch)
        if late:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


def repair_best_checkpoint(folder: str | Path, last: dict, best_is_last: bool) -> bool:
    """Make ``best.pt`` hold the epoch ``last.pt`` names as the best after a kill between their writes.

    ``best_is_last``: the run keeps its last epoch as the best (``train.select_best=last`` or no
    validation identities). Returns whether ``best.pt`` was rewritten (from ``last``, the same
    checkpoint the trainer would have written)."""
    import torch

    from vireid.engine.checkpoint import atomic_torch_save

    folder = Path(folder)
    state = last.get("state", {})
    done = int(state.get("epoch", 0))
    wanted = done if best_is_last else int(state.get("best_epoch", -1))
    if wanted != done:  # the best epoch is older than last.pt: best.pt was written before last.pt was
        return False
    path = folder / "best.pt"
    held = None
    if path.is_file():
        try:
            held = int(torch.load(path, map_location="cpu", weights_only=True)["state"]["epoch"])
        except Exception:  # noqa: BLE001 - a damaged best.pt is replaced like a missing one
            held = None
    if held == done:
        return False
    atomic_torch_save(last, path)
    print(f"best.pt of {folder} was {'missing' if held is None else f'from epoch {held}'} after an interrupted save; "
          f"restored it from last.pt (epoch {done})", flush=True)
    return True


__all__ = ["LOCK_NAME", "RunLock", "check_fresh_run_folder", "repair_best_checkpoint", "trim_metrics"]
