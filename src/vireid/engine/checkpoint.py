"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the
previous complete checkpoint or the new complete one, never a torn file. Everything is stored as
tensors and plain Python containers so that checkpoints load with ``torch.load(weights_only=True)``
(no pickled code runs when a checkpoint is opened).
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.errors import VireidError


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a process of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)(?P<pid>\d+)$")


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files and folders (``.NAME.tmpPID``, ``.NAME.oldPID``) that an atomic write
    left in ``folder`` when its process was killed (the PID no longer runs); only those of ``name`` when
    given. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _write_failed(path: Path, err: OSError) -> VireidError:
    reason = err.strerror or str(err) or type(err).__name__
    hint = "free some disk space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "check that the folder is writable"
    return VireidError(f"cannot write {path} ({reason}); {hint} and run again, the previous {path.name} (if any) is kept")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + rename); a full disk or another
    write error is one sentence (:class:`VireidError`) and leaves the previous file untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise _write_failed(path, err) from None
    except RuntimeError as err:  # torch's zip writer reports a failed write as RuntimeError
        if "write" not in str(err).lower() and "file" not in str(err).lower():
            raise
        raise _write_failed(path, OSError(errno.EIO, str(err).splitlines()[0])) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        raise _write_failed(path, err) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a vireid checkpoint safely (``weights_only=True``); clear errors for bad files."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise VireidError(f"run folder {path} holds no best.pt or last.pt checkpoint; train first or pass a .pt file")
    if not path.is_file():
        raise VireidError(f"checkpoint {path} does not exist; pass a run folder or a .pt file written by vireid train")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise VireidError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it may be truncated or not a vireid checkpoint") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise VireidError(f"checkpoint {path} is not a vireid checkpoint (no model/config entries)")
    return ckpt


def load_weights(module: torch.nn.Module, state: dict, source: str) -> None:
    """``module.load_state_dict(state)`` with one sentence (naming ``source``) instead of torch's
    multi-line report when the tensors do not fit: the first shape mismatch, else the missing and
    unexpected names."""
    expected = module.state_dict()
    if not isinstance(state, dict):
        raise VireidError(f"{source} holds no weights table; use a checkpoint saved by vireid train")
    for key, tensor in expected.items():
        stored = state.get(key)
        if isinstance(stored, torch.Tensor) and tuple(stored.shape) != tuple(tensor.shape):
            raise VireidError(
                f"{source} does not fit the model its config builds: {key} has shape {tuple(stored.shape)} in the "
                f"checkpoint but {tuple(tensor.shape)} in the model; it was edited or saved by another version of "
                "this method, so retrain or use the run's own checkpoint"
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"{len(missing)} tensor(s) missing (such as {missing[0]})"] if missing else []) + (
            [f"{len(unexpected)} unexpected (such as {unexpected[0]})"] if unexpected else [])
        raise VireidError(f"{source} does not fit the model its config builds: {' and '.join(parts)}; it was "
                          "edited or saved by another version of this method, so retrain or use the run's own checkpoint")
    module.load_state_dict(state)


def rng_state() -> dict:
    """All random generators' states as tensors / plain lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_s = state["numpy"]
    np.random.set_state(
        ("MT19937", np_s["keys"].numpy().astype(np.uint32), np_s["pos"], np_s["has_gauss"], np_s["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
