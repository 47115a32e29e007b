"""Training engine: the model-agnostic loop, checkpoints, logging, distributed set-up, transfer and precision.

Methods plug in through the model's output dict, the loss table of the config, and optional
hooks on the model (see :mod:`vireid.engine.trainer`); nothing here changes per method. Jobs that
use a trained model (evaluation, calibration, ablation, fusion evaluation, prune + fine-tune) are
workflows (:mod:`vireid.workflows`); embedding images is :mod:`vireid.inference` (docs/architecture.md).
"""
