"""Atomic, resumable checkpoints.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the
previous complete checkpoint or the new complete one, never a torn file. Everything is stored as
tensors and plain Python containers so that checkpoints load with ``torch.load(weights_only=True)``
(no pickled code runs when a checkpoint is opened).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.errors import VireidError


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
