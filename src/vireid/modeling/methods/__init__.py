"""Whole models composed from backbones, modules and heads; registered in ``METHODS`` by name."""

from vireid.modeling.methods.baseline import BaselineReID

__all__ = ["BaselineReID"]
from vireid.modeling.methods import dfw_sln  # noqa: E402,F401  (DFW+SLN: registers "dfw_sln")
from vireid.modeling.methods import dual_path_swin  # noqa: E402,F401  (dual-path Swin: registers "dual_path_swin")
from vireid.modeling.methods import fusion  # noqa: E402,F401  (the survey §4.1/§4.2: registers "fusion")
from vireid.modeling.methods import pdfenet  # noqa: E402,F401  (PDFENet: registers "pdfenet")
from vireid.modeling.methods import clip_reid  # noqa: E402,F401  (CLIP-ReID: registers "clip_reid")
