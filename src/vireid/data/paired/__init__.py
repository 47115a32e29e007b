"""Registered multi-modal pairs: one visible and one infrared image of the same person at the same moment.

The survey (§4.1, §4.2) describes models that take several modalities of one person *at once*, each
through its own branch, and fuse them. That needs data where the modalities are registered: RegDB's
co-located visible/thermal cameras (each visible image has a thermal twin taken at the same instant,
same file counter), or the synthetic generator's RegDB layout, which renders both images of one
moment from one pose. :class:`~vireid.data.records.ImageRecord` is unchanged; a reader asked for pairs
(``paired=True``) adds an ``int64 [P, 2]`` array of ``(visible index, infrared index)`` rows into its
record lists (``train_pairs``, ``test_pairs``).

Training uses them through two pieces that keep the trainer generic:

* :class:`PairedIdentitySampler` -- the batch layout of
  :class:`~vireid.data.sampler.CrossModalityIdentitySampler` (P identities x K visible, then the same
  P x K infrared), but the K visible and K infrared images of an identity are K registered *pairs* in
  the same order, so row ``i`` of the visible half and row ``i`` of the infrared half are one moment;
* :class:`PairedPadCropFlip` (transform step ``paired_pad_crop_flip``) -- pad/crop/flip with one
  random draw per pair, applied to both images, so augmentation does not break the registration
  (early fusion concatenates the two images pixel by pixel).

By job: :mod:`~vireid.data.paired.pairing` (moments, pairs, depth images),
:mod:`~vireid.data.paired.sampler` (:class:`PairedIdentitySampler`) and :mod:`~vireid.data.paired.crop`
(:class:`PairedPadCropFlip`, registered when this package is imported).
"""

from vireid.data.paired.crop import PairedPadCropFlip, pair_slots
from vireid.data.paired.pairing import depth_for_pairs, moment_key, pair_registered_records
from vireid.data.paired.sampler import PairedIdentitySampler

__all__ = [
    "PairedIdentitySampler",
    "PairedPadCropFlip",
    "depth_for_pairs",
    "moment_key",
    "pair_registered_records",
    "pair_slots",
]
