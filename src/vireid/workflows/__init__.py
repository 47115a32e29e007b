"""Workflows: each composes the layers below into one job a user runs (docs/architecture.md).

- :mod:`~vireid.workflows.train_run` -- a training run (``vireid train``, ``vireid eval``);
- :mod:`~vireid.workflows.evaluate_run`, :mod:`~vireid.workflows.evaluate_model`, :mod:`~vireid.workflows.eval_data`,
  :mod:`~vireid.workflows.generalisation`, :mod:`~vireid.workflows.robustness` -- evaluating a checkpoint;
- :mod:`~vireid.workflows.evaluate_export` -- evaluating an exported ONNX model;
- :mod:`~vireid.workflows.calibration` -- the verification threshold;
- :mod:`~vireid.workflows.prune` -- prune + fine-tune;
- :mod:`~vireid.workflows.ablation` -- ablation grids;
- :mod:`~vireid.workflows.evaluate_fusion` -- fused multi-modal queries;
- :mod:`~vireid.workflows.import_agw` -- importing an AGW checkpoint;
- :mod:`~vireid.workflows.demo` -- the end-to-end demo on synthetic data;
- :mod:`~vireid.workflows.gan` -- training a visible <-> infrared translator and translating a dataset;
- :mod:`~vireid.workflows.federated` -- federated training with Flower (simulation, server, clients).
- the jobs behind the other commands, one module per command group: :mod:`~vireid.workflows.visualize`
  (pictures), :mod:`~vireid.workflows.search` (extract, index, search), :mod:`~vireid.workflows.verify`
  (verify, calibrate), :mod:`~vireid.workflows.export` (export, quantize, prune), :mod:`~vireid.workflows.datasets`,
  :mod:`~vireid.workflows.report`, :mod:`~vireid.workflows.data_tools` (synth, pose-cache, list) and
  :mod:`~vireid.workflows.configs` (configs, the ``--plugins`` policy);
- :mod:`~vireid.workflows.process` -- the process-wide settings every command starts with.
"""
