"""Evaluation: distances, k-reciprocal re-ranking, ranking metrics and the official protocols.

Data flow: features -> :func:`pairwise_distance` -> (:func:`k_reciprocal_rerank`) ->
protocol runner (:func:`run_protocol` / ``sysu_protocol`` ...) -> :func:`evaluate_ranking`.
The registered protocols are listed by ``vireid list protocols`` (they are registered by
:mod:`vireid.builtins`).
"""

from vireid.evaluation.distance import pairwise_distance
from vireid.evaluation.metrics import evaluate_ranking, evaluate_ranking_loop
from vireid.evaluation.mixed import with_modality_rows
from vireid.evaluation.protocols import (
    METRIC_KEYS,
    PROTOCOLS,
    ProtocolError,
    ProtocolResult,
    aggregate_results,
    format_results_table,
    given_protocol,
    llcm_protocol,
    regdb_protocol,
    run_protocol,
    sysu_protocol,
)
from vireid.evaluation.rerank import k_reciprocal_rerank, k_reciprocal_rerank_loop

__all__ = [
    "METRIC_KEYS",
    "PROTOCOLS",
    "ProtocolError",
    "ProtocolResult",
    "aggregate_results",
    "evaluate_ranking",
    "evaluate_ranking_loop",
    "format_results_table",
    "given_protocol",
    "k_reciprocal_rerank",
    "k_reciprocal_rerank_loop",
    "llcm_protocol",
    "pairwise_distance",
    "regdb_protocol",
    "run_protocol",
    "sysu_protocol",
    "with_modality_rows",
]
