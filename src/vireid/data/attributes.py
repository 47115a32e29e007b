"""Pedestrian attributes: the readers of attribute labels and the ``attributes`` side input.

The attribute names and values are one table, :data:`vireid.data.attribute_table.ATTRIBUTES` (re-exported
here; the synthetic generator, the readers, the attribute heads and the search filter all use it).

**Attribute CSV.** A header ``path,<attribute>,...`` (any subset of the names, any order), one row per image;
``path`` relative to the CSV's folder or absolute. A cell may be empty, ``unknown`` or ``?`` (unknown).
Accepted spellings besides the values: ``true``/``false``/``1``/``0`` for yes/no, ``gray`` for grey,
``color`` for ``colour`` in a column name. An unknown column or value is one sentence naming it and
the known ones. The ``csv`` manifest format may carry the same columns (columns that are not attribute
names are ignored there, as before).

**Side input.** ``data.extras: {attributes: dataset}`` gives a method the ``attributes`` of each image
(``[N, A]`` int64, geometry-free: a mirror or crop changes no attribute). ``dataset`` looks for, in
order: the attribute columns of a ``csv`` manifest; an ``attributes.csv`` in the dataset folder (the
synthetic generator writes one); for a synthetic dataset written before attributes existed, labels
recomputed from its identity traits. A file path instead of ``dataset`` names an attribute CSV.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.attribute_table import (
    ATTRIBUTE_FILE,
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    COLOURS,
    NUM_VALUES,
    UNKNOWN,
    VISIBLE_ONLY,
    Attribute,
    _key,
    attribute_csv_text,
    attribute_index,
    decode,
    encode,
    mask_invisible,
    value_index,
)
from vireid.data.extras import EXTRAS, ExtraKind
from vireid.errors import ConfigError, DatasetError

def parse_attribute_rows(rows: list[list[str]], source: str, base: Path, strict_columns: bool = True
                         ) -> dict[str, np.ndarray]:
    """``{absolute path: labels [A]}`` of CSV ``rows`` (the header first). ``strict_columns``: a column that
    is not ``path`` or an attribute is an error (an attribute CSV); otherwise ignored (a manifest)."""
    if not rows:
        raise DatasetError(f"attribute file {source} is empty; it needs the header path,<attribute>,...")
    header = [c.strip() for c in rows[0]]
    lower = [c.lower() for c in header]
    if "path" not in lower:
        raise DatasetError(f"attribute file {source} line 1 has no path column; the header must be "
                           f"path,<attribute>,... with attributes from {', '.join(ATTRIBUTE_NAMES)}")
    path_col = lower.index("path")
    columns: dict[int, int] = {}
    for i, name in enumerate(header):
        if i == path_col:
            continue
        try:
            columns[i] = attribute_index(name)
        except ConfigError as err:
            if strict_columns:
                raise DatasetError(f"attribute file {source} line 1: {err}") from None
    out: dict[str, np.ndarray] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise DatasetError(f"attribute file {source} line {lineno} has {len(row)} fields but the header has "
                               f"{len(header)}; fix the line")
        rel = row[path_col].strip()
        labels = np.full(len(ATTRIBUTES), UNKNOWN, dtype=np.int64)
        for i, column in columns.items():
            try:
                labels[column] = value_index(column, row[i], f"attribute file {source} line {lineno}")
            except ConfigError as err:
                raise DatasetError(str(err)) from None
        path = Path(rel).expanduser()
        out[_key(path if path.is_absolute() else base / path)] = labels
    return out


def read_attribute_csv(path: str | Path, strict_columns: bool = True) -> dict[str, np.ndarray]:
    """``{absolute image path: labels [A]}`` of an attribute CSV (or a manifest, ``strict_columns=False``)."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"attribute file {path} cannot be read ({err.strerror}); pass an existing CSV with "
                           "the header path,<attribute>,...") from None
    return parse_attribute_rows(list(csv.reader(io.StringIO(text))), str(path), path.parent, strict_columns)


def _manifest_path(root: Path) -> Path:
    return root / "manifest.csv" if root.is_dir() else root


