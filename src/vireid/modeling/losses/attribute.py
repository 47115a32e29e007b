"""Attribute loss: softmax cross entropy per attribute, unknown labels ignored.

Each attribute of :data:`vireid.data.attribute_table.ATTRIBUTES` has its own classifier over its values
(a yes/no attribute is a 2-way softmax, equivalent to a binary cross entropy on the logit difference);
the loss is the mean over the attributes that have at least one known label in the batch of their cross
entropy averaged over those labels (``-1`` labels, e.g. a colour on an infrared image, contribute
nothing). This is the attribute-classification loss of attribute-assisted re-id (Lin et al., "Improving
person re-identification by attribute and identity learning", Pattern Recognition 2019: one softmax
classifier per attribute on the shared embedding, losses averaged), with unknown labels masked out.

It reads the ``attributes`` output of a method with attribute heads (``model.method: attributes``): the
logits of every attribute value followed by the batch's attribute labels, one tensor
(:func:`vireid.modeling.modules.attributes.pack_attribute_output`), because a loss term is called with its
input, the identity labels and the modalities only.
"""

from __future__ import annotations

import torch

from vireid.modeling.losses.base import ReIDLoss
from vireid.modeling.modules.attributes import attribute_cross_entropy, unpack_attribute_output
from vireid.modeling.registries import LOSSES


@LOSSES.register("attribute")
class AttributeLoss(ReIDLoss):
    """Cross entropy of every attribute head (unknown labels ignored), averaged over the attributes."""

    input_key = "attributes"

    def __init__(self) -> None:  # no parameters (a config's params are checked against this)
        super().__init__()

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits, targets = unpack_attribute_output(inputs)
        return attribute_cross_entropy(logits, targets)


__all__ = ["AttributeLoss"]
