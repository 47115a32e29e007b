"""Two-stream backbones over timm models (see :mod:`.two_stream` and :mod:`.timm_stages`)."""

from vireid.modeling.backbones.timm_stages import StageSplit, model_family, split_timm_model
from vireid.modeling.backbones.two_stream import NUM_STAGES, TwoStreamBackbone, as_modality_tensor

__all__ = ["NUM_STAGES", "StageSplit", "TwoStreamBackbone", "as_modality_tensor", "model_family", "split_timm_model"]

from vireid.modeling.backbones import clip  # noqa: E402,F401  (CLIP image encoders via open_clip: registers "clip")
