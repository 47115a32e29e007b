"""Batch loaders over an :class:`~vireid.data.cache.ImageCache`: gather, transfer, augment on device.

A training step needs: the indices of a batch (from the batch sampler), their uint8 pixels (one fancy
index into the cache), the pixels on the training device (uint8 is 4x cheaper to transfer than float)
and the augmented float batch (computed on that device by a :class:`~vireid.data.transforms.BatchTransform`).
:class:`TrainLoader` does this in a background thread that keeps ``prefetch`` batches ready in a
bounded queue, so the model never waits on the data while the data never runs far ahead.

Reproducibility: the transform's random generator for batch ``b`` of epoch ``e`` is seeded from
``(seed, e, global batch number)``, so the augmentations depend neither on thread timing nor on where
training was resumed: a run resumed mid-epoch sees exactly the batches, and pixels, it would have seen.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch

from vireid.data.cache import ImageCache
from vireid.data.extras import check_extras, extras_to, select_extras
from vireid.errors import ConfigError

T = TypeVar("T")

TransformFn = Callable[..., torch.Tensor]


@dataclass
class Batch:
    """One training batch: float ``images`` [B,3,H,W], ``labels`` and ``modalities`` (int64 [B]) on the
    training device, and the dataset ``indices`` (int64 [B], CPU) they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    modalities: torch.Tensor
    indices: torch.Tensor
    #: named side inputs passed to ``model(images, modalities, **extras)`` (:mod:`vireid.data.extras`)
    extras: dict = field(default_factory=dict)


class EvalBatch(NamedTuple):
    """One evaluation batch: float ``images`` [B,3,H,W] on the device, dataset ``indices`` (CPU) and
    named side inputs (:mod:`vireid.data.extras`) when the loader was given them."""

    images: torch.Tensor
    indices: torch.Tensor
    extras: dict = {}


def default_prefetch(device: torch.device) -> int:
    """Batches prepared ahead in a background thread: 2 on CUDA, 0 (inline) on CPU.

    On CPU the augmentation is a few milliseconds against hundreds for the training step, and a
    second thread running torch ops starts a second OpenMP team that oversubscribes the cores
    (measured here: 2 cores, the step ran several times slower). On CUDA the thread overlaps the
    host-side gather and copy with the GPU's work.
    """
    return 2 if device.type == "cuda" else 0


def batch_seed(seed: int, epoch: int, batch_number: int) -> int:
    """Seed of the augmentation generator of one batch: a hash of ``(seed, epoch, batch_number)``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(batch_number)]).generate_state(1, dtype=np.uint64)
    return int(state[0] & np.uint64(2**63 - 1))


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch_in_thread(items: Iterator[T], depth: int, name: str = "vireid-prefetch") -> Iterator[T]:
    """Yield ``items`` produced by a background thread, at most ``depth`` ahead (``depth<=0``: inline).

    An exception raised while producing is re-raised here, in the consumer. When the consumer stops
    early (``break``, an exception, garbage collection of this generator) the thread is told to stop,
    the queue is drained and the thread is joined, so nothing hangs at exit.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_End())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - already stopping; the consumer's error matters more
                    pass

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = buffer.get(timeout=0.1)
            except queue.Empty:
                if not thread.is_alive() and buffer.empty():
                    raise RuntimeError(f"the {name} thread stopped without finishing its batches") from None
                continue
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                while True:
                    buffer.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


def _as_long_tensor(values: Iterable[int] | np.ndarray | torch.Tensor, name: str, length: int) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values).to(torch.int64).reshape(-1)
    if tensor.shape[0] != length:
        raise ConfigError(f"loader got {tensor.shape[0]} {name} for an image cache of {length} images; pass one per image")
    return tensor.cpu()


