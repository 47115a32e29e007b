"""From the ``data``/``sampler``/``augment`` config sections to ready-to-iterate training data.

This is the only place that knows how the data pieces fit together: dataset reader (or the
synthetic generator when ``data.format`` is ``synthetic``) -> records -> decoded-image cache ->
cross-modality sampler -> batch transform -> loader.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vireid.config import Config, DataConfig
from vireid.data.extras import load_extras
from vireid.data.records import MODALITY_CODE, ImageRecord
from vireid.errors import ConfigError

SYNTHETIC = "synthetic"
#: Synthetic data in the RegDB layout: co-located visible/thermal pairs rendered from one pose per
#: moment (the paired data of the survey's §4.1 multi-modal fusion), read by the RegDB reader.
SYNTHETIC_REGDB = "synthetic-regdb"
#: synthetic data in vireid's NPU-ReID layout (the dual-path Swin paper: 8 cameras, indoor/outdoor), read by the NPU-ReID reader
SYNTHETIC_NPU = "synthetic-npu"
#: synthetic video tracklets in the HITSZ-VCM layout (MITML), read by the HITSZ-VCM reader (h17vdata)
SYNTHETIC_VCM = "synthetic-vcm"
#: synthetic data format -> (generator layout, reader)
_SYNTHETIC_LAYOUTS = {SYNTHETIC: ("sysu-mm01", "sysu-mm01"), SYNTHETIC_REGDB: ("regdb", "regdb"),
                      SYNTHETIC_NPU: ("npu-reid", "npu-reid"), SYNTHETIC_VCM: ("hitsz-vcm", "hitsz-vcm")}


def _reader_and_options(data_cfg: DataConfig) -> tuple[str, dict]:
    """The reader name and its validated options for ``data_cfg`` (synthetic data is read as SYSU-MM01)."""
    from vireid.data.datasets import DATASETS

    fmt = data_cfg.format
    options = dict(data_cfg.options)
    if fmt in _SYNTHETIC_LAYOUTS:
        fmt = _SYNTHETIC_LAYOUTS[fmt][1]
        if fmt == "hitsz-vcm":  # h17vdata: every synthetic tracklet is kept, however few its frames, and a
            options.setdefault("min_seq_len", 0)  # fifth of the training identities choose the best epoch
            options.setdefault("val_fraction", 0.2)
        elif fmt != "regdb":
            # synthetic data keeps its validation identities out of training, so that the best
            # epoch can be chosen on them without touching the test identities
            options.setdefault("train_includes_val", False)
    if fmt not in DATASETS:
        raise ConfigError(
            f"config key 'data.format' is {data_cfg.format!r}; choose one of {', '.join(_SYNTHETIC_LAYOUTS)}, "
            f"{', '.join(DATASETS.names())}"
        )
    return fmt, DATASETS.check(fmt, options, "data.options", skip=("root",))[1]


def check_data_options(data_cfg: DataConfig) -> None:
    """Raise ConfigError for an unknown data.format or data.options key, without reading any data."""
    _reader_and_options(data_cfg)


def prepare_dataset(data_cfg: DataConfig, progress: bool = True, generate: bool = True):
    """The dataset reader for ``data_cfg``; synthetic data is generated first if absent.

    ``generate=False`` (evaluation, pictures, calibration: :mod:`vireid.workflows.eval_data`) never
    generates: a missing synthetic dataset is one sentence instead.
    """
    from pathlib import Path

    from vireid.data.datasets import build_dataset
    from vireid.errors import DatasetError

    fmt, options = _reader_and_options(data_cfg)
    if data_cfg.format in _SYNTHETIC_LAYOUTS and not generate:
        if not Path(data_cfg.root).expanduser().is_dir():
            raise DatasetError(
                f"the run's synthetic dataset {data_cfg.root} does not exist and evaluation never generates data; "
                "pass --data-root with the folder it was trained on, or --data FORMAT:ROOT to evaluate other data"
            )
    elif data_cfg.format in _SYNTHETIC_LAYOUTS:
        from vireid.data.synth import generate_dataset

        s = data_cfg.synth
        generate_dataset(
            data_cfg.root, ids=s.ids, format=_SYNTHETIC_LAYOUTS[data_cfg.format][0],
            images_per_camera=s.images_per_camera,
            height=s.height, width=s.width, seed=s.seed, workers=data_cfg.workers, progress=progress,
            report_present=False, frames_per_tracklet=s.frames_per_tracklet,
        )
    return build_dataset(fmt, data_cfg.root, **options)


def build_image_cache(records: list[ImageRecord], data_cfg: DataConfig, progress: bool = True):
    from vireid.data.cache import ImageCache

    return ImageCache.build(
        [r.path for r in records], data_cfg.height, data_cfg.width, cache_dir=data_cfg.cache_dir,
        workers=data_cfg.workers, progress=progress, resample=data_cfg.resample,
    )


def modality_codes(records: list[ImageRecord]) -> np.ndarray:
    return np.asarray([MODALITY_CODE[r.modality] for r in records], dtype=np.int64)


@dataclass
class TrainData:
    dataset: object
    train_records: list[ImageRecord]
    num_classes: int
    train_id_map: dict  # original identity -> training label
    train_loader: object
    val_records: list[ImageRecord]
    val_cache: object | None
    #: named side inputs of the validation images (:mod:`vireid.data.extras`; e.g. PDFENet's joints)
    val_extras: dict = field(default_factory=dict)


def extras_for_records(records: list[ImageRecord], data_cfg: DataConfig) -> dict:
    """The side inputs ``data_cfg`` configures (``data.extras``, ``data.joints``) of ``records``, each in
    the cached images' pixel frame (``data.height`` x ``data.width``); {} when none is configured."""
    return load_extras(records, data_cfg)


