"""Pools and gallery draws of the evaluation protocols, and the declarative pieces a
:class:`~vireid.evaluation.protocols.specs.ProtocolSpec` is made of (which pool images are queries,
how each trial's gallery is drawn).

Gallery draws (``trial`` is 0-based everywhere):

* SYSU-MM01, ``draw="official"``: the permutation file ``rand_perm_cam.mat`` of the SYSU-MM01
  evaluation code. Its ``rand_perm_cam{cam}{id}`` (MATLAB, 1-based) is indexed by the camera
  number and by the identity *number* (the evaluation code sets ``Y{cam} = 1:length(feature)``,
  so cell ``i`` is identity ``i``; cameras 1, 2 and 6 have 333 cells because no identity above 333
  appears in them, cameras 3-5 have 533). Each cell is a ``10 x n_images`` matrix of 1-based
  image numbers; evaluation run ``run_time = trial + 1`` takes the first 1 (single-shot) or 10
  (multi-shot) entries of that row, and image ``k`` is the k-th file of the ``camC/PPPP`` folder in
  file-name order. Gallery order follows the MATLAB code: camera by camera, identities ascending.
  Empty cells are skipped, as the MATLAB code does.
* SYSU-MM01, ``draw="seeded"``: AGW / CAJ ``process_gallery_sysu(mode, trial)``: the Python
  random generator seeded with ``trial`` (``random.seed(trial)``; trials 0..9 in their test
  loops), identities ascending, for each the mode's visible cameras in order, skipping
  (identity, camera) folders that do not exist, and ``random.choice`` among the sorted files
  (single-shot). Multi-shot takes ``random.sample(files, min(10, len(files)))`` (the form used by
  published multi-shot variants of that function; a folder with fewer than 10 images gives all
  of them). Gallery order: identity, camera, then the drawn order.
* LLCM: the LLCM authors' ``process_gallery_llcm(mode, trial)``: ``random.seed(trial)`` (trials
  0..9 in their test loop), identities ascending, the gallery modality's cameras ascending,
  ``random.choice`` among the sorted files of each existing (identity, camera) folder.

A private ``random.Random(trial)`` is used, which gives the same sequence as ``random.seed``
without touching the global generator.

A private ``random.Random(trial)`` is used, which gives the same sequence as ``random.seed``
without touching the global generator.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.records import MODALITY_CODE, VISIBLE, ImageRecord
from vireid.evaluation.protocols.results import ProtocolError

SYSU_GALLERY_CAMERAS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_QUERY_CAMERAS = (3, 6)
SYSU_MULTI_SHOT = 10
DRAWS = ("official", "seeded")


def _pool_columns(pool: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pids = np.fromiter((r.orig_pid for r in pool), dtype=np.int64, count=len(pool))
    cams = np.fromiter((r.camid for r in pool), dtype=np.int64, count=len(pool))
    mods = np.fromiter((MODALITY_CODE[r.modality] for r in pool), dtype=np.int64, count=len(pool))
    return pids, cams, mods


def _groups(pool: Sequence[ImageRecord], indices: np.ndarray) -> dict[tuple[int, int], list[int]]:
    """Pool indices per (identity, camera), each list in file-name order (the folder's sorted order)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i in indices.tolist():
        r = pool[i]
        groups.setdefault((r.orig_pid, r.camid), []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: (os.path.basename(pool[i].path), pool[i].path))
    return groups


def _seeded_draw(
    groups: dict[tuple[int, int], list[int]], cameras: Sequence[int], trial: int, shots: int
) -> np.ndarray:
    """AGW/CAJ/LLCM draw: ``random.seed(trial)``, identities ascending, cameras in order."""
    rng = random.Random(trial)
    chosen: list[int] = []
    for pid in sorted({pid for pid, _ in groups}):
        for cam in cameras:
            files = groups.get((pid, cam))
            if not files:  # the reference code skips folders that do not exist
                continue
            if shots == 1:
                chosen.append(rng.choice(files))
            else:
                chosen.extend(rng.sample(files, min(shots, len(files))))
    return np.asarray(chosen, dtype=np.int64)


RandPermCam = dict[int, list[np.ndarray | None]]


def load_rand_perm_cam(path: str | os.PathLike) -> RandPermCam:
    """Read the official ``rand_perm_cam.mat``: ``{camera: [perm of identity 1, 2, ...]}``, each a
    ``[trials, n_images]`` int64 array of 1-based image numbers, or ``None`` for an empty cell."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise ProtocolError(
            f"rand_perm_cam file {path} does not exist; pass the rand_perm_cam.mat of the SYSU-MM01 "
            "evaluation code (data_split/rand_perm_cam.mat) or use draw='seeded'"
        )
    try:
        cells = loadmat(str(path))["rand_perm_cam"]
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user mistake
        raise ProtocolError(f"{path} is not a readable rand_perm_cam.mat ({exc}); use the official file") from exc
    out: RandPermCam = {}
    for cam_index in range(cells.shape[0]):
        per_id = cells[cam_index, 0]
        out[cam_index + 1] = [
            np.asarray(per_id[i, 0], dtype=np.int64) if per_id[i, 0].size else None for i in range(per_id.shape[0])
        ]
    return out


def _official_sysu_draw(
    groups: dict[tuple[int, int], list[int]],
    cameras: Sequence[int],
    trial: int,
    shots: int,
    perms: RandPermCam,
    pool: Sequence[ImageRecord],
) -> np.ndarray:
    """Gallery of evaluation run ``trial + 1`` of the official MATLAB code (see module docstring)."""
    chosen: list[int] = []
    pids = sorted({pid for pid, _ in groups})
    for cam in cameras:
        per_id = perms.get(cam, [])
        for pid in pids:
            files = groups.get((pid, cam), [])
            perm = per_id[pid - 1] if 1 <= pid <= len(per_id) else None
            expected = 0 if perm is None else perm.shape[1]
            if len(files) != expected:
                example = pool[files[0]].path if files else f"cam{cam}/{pid:04d}"
                raise ProtocolError(
                    f"the pool has {len(files)} images of identity {pid} in camera {cam} (e.g. {example}) but "
                    f"rand_perm_cam.mat expects {expected}; the official draw fits only the real SYSU-MM01 "
                    "test set, use draw='seeded'"
                )
            if perm is None:
                continue
            if trial >= perm.shape[0]:
                raise ProtocolError(
                    f"rand_perm_cam.mat holds {perm.shape[0]} trials, trial {trial} was asked; use fewer trials"
                )
            chosen.extend(files[k - 1] for k in perm[trial, :shots].tolist())
    return np.asarray(chosen, dtype=np.int64)


def sysu_gallery_indices(
    pool: Sequence[ImageRecord],
    mode: str = "all",
    shots: int = 1,
    trial: int = 0,
    draw: str = "seeded",
    rand_perm_cam: str | os.PathLike | RandPermCam | None = None,
) -> np.ndarray:
    """Pool indices of the SYSU-MM01 gallery of one trial (0-based), in the draw's own order."""
    return _sysu_gallery_draws(pool, mode, shots, [trial], draw, rand_perm_cam)[0]


def _sysu_gallery_draws(
    pool: Sequence[ImageRecord],
    mode: str,
    shots: int,
    trials: Sequence[int],
    draw: str,
    rand_perm_cam: str | os.PathLike | RandPermCam | None,
    modality: str = VISIBLE,
    cameras_by_mode: Mapping[str, Sequence[int]] = SYSU_GALLERY_CAMERAS,
) -> list[np.ndarray]:
    """Galleries of several trials; the pool is grouped by (identity, camera) once. ``modality`` and
    ``cameras_by_mode`` default to the standard visible gallery (the mixed protocols also draw infrared)."""
    if mode not in cameras_by_mode:
        raise ProtocolError(f"unknown SYSU-MM01 mode {mode!r}; use 'all' or 'indoor'")
    if draw not in DRAWS:
        raise ProtocolError(f"unknown gallery draw {draw!r}; use 'official' or 'seeded'")
    if shots < 1:
        raise ProtocolError(f"shots must be 1 (single-shot) or 10 (multi-shot), got {shots}")
    cameras = cameras_by_mode[mode]
    _, cams, mods = _pool_columns(pool)
    candidates = np.flatnonzero((mods == MODALITY_CODE[modality]) & np.isin(cams, cameras))
    groups = _groups(pool, candidates)
    if draw == "seeded":
        return [_seeded_draw(groups, cameras, t, shots) for t in trials]
    if rand_perm_cam is None:
        raise ProtocolError(
            "draw='official' needs rand_perm_cam: the path of rand_perm_cam.mat from the SYSU-MM01 "
            "evaluation code (data_split/rand_perm_cam.mat)"
        )
    perms = rand_perm_cam if isinstance(rand_perm_cam, dict) else load_rand_perm_cam(rand_perm_cam)
    # Identities of the whole pool (also those without visible images), as the MATLAB loop over test ids.
    for pid in {r.orig_pid for r in pool}:
        for cam in cameras:
            groups.setdefault((pid, cam), [])
    return [_official_sysu_draw(groups, cameras, t, shots, perms, pool) for t in trials]


def llcm_gallery_indices(pool: Sequence[ImageRecord], gallery_modality: str, trial: int = 0) -> np.ndarray:
    """Pool indices of the LLCM gallery of one trial: one image per (identity, camera) of
    ``gallery_modality``, drawn as the LLCM authors' test code does (see module docstring)."""
    return _llcm_gallery_draws(pool, gallery_modality, [trial])[0]


def _llcm_gallery_draws(pool: Sequence[ImageRecord], gallery_modality: str, trials: Sequence[int]) -> list[np.ndarray]:
    _, cams, mods = _pool_columns(pool)
    candidates = np.flatnonzero(mods == MODALITY_CODE[gallery_modality])
    cameras = sorted(set(cams[candidates].tolist()))
    groups = _groups(pool, candidates)
    return [_seeded_draw(groups, cameras, t, 1) for t in trials]


# --------------------------------------------------------------------------------------------
# Declarative pieces of a protocol spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRule:
    """The queries of a protocol: every pool image of ``modality`` (and of ``cameras``, when given)."""

    modality: str
    cameras: tuple[int, ...] | None = None

    def __call__(self, pool: Sequence[ImageRecord]) -> np.ndarray:
        _, cams, mods = _pool_columns(pool)
        keep = mods == MODALITY_CODE[self.modality]
        if self.cameras is not None:
            keep &= np.isin(cams, self.cameras)
        return np.flatnonzero(keep)


class GalleryDraw:
    """How a protocol draws the gallery of each trial, as pool indices.

    ``keywords``: the options it takes, with their defaults (e.g. ``draw``); :meth:`settings` says which
    of them the result records. ``values`` given to every method is the protocol's fixed settings
    (e.g. ``mode``, ``shots``), its recorded parameters and these keywords, merged.
    """

    keywords: Mapping[str, Any] = {}

    def check(self, values: Mapping[str, Any]) -> None:
        """Raise :class:`ProtocolError` for a bad option (before the features are looked at)."""

    def prepare(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with anything loaded once for all trials (e.g. a permutation file)."""
        return values

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """What the result's ``settings`` record about the draw (at least ``draw``)."""
        return {}

    def __call__(self, pool: Sequence[ImageRecord], trials: Sequence[int], values: Mapping[str, Any]) -> list[np.ndarray]:
        raise NotImplementedError


@dataclass(frozen=True)
class WholeModality(GalleryDraw):
    """One gallery of every pool image of ``modality`` (RegDB); every image when ``modality`` is None."""

    modality: str | None = None

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"draw": "all"}

    def __call__(self, pool, trials, values) -> list[np.ndarray]:
        if self.modality is None:
            return [np.arange(len(pool))]
        _, _, mods = _pool_columns(pool)
        return [np.flatnonzero(mods == MODALITY_CODE[self.modality])]


@dataclass(frozen=True)
class SeededPerCamera(GalleryDraw):
    """Per trial, ``values["shots"]`` (default 1) images of every (identity, camera) of ``modality``
    drawn with ``random.Random(trial)`` (:func:`_seeded_draw`; the LLCM test code's draw). ``cameras``:
    those cameras in that order; None: every camera of the modality in the pool, ascending."""

    modality: str = VISIBLE
    cameras: tuple[int, ...] | None = None

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"draw": "seeded"}

    def __call__(self, pool, trials, values) -> list[np.ndarray]:
        _, cams, mods = _pool_columns(pool)
        candidates = np.flatnonzero(mods == MODALITY_CODE[self.modality])
        if self.cameras is not None:
            candidates = candidates[np.isin(cams[candidates], self.cameras)]
        cameras = self.cameras if self.cameras is not None else sorted(set(cams[candidates].tolist()))
        groups = _groups(pool, candidates)
        shots = int(values.get("shots", 1))
        return [_seeded_draw(groups, cameras, t, shots) for t in trials]


