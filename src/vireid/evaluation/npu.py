"""NPU-ReID evaluation protocol (dual-path Swin, §3 "test modes"), registered in :data:`PROTOCOLS`.

* Direction: visible -> thermal (``v2t``: visible queries, thermal gallery) or thermal -> visible
  (``t2v``).
* Query: every test image of the query modality (as SYSU-MM01, the scope restricts the gallery only).
* Scope of the gallery: ``all`` (the four cameras of the gallery modality), ``indoor`` (its indoor
  cameras) or ``outdoor`` (its outdoor cameras); cameras as in :mod:`vireid.data.datasets.npu_reid`.
* Gallery per trial: ``single`` = 1, ``multi`` = 10 images per identity and gallery camera, drawn at
  random (the SYSU-MM01-motivated rule the paper cites), seeded by the trial number, 10 trials.
* Camera rule: "only the images under the camera in which query is sampled need to be skipped":
  gallery images of the query's identity from the query's own camera are ignored (``same-camera``);
  no camera-location pairs as in SYSU-MM01. Across modalities the gallery never shares the query's
  camera, so the rule only matters for pools where it could (e.g. user data in this layout).
* CMC counts an identity once (identity-de-duplicated, as SYSU-MM01's reference code); mAP and mINP
  over all true matches.

Names: ``npu-{v2t,t2v}-{all,indoor,outdoor}-{single,multi}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vireid.data.datasets.npu_reid import NPU_CAMERA_MODALITY, NPU_INDOOR_CAMERAS, NPU_OUTDOOR_CAMERAS
from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE, ImageRecord
from vireid.evaluation.protocols import (
    PROTOCOLS,
    ProtocolError,
    ProtocolResult,
    ProtocolSetting,
    _check_features,
    _groups,
    _pool_columns,
    _run_trials,
    _seeded_draw,
)

NPU_DIRECTIONS = {"v2t": (VISIBLE, INFRARED), "t2v": (INFRARED, VISIBLE)}
NPU_SCOPES = {"all": NPU_INDOOR_CAMERAS + NPU_OUTDOOR_CAMERAS, "indoor": NPU_INDOOR_CAMERAS, "outdoor": NPU_OUTDOOR_CAMERAS}
NPU_MULTI_SHOT = 10


def npu_gallery_cameras(gallery_modality: str, scope: str) -> tuple[int, ...]:
    """Cameras of ``gallery_modality`` within ``scope``."""
    if scope not in NPU_SCOPES:
        raise ProtocolError(f"unknown NPU-ReID scope {scope!r}; use 'all', 'indoor' or 'outdoor'")
    return tuple(c for c in NPU_SCOPES[scope] if NPU_CAMERA_MODALITY[c] == gallery_modality)


def npu_gallery_draws(pool: Sequence[ImageRecord], gallery_modality: str, scope: str, shots: int,
                      trials: Sequence[int]) -> list[np.ndarray]:
    """Pool indices of each trial's gallery: ``shots`` images per (identity, camera) of the scope."""
    cameras = npu_gallery_cameras(gallery_modality, scope)
    _, cams, mods = _pool_columns(pool)
    candidates = np.flatnonzero((mods == MODALITY_CODE[gallery_modality]) & np.isin(cams, cameras))
    groups = _groups(pool, candidates)
    return [_seeded_draw(groups, cameras, t, shots) for t in trials]


def npu_protocol(
    features: Any,
    pool: Sequence[ImageRecord],
    direction: str = "v2t",
    scope: str = "all",
    shots: int = 1,
    trials: int = 10,
    rerank: bool = False,
    rerank_params: dict | None = None,
    metric: str = "euclidean",
    normalize: bool = True,
    max_rank: int = 20,
    precision: str = "auto",
) -> ProtocolResult:
    """NPU-ReID: one direction, scope and shot setting over ``trials`` seeded gallery draws (module docstring)."""
    if direction not in NPU_DIRECTIONS:
        raise ProtocolError(f"unknown NPU-ReID direction {direction!r}; use 'v2t' or 't2v'")
    if shots < 1:
        raise ProtocolError(f"shots must be 1 (single-shot) or 10 (multi-shot), got {shots}")
    if trials < 1:
        raise ProtocolError(f"trials must be at least 1, got {trials}")
    query_mod, gallery_mod = NPU_DIRECTIONS[direction]
    feats = _check_features(features, pool)
    draws = npu_gallery_draws(pool, gallery_mod, scope, shots, range(trials))
    _, _, mods = _pool_columns(pool)
    query_idx = np.flatnonzero(mods == MODALITY_CODE[query_mod])
    name = f"npu-{direction}-{scope}-{'single' if shots == 1 else 'multi'}"
    settings = {"dataset": "npu-reid", "direction": direction, "scope": scope, "shots": shots, "trials": trials,
                "draw": "seeded"}
    return _run_trials(
        name, settings, feats, pool, query_idx, draws, cam_rule="same-camera", dedup_cmc=True, metric=metric,
        normalize=normalize, rerank=rerank, rerank_params=rerank_params, max_rank=max_rank, precision=precision,
    )  # fmt: skip


for _direction in NPU_DIRECTIONS:
    for _scope in NPU_SCOPES:
        for _shot_name, _shots in (("single", 1), ("multi", NPU_MULTI_SHOT)):
            _name = f"npu-{_direction}-{_scope}-{_shot_name}"
            _q, _g = NPU_DIRECTIONS[_direction]
            PROTOCOLS.register(_name)(ProtocolSetting(
                _name, npu_protocol, {"direction": _direction, "scope": _scope, "shots": _shots},
                f"NPU-ReID {_q} -> {'thermal' if _g == INFRARED else _g}, {_scope}-search, {_shot_name}-shot",
            ))

__all__ = ["NPU_DIRECTIONS", "NPU_SCOPES", "npu_gallery_cameras", "npu_gallery_draws", "npu_protocol"]