def build_train_transform_from_config(cfg: Config):
    """The training :class:`~vireid.data.transforms.BatchTransform` of ``cfg.augment`` (its built-in steps,
    then the configured ``augment.steps`` inserted where they ask)."""
    from vireid.data.transforms import add_configured_steps, build_train_transform

    a = cfg.augment
    transform = build_train_transform(
        cfg.data.height, cfg.data.width, pad=a.pad, flip=a.flip, random_erasing=a.random_erasing,
        channel_aug=a.channel_aug, grayscale=a.grayscale,
    )
    return add_configured_steps(transform, a.steps)


# --- BEGIN h17vdata: tracklet sampling
def _tracklet_sampler(cfg: Config, train: list[ImageRecord], labels: np.ndarray, mods: np.ndarray, kwargs: dict):
    """The :class:`~vireid.data.tracklet_sampler.TrackletSampler` when ``sampler.seq_len`` > 0, else None.

    Tracklet sampling asked of still images, or a ``tracklets`` side input without tracklet sampling (its
    batches would not hold whole tracklets), is one ConfigError sentence."""
    from vireid.data.extras import configured_extras

    tracklets = np.asarray([r.tracklet for r in train], dtype=np.int64)
    s = cfg.sampler
    if s.seq_len <= 0:
        if "tracklets" in configured_extras(cfg.data):
            raise ConfigError("config key 'data.extras.tracklets' hands the model tracklet ids, but sampler.seq_len "
                              "is 0 (image sampling), so no batch holds whole tracklets; set sampler.seq_len (frames "
                              "per tracklet, e.g. 6)")
        return None
    if (tracklets < 0).all():
        raise ConfigError(
            f"config key 'sampler.seq_len' is {s.seq_len} (tracklet sampling) but the training images of "
            f"{cfg.data.root} are still images without tracklet ids; set sampler.seq_len: 0, or use video data "
            "(hitsz-vcm, synthetic-vcm, or a tracklet column / folder level for your own data)"
        )
    from vireid.data.tracklet_sampler import TrackletSampler

    kwargs.pop("num_per_modality")
    return TrackletSampler(labels, mods, tracklets, tracklets_per_id=s.tracklets_per_id, seq_len=s.seq_len,
                           frame_sampling=s.frame_sampling, **kwargs)
# --- END h17vdata


def build_train_data(cfg: Config, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                     progress: bool = True, barrier: Callable[[], None] | None = None) -> TrainData:
    """Dataset, training loader and validation cache of ``cfg`` for process ``rank`` of ``world_size``.

    ``barrier`` (distributed runs: every rank calls it once) makes rank 0 go first: it generates the
    synthetic data if absent and writes the ``data.cache_dir`` image cache, then the other ranks read
    what it made instead of writing the same files at the same time.
    """
    from vireid.data.loader import TrainLoader
    from vireid.data.sampler import CrossModalityIdentitySampler
    ordered = barrier is not None and world_size > 1
    if ordered and rank != 0:
        barrier()  # wait until rank 0 has made the data and its cache
    dataset = prepare_dataset(cfg.data, progress=progress)
    train = list(dataset.train)
    if not train:
        raise ConfigError(f"dataset {cfg.data.root} has no training images; check data.root and its split files")
    labels = np.asarray([r.pid for r in train], dtype=np.int64)
    mods = modality_codes(train)
    num_classes = int(labels.max()) + 1
    id_map = {int(r.orig_pid): int(r.pid) for r in train}
    cache = build_image_cache(train, cfg.data, progress=progress)
    if ordered and rank == 0:
        barrier()
    sampler_kwargs = dict(num_ids=cfg.sampler.num_ids, num_per_modality=cfg.sampler.num_per_modality,
                          seed=cfg.seed, rank=rank, world_size=world_size, epoch_length=cfg.sampler.epoch_length)
    pairs = getattr(dataset, "train_pairs", None)
    # --- BEGIN h17vdata: tracklet sampling (P ids x K tracklets per modality x T frames)
    tracklet_sampler = _tracklet_sampler(cfg, train, labels, mods, dict(sampler_kwargs))
    if tracklet_sampler is not None:
        sampler = tracklet_sampler
    # --- END h17vdata
    elif pairs is not None:  # a reader asked for registered pairs (e.g. regdb paired=true): sample whole pairs
        from vireid.data.paired import PairedIdentitySampler

        sampler = PairedIdentitySampler(labels, mods, pairs, **sampler_kwargs)
    else:
        sampler = CrossModalityIdentitySampler(labels, mods, **sampler_kwargs)
    transform = build_train_transform_from_config(cfg)
    loader = TrainLoader(cache, labels, mods, sampler, transform, device=device, seed=cfg.seed,
                         extras=extras_for_records(train, cfg.data))

    val = list(getattr(dataset, "val", []) or [])
    val_cache = None
    if val:
        train_ids = {int(r.orig_pid) for r in train}
        val_ids = {int(r.orig_pid) for r in val}
        if val_ids & train_ids:
            if rank == 0 and cfg.train.select_best == "val":
                warnings.warn(
                    "the validation identities are also training identities (data.options.train_includes_val "
                    "is true), so they cannot choose the best epoch; the last epoch is kept as best.pt",
                    stacklevel=2,
                )
            val = []
        elif rank == 0:
            val_cache = build_image_cache(val, cfg.data, progress=progress)
    val_extras = extras_for_records(val, cfg.data) if val_cache is not None else {}
    return TrainData(dataset, train, num_classes, id_map, loader, val, val_cache, val_extras)
