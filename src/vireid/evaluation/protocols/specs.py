"""Protocols as specs, the registry of named protocols, and the official protocols of SYSU-MM01,
RegDB and LLCM.

A :class:`ProtocolSpec` says *what* a protocol compares: which pool images are queries
(:class:`~vireid.evaluation.protocols.draws.QueryRule`), how each trial's gallery is drawn (a
:class:`~vireid.evaluation.protocols.draws.GalleryDraw`), the camera rule, whether the CMC counts an
identity once, how many trials, and the settings its results record. *How* the gallery is ranked
is one :class:`~vireid.evaluation.protocols.options.ProtocolOptions` shared by every protocol. A new
dataset's protocol is therefore a spec, registered in :data:`PROTOCOLS` under its name::

    PROTOCOLS.register("sysu-all-single")(ProtocolSpec(
        name="sysu-all-single", description="SYSU-MM01 all-search, single-shot", dataset="sysu-mm01",
        query=QueryRule(INFRARED, cameras=(3, 6)), gallery=SysuGalleryDraw(), cam_rule="sysu",
        dedup_cmc=True, settings={"mode": "all", "shots": 1}))

A spec is called like every registered protocol: ``spec(features, pool, **options)``, where
``options`` are its own keywords (``trials``, its gallery draw's, its recorded ``params``) and the
ranking keywords of :class:`ProtocolOptions` (or ``options=ProtocolOptions(...)``).

The official settings (Ye et al., AGW, TPAMI 2021 and CAJ, ICCV 2021 test code; the SYSU-MM01
MATLAB evaluation; the LLCM test code):

* SYSU-MM01 (:func:`sysu_protocol`): queries = every infrared image (cameras 3 and 6); gallery per
  trial = ``shots`` visible images per identity and camera of the mode (all: 1, 2, 4, 5; indoor: 1,
  2); camera rule ``"sysu"`` (camera-3 queries ignore camera 2); identity-de-duplicated CMC.
* RegDB (:func:`regdb_protocol`): query = every test image of one modality, gallery = every test
  image of the other; no camera rule, plain CMC; one split per trained model.
* LLCM (:func:`llcm_protocol`): query = every test image of one modality; gallery per trial = one
  image per (identity, camera) of the other; camera rule ``"same-camera"``; de-duplicated CMC.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.evaluation.protocols.draws import (
    SYSU_GALLERY_CAMERAS,
    SYSU_MULTI_SHOT,
    SYSU_QUERY_CAMERAS,
    GalleryDraw,
    QueryRule,
    RandPermCam,
    SeededPerCamera,
    SysuGalleryDraw,
    WholeModality,
)
from vireid.evaluation.protocols.options import ProtocolOptions
from vireid.evaluation.protocols.results import ProtocolError, ProtocolResult
from vireid.evaluation.protocols.runner import _check_features, run_trials
from vireid.registry import Registry

#: ``runner(name, settings, features, pool, query_idx, gallery_draws, *, cam_rule, dedup_cmc, options)``
Runner = Callable[..., ProtocolResult]


@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol as data: queries, gallery draw, camera rule, de-duplication, trials, recorded settings.

    Args:
        name: the registered name (also the results' name).
        description: one line for listings.
        dataset: recorded as ``settings["dataset"]``.
        query: the pool images that are queries.
        gallery: the gallery of each trial; its ``keywords`` are options of the protocol.
        cam_rule: None, ``"sysu"`` or ``"same-camera"`` (:class:`~vireid.evaluation.metrics.TrialTable`);
            the mixed-gallery runner also knows ``"sysu+same-camera"`` and ``"query-itself"``.
        dedup_cmc: CMC counts an identity once (SYSU-MM01's reference code) or every match (plain).
        trials: default number of gallery draws (an option, ``trials=``); None: one fixed gallery.
        settings: values the name fixes (e.g. ``mode``, ``shots``): recorded, passed to the draw, and
            refused as options ("pick another protocol name").
        params: further options with their defaults, recorded in the settings (e.g. RegDB's ``split``).
        family: the ``protocol_family`` of the datasets it fits (default: the name's first word).
        runner: ranks the draws (default :func:`~vireid.evaluation.protocols.runner.run_trials`).
    """

    name: str
    description: str
    dataset: str
    query: Callable[[Sequence[ImageRecord]], np.ndarray]
    gallery: GalleryDraw
    cam_rule: str | None = None
    dedup_cmc: bool = False
    trials: int | None = 10
    settings: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    family: str = ""
    runner: Runner = run_trials

    @property
    def protocol_family(self) -> str:
        return self.family or self.name.split("-")[0]

    def keywords(self) -> dict[str, Any]:
        """The protocol's own options with their defaults (the ranking options come on top)."""
        out: dict[str, Any] = {"trials": self.trials} if self.trials is not None else {}
        out.update(self.params)
        out.update(self.gallery.keywords)
        return out

    def accepts(self, keyword: str) -> bool:
        """Whether ``keyword`` is an option of this protocol (its own or a ranking option)."""
        return keyword in self.keywords() or keyword in ProtocolOptions.names()

    def __call__(self, features: Any, pool: Sequence[ImageRecord], options: ProtocolOptions | None = None,
                 **keywords: Any) -> ProtocolResult:
        ranking, own = ProtocolOptions.split(keywords, options)
        clash = sorted(set(own) & set(self.settings))
        if clash:
            raise ProtocolError(f"protocol {self.name} fixes {', '.join(clash)}; pick another protocol name instead")
        accepted = self.keywords()
        unknown = sorted(set(own) - set(accepted))
        if unknown:
            known = ", ".join([*accepted, *ProtocolOptions.names()])
            raise ProtocolError(f"protocol {self.name} has no option {unknown[0]!r}; its options are {known}")
        values = {**accepted, **own, **self.settings}
        if self.trials is not None and values["trials"] < 1:
            raise ProtocolError(f"trials must be at least 1, got {values['trials']}")
        self.gallery.check(values)
        feats = _check_features(features, pool)
        values = self.gallery.prepare(values)
        trials = range(values["trials"]) if self.trials is not None else range(1)
        draws = self.gallery(pool, trials, values)
        recorded = {"dataset": self.dataset, **self.settings, **{k: values[k] for k in self.params}}
        if self.trials is not None:
            recorded["trials"] = values["trials"]
        recorded.update(self.gallery.settings(values))
        return self.runner(self.name, recorded, feats, pool, self.query(pool), draws, cam_rule=self.cam_rule,
                           dedup_cmc=self.dedup_cmc, options=ranking)


