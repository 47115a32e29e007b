"""Workflows: multi-step procedures built on the engine (training, evaluation, export), such as
federated training (:mod:`vireid.workflows.federated`)."""
