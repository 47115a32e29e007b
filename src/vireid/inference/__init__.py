"""Inference: embedders for PyTorch checkpoints and exported ONNX models, and batched feature extraction.

Layer 4 (with :mod:`vireid.engine`): it uses data, modeling and the engine's checkpoint loading; export, retrieval,
serve, viz and the workflows build on it (docs/architecture.md).
"""
