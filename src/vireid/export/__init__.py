"""Lightweight deployment (the survey §6): ONNX export, structured channel pruning, int8 quantization.

- :mod:`vireid.export.onnx` — export a checkpoint's embedding model to ONNX (dynamic batch, both
  inputs of two-stream models, checked against PyTorch with onnxruntime) and
  :class:`~vireid.export.onnx.OnnxEmbedder`, registered for ``.onnx`` files with
  :func:`vireid.inference.loading.load_embedder`;
- :mod:`vireid.modeling.pruning` — L1-norm / BN-scale filter pruning of the inner channels of
  residual, inverted-residual and MLP blocks, stored so that pruned checkpoints reload;
- :mod:`vireid.export.quantize` — int8 post-training static quantization of an exported model
  with onnxruntime, calibrated on training images;
- :mod:`vireid.workflows.evaluate_export` — test-protocol evaluation of any Embedder (``vireid eval model.onnx``).

The submodules are imported on use, so pruning works without onnx/onnxruntime installed.
"""

__all__ = ["evaluate", "onnx", "pruning", "quantize"]
