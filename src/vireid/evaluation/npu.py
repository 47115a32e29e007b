"""NPU-ReID evaluation protocol (dual-path Swin / NPU-ReID paper, §3 "test modes"), registered in
:data:`PROTOCOLS`.

* Direction: visible -> thermal (``v2t``: visible queries, thermal gallery) or thermal -> visible
  (``t2v``).
* Query: every test image of the query modality (as SYSU-MM01, the scope restricts the gallery only).
* Scope of the gallery: ``all`` (the four cameras of the gallery modality), ``indoor`` (its indoor
  cameras) or ``outdoor`` (its outdoor cameras); cameras as in :mod:`vireid.data.datasets.npu_reid`.
* Gallery per trial: "1 or 10 images of a person are randomly selected to form the gallery set":
  ``single`` = 1, ``multi`` = 10 images of each identity, drawn from all its images in the scope's
  gallery cameras (``gallery="per_person"``, the default), seeded by the trial number, 10 trials.
  ``gallery="per_camera"`` draws 1 or 10 per identity *and camera* instead, SYSU-MM01's rule (which
  the paper says motivated its settings; the only draw before, 4x the single-shot gallery of
  all-search); config key ``eval.npu_gallery``.
* Camera rule: "only the images under the camera in which query is sampled need to be skipped":
  gallery images of the query's identity from the query's own camera are ignored (``same-camera``);
  no camera-location pairs as in SYSU-MM01. Across modalities the gallery never shares the query's
  camera, so the rule only matters for pools where it could (e.g. user data in this layout).
* CMC counts an identity once (identity-de-duplicated, as SYSU-MM01's reference code); mAP and mINP
  over all true matches.

Names: ``npu-{v2t,t2v}-{all,indoor,outdoor}-{single,multi}``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vireid.data.datasets.npu_reid import NPU_CAMERA_MODALITY, NPU_INDOOR_CAMERAS, NPU_OUTDOOR_CAMERAS
from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE, ImageRecord
from vireid.evaluation.protocols.draws import GalleryDraw, QueryRule, SeededPerCamera, _groups, _pool_columns
from vireid.evaluation.protocols.options import ProtocolOptions
from vireid.evaluation.protocols.results import ProtocolError, ProtocolResult
from vireid.evaluation.protocols.specs import ProtocolSpec, register_protocol

NPU_DIRECTIONS = {"v2t": (VISIBLE, INFRARED), "t2v": (INFRARED, VISIBLE)}
NPU_SCOPES = {"all": NPU_INDOOR_CAMERAS + NPU_OUTDOOR_CAMERAS, "indoor": NPU_INDOOR_CAMERAS, "outdoor": NPU_OUTDOOR_CAMERAS}
NPU_MULTI_SHOT = 10
NPU_GALLERY_DRAWS = ("per_person", "per_camera")


def npu_gallery_cameras(gallery_modality: str, scope: str) -> tuple[int, ...]:
    """Cameras of ``gallery_modality`` within ``scope``."""
    if scope not in NPU_SCOPES:
        raise ProtocolError(f"unknown NPU-ReID scope {scope!r}; use 'all', 'indoor' or 'outdoor'")
    return tuple(c for c in NPU_SCOPES[scope] if NPU_CAMERA_MODALITY[c] == gallery_modality)


def _per_person_draw(pool: Sequence[ImageRecord], candidates: np.ndarray, trial: int, shots: int) -> np.ndarray:
    """``random.seed(trial)``; identities ascending; ``shots`` of each identity's images (cameras in
    order, file names in order within a camera), without replacement."""
    groups = _groups(pool, candidates)
    by_person: dict[int, list[int]] = {}
    for pid, cam in sorted(groups):
        by_person.setdefault(pid, []).extend(groups[(pid, cam)])
    rng = random.Random(trial)
    chosen: list[int] = []
    for pid in sorted(by_person):
        files = by_person[pid]
        chosen.extend([rng.choice(files)] if shots == 1 else rng.sample(files, min(shots, len(files))))
    return np.asarray(chosen, dtype=np.int64)


def npu_gallery_draws(pool: Sequence[ImageRecord], gallery_modality: str, scope: str, shots: int,
                      trials: Sequence[int], gallery: str = "per_person") -> list[np.ndarray]:
    """Pool indices of each trial's gallery: ``shots`` images per identity (``per_person``) or per
    (identity, camera) (``per_camera``) among the scope's gallery cameras."""
    if gallery not in NPU_GALLERY_DRAWS:
        raise ProtocolError(f"unknown NPU-ReID gallery draw {gallery!r}; use 'per_person' (the paper's) or 'per_camera'")
    cameras = npu_gallery_cameras(gallery_modality, scope)
    if gallery == "per_camera":
        return SeededPerCamera(gallery_modality, cameras)(pool, trials, {"shots": shots})
    _, cams, mods = _pool_columns(pool)
    candidates = np.flatnonzero((mods == MODALITY_CODE[gallery_modality]) & np.isin(cams, cameras))
    return [_per_person_draw(pool, candidates, t, shots) for t in trials]