def dataset_attribute_table(root: str | Path, fmt: str | None = None) -> dict[str, np.ndarray] | None:
    """``{absolute image path: labels}`` stored with the dataset at ``root`` (format ``fmt``), or ``None``
    when it has none: the attribute columns of a ``csv`` manifest, an ``attributes.csv`` in the dataset
    folder, or a synthetic output's labels recomputed from its traits."""
    root = Path(root).expanduser().absolute()
    if fmt == "csv" or (root.is_file() and root.suffix.lower() == ".csv"):
        manifest = _manifest_path(root)
        if manifest.is_file():
            table = read_attribute_csv(manifest, strict_columns=False)
            with manifest.open(newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
            if any(_is_attribute(c) for c in header):
                return table
        root = manifest.parent
    if (root / ATTRIBUTE_FILE).is_file():
        return read_attribute_csv(root / ATTRIBUTE_FILE)
    from vireid.data.synth.attributes import synthetic_attribute_table  # a synth output made before attributes

    return synthetic_attribute_table(root)


def _is_attribute(name: str) -> bool:
    try:
        attribute_index(name)
    except ConfigError:
        return False
    return True


def record_labels(records: Sequence[Any], table: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """int64 ``[N, A]`` of ``records`` from ``table`` (unknown where a record has no row; colours unknown on
    infrared records)."""
    labels = np.full((len(records), len(ATTRIBUTES)), UNKNOWN, dtype=np.int64)
    if table:
        for i, record in enumerate(records):
            row = table.get(_key(record.path))
            if row is not None:
                labels[i] = row
    return mask_invisible(labels, [r.modality for r in records])


@EXTRAS.register("attributes")
class AttributeExtra(ExtraKind):
    """Attribute labels of each image for attribute heads, int64 ``[N, A]`` with -1 for unknown.

    Names and values: :data:`ATTRIBUTES`. ``source``: ``dataset`` (the dataset's own labels) or an attribute
    CSV file. Geometry leaves them alone (a mirrored person keeps their backpack)."""

    name = "attributes"

    def __init__(self, source: Any = "dataset") -> None:
        if source in (None, True):
            source = "dataset"
        if not isinstance(source, (str, os.PathLike)):
            raise ConfigError(f"config key 'data.extras.attributes' is {source!r}; write attributes: dataset (the "
                              "dataset's own labels) or the path of an attribute CSV")
        if source != "dataset" and not Path(source).expanduser().is_file():
            raise ConfigError(f"config key 'data.extras.attributes' names {source}, which is not a file; give an "
                              "attribute CSV (header path,<attribute>,...) or write attributes: dataset")
        super().__init__(str(source))

    def load(self, records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
        if self.source == "dataset":
            table = dataset_attribute_table(getattr(data_cfg, "root", "."), getattr(data_cfg, "format", None))
        else:
            table = read_attribute_csv(self.source)
        return torch.from_numpy(record_labels(records, table))

    @classmethod
    def check(cls, name: str, value: Any, length: int) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).cpu()
        if tensor.dim() != 2 or tensor.shape[0] != length or tensor.shape[1] != len(ATTRIBUTES):
            raise ConfigError(f"loader got {name} of shape {tuple(tensor.shape)} for {length} images; expected "
                              f"[N, {len(ATTRIBUTES)}] (one label per attribute: {', '.join(ATTRIBUTE_NAMES)})")
        return tensor.long()

    @classmethod
    def source_for_other_data(cls, source: Any) -> Any:
        """A CSV of the run's own images does not label another dataset's: use that dataset's labels."""
        return "dataset"


__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_FILE",
    "ATTRIBUTE_NAMES",
    "COLOURS",
    "NUM_VALUES",
    "UNKNOWN",
    "VISIBLE_ONLY",
    "Attribute",
    "AttributeExtra",
    "attribute_csv_text",
    "attribute_index",
    "dataset_attribute_table",
    "decode",
    "encode",
    "mask_invisible",
    "parse_attribute_rows",
    "read_attribute_csv",
    "record_labels",
    "value_index",
]
