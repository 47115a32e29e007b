"""The paired batch sampler: K registered pairs per identity, so row ``i`` of the visible half and row
``i`` of the infrared half of a batch are one moment (:mod:`vireid.data.paired`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vireid.data.records import INFRARED, MODALITY_CODE, VISIBLE
from vireid.data.sampler import CrossModalityIdentitySampler, _ImagesById
from vireid.errors import ConfigError, DatasetError


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


__all__ = ["PairedIdentitySampler"]