@dataclass(frozen=True)
class NpuGalleryDraw(GalleryDraw):
    """The NPU-ReID gallery of ``modality`` within ``values["scope"]``: option ``gallery`` (per_person,
    the paper's, or per_camera), ``values["shots"]`` images each (:func:`npu_gallery_draws`)."""

    modality: str = VISIBLE
    keywords: Mapping[str, Any] = field(default_factory=lambda: {"gallery": "per_person"})

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"draw": "seeded", "gallery": values["gallery"]}

    def __call__(self, pool, trials, values) -> list[np.ndarray]:
        return npu_gallery_draws(pool, self.modality, values["scope"], int(values["shots"]), trials,
                                 gallery=values["gallery"])


def npu_spec(direction: str = "v2t", scope: str = "all", shots: int = 1) -> ProtocolSpec:
    """The NPU-ReID protocol of one direction, scope and shot setting (module docstring)."""
    if direction not in NPU_DIRECTIONS:
        raise ProtocolError(f"unknown NPU-ReID direction {direction!r}; use 'v2t' or 't2v'")
    query_mod, gallery_mod = NPU_DIRECTIONS[direction]
    shot_name = "single" if shots == 1 else "multi"
    return ProtocolSpec(
        name=f"npu-{direction}-{scope}-{shot_name}",
        description=f"NPU-ReID {query_mod} -> {'thermal' if gallery_mod == INFRARED else gallery_mod}, "
                    f"{scope}-search, {shot_name}-shot",
        dataset="npu-reid", query=QueryRule(query_mod), gallery=NpuGalleryDraw(gallery_mod), cam_rule="same-camera",
        dedup_cmc=True, settings={"direction": direction, "scope": scope, "shots": shots},
    )


def npu_protocol(features: Any, pool: Sequence[ImageRecord], direction: str = "v2t", scope: str = "all",
                 shots: int = 1, trials: int = 10, gallery: str = "per_person", options: ProtocolOptions | None = None,
                 **ranking: Any) -> ProtocolResult:
    """NPU-ReID: one direction, scope and shot setting over ``trials`` seeded gallery draws (module
    docstring); ``ranking`` / ``options``: :class:`~vireid.evaluation.protocols.options.ProtocolOptions`."""
    spec = npu_spec(direction, scope, shots)
    if shots < 1:
        raise ProtocolError(f"shots must be 1 (single-shot) or 10 (multi-shot), got {shots}")
    return spec(features, pool, options, trials=trials, gallery=gallery, **ranking)


for _direction in NPU_DIRECTIONS:
    for _scope in NPU_SCOPES:
        for _shots in (1, NPU_MULTI_SHOT):
            register_protocol(npu_spec(_direction, _scope, _shots))

__all__ = ["NPU_DIRECTIONS", "NPU_GALLERY_DRAWS", "NPU_SCOPES", "NpuGalleryDraw", "npu_gallery_cameras",
           "npu_gallery_draws", "npu_protocol", "npu_spec"]
