"""Model size and cost: parameter counts and forward FLOPs (for docs and benchmarks).

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` for one forward pass
(a multiply-add counts as 2 FLOPs; papers that report "FLOPs" for ResNet-50 ≈ 4.1 G at
224x224 usually mean multiply-adds, i.e. half of this number).
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@torch.no_grad()
def count_forward_flops(
    model: nn.Module, image_size: tuple[int, int] = (288, 144), batch_size: int = 1, modality: int = 0
) -> int:
    """FLOPs of one forward pass of a vireid method in evaluation mode on zero images."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        images = torch.zeros(batch_size, 3, *image_size, device=device)
        modalities = torch.full((batch_size,), modality, dtype=torch.long, device=device)
        # nn.MultiheadAttention's evaluation fast path (one fused kernel, used by CLIP's transformers) is
        # invisible to the counter: count the unfused path, whose projections and matmuls it knows
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        with FlopCounterMode(display=False) as counter:
            model(images, modalities)
        return int(counter.get_total_flops())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)


__all__ = ["count_forward_flops", "count_parameters"]
