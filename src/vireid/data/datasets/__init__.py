"""Dataset readers behind one registry.

``build_dataset("sysu-mm01", "/data/SYSU-MM01")`` returns a
:class:`~vireid.data.datasets.base.VIReIDDataset` whose ``train`` / ``val`` / ``test`` (and,
for user data, ``query`` / ``gallery``) are lists of
:class:`~vireid.data.records.ImageRecord`. Formats: ``sysu-mm01``, ``regdb``, ``llcm``,
``npu-reid`` (dual-path Swin), ``folder`` and ``csv`` (users' own data, see :mod:`vireid.data.datasets.folder`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from vireid.data.datasets import folder, llcm, npu_reid, regdb, sysu_mm01  # noqa: F401  (register the readers)
from vireid.data.datasets import combined  # noqa: F401  (a dataset + translated images, vireid gan translate)
from vireid.data.datasets.base import DATASETS, CheckReport, VIReIDDataset
from vireid.errors import ConfigError, DatasetError

__all__ = ["DATASETS", "CheckReport", "VIReIDDataset", "build_dataset", "dataset_options"]


def dataset_options(name: str) -> list[str]:
    """Keyword options the reader of format ``name`` accepts (besides ``root``)."""
    params = inspect.signature(_reader(name).__init__).parameters
    return [p for p in params if p not in ("self", "root")]


def _reader(name: str) -> type[VIReIDDataset]:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset format {name!r}; use one of {', '.join(DATASETS.names())}")
    return DATASETS.get(name)


def build_dataset(name: str, root: str | Path, **options: Any) -> VIReIDDataset:
    """Read the dataset of format ``name`` at ``root``; ``options`` go to the reader
    (e.g. ``trial=3`` for RegDB, ``split_dir=...`` for SYSU-MM01)."""
    reader = _reader(name)
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset format {name!r} has no option {', '.join(unknown)}; its options are "
            f"{', '.join(accepted) or 'none'}"
        )
    return reader(root, **options)
