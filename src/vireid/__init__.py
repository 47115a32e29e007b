"""vireid: visible-infrared (cross-modality) person re-identification toolkit."""

from vireid._compat import ensure_torchvision

ensure_torchvision()

__version__ = "0.1.0"
__all__ = ["__version__"]