class TrainLoader:
    """Training batches from an :class:`ImageCache`, a batch sampler and a batch transform.

    ``labels``/``modalities`` are per cache image (index-aligned with it). ``batch_sampler`` yields lists
    of cache indices (normally a :class:`~vireid.data.sampler.CrossModalityIdentitySampler`); its
    ``set_epoch``/``state_dict``/``load_state_dict`` are forwarded. ``extras`` (``{name: values}``, one
    row per cache image; :mod:`vireid.data.extras`) are gathered with the batch, changed by the
    transform's geometric steps as their kinds say, and handed to the model as ``batch.extras``. ``transform`` is called as
    ``transform(images_uint8_on_device, modalities_cpu, generator)`` with a CPU generator. ``prefetch`` batches are
    prepared ahead in a background thread (0: prepared inline; default: see :func:`default_prefetch`). On CUDA the uint8 batch is
    gathered straight into pinned memory (:meth:`ImageCache.gather`) and copied asynchronously; the
    augmentation then runs on the GPU (the transform's steps are batch tensor operations).
    """

    def __init__(
        self,
        cache: ImageCache,
        labels: Iterable[int] | np.ndarray | torch.Tensor,
        modalities: Iterable[int] | np.ndarray | torch.Tensor,
        batch_sampler: Iterable[list[int]],
        transform: TransformFn,
        device: str | torch.device = "cpu",
        seed: int = 0,
        prefetch: int | None = None,
        extras: dict | None = None,
    ) -> None:
        self.cache = cache
        self.extras = check_extras(extras, len(cache))
        self.labels = _as_long_tensor(labels, "labels", len(cache))
        self.modalities = _as_long_tensor(modalities, "modality codes", len(cache))
        self.batch_sampler = batch_sampler
        self.transform = transform
        self.device = torch.device(device)
        self.seed = int(seed)
        self.prefetch = default_prefetch(self.device) if prefetch is None else int(prefetch)
        self._delivered = 0

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    @property
    def epoch(self) -> int:
        return int(getattr(self.batch_sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the sampler: the next iteration yields epoch ``epoch``."""
        if int(epoch) != self.epoch:
            self._delivered = 0
        self.batch_sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state with ``batches_consumed`` = batches handed to the consumer so far.

        (The prefetch thread runs ahead of the consumer, so the sampler's own count would be too high.)
        """
        state = dict(self.batch_sampler.state_dict())  # type: ignore[attr-defined]
        state["batches_consumed"] = self._delivered
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues epoch ``state['epoch']`` after the consumed batches."""
        self.batch_sampler.load_state_dict(state)  # type: ignore[attr-defined]
        self._delivered = int(state.get("batches_consumed", 0))

    def _make_batch(self, indices: list[int], epoch: int, position: int) -> Batch:
        rank = int(getattr(self.batch_sampler, "rank", 0))
        world_size = int(getattr(self.batch_sampler, "world_size", 1))
        generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, position * world_size + rank))
        index = torch.as_tensor(indices, dtype=torch.int64)
        # one copy from the cache into pinned memory on CUDA, then an asynchronous transfer
        pixels = self.cache.gather(index, pin=self.device.type == "cuda")
        labels = self.labels[index]
        modalities = self.modalities[index]
        pixels = pixels.to(self.device, non_blocking=True)
        # the steps decide per sample on the CPU, so they get the CPU codes (no device round trip)
        from vireid.data.transforms import BatchContext, BatchTransform

        extras = select_extras(self.extras, index)
        if isinstance(self.transform, BatchTransform):
            context = BatchContext(labels=labels, extras=extras)
            images = self.transform(pixels, modalities, generator, context=context)
            extras = context.extras
            if context.rows is not None and images.shape[0] != index.shape[0]:  # a step added views
                index, labels, modalities = index[context.rows], context.labels, context.modalities
        else:
            images = self.transform(pixels, modalities, generator)
        extras = extras_to(extras, self.device, non_blocking=True)
        return Batch(
            images=images,
            labels=labels.to(self.device, non_blocking=True),
            modalities=modalities.to(self.device, non_blocking=True),
            indices=index,
            extras=extras,
        )

    def _produce(self, epoch: int, start: int) -> Iterator[Batch]:
        for position, indices in enumerate(self.batch_sampler, start=start):
            yield self._make_batch(indices, epoch, position)

    def __iter__(self) -> Iterator[Batch]:
        start = int(getattr(self.batch_sampler, "resume_offset", 0))
        epoch = self.epoch
        self._delivered = start
        stream = prefetch_in_thread(self._produce(epoch, start), self.prefetch, name="vireid-train-prefetch")
        try:
            for batch in stream:
                self._delivered += 1
                yield batch
        finally:
            stream.close()  # stops and joins the prefetch thread at once when the consumer stops early


class EvalLoader:
    """Sequential batches ``(images, indices)`` over a whole :class:`ImageCache`, in index order.

    ``transform`` defaults to :func:`~vireid.data.transforms.build_eval_transform` (normalisation only)
    and is called as ``transform(images_uint8_on_device)``. ``extras`` (``{name: values}``, one row per
    cache image) come with each batch unchanged, sliced to its rows.
    """

    def __init__(
        self,
        cache: ImageCache,
        batch_size: int = 128,
        transform: TransformFn | None = None,
        device: str | torch.device = "cpu",
        prefetch: int | None = None,
        extras: dict | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"evaluation batch_size={batch_size} is invalid; use a positive integer")
        if transform is None:
            from vireid.data.transforms import build_eval_transform

            transform = build_eval_transform()
        self.cache = cache
        self.extras = check_extras(extras, len(cache))
        self.batch_size = int(batch_size)
        self.transform = transform
        self.device = torch.device(device)
        self.prefetch = default_prefetch(self.device) if prefetch is None else int(prefetch)

    def _bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each batch: ``batch_size`` images, ended early at a tracklet boundary when the
        ``tracklets`` side input is given, so a temporal model sees whole tracklets (a tracklet longer than
        ``batch_size`` is split into full batches). Computed once per loader (``len`` and iteration share it)."""
        cached = getattr(self, "_bounds_cache", None)
        if cached is None:
            cached = self._bounds_cache = self._compute_bounds()
        return cached

    def _compute_bounds(self) -> list[tuple[int, int]]:
        n = len(self.cache)
        ids = self.extras.get("tracklets")
        if ids is None or n == 0:
            return [(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        ids = ids.reshape(-1)
        # a boundary before frame i: its id differs from the previous frame's, or it is a still image (-1)
        cuts = torch.cat([((ids[1:] != ids[:-1]) | (ids[1:] < 0)).nonzero().reshape(-1) + 1, torch.tensor([n])])
        bounds, start = [], 0
        while start < n:
            stop = min(start + self.batch_size, n)
            last = int(torch.searchsorted(cuts, stop, right=True)) - 1  # the last cut at or before stop
            if last >= 0 and int(cuts[last]) > start:
                stop = int(cuts[last])
            bounds.append((start, stop))
            start = stop
        return bounds

    def __len__(self) -> int:
        if "tracklets" in self.extras:
            return len(self._bounds())
        return math.ceil(len(self.cache) / self.batch_size)

    def _produce(self) -> Iterator[EvalBatch]:
        for start, stop in self._bounds():
            pixels = self.cache.gather(slice(start, stop), pin=self.device.type == "cuda")
            pixels = pixels.to(self.device, non_blocking=True)
            extras = extras_to(select_extras(self.extras, slice(start, stop)), self.device)
            yield EvalBatch(self.transform(pixels), torch.arange(start, stop, dtype=torch.int64), extras)

    def __iter__(self) -> Iterator[EvalBatch]:
        stream = prefetch_in_thread(self._produce(), self.prefetch, name="vireid-eval-prefetch")
        try:
            yield from stream
        finally:
            stream.close()
