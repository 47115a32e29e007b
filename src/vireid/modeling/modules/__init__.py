"""Parts that go between or after backbone stages: pooling, non-local blocks, DFW, SLN, ADMG, IDI, fusion layers
(registered in ``MODULES``; ``vireid list modules``)."""

from vireid.modeling.modules.non_local import (
    AGW_INTER_CHANNELS,
    AGW_NON_LOCAL,
    NonLocalBlock,
    add_non_local,
    resolve_non_local,
)
from vireid.modeling.modules.pooling import (
    GeneralizedMeanPooling,
    GlobalAvgPooling,
    GlobalMaxPooling,
    build_pooling,
)

__all__ = [
    "AGW_INTER_CHANNELS",
    "AGW_NON_LOCAL",
    "GeneralizedMeanPooling",
    "GlobalAvgPooling",
    "GlobalMaxPooling",
    "NonLocalBlock",
    "add_non_local",
    "build_pooling",
    "resolve_non_local",
]
