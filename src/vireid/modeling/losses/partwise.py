"""A loss applied to each part (sub-network) of a stacked output and averaged.

Methods with several parallel heads (the DFW+SLN paper's SLN sub-networks; part-based models) output
``[N_parts, B, ...]`` tensors (``part_logits``, ``part_features``). Each part needs its own loss
on its own rows: stacking the parts into ``N·B`` rows would be right for a cross entropy but
wrong for a batch-hard triplet, whose positives and negatives would then mix parts. ``partwise``
runs any registered loss on every part with the batch's labels and modalities and returns the
mean over parts, so the config stays independent of the number of parts::

    losses:
      part_id: {type: partwise, input: part_logits, params: {loss: cross_entropy, params: {epsilon: 0.1}}}
      part_triplet: {type: partwise, input: part_features, params: {loss: triplet, params: {margin: 0.3}}}
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from vireid.errors import ConfigError
from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.registries import LOSSES


@LOSSES.register("partwise")
class PartwiseLoss(ReIDLoss):
    """Mean over parts of ``loss`` on inputs ``[N_parts, B, ...]``.

    Args:
        loss: registered name of the per-part loss (e.g. ``cross_entropy``, ``triplet``).
        params: keyword arguments of that loss.
        num_classes: filled in by the trainer and passed on when the inner loss takes it. (The
            trainer's ``feat_dim`` is the whole embedding's, not a part's, so it is not passed on:
            give a per-part ``center`` loss its ``feat_dim`` in ``params``.)
    """

    def __init__(
        self, loss: str, params: dict | None = None, num_classes: int | None = None
    ) -> None:
        super().__init__()
        if loss == "partwise":
            raise ConfigError("partwise loss cannot wrap itself; name a per-part loss such as cross_entropy")
        cls, kwargs = LOSSES.check(loss, params, f"partwise({loss}).params", where="partwise loss")
        accepted = inspect.signature(cls).parameters
        if "num_classes" in accepted and num_classes is not None:
            kwargs.setdefault("num_classes", num_classes)
        self.name = loss
        self.inner: nn.Module = cls(**kwargs)
        self.needs_modalities = bool(getattr(cls, "needs_modalities", False))
        self.input_key = "part_" + str(getattr(cls, "input_key", "features"))

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
    ) -> torch.Tensor:
        if inputs.dim() < 2 or inputs.shape[1] != labels.shape[0]:
            raise ValueError(
                f"partwise({self.name}) expects inputs [N_parts, B, ...] with B = {labels.shape[0]} labels, "
                f"got shape {tuple(inputs.shape)}"
            )
        terms = [self.inner(part, labels, modalities) for part in inputs.unbind(0)]
        return torch.stack(terms).mean()

    def extra_repr(self) -> str:
        return f"loss={self.name!r}"


__all__ = ["PartwiseLoss"]
