"""The ranking options every protocol takes, as one object.

A protocol decides *what* is compared (queries, the gallery of each trial, the camera rule); these
options decide *how* it is ranked, the same way for every protocol: the distance, re-ranking, the
CMC length and the arithmetic precision. Protocol functions and :func:`run_protocol` accept them as
keywords too (``rerank=True``) and gather them here with :meth:`ProtocolOptions.split`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: k-reciprocal re-ranking defaults (Zhong et al., CVPR 2017, as the AGW / CAJ test code calls it).
DEFAULT_RERANK = {"k1": 20, "k2": 6, "lambda_value": 0.3}
PRECISIONS = ("auto", "fp32", "certified")


@dataclass(frozen=True)
class ProtocolOptions:
    """How a protocol ranks its gallery.

    Args:
        rerank: False, True / ``"k-reciprocal"`` (Zhong et al., CVPR 2017) or ``"modality"``
            (:mod:`vireid.evaluation.rerank_modality`).
        rerank_params: re-ranking parameters (default :data:`DEFAULT_RERANK`).
        metric: ``"euclidean"`` or ``"cosine"`` (:func:`~vireid.evaluation.distance.pairwise_distance`).
        normalize: L2-normalise the features first (AGW / CAJ evaluate normalised features).
        max_rank: length of the CMC curve.
        precision: ``"auto"``, ``"fp32"`` or ``"certified"`` (:mod:`vireid.evaluation.protocols.runner`).
    """

    rerank: bool | str = False
    rerank_params: dict | None = None
    metric: str = "euclidean"
    normalize: bool = True
    max_rank: int = 20
    precision: str = "auto"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The keyword names of the options."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def split(cls, keywords: Mapping[str, Any], base: ProtocolOptions | None = None) -> tuple[ProtocolOptions, dict]:
        """``(options, rest)``: the ranking keywords of ``keywords`` over ``base`` (default: the defaults),
        and the other keywords (the protocol's own: trials, draw, ...)."""
        names = cls.names()
        ranking = {k: v for k, v in keywords.items() if k in names}
        rest = {k: v for k, v in keywords.items() if k not in names}
        return replace(base if base is not None else cls(), **ranking), rest

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keywords (for a protocol function)."""
        return asdict(self)


__all__ = ["DEFAULT_RERANK", "PRECISIONS", "ProtocolOptions"]
