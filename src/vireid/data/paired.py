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
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE, ImageRecord
from vireid.data.sampler import CrossModalityIdentitySampler, _ImagesById
from vireid.data.transforms import TRANSFORM_STEPS, RandomPadCropFlip
from vireid.errors import ConfigError, DatasetError

#: RegDB names a visible image ``..._v_<counter>_<id>.bmp`` and its thermal twin ``..._t_<counter>_<id>.bmp``
#: (vireid's synthetic depth camera adds ``..._d_<counter>_<id>.png``).
_MODALITY_TOKEN = re.compile(r"_(?:v|t|d)_", re.IGNORECASE)


def moment_key(path: str) -> str:
    """The name of the moment an image shows: its file name with RegDB's modality letter removed
    (``male_front_v_00061_7.bmp`` and ``male_front_t_00061_7.bmp`` -> ``male_front_*_00061_7``)."""
    return _MODALITY_TOKEN.sub("_*_", Path(path).stem, count=1)


def pair_registered_records(records: Sequence[ImageRecord], split: str = "train") -> np.ndarray:
    """``int64 [P, 2]`` rows ``(visible index, infrared index)`` into ``records``, one per moment.

    Within each identity the images are matched by :func:`moment_key` when that matches every image
    one to one (RegDB's file names), otherwise by position (the i-th visible image with the i-th
    infrared image, as listed), which needs equal counts. Rows are ordered by identity, then visible
    index. Raises :class:`DatasetError` when an identity cannot be paired.
    """
    by_identity: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for i, r in enumerate(records):
        by_identity[r.orig_pid][0 if r.modality == VISIBLE else 1].append(i)
    rows: list[tuple[int, int]] = []
    for pid in sorted(by_identity):
        visible, infrared = by_identity[pid]
        vis_keys = [moment_key(records[i].path) for i in visible]
        ir_index = {moment_key(records[i].path): i for i in infrared}
        if len(ir_index) == len(infrared) == len(visible) == len(set(vis_keys)) and set(vis_keys) == set(ir_index):
            rows.extend((v, ir_index[k]) for v, k in zip(visible, vis_keys))
        elif len(visible) == len(infrared) and visible:
            rows.extend(zip(visible, infrared))
        else:
            raise DatasetError(
                f"identity {pid} of the {split} split has {len(visible)} visible and {len(infrared)} infrared images "
                "whose names do not match moment by moment, so they cannot be paired; restore the missing twins or "
                "read the dataset without paired=true"
            )
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def depth_for_pairs(records: Sequence[ImageRecord], pairs: np.ndarray, depth_root: Path) -> list[str]:
    """Path of the depth image of every pair's moment: ``depth_root/<identity folder>/<file>`` whose
    :func:`moment_key` equals the pair's (RegDB layout with vireid's synthetic depth camera)."""
    from vireid.data.images import is_image_file

    listing: dict[str, dict[str, str]] = {}
    out = []
    for v in np.asarray(pairs, dtype=np.int64).reshape(-1, 2)[:, 0]:
        folder = Path(records[int(v)].path).parent.name
        if folder not in listing:
            directory = depth_root / folder
            files = sorted(p for p in directory.iterdir() if is_image_file(p)) if directory.is_dir() else []
            listing[folder] = {moment_key(str(p)): str(p) for p in files}
        key = moment_key(records[int(v)].path)
        if key not in listing[folder]:
            raise DatasetError(
                f"{depth_root / folder} has no depth image of moment {key} (of {records[int(v)].path}); restore it or "
                "remove the Depth/ folder to read visible/thermal pairs only"
            )
        out.append(listing[folder][key])
    return out


class PairedIdentitySampler(CrossModalityIdentitySampler):
    """:class:`CrossModalityIdentitySampler` whose K visible + K infrared images per identity are K pairs.

    ``pairs`` is ``int64 [P, 2]`` of ``(visible index, infrared index)`` into the training set (both of one
    identity). Identity order, epoch length, determinism (a function of ``(seed, epoch)``), distributed
    shares and resuming are those of the parent; only the per-identity draw changes: K *pairs* are
    drawn per identity (without replacement when it has at least K), and pair ``j`` of identity ``p``
    supplies both visible slot ``(p, j)`` and infrared slot ``(p, j)``. Hence in every batch row ``i`` and
    row ``P*K + i`` are one registered moment.
    """

    def __init__(self, pids: Sequence[int] | np.ndarray, modalities: Sequence[int] | np.ndarray,
                 pairs: np.ndarray | Sequence[Sequence[int]], **kwargs) -> None:
        super().__init__(pids, modalities, **kwargs)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        mods = np.asarray(modalities, dtype=np.int64).reshape(-1)
        if pairs.size == 0:
            raise DatasetError("the training set has no visible/infrared pairs; a paired sampler needs registered pairs")
        if pairs.min() < 0 or pairs.max() >= self._pids.shape[0]:
            raise ConfigError(f"paired sampler got pair indices outside 0..{self._pids.shape[0] - 1}; "
                              "pass indices into the training records")
        if not (np.all(mods[pairs[:, 0]] == MODALITY_CODE[VISIBLE]) and np.all(mods[pairs[:, 1]] == MODALITY_CODE[INFRARED])):
            raise ConfigError("paired sampler pairs must be (visible index, infrared index) rows")
        if np.any(self._pids[pairs[:, 0]] != self._pids[pairs[:, 1]]):
            bad = int(np.flatnonzero(self._pids[pairs[:, 0]] != self._pids[pairs[:, 1]])[0])
            raise DatasetError(f"pair {bad} joins images of identities {int(self._pids[pairs[bad, 0]])} and "
                               f"{int(self._pids[pairs[bad, 1]])}; a pair must show one person")
        rank = np.searchsorted(self.identities, self._pids[pairs[:, 0]])
        self._pairs = pairs
        self._pair_groups = _ImagesById(rank, np.ones(pairs.shape[0], dtype=bool), self.identities.shape[0])
        missing = np.flatnonzero(self._pair_groups.count == 0)
        if missing.size:
            raise DatasetError(
                f"training identity {int(self.identities[missing[0]])} has no visible/infrared pair "
                f"({missing.size} identities lack one); remove them from the training split or train unpaired"
            )

    def _identity_pass(self, epoch: int, pass_index: int, previous_tail: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order, _, _ = super()._identity_pass(epoch, pass_index, previous_tail)
        rng = np.random.default_rng([self.seed, epoch, pass_index, 0xFA1])
        drawn = self._pair_groups.draw(rng, self.num_per_modality)  # [ids, K] pair indices
        return order, self._pairs[drawn, 0], self._pairs[drawn, 1]


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


__all__ = [
    "PairedIdentitySampler",
    "PairedPadCropFlip",
    "depth_for_pairs",
    "moment_key",
    "pair_registered_records",
    "pair_slots",
]