@dataclass(frozen=True)
class SysuGalleryDraw(GalleryDraw):
    """SYSU-MM01's gallery: ``values["shots"]`` images per (identity, camera of ``values["mode"]``) of
    ``modality``, by the ``draw`` option (``"seeded"`` or ``"official"`` with ``rand_perm_cam``; module
    docstring)."""

    modality: str = VISIBLE
    cameras_by_mode: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: dict(SYSU_GALLERY_CAMERAS))
    keywords: Mapping[str, Any] = field(default_factory=lambda: {"draw": "seeded", "rand_perm_cam": None})

    def check(self, values: Mapping[str, Any]) -> None:
        if values["mode"] not in self.cameras_by_mode:
            raise ProtocolError(f"unknown SYSU-MM01 mode {values['mode']!r}; use 'all' or 'indoor'")
        if values["draw"] not in DRAWS:
            raise ProtocolError(f"unknown gallery draw {values['draw']!r}; use 'official' or 'seeded'")

    def prepare(self, values: dict[str, Any]) -> dict[str, Any]:
        perms = values.get("rand_perm_cam")
        if values["draw"] == "official" and perms is not None and not isinstance(perms, dict):
            values = {**values, "rand_perm_cam": load_rand_perm_cam(perms)}
        return values

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"draw": values["draw"]}

    def __call__(self, pool, trials, values) -> list[np.ndarray]:
        return _sysu_gallery_draws(pool, values["mode"], int(values["shots"]), trials, values["draw"],
                                   values.get("rand_perm_cam"), self.modality, self.cameras_by_mode)