@dataclass(frozen=True)
class ProtocolSetting:
    """A named setting made of a runner function with some options fixed (e.g. ``given``, whose query
    and gallery come as two feature tensors rather than one pool)."""

    name: str
    runner: Callable[..., ProtocolResult]
    fixed: dict
    description: str

    def __call__(self, features: Any, pool: Sequence[ImageRecord], **options: Any) -> ProtocolResult:
        clash = sorted(set(options) & set(self.fixed))
        if clash:
            raise ProtocolError(f"protocol {self.name} fixes {', '.join(clash)}; pick another protocol name instead")
        return self.runner(features, pool, **self.fixed, **options)


PROTOCOLS: Registry = Registry("protocol")


def register_protocol(spec: ProtocolSpec | ProtocolSetting) -> ProtocolSpec | ProtocolSetting:
    """Register ``spec`` under its name (refused when the name is taken) and return it."""
    return PROTOCOLS.register(spec.name)(spec)


def run_protocol(name: str, features: Any, pool: Sequence[ImageRecord], **options: Any) -> ProtocolResult:
    """Run the registered protocol ``name`` (see ``PROTOCOLS.names()``) on a pool and its features.

    ``options``: the protocol's own (``trials``, ``draw``, ...) and the ranking options of
    :class:`ProtocolOptions` (or ``options=ProtocolOptions(...)``). For ``"given"``, ``features``/``pool``
    are the query side and ``gallery_features`` / ``gallery_records`` must be passed as options.
    """
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS.names())}")
    return PROTOCOLS.get(name)(features, pool, **options)


def protocol_accepts(name: str, keyword: str) -> bool:
    """Whether the registered protocol ``name`` takes the option ``keyword``: a spec's own options and
    the ranking options; for a function-made setting, its runner's named parameters and the ranking options."""
    if name not in PROTOCOLS:
        return False
    protocol = PROTOCOLS.get(name)
    if isinstance(protocol, ProtocolSpec):
        return protocol.accepts(keyword)
    if keyword in ProtocolOptions.names():
        return True
    runner = getattr(protocol, "runner", protocol)
    parameter = inspect.signature(runner).parameters.get(keyword)
    return parameter is not None and parameter.kind is not inspect.Parameter.VAR_KEYWORD


