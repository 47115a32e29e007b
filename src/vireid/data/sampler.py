"""Cross-modality identity batch sampler: P identities x (K visible + K infrared) images per batch.

Every cross-modality metric loss (batch-hard / WRT / hetero-center triplets) needs, in each batch,
several identities that each have images of *both* modalities. AGW (Ye et al., TPAMI 2021) and
CAJ (Ye et al., ICCV 2021) sample P identities and K images per identity and modality; DFW+SLN
uses P=6, K=6 on SYSU-MM01 and P=8, K=4 on RegDB, AGW uses P=8, K=4.

The plan of an epoch is a pure function of ``(seed, epoch)`` and of the data, computed with
numpy (no per-sample Python loop), so it can be recomputed at will: resuming mid-epoch skips the
batches already consumed, and ``world_size`` processes of a DistributedDataParallel job all
compute the same global plan and take disjoint shares of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vireid.data.records import MODALITY_CODE
from vireid.errors import ConfigError, DatasetError

VISIBLE_CODE = MODALITY_CODE["visible"]
INFRARED_CODE = MODALITY_CODE["infrared"]
_MODALITY_NAME = {code: name for name, code in MODALITY_CODE.items()}


class _ImagesById:
    """Dataset indices of one modality grouped by identity (CSR layout: ``members[start[i]:start[i]+count[i]]``)."""

    def __init__(self, id_rank: np.ndarray, mask: np.ndarray, num_identities: int) -> None:
        selected = np.flatnonzero(mask)
        order = np.argsort(id_rank[selected], kind="stable")
        self.members = selected[order].astype(np.int64)
        self.count = np.bincount(id_rank[selected], minlength=num_identities).astype(np.int64)
        self.start = np.concatenate(([0], np.cumsum(self.count)[:-1])).astype(np.int64)

    def draw(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """``k`` dataset indices for every identity, shape [num_identities, k].

        Without replacement (a uniformly random ``k``-subset in random order) where an identity has at
        least ``k`` images, with replacement otherwise. The subset is drawn by the "rank among the
        remaining" construction: the j-th pick is uniform over the ``count - j`` images not yet taken,
        then shifted past the already taken positions in ascending order. O(ids * k^2), no padding.
        """
        count = self.count
        n = count.shape[0]
        enough = count >= k
        picks = np.empty((n, k), dtype=np.int64)
        taken_sorted = np.empty((n, 0), dtype=np.int64)
        for j in range(k):
            value = rng.integers(0, np.maximum(count - j, 1))
            for i in range(j):
                value = value + (value >= taken_sorted[:, i])
            picks[:, j] = value
            taken_sorted = np.sort(picks[:, : j + 1], axis=1)
        with_replacement = rng.integers(0, count[:, None], size=(n, k))
        positions = np.where(enough[:, None], picks, with_replacement)
        return self.members[self.start[:, None] + positions]


class CrossModalityIdentitySampler:
    """Batch sampler yielding lists of dataset indices: P identities x (K visible + K infrared).

    Layout of one batch (length ``2*P*K``): first the ``P*K`` visible images, identity-major
    (K images of identity 1, K of identity 2, ...), then the ``P*K`` infrared images of the same
    identities in the same order, so ``batch[:P*K]`` and ``batch[P*K:]`` are the two modality halves
    exactly as AGW/CAJ concatenate them.

    Identities come from a stream of identity *passes*: each pass is a fresh random permutation of all
    identities, so within a pass every identity is used exactly once and an identity comes back only in
    the next pass. Batches take ``P`` consecutive identities of the stream; a batch that straddles two
    passes never holds the same identity twice (the head of the new pass is rearranged to avoid the
    identities of the old pass's tail). Per identity and modality, K images are drawn without
    replacement when it has at least K, with replacement otherwise.

    Epoch length (``epoch_length``), counted in batches *per process*:

    * ``"images"`` (default): ``ceil(max(#visible, #infrared) / (P*K*world_size))`` -- with one process
      this is ``ceil(max(#visible, #infrared) / (P*K))``, the AGW/CAJ definition, so an epoch shows
      about as many images of the larger modality as the training set holds and published epoch counts
      keep their meaning; with ``world_size`` processes the epoch is split between them. Made of
      consecutive identity passes.
    * ``"identities"``: one identity pass, ``floor(#ids / (P*world_size))`` batches.
    * an ``int``: that many batches.

    Determinism: the global plan is a function of ``(seed, epoch)`` only (each pass draws from its own
    ``numpy`` generator seeded with ``(seed, epoch, pass)``), never of ``rank``/``world_size``.
    Process ``rank`` takes global batches ``rank, rank + W, rank + 2W, ...``; all ranks get the same
    number of batches, and the union of the shares is the single-process plan of the same length.

    Resuming: :meth:`state_dict` records the epoch and the batches already yielded;
    after :meth:`load_state_dict` the next iteration skips exactly those batches of the same plan.
    """

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray,
        modalities: Sequence[int] | np.ndarray,
        num_ids: int = 8,
        num_per_modality: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_length: str | int = "images",
    ) -> None:
        pids = np.asarray(pids, dtype=np.int64).reshape(-1)
        modalities = np.asarray(modalities, dtype=np.int64).reshape(-1)
        if pids.shape != modalities.shape:
            raise ConfigError(
                f"sampler got {pids.shape[0]} identity labels but {modalities.shape[0]} modality codes; "
                "pass one of each per training image"
            )
        unknown = np.setdiff1d(np.unique(modalities), [VISIBLE_CODE, INFRARED_CODE])
        if unknown.size:
            raise ConfigError(
                f"sampler modality code {int(unknown[0])} is unknown; use {VISIBLE_CODE} for visible and "
                f"{INFRARED_CODE} for infrared"
            )
        for name, value in (("num_ids", num_ids), ("num_per_modality", num_per_modality), ("world_size", world_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"sampler {name}={value!r} is invalid; use a positive integer")
        if not 0 <= rank < world_size:
            raise ConfigError(f"sampler rank={rank} is outside 0..{world_size - 1} for world_size={world_size}")

        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"sampler seed={seed!r} is invalid; use a non-negative integer")

        self._pids = pids
        self.identities, id_rank = np.unique(pids, return_inverse=True)
        num_identities = int(self.identities.shape[0])
        self.num_ids = int(num_ids)
        self.num_per_modality = int(num_per_modality)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_visible = int(np.count_nonzero(modalities == VISIBLE_CODE))
        self.num_infrared = int(np.count_nonzero(modalities == INFRARED_CODE))

        self._visible = _ImagesById(id_rank, modalities == VISIBLE_CODE, num_identities)
        self._infrared = _ImagesById(id_rank, modalities == INFRARED_CODE, num_identities)
        for images, code in ((self._visible, VISIBLE_CODE), (self._infrared, INFRARED_CODE)):
            missing = np.flatnonzero(images.count == 0)
            if missing.size:
                raise DatasetError(
                    f"training identity {int(self.identities[missing[0]])} has no {_MODALITY_NAME[code]} image "
                    f"({missing.size} identities lack one); every training identity needs both modalities, so "
                    "remove those identities from the training split"
                )
        if num_identities < self.num_ids:
            raise ConfigError(
                f"sampler num_ids={self.num_ids} but the training set has only {num_identities} identities; "
                f"lower num_ids to at most {num_identities}"
            )

        self.batches_per_process = self._resolve_length(epoch_length, num_identities)
        self.epoch_length = epoch_length
        self.epoch = 0
        self._resume_offset = 0  # batches the next iteration skips
        self._consumed = 0  # batches of the current epoch yielded so far

    def _resolve_length(self, epoch_length: str | int, num_identities: int) -> int:
        p, k, w = self.num_ids, self.num_per_modality, self.world_size
        if isinstance(epoch_length, str) and epoch_length.strip().isdigit():  # e.g. a command-line override
            epoch_length = int(epoch_length)
        if isinstance(epoch_length, (int, np.integer)) and not isinstance(epoch_length, bool):
            if epoch_length < 1:
                raise ConfigError(f"sampler epoch_length={epoch_length} is invalid; use a positive number of batches")
            return int(epoch_length)
        if epoch_length == "images":
            return max(1, math.ceil(max(self.num_visible, self.num_infrared) / (p * k * w)))
        if epoch_length == "identities":
            per_process = num_identities // (p * w)
            if per_process < 1:
                raise ConfigError(
                    f"sampler epoch_length='identities' gives no batch: {num_identities} identities < "
                    f"num_ids={p} x world_size={w}; lower num_ids or use epoch_length='images'"
                )
            return per_process
        raise ConfigError(
            f"sampler epoch_length={epoch_length!r} is unknown; use 'images', 'identities' or a number of batches"
        )

    # ------------------------------------------------------------------ plan
    def _identity_pass(self, epoch: int, pass_index: int, previous_tail: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass: identity order (identity positions) and K visible / K infrared picks per identity."""
        rng = np.random.default_rng([self.seed, epoch, pass_index])
        num_identities = self.identities.shape[0]
        order = rng.permutation(num_identities)
        head = min(self.num_ids - previous_tail.shape[0], num_identities) if previous_tail.size else 0
        if head > 0:
            # The batch straddling the pass boundary must not repeat an identity of the old tail:
            # swap such identities out of the head with (randomly ordered) non-tail ones further on.
            in_tail = np.isin(order, previous_tail)
            conflicts = np.flatnonzero(in_tail[:head])
            if conflicts.size:
                replacements = head + np.flatnonzero(~in_tail[head:])[: conflicts.size]
                order[conflicts], order[replacements] = order[replacements], order[conflicts].copy()
        visible = self._visible.draw(rng, self.num_per_modality)
        infrared = self._infrared.draw(rng, self.num_per_modality)
        return order, visible, infrared

    def global_plan(self, epoch: int, num_batches: int) -> np.ndarray:
        """The first ``num_batches`` batches of the global stream of ``epoch``: int64 [num_batches, 2*P*K]."""
        p, k = self.num_ids, self.num_per_modality
        num_identities = self.identities.shape[0]
        slots_needed = num_batches * p
        orders, visible_parts, infrared_parts = [], [], []
        tail = np.empty(0, dtype=np.int64)
        filled = 0
        pass_index = 0
        while filled < slots_needed:
            order, visible, infrared = self._identity_pass(epoch, pass_index, tail)
            orders.append(order)
            visible_parts.append(visible[order])
            infrared_parts.append(infrared[order])
            filled += num_identities
            tail = order[num_identities - filled % p :] if filled % p else np.empty(0, dtype=np.int64)
            pass_index += 1
        visible_slots = np.concatenate(visible_parts)[:slots_needed].reshape(num_batches, p * k)
        infrared_slots = np.concatenate(infrared_parts)[:slots_needed].reshape(num_batches, p * k)
        return np.concatenate([visible_slots, infrared_slots], axis=1)

    def plan_epoch(self, epoch: int | None = None) -> np.ndarray:
        """This process's batches of ``epoch`` (default: the current one): int64 [len(self), 2*P*K]."""
        epoch = self.epoch if epoch is None else int(epoch)
        total = self.batches_per_process * self.world_size
        return self.global_plan(epoch, total)[self.rank :: self.world_size]

    def identity_plan(self, epoch: int | None = None) -> np.ndarray:
        """Identity labels of this process's batches in batch order, int64 [len(self), P]."""
        plan = self.plan_epoch(epoch)
        return self._pids[plan[:, : self.num_ids * self.num_per_modality : self.num_per_modality]]

    # ------------------------------------------------------------- iteration
    def __len__(self) -> int:
        return self.batches_per_process

    def __iter__(self) -> Iterator[list[int]]:
        start = self._resume_offset
        self._resume_offset = 0
        plan = self.plan_epoch(self.epoch)
        self._consumed = start
        for row in plan[start:]:
            self._consumed += 1
            yield row.tolist()

    @property
    def resume_offset(self) -> int:
        """Number of batches the next iteration skips (non-zero only right after :meth:`load_state_dict`)."""
        return self._resume_offset

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next iteration yields; a new epoch starts from its first batch."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._resume_offset = 0
            self._consumed = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches already yielded, plus the settings that must match on resume."""
        return {
            "epoch": self.epoch,
            "batches_consumed": self._consumed,
            "seed": self.seed,
            "num_ids": self.num_ids,
            "num_per_modality": self.num_per_modality,
            "world_size": self.world_size,
            "batches_per_process": self.batches_per_process,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields the batches of ``state['epoch']`` after the consumed ones."""
        for key in ("seed", "num_ids", "num_per_modality", "world_size", "batches_per_process"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ConfigError(
                    f"sampler state was saved with {key}={state[key]} but this sampler has "
                    f"{key}={getattr(self, key)}; resume with the settings of the checkpoint"
                )
        consumed = int(state.get("batches_consumed", 0))
        if not 0 <= consumed <= self.batches_per_process:
            raise ConfigError(
                f"sampler state batches_consumed={consumed} is outside 0..{self.batches_per_process}; "
                "the checkpoint does not belong to this training set"
            )
        self.epoch = int(state["epoch"])
        self._resume_offset = consumed
        self._consumed = consumed
