"""Mixed-modality gallery protocols: one query against a gallery of *both* modalities.

The standard protocols search a gallery of the other modality only. An operator searching "all
cameras" meets both (MM-ReID, 2024, asks for such galleries): the same person's images of the
query's own modality compete with the cross-modality ones, and a model that clusters by modality
ranks them first. These protocols report the usual figures over the mixed gallery, and the same
ranking restricted to each gallery modality (``settings["by_gallery_modality"]``, and as extra
rows ``<name>/visible`` and ``<name>/infrared`` from :func:`with_modality_rows`).

Galleries and rules (each dataset's convention, extended to its same-modality images):

* ``sysu-all-mixed`` / ``sysu-indoor-mixed``: queries = every infrared image (cameras 3 and 6),
  as ``sysu-*-single``. Gallery per trial = the visible gallery of ``sysu-{mode}-single`` (same draw,
  same trial, so the visible part is exactly that protocol's gallery) plus ``shots`` infrared images
  per (identity, infrared camera of the mode: 3 and 6 for ``all``, 3 for ``indoor``), drawn the same
  way (``random.Random(trial)``, identities ascending, cameras in order; or the official
  ``rand_perm_cam.mat`` cells of cameras 3/6 with ``draw="official"``). Rules: SYSU-MM01's (a
  camera-3 query ignores camera 2, which shares its location) and, for the same-modality part,
  gallery images of the query's identity *from the query's own camera* are ignored. Those are the
  query itself or frames of the same walk past the same camera: near-duplicates that make the
  search trivial and that an operator does not need found (this is the Market-1501 / LLCM
  "same camera" rule, which SYSU-MM01 never needed because its galleries share no camera with the
  query). Identity-de-duplicated CMC, as SYSU-MM01.
* ``llcm-i2mixed`` / ``llcm-v2mixed``: queries = every image of one modality, as ``llcm-i2v`` /
  ``llcm-v2i``. Gallery per trial = the LLCM draw of each modality for that trial (one image per
  identity and camera; the other-modality part is exactly that of the standard protocol). LLCM's
  cameras record both modalities, and its rule ("same-camera": the query's identity from the
  query's camera is ignored) is applied to the whole gallery, which removes the query itself.
  Identity-de-duplicated CMC.
* ``regdb-t2mixed`` / ``regdb-v2mixed``: queries = every test image of one modality; gallery =
  every test image of both. RegDB has one camera per modality, so a same-camera rule would remove
  every same-modality match; RegDB's convention (no camera rule) is kept and only the query image
  itself is removed. Plain CMC, as RegDB.

``rerank`` (``True``/``"k-reciprocal"`` or ``"modality"``) re-ranks each trial's whole mixed
gallery; the per-modality figures are then read off the same re-ranked distances. All of it runs
in fp32 (no bf16 screen).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE, ImageRecord
from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.metrics import TrialTable, finish_trials, rank_trials
from vireid.evaluation.protocols.draws import (
    SYSU_QUERY_CAMERAS,
    ConcatDraws,
    QueryRule,
    RandPermCam,
    SeededPerCamera,
    SysuGalleryDraw,
    WholeModality,
    _pool_columns,
    _sysu_gallery_draws,
)
from vireid.evaluation.protocols.options import ProtocolOptions
from vireid.evaluation.protocols.results import ProtocolError, ProtocolResult, _summarise, _trial_figures
from vireid.evaluation.protocols.specs import ProtocolSpec, register_protocol
from vireid.evaluation.rerank_modality import rerank_distances, rerank_settings

#: Infrared gallery cameras of the mixed SYSU-MM01 protocols, per search mode.
SYSU_INFRARED_GALLERY_CAMERAS = {"all": (3, 6), "indoor": (3,)}
SYSU_SKIP = (3, 2)  # (query camera, gallery camera) of SYSU-MM01's camera rule
GALLERY_MODALITIES = (VISIBLE, INFRARED)
#: camera rules of the mixed runner: SYSU-MM01's plus same-camera, same-camera, or only the query itself
MIXED_CAM_RULES = ("sysu+same-camera", "same-camera", "query-itself")


def _run_mixed(
    name: str,
    settings: dict,
    features: Any,
    pool: Sequence[ImageRecord],
    query_idx: np.ndarray,
    gallery_draws: list[np.ndarray],
    *,
    cam_rule: str,
    dedup_cmc: bool,
    options: ProtocolOptions | None = None,
) -> ProtocolResult:
    """Rank each trial's mixed gallery; figures overall and per gallery modality (the runner of the
    mixed :class:`~vireid.evaluation.protocols.specs.ProtocolSpec` objects).

    ``cam_rule`` (:data:`MIXED_CAM_RULES`): the same-camera rule on real cameras, or on the pool index
    for ``"query-itself"`` (only the query itself is removed); ``"sysu+..."``: camera-3 queries also
    ignore camera 2. ``options``: how to rank (fp32 always; ``precision`` is not used).
    """
    if cam_rule not in MIXED_CAM_RULES:
        raise ProtocolError(f"mixed-gallery camera rule {cam_rule!r} is unknown; use one of {', '.join(MIXED_CAM_RULES)}")
    options = options if options is not None else ProtocolOptions()
    metric, normalize, max_rank = options.metric, options.normalize, options.max_rank
    rerank, rerank_params = options.rerank, options.rerank_params
    sysu_rule = cam_rule.startswith("sysu")
    if len(query_idx) == 0:
        raise ProtocolError(f"protocol {name}: the pool holds no query image; check the pool's modalities/cameras")
    if any(len(g) == 0 for g in gallery_draws):
        raise ProtocolError(f"protocol {name}: the pool holds no gallery image; check the pool's modalities/cameras")
    q_source, g_source = features if isinstance(features, tuple) else (features, features)
    device = q_source.device
    pids, cams, mods = _pool_columns(pool)
    rule_cams = np.arange(len(pool)) if cam_rule == "query-itself" else cams
    union = np.unique(np.concatenate(gallery_draws))
    q_feat = q_source[torch.as_tensor(query_idx, device=device)]
    u_feat = g_source[torch.as_tensor(union, device=device)]
    q_u = pairwise_distance(q_feat, u_feat, metric=metric, normalize=normalize)
    if rerank:
        q_q = pairwise_distance(q_feat, q_feat, metric=metric, normalize=normalize)
        u_u = pairwise_distance(u_feat, u_feat, metric=metric, normalize=normalize)
    # Query groups: SYSU-MM01's rule removes camera 2 for camera-3 queries (a column subset per group).
    skip_group = cams[query_idx] == SYSU_SKIP[0] if sysu_rule else np.zeros(len(query_idx), dtype=bool)
    groups = [g for g in (np.flatnonzero(~skip_group), np.flatnonzero(skip_group)) if len(g)]
    q_rule = rule_cams[query_idx]
    table_rule = "same-camera"  # on rule_cams: real cameras, or pool indices for "query-itself"
    subsets = {"all": None, **{m: MODALITY_CODE[m] for m in GALLERY_MODALITIES}}
    figures = {key: [np.zeros((len(query_idx), len(gallery_draws))) for _ in range(4)] for key in subsets}
    for t, g_idx in enumerate(gallery_draws):
        cols = np.searchsorted(union, g_idx)
        if rerank:
            cols_t = torch.as_tensor(cols, device=device)
            g_g = u_u.index_select(0, cols_t).index_select(1, cols_t)
            scores = torch.as_tensor(rerank_distances(rerank, q_u.index_select(1, cols_t), q_q, g_g, mods[query_idx],
                                                      mods[g_idx], rerank_params), device=device)  # fmt: skip
        else:
            scores = q_u.index_select(1, torch.as_tensor(cols, device=device))
        positions = np.arange(len(g_idx))
        for key, code in subsets.items():
            for group in groups:
                keep = np.ones(len(g_idx), dtype=bool) if code is None else mods[g_idx] == code
                if sysu_rule and cams[query_idx[group[0]]] == SYSU_SKIP[0]:
                    keep &= cams[g_idx] != SYSU_SKIP[1]
                for fig in figures[key]:
                    fig[group, t] = 0  # stays 0 (no correct match) when the subset is empty
                if not keep.any():
                    continue
                table = TrialTable.build(
                    pids[query_idx[group]], pids[g_idx], [positions[keep]],
                    q_rule[group], rule_cams[g_idx], table_rule, device,
                )  # fmt: skip
                rows = torch.as_tensor(group, device=device)
                part = rank_trials(scores.index_select(0, rows).contiguous(), table, dedup_cmc)
                for fig, values in zip(figures[key], part):
                    fig[group, t] = values[:, 0]
    results = {}
    for key, (num_rel, first, ap, inp) in figures.items():
        if not (num_rel > 0).any(axis=0).all():
            results[key] = None  # some trial has no query with a correct match in this part
            continue
        per_trial = finish_trials(num_rel, first, ap, inp, max_rank)
        trials, cmcs = [], []
        for t, (g_idx, m) in enumerate(zip(gallery_draws, per_trial)):
            size = len(g_idx) if subsets[key] is None else int((mods[g_idx] == subsets[key]).sum())
            trials.append(_trial_figures(m, trial=t, num_query=len(query_idx), num_gallery=size))
            cmcs.append(m["cmc"] * 100.0)
        part_name = name if key == "all" else f"{name}/{key}"
        results[key] = _summarise(part_name, {}, trials, cmcs)
        results[key].per_query = {"num_rel": num_rel, "first": first, "ap": ap, "inp": inp,
                                  "query_index": np.asarray(query_idx)}
    if results["all"] is None:
        raise ProtocolError(f"protocol {name}: no query has a correct match in its mixed gallery; check the pool")
    full = {
        **settings,
        "gallery_modality": "mixed",
        "cam_rule": ("sysu + " if sysu_rule else "") + ("query itself" if cam_rule == "query-itself" else "same-camera"),
        "dedup_cmc": dedup_cmc,
        "metric": metric,
        "normalize": normalize,
        "rerank": rerank_settings(rerank, rerank_params) if rerank else False,
        "num_query": int(len(query_idx)),
        "precision": {"requested": "fp32", "path": "fp32", "reason": "mixed galleries are ranked in fp32"},
    }
    result = results["all"]
    result.settings = full
    result.settings["by_gallery_modality"] = {
        m: (None if results[m] is None else {"mean": results[m].mean, "std": results[m].std,
                                              "trials": results[m].trials, "cmc": [float(v) for v in results[m].cmc]})
        for m in GALLERY_MODALITIES
    }  # fmt: skip
    result.parts = {m: results[m] for m in GALLERY_MODALITIES}
    return result


def with_modality_rows(result: ProtocolResult) -> list[ProtocolResult]:
    """``[result]``, followed for a mixed-gallery result by one result per gallery modality
    (``<name>/visible``, ``<name>/infrared``: the same ranking restricted to that part)."""
    parts = getattr(result, "parts", None)
    if not parts:
        return [result]
    out = [result]
    for modality, part in parts.items():
        if part is None:
            continue
        settings = {k: v for k, v in result.settings.items() if k != "by_gallery_modality"}
        settings["gallery_modality"] = modality
        part.settings = settings
        out.append(part)
    return out


def _sysu_infrared_draws(pool, mode, shots, trials, draw, perms) -> list[np.ndarray]:
    """The infrared part of each trial's mixed SYSU-MM01 gallery (as the spec's second draw makes it)."""
    return _sysu_gallery_draws(pool, mode, shots, trials, draw, perms, INFRARED, SYSU_INFRARED_GALLERY_CAMERAS)


def sysu_mixed_spec(mode: str = "all") -> ProtocolSpec:
    """SYSU-MM01 infrared queries against the visible gallery of ``sysu-{mode}-single`` plus ``shots``
    infrared images per (identity, infrared camera of the mode), drawn the same way (module docstring)."""
    return ProtocolSpec(
        name=f"sysu-{mode}-mixed", description=f"SYSU-MM01 infrared queries, {'all-search' if mode == 'all' else mode} mixed gallery",
        dataset="sysu-mm01", query=QueryRule(INFRARED, SYSU_QUERY_CAMERAS),
        gallery=ConcatDraws((SysuGalleryDraw(), SysuGalleryDraw(INFRARED, SYSU_INFRARED_GALLERY_CAMERAS))),
        cam_rule="sysu+same-camera", dedup_cmc=True, settings={"mode": mode}, params={"shots": 1}, runner=_run_mixed,
    )


_SHORT = {VISIBLE: "v", INFRARED: "i"}


def llcm_mixed_spec(query_modality: str = INFRARED) -> ProtocolSpec:
    """LLCM queries of ``query_modality`` against each trial's LLCM draw of both modalities."""
    if query_modality not in GALLERY_MODALITIES:
        raise ProtocolError(f"unknown query modality {query_modality!r}; use 'visible' or 'infrared'")
    return ProtocolSpec(
        name=f"llcm-{_SHORT[query_modality]}2mixed", description=f"LLCM {query_modality} queries, gallery of both",
        dataset="llcm", query=QueryRule(query_modality),
        gallery=ConcatDraws(tuple(SeededPerCamera(m) for m in GALLERY_MODALITIES)), cam_rule="same-camera",
        dedup_cmc=True, settings={"query_modality": query_modality}, runner=_run_mixed,
    )


