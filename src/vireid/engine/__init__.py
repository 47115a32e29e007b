"""Training engine: the model-agnostic loop, checkpoints, logging and distributed set-up.

Methods plug in through the model's output dict, the loss table of the config, and optional
hooks on the model (see :mod:`vireid.engine.trainer`); nothing here changes per method.
"""
