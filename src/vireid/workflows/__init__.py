"""Workflows: multi-step procedures built on the engine (training a translator, translating a dataset, ...)."""