def regdb_mixed_spec(query_modality: str = INFRARED) -> ProtocolSpec:
    """RegDB (one split) queries of ``query_modality`` against every test image, the query itself removed."""
    if query_modality not in GALLERY_MODALITIES:
        raise ProtocolError(f"unknown query modality {query_modality!r}; use 'visible' or 'infrared' (thermal)")
    return ProtocolSpec(
        name=f"regdb-{'t' if query_modality == INFRARED else 'v'}2mixed",
        description=f"RegDB {'thermal' if query_modality == INFRARED else 'visible'} queries, gallery of both",
        dataset="regdb", query=QueryRule(query_modality), gallery=WholeModality(None), cam_rule="query-itself",
        dedup_cmc=False, trials=None, settings={"query_modality": query_modality}, params={"split": None},
        runner=_run_mixed,
    )


def sysu_mixed_protocol(features: Any, pool: Sequence[ImageRecord], mode: str = "all", shots: int = 1,
                        trials: int = 10, draw: str = "seeded",
                        rand_perm_cam: str | os.PathLike | RandPermCam | None = None,
                        options: ProtocolOptions | None = None, **ranking: Any) -> ProtocolResult:
    """SYSU-MM01 with a mixed gallery (module docstring). ``precision`` is accepted for a uniform
    call and ignored (fp32)."""
    return sysu_mixed_spec(mode)(features, pool, options, shots=shots, trials=trials, draw=draw,
                                 rand_perm_cam=rand_perm_cam, **ranking)