# --------------------------------------------------------------------------------------------
# The official protocols
# --------------------------------------------------------------------------------------------


def sysu_spec(mode: str = "all", shots: int = 1) -> ProtocolSpec:
    """SYSU-MM01 all-search / indoor-search with ``shots`` gallery images per identity and camera."""
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ProtocolError(f"unknown SYSU-MM01 mode {mode!r}; use 'all' or 'indoor'")
    kind = "single" if shots == 1 else "multi"
    return ProtocolSpec(
        name=f"sysu-{mode}-{kind}", description=f"SYSU-MM01 {mode}-search, {kind}-shot", dataset="sysu-mm01",
        query=QueryRule(INFRARED, SYSU_QUERY_CAMERAS), gallery=SysuGalleryDraw(), cam_rule="sysu", dedup_cmc=True,
        settings={"mode": mode, "shots": shots},
    )


_REGDB_DIRECTIONS = {"visible-to-thermal": ("v2t", VISIBLE, INFRARED), "thermal-to-visible": ("t2v", INFRARED, VISIBLE)}


def regdb_spec(direction: str = "visible-to-thermal") -> ProtocolSpec:
    """RegDB, one split: every test image of one modality against every test image of the other."""
    if direction not in _REGDB_DIRECTIONS:
        raise ProtocolError(f"unknown RegDB direction {direction!r}; use 'visible-to-thermal' or 'thermal-to-visible'")
    short, query_mod, gallery_mod = _REGDB_DIRECTIONS[direction]
    return ProtocolSpec(
        name=f"regdb-{short}", description=f"RegDB {direction.replace('-to-', ' -> ')} (one split)", dataset="regdb",
        query=QueryRule(query_mod), gallery=WholeModality(gallery_mod), cam_rule=None, dedup_cmc=False, trials=None,
        settings={"direction": direction}, params={"split": None},
    )


_LLCM_DIRECTIONS = {"visible-to-infrared": ("v2i", VISIBLE, INFRARED), "infrared-to-visible": ("i2v", INFRARED, VISIBLE)}


def llcm_spec(direction: str = "visible-to-infrared") -> ProtocolSpec:
    """LLCM: every test image of one modality against one image per (identity, camera) of the other."""
    if direction not in _LLCM_DIRECTIONS:
        raise ProtocolError(f"unknown LLCM direction {direction!r}; use 'visible-to-infrared' or 'infrared-to-visible'")
    short, query_mod, gallery_mod = _LLCM_DIRECTIONS[direction]
    return ProtocolSpec(
        name=f"llcm-{short}", description=f"LLCM {direction.replace('-to-', ' -> ')}", dataset="llcm",
        query=QueryRule(query_mod), gallery=SeededPerCamera(gallery_mod), cam_rule="same-camera", dedup_cmc=True,
        settings={"direction": direction},
    )


def sysu_protocol(features: Any, pool: Sequence[ImageRecord], mode: str = "all", shots: int = 1, trials: int = 10,
                  draw: str = "seeded", rand_perm_cam: str | os.PathLike | RandPermCam | None = None,
                  options: ProtocolOptions | None = None, **ranking: Any) -> ProtocolResult:
    """SYSU-MM01 all-search / indoor-search, single-shot (``shots=1``) or multi-shot (``shots=10``).

    Query: every infrared image (cameras 3 and 6) of the pool, in both modes. Gallery per trial
    (0..trials-1): ``shots`` visible images per identity and camera of the mode (all: 1, 2, 4, 5;
    indoor: 1, 2), drawn by ``draw`` (:mod:`~vireid.evaluation.protocols.draws`). Camera rule ``"sysu"``
    (cam-3 queries ignore cam 2) and the identity-de-duplicated CMC of the reference evaluation.
    ``ranking`` / ``options``: :class:`ProtocolOptions` (``precision``: results are the fp32 path's in
    every case).
    """
    if trials < 1:
        raise ProtocolError(f"trials must be at least 1, got {trials}")
    if shots < 1:
        raise ProtocolError(f"shots must be 1 (single-shot) or 10 (multi-shot), got {shots}")
    return sysu_spec(mode, shots)(features, pool, options, trials=trials, draw=draw, rand_perm_cam=rand_perm_cam,
                                  **ranking)


