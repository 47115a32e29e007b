"""The paired crop step: pad + crop + flip with one draw per registered pair, so the two images of a
pair stay pixel-aligned (transform step ``paired_pad_crop_flip``; :mod:`vireid.data.paired`)."""

from __future__ import annotations

import torch

from vireid.data.transforms import TRANSFORM_STEPS, RandomPadCropFlip


def pair_slots(modalities: torch.Tensor | None, batch: int) -> torch.Tensor:
    """CPU int64 [B]: the position of each row among the rows of its modality, i.e. the index of the
    pair it belongs to in a paired batch (the k-th visible row and the k-th infrared row share it)."""
    if modalities is None:
        return torch.arange(batch)
    codes = torch.as_tensor(modalities).to("cpu", torch.int64).reshape(-1)
    if codes.shape[0] != batch:
        raise ValueError(f"got {codes.shape[0]} modality codes for a batch of {batch} images")
    onehot = codes.unsqueeze(1) == torch.arange(int(codes.max()) + 1 if batch else 1).unsqueeze(0)
    return (onehot.long().cumsum(0) - 1).gather(1, codes.unsqueeze(1)).squeeze(1)


@TRANSFORM_STEPS.register("paired_pad_crop_flip")
class PairedPadCropFlip(RandomPadCropFlip):
    """Pad + random crop + horizontal flip with one draw per registered pair (the survey §4.2 early fusion).

    Same geometry as :class:`~vireid.data.transforms.RandomPadCropFlip` (crop offset uniform in
    ``0..2*pad`` per axis, mirror with probability ``flip``), but the k-th visible and the k-th infrared
    image of the batch (one pair under :class:`PairedIdentitySampler`) get the *same* offset and flip,
    so the two stay pixel-aligned. Use it instead of the default step: ``augment: {pad: 0, flip: 0,
    steps: [{type: paired_pad_crop_flip, before: normalize, pad: 4, flip: 0.5}]}``.
    """

    name = "paired_pad_crop_flip"

    def _draw(self, batch: int, modalities: torch.Tensor | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        slots = pair_slots(modalities, batch)
        num_pairs = int(slots.max()) + 1 if batch else 0
        offsets = torch.randint(0, 2 * self.pad + 1, (num_pairs, 2), generator=generator)[slots]
        flipped = (torch.rand(num_pairs, generator=generator) < self.flip)[slots]
        return offsets, flipped


__all__ = ["PairedPadCropFlip", "pair_slots"]
