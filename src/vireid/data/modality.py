"""One modality policy for every entry point (CLI, ``vireid verify``, the web API, :func:`vireid.load`).

* **Spellings.** ``visible``, ``vis``, ``rgb``, ``color``/``colour`` mean visible; ``infrared``,
  ``ir``, ``nir``, ``thermal`` mean infrared (any case) -- the same table as the dataset readers
  (:data:`vireid.data.datasets.base.MODALITY_ALIASES`). ``auto`` (or nothing) means: guess.
* **Guess.** Near-infrared and thermal cameras give grey images (SYSU-MM01, RegDB, LLCM all store
  them as three equal channels), so an image whose channels are (nearly) equal is infrared, any
  other is visible (:func:`guess_modality`). Callers print the decision.
* **Never silently.** An image given as ``visible`` that is grey is still embedded as visible (the
  user said so), but :func:`resolve_modalities` returns a warning naming the image, so that an
  infrared image never goes through the visible branch without a word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vireid.data.datasets.base import MODALITY_ALIASES, parse_modality
from vireid.data.records import INFRARED, VISIBLE
from vireid.errors import ConfigError

AUTO = "auto"
#: every accepted spelling, for help texts and messages
SPELLINGS = ", ".join(sorted(MODALITY_ALIASES)) + ", auto"
#: JPEG chroma noise allowed between the channels of a grey image (0-255 scale, 99th percentile)
GREY_TOLERANCE = 8


def parse(value: Any, allow_auto: bool = True) -> str:
    """A modality name (or ``"auto"``) from any accepted spelling; one sentence for an unknown one."""
    if value is None:
        if allow_auto:
            return AUTO
        raise ConfigError("a modality is needed; use visible or infrared")
    text = str(value).strip().lower()
    if allow_auto and text in (AUTO, ""):
        return AUTO
    parsed = parse_modality(text)
    if parsed is None:
        raise ConfigError(f"modality {value!r} is unknown; use one of {SPELLINGS if allow_auto else 'visible, infrared'}"
                          + ("" if allow_auto else " (also vis, rgb, ir, nir, thermal)"))
    return parsed


def is_grey(image: np.ndarray, tolerance: int = GREY_TOLERANCE) -> bool:
    """True when the three channels of an ``HxWx3`` (or ``HxW``) uint8 image are (nearly) equal."""
    arr = np.asarray(image)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        return True
    arr = arr[:, :, :3].astype(np.int16)
    spread = np.abs(arr - arr.mean(axis=2, keepdims=True).astype(np.int16)).max(axis=2)
    return float(np.percentile(spread, 99)) <= tolerance


def guess_modality(image: np.ndarray) -> str:
    """``"infrared"`` for a grey image, else ``"visible"`` (see the module docstring)."""
    return INFRARED if is_grey(image) else VISIBLE


def resolve_modalities(images: Sequence[np.ndarray], requested: Any = AUTO,
                       names: Sequence[str] | None = None) -> tuple[list[str], list[str], list[bool]]:
    """(modality per image, warnings, guessed per image) for decoded ``HxWx3`` images.

    ``requested``: ``"auto"``/None (guess each), one spelling for all, or one per image (each may be
    ``"auto"``). ``names`` label the images in the warnings (default ``image 1``, ...).
    """
    n = len(images)
    values = list(requested) if isinstance(requested, (list, tuple)) else [requested] * n
    if len(values) != n:
        raise ConfigError(f"got {len(values)} modalities for {n} images; give one per image or a single one for all")
    labels = list(names) if names is not None else [f"image {i + 1}" for i in range(n)]
    out, warnings, guessed = [], [], []
    for image, value, label in zip(images, values, labels):
        wanted = parse(value)
        grey = is_grey(image)
        if wanted == AUTO:
            out.append(INFRARED if grey else VISIBLE)
            guessed.append(True)
            continue
        out.append(wanted)
        guessed.append(False)
        if wanted == VISIBLE and grey:
            warnings.append(f"{label} is grey-level (it looks infrared) but was given as visible; it goes through the "
                            "visible branch as asked -- pass infrared (or auto) if it comes from an infrared camera")
        elif wanted == INFRARED and not grey:
            warnings.append(f"{label} has colour but was given as infrared; it goes through the infrared branch as asked")
    return out, warnings, guessed


def describe(modalities: Sequence[str], guessed: Sequence[bool], names: Sequence[str]) -> list[str]:
    """One line per image, e.g. ``a.jpg: infrared (guessed: grey-level image)``."""
    lines = []
    for mod, was_guessed, name in zip(modalities, guessed, names):
        why = (" (guessed: grey-level image)" if mod == INFRARED else " (guessed: colour image)") if was_guessed else " (given)"
        lines.append(f"{name}: {mod}{why}")
    return lines


__all__ = ["AUTO", "SPELLINGS", "describe", "guess_modality", "is_grey", "parse", "resolve_modalities"]
