"""Tracklet batch sampler for video VI-ReID: P identities x K tracklets per modality x T frames.

The batch plan of video VI-ReID training (MITML reference, ``train.py`` with ``IdentitySampler`` over the
tracklet lists and ``VideoDataset_train`` mode ``video_train``): per batch, ``P`` identities, for each of them
``K`` visible and ``K`` infrared *tracklets*, and from each tracklet a clip of ``T`` frames. The clip's frames
are chosen by :func:`vireid.data.tracklets.frame_positions`: ``restricted`` (the sequence in ``T`` equal chunks,
one random frame of each: restricted random sampling) or ``evenly`` (the middle frame of each chunk;
deterministic); a tracklet shorter than ``T`` repeats frames, in order.

It is :class:`~vireid.data.sampler.CrossModalityIdentitySampler` one level up: identities and the ``K``
tracklets per identity and modality are planned exactly as that sampler plans images (identity passes,
without replacement when an identity has ``K`` tracklets of a modality, epoch lengths, DDP shares,
resume), then every planned tracklet becomes its ``T`` frames. ``epoch_length="images"`` therefore counts
*tracklets*: ``ceil(max(#visible tracklets, #infrared tracklets) / (P*K*world_size))`` batches.

Layout of one batch (``2*P*K*T`` dataset indices), tracklet-major:

* first the visible half: identity 1's K tracklets, each as its T frames in temporal order, then identity 2's,
  ...; then the infrared half with the same identities in the same order;
* so ``batch[:P*K*T]`` / ``batch[P*K*T:]`` are the modality halves (as AGW/CAJ concatenate them), and every
  tracklet's T frames are consecutive -- what the ``tracklets`` side input (:class:`vireid.data.extras.TrackletExtra`)
  promises the temporal models.

Determinism: the tracklet plan is the parent's function of ``(seed, epoch)``; the frames of the whole global
plan of an epoch are drawn from one generator seeded with ``(seed, epoch, 0x7F)``, then shared out by rank, so
they depend neither on ``rank``/``world_size`` nor on where training resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vireid.data.sampler import CrossModalityIdentitySampler
from vireid.data.tracklets import FRAME_SAMPLING, frame_positions
from vireid.errors import ConfigError, DatasetError

_FRAME_SALT = 0x7F


class TrackletSampler(CrossModalityIdentitySampler):
    """Batch sampler yielding lists of dataset (frame) indices: P identities x K tracklets per modality x T frames.

    ``pids``, ``modalities`` and ``tracklets`` are per frame (index-aligned with the image cache); a tracklet's
    frames are taken in the order they appear (the readers list them in temporal order). See the module
    docstring for the batch layout and :class:`CrossModalityIdentitySampler` for passes, epoch length, DDP
    shares and resuming.
    """

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray,
        modalities: Sequence[int] | np.ndarray,
        tracklets: Sequence[int] | np.ndarray,
        num_ids: int = 8,
        tracklets_per_id: int = 2,
        seq_len: int = 6,
        frame_sampling: str = "restricted",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_length: str | int = "images",
    ) -> None:
        pids = np.asarray(pids, dtype=np.int64).reshape(-1)
        modalities = np.asarray(modalities, dtype=np.int64).reshape(-1)
        tracklets = np.asarray(tracklets, dtype=np.int64).reshape(-1)
        if not pids.shape == modalities.shape == tracklets.shape:
            raise ConfigError(
                f"tracklet sampler got {pids.shape[0]} identity labels, {modalities.shape[0]} modality codes and "
                f"{tracklets.shape[0]} tracklet ids; pass one of each per frame"
            )
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
            raise ConfigError(f"sampler seq_len={seq_len!r} is invalid; use a positive number of frames per tracklet")
        if frame_sampling not in FRAME_SAMPLING:
            raise ConfigError(f"sampler frame_sampling={frame_sampling!r} is unknown; use one of "
                              f"{', '.join(FRAME_SAMPLING)}")
        still = np.flatnonzero(tracklets < 0)
        if still.size:
            raise DatasetError(
                f"{still.size} of the {tracklets.shape[0]} training images (e.g. index {int(still[0])}) belong to no "
                "tracklet; tracklet sampling (sampler.seq_len > 0) needs video data whose every frame has a tracklet "
                "id, so set sampler.seq_len: 0 for still images"
            )
        # tracklet table (CSR): frames of tracklet j = frames[start[j] : start[j] + length[j]], in dataset order
        ids, first, inverse = np.unique(tracklets, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.frames = order.astype(np.int64)
        self.length = np.bincount(inverse, minlength=ids.shape[0]).astype(np.int64)
        self.start = np.concatenate(([0], np.cumsum(self.length)[:-1])).astype(np.int64)
        self.tracklet_ids = ids
        for name, values in (("identity", pids), ("modality", modalities)):
            per_frame_first = values[first][inverse]
            mixed = np.flatnonzero(values != per_frame_first)
            if mixed.size:
                i = int(mixed[0])
                raise DatasetError(
                    f"tracklet {int(tracklets[i])} mixes frames of {name} {int(per_frame_first[i])} and "
                    f"{int(values[i])} (frame index {i}); the frames of one tracklet must share identity, camera and "
                    "modality"
                )
        self._frame_pids = pids
        self.seq_len = int(seq_len)
        self.frame_sampling = frame_sampling
        super().__init__(pids[first], modalities[first], num_ids=num_ids, num_per_modality=tracklets_per_id,
                         seed=seed, rank=rank, world_size=world_size, epoch_length=epoch_length)
        self.tracklets_per_id = self.num_per_modality

    @property
    def batch_size(self) -> int:
        """Frames per batch: ``2 * P * K * T``."""
        return 2 * self.num_ids * self.num_per_modality * self.seq_len

    def tracklet_plan(self, epoch: int | None = None) -> np.ndarray:
        """This process's batches of ``epoch`` as tracklet rows (positions in :attr:`tracklet_ids`): [len, 2*P*K]."""
        epoch = self.epoch if epoch is None else int(epoch)
        total = self.batches_per_process * self.world_size
        return super().global_plan(epoch, total)[self.rank :: self.world_size]

    def global_plan(self, epoch: int, num_batches: int) -> np.ndarray:
        """The first ``num_batches`` global batches of ``epoch`` as frame indices: int64 [num_batches, 2*P*K*T]."""
        rows = super().global_plan(epoch, num_batches)  # [B, 2PK] tracklet rows
        rng = np.random.default_rng([self.seed, int(epoch), _FRAME_SALT])
        positions = frame_positions(self.length[rows], self.seq_len, self.frame_sampling, rng)  # [B, 2PK, T]
        frames = self.frames[self.start[rows][..., None] + positions]
        return frames.reshape(rows.shape[0], -1)

    def identity_plan(self, epoch: int | None = None) -> np.ndarray:
        """Identity labels of this process's batches in batch order, int64 [len(self), P]."""
        plan = self.plan_epoch(epoch)
        block = self.num_per_modality * self.seq_len
        return self._frame_pids[plan[:, : self.num_ids * block : block]]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(seq_len=self.seq_len, frame_sampling=self.frame_sampling)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "seq_len" in state and int(state["seq_len"]) != self.seq_len:
            raise ConfigError(f"sampler state was saved with seq_len={state['seq_len']} but this sampler has "
                              f"seq_len={self.seq_len}; resume with the settings of the checkpoint")
        if "frame_sampling" in state and state["frame_sampling"] != self.frame_sampling:
            raise ConfigError(f"sampler state was saved with frame_sampling={state['frame_sampling']} but this sampler "
                              f"has frame_sampling={self.frame_sampling}; resume with the settings of the checkpoint")
        super().load_state_dict(state)