def regdb_protocol(features: Any, pool: Sequence[ImageRecord], direction: str = "visible-to-thermal",
                   split: int | None = None, options: ProtocolOptions | None = None, **ranking: Any) -> ProtocolResult:
    """RegDB, one split (one trained model): query = every test image of one modality, gallery =
    every test image of the other (thermal records have modality ``"infrared"``). No camera rule,
    plain CMC. Average the 10 splits with :func:`aggregate_results`; ``split`` is only recorded."""
    return regdb_spec(direction)(features, pool, options, split=split, **ranking)


def llcm_protocol(features: Any, pool: Sequence[ImageRecord], direction: str = "visible-to-infrared",
                  trials: int = 10, options: ProtocolOptions | None = None, **ranking: Any) -> ProtocolResult:
    """LLCM: query = every test image of one modality; gallery per trial = one image per
    (identity, camera) of the other, drawn as the LLCM test code does (seed = trial, 0-based).
    Camera rule ``"same-camera"``, identity-de-duplicated CMC."""
    spec = llcm_spec(direction)
    if trials < 1:
        raise ProtocolError(f"trials must be at least 1, got {trials}")
    return spec(features, pool, options, trials=trials, **ranking)


def given_protocol(qf: Any, gf: Any, q_records: Sequence[ImageRecord], g_records: Sequence[ImageRecord],
                   cam_rule: str | None = None, dedup_cmc: bool = False, options: ProtocolOptions | None = None,
                   **ranking: Any) -> ProtocolResult:
    """User data with an explicit query and gallery (one trial)."""
    ranking_options, unknown = ProtocolOptions.split(ranking, options)
    if unknown:
        raise ProtocolError(f"protocol given has no option {sorted(unknown)[0]!r}; its options are cam_rule, dedup_cmc, "
                            f"{', '.join(ProtocolOptions.names())}")
    if isinstance(qf, tuple) or isinstance(gf, tuple):
        raise ProtocolError("protocol 'given' takes one feature tensor for the query and one for the gallery, not pairs")
    q = _check_features(qf, q_records)
    g = _check_features(gf, g_records).to(q.device)
    if cam_rule not in (None, "sysu", "same-camera"):
        raise ProtocolError(f"unknown cam_rule {cam_rule!r}; use none, 'sysu' or 'same-camera'")
    pool = list(q_records) + list(g_records)
    feats = torch.cat([q, g.to(q.dtype)])
    nq = len(q_records)
    settings = {"dataset": "given", "draw": "given"}
    return run_trials("given", settings, feats, pool, np.arange(nq), [np.arange(nq, len(pool))], cam_rule=cam_rule,
                      dedup_cmc=dedup_cmc, options=ranking_options)


def _given_from_pool(
    features: Any,
    pool: Sequence[ImageRecord],
    *,
    gallery_features: Any = None,
    gallery_records: Sequence[ImageRecord] | None = None,
    **options: Any,
) -> ProtocolResult:
    if gallery_features is None or gallery_records is None:
        raise ProtocolError("protocol 'given' needs gallery_features and gallery_records (features/pool are the query)")
    return given_protocol(features, gallery_features, pool, gallery_records, **options)


for _spec in (sysu_spec("all", 1), sysu_spec("all", SYSU_MULTI_SHOT), sysu_spec("indoor", 1),
              sysu_spec("indoor", SYSU_MULTI_SHOT), regdb_spec("visible-to-thermal"), regdb_spec("thermal-to-visible"),
              llcm_spec("visible-to-infrared"), llcm_spec("infrared-to-visible")):
    register_protocol(_spec)
register_protocol(ProtocolSetting(
    "given", _given_from_pool, {}, "explicit query (features/pool) and gallery (gallery_features/gallery_records)"))

__all__ = [
    "PROTOCOLS",
    "ProtocolSetting",
    "ProtocolSpec",
    "given_protocol",
    "llcm_protocol",
    "llcm_spec",
    "protocol_accepts",
    "regdb_protocol",
    "regdb_spec",
    "register_protocol",
    "run_protocol",
    "sysu_protocol",
    "sysu_spec",
]