@dataclass(frozen=True)
class ConcatDraws(GalleryDraw):
    """Each trial's galleries of ``parts``, concatenated in order (the mixed-modality galleries).
    Options, checks and recorded settings are those of the parts (the first part's win)."""

    parts: tuple[GalleryDraw, ...] = ()

    @property
    def keywords(self) -> dict[str, Any]:  # type: ignore[override]
        merged: dict[str, Any] = {}
        for part in reversed(self.parts):
            merged.update(part.keywords)
        return merged

    def check(self, values):
        for part in self.parts:
            part.check(values)

    def prepare(self, values):
        for part in self.parts:
            values = part.prepare(values)
        return values

    def settings(self, values):
        merged: dict[str, Any] = {}
        for part in reversed(self.parts):
            merged.update(part.settings(values))
        return merged

    def __call__(self, pool, trials, values) -> list[np.ndarray]:
        per_part = [part(pool, trials, values) for part in self.parts]
        return [np.concatenate(draws) for draws in zip(*per_part)]


__all__ = [
    "DRAWS",
    "SYSU_GALLERY_CAMERAS",
    "SYSU_MULTI_SHOT",
    "SYSU_QUERY_CAMERAS",
    "ConcatDraws",
    "GalleryDraw",
    "QueryRule",
    "RandPermCam",
    "SeededPerCamera",
    "SysuGalleryDraw",
    "WholeModality",
    "llcm_gallery_indices",
    "load_rand_perm_cam",
    "sysu_gallery_indices",
]