def llcm_mixed_protocol(features: Any, pool: Sequence[ImageRecord], query_modality: str = INFRARED,
                        trials: int = 10, options: ProtocolOptions | None = None, **ranking: Any) -> ProtocolResult:
    """LLCM with a mixed gallery (module docstring); ``precision`` is ignored (fp32)."""
    return llcm_mixed_spec(query_modality)(features, pool, options, trials=trials, **ranking)


def regdb_mixed_protocol(features: Any, pool: Sequence[ImageRecord], query_modality: str = INFRARED,
                         split: int | None = None, options: ProtocolOptions | None = None,
                         **ranking: Any) -> ProtocolResult:
    """RegDB (one split) with a mixed gallery: every test image, the query itself removed
    (module docstring); ``precision`` is ignored (fp32)."""
    return regdb_mixed_spec(query_modality)(features, pool, options, split=split, **ranking)


_MIXED_SPECS = (sysu_mixed_spec("all"), sysu_mixed_spec("indoor"), regdb_mixed_spec(INFRARED), regdb_mixed_spec(VISIBLE),
                llcm_mixed_spec(INFRARED), llcm_mixed_spec(VISIBLE))
for _spec in _MIXED_SPECS:
    register_protocol(_spec)

MIXED_PROTOCOLS = tuple(spec.name for spec in _MIXED_SPECS)

__all__ = [
    "MIXED_CAM_RULES",
    "MIXED_PROTOCOLS",
    "llcm_mixed_protocol",
    "llcm_mixed_spec",
    "regdb_mixed_protocol",
    "regdb_mixed_spec",
    "sysu_mixed_protocol",
    "sysu_mixed_spec",
    "with_modality_rows",
]
