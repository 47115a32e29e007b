"""Lightweight deployment (the survey §6): the writers of deployable models.

- :mod:`vireid.export.onnx` -- export a checkpoint's embedding model to ONNX (dynamic batch, both
  inputs of two-stream models, checked against PyTorch with onnxruntime); the file is run by
  :class:`~vireid.inference.onnx_embedder.OnnxEmbedder` (:func:`vireid.inference.loading.load_embedder`);
- :mod:`vireid.export.quantize` -- int8 post-training static quantization of an exported model
  with onnxruntime, calibrated on training images.

Structured channel pruning is model surgery (:mod:`vireid.modeling.pruning`); pruning a checkpoint and
fine-tuning it is a workflow (:mod:`vireid.workflows.prune`), and so is evaluating an exported model
(:mod:`vireid.workflows.evaluate_export`, ``vireid eval model.onnx``). The submodules are imported on
use, so pruning works without onnx/onnxruntime installed.
"""

__all__ = ["onnx", "quantize"]
