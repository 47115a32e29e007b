"""Official evaluation protocols of visible-infrared re-identification (SYSU-MM01, RegDB, LLCM, and
the NPU-ReID and mixed-gallery protocols of :mod:`vireid.evaluation.npu` / :mod:`vireid.evaluation.mixed`).

A protocol is a :class:`ProtocolSpec` (queries, gallery draw, camera rule, de-duplication, trials)
registered in :data:`PROTOCOLS`; every protocol ranks with one :class:`ProtocolOptions`. By job:

* :mod:`~vireid.evaluation.protocols.results` -- :class:`ProtocolResult` (per-trial figures, mean and
  std in percent), :func:`aggregate_results`, :func:`format_results_table`;
* :mod:`~vireid.evaluation.protocols.draws` -- pools and gallery draws (the official SYSU-MM01
  ``rand_perm_cam.mat``, the AGW / CAJ / LLCM seeded draws) and the spec pieces
  (:class:`QueryRule`, :class:`GalleryDraw` and its kinds);
* :mod:`~vireid.evaluation.protocols.options` -- :class:`ProtocolOptions`, the ranking keywords;
* :mod:`~vireid.evaluation.protocols.runner` -- ranking the draws (fp32 or the certified bf16 screen);
* :mod:`~vireid.evaluation.protocols.specs` -- :class:`ProtocolSpec`, the registry,
  :func:`run_protocol` and the official specs with their functions (:func:`sysu_protocol`, ...).
"""

from vireid.evaluation.protocols.draws import (
    DRAWS,
    SYSU_GALLERY_CAMERAS,
    SYSU_MULTI_SHOT,
    SYSU_QUERY_CAMERAS,
    ConcatDraws,
    GalleryDraw,
    QueryRule,
    RandPermCam,
    SeededPerCamera,
    SysuGalleryDraw,
    WholeModality,
    _groups,
    _llcm_gallery_draws,
    _official_sysu_draw,
    _pool_columns,
    _seeded_draw,
    _sysu_gallery_draws,
    llcm_gallery_indices,
    load_rand_perm_cam,
    sysu_gallery_indices,
)
from vireid.evaluation.protocols.options import DEFAULT_RERANK, PRECISIONS, ProtocolOptions
from vireid.evaluation.protocols.results import (
    METRIC_KEYS,
    ProtocolError,
    ProtocolResult,
    _summarise,
    _trial_figures,
    aggregate_results,
    format_results_table,
)
from vireid.evaluation.protocols.runner import _check_features, _run_trials, run_trials
from vireid.evaluation.protocols.specs import (
    PROTOCOLS,
    ProtocolSetting,
    ProtocolSpec,
    given_protocol,
    llcm_protocol,
    llcm_spec,
    protocol_accepts,
    regdb_protocol,
    regdb_spec,
    register_protocol,
    run_protocol,
    sysu_protocol,
    sysu_spec,
)

__all__ = [
    "DEFAULT_RERANK",
    "DRAWS",
    "METRIC_KEYS",
    "PRECISIONS",
    "PROTOCOLS",
    "SYSU_GALLERY_CAMERAS",
    "SYSU_MULTI_SHOT",
    "SYSU_QUERY_CAMERAS",
    "ConcatDraws",
    "GalleryDraw",
    "ProtocolError",
    "ProtocolOptions",
    "ProtocolResult",
    "ProtocolSetting",
    "ProtocolSpec",
    "QueryRule",
    "RandPermCam",
    "SeededPerCamera",
    "SysuGalleryDraw",
    "WholeModality",
    "aggregate_results",
    "format_results_table",
    "given_protocol",
    "llcm_gallery_indices",
    "llcm_protocol",
    "llcm_spec",
    "load_rand_perm_cam",
    "protocol_accepts",
    "regdb_protocol",
    "regdb_spec",
    "register_protocol",
    "run_protocol",
    "run_trials",
    "sysu_gallery_indices",
    "sysu_protocol",
    "sysu_spec",
]
