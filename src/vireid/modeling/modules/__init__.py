"""Parts that go between or after backbone stages: pooling, non-local blocks (and later DFW, SLN, ADMG, IDI)."""

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
from vireid.modeling.modules import dfw, sln  # noqa: E402,F401  (DFW+SLN: registers "dfw", "sln")
from vireid.modeling.modules import fusion_layers  # noqa: E402,F401  (the survey: registers "early_fusion", "late_fusion", "attention_fusion")
from vireid.modeling.modules import admg, idi  # noqa: E402,F401  (PDFENet: registers "admg", "idi")
