"""The five model-side registries, kept in their own module so that every part can register
itself without importing the package that re-exports them (no import cycles).

Config files name parts by these registered names: ``BACKBONES`` (two-stream feature
extractors), ``MODULES`` (pooling, non-local and later DFW/SLN/ADMG/IDI blocks), ``HEADS``
(necks and classifiers), ``LOSSES`` and ``METHODS`` (whole models the trainer builds).
"""

from __future__ import annotations

from vireid.registry import Registry

BACKBONES: Registry = Registry("backbone")
MODULES: Registry = Registry("module")
HEADS: Registry = Registry("head")
LOSSES: Registry = Registry("loss")
METHODS: Registry = Registry("method")

__all__ = ["BACKBONES", "HEADS", "LOSSES", "METHODS", "MODULES"]
