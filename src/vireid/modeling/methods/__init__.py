"""Whole models composed from backbones, modules and heads; registered in ``METHODS`` by name."""

from vireid.modeling.methods.baseline import BaselineReID

__all__ = ["BaselineReID"]
