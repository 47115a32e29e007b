"""Pedestrian attributes: the one table of attribute names and values, and their encoding.

The survey's §6 (knowledge graphs: "integrating pedestrian attributes and relationship graphs") and
attribute-guided VI-ReID read per-image attribute labels next to the identity. vireid names them once,
in :data:`ATTRIBUTES`; the synthetic generator (:mod:`vireid.data.synth.attributes`), the readers
(:mod:`vireid.data.attributes`), the attribute heads (:mod:`vireid.modeling.methods.attributes`) and the
search filter (:mod:`vireid.retrieval.attributes`) all use this table.

=================  ======================================================================  ============
name               values (index order)                                                    seen by
=================  ======================================================================  ============
``gender``         male, female                                                            both
``sleeves``        long, short                                                             both
``top_pattern``    plain, horizontal-stripes, vertical-stripes, checks, logo               both
``bottom``         trousers, shorts, skirt                                                 both
``bag``            no, yes (a hand or shoulder bag)                                        both
``backpack``       no, yes                                                                 both
``hat``            no, yes                                                                 both
``hair``           short, medium, long                                                     both
``top_colour``     black, white, grey, red, blue, green, yellow, orange, brown, pink,      visible only
                   purple
``bottom_colour``  (the same colours)                                                      visible only
=================  ======================================================================  ============

An infrared camera does not see colour, so the two colour attributes of an infrared image are always
unknown (their labels are ignored, whatever a file says).

**Encoding.** A record's labels are one int64 row ``[A]`` (``A = len(ATTRIBUTES)``, table order), each the
index of the value in its attribute's ``values``, ``-1`` for unknown.

The readers and the ``attributes`` side input are in :mod:`vireid.data.attributes`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vireid.data.records import INFRARED
from vireid.errors import ConfigError

#: File name of the attribute CSV beside a dataset layout (``vireid synth`` writes one).
ATTRIBUTE_FILE = "attributes.csv"
UNKNOWN = -1
COLOURS = ("black", "white", "grey", "red", "blue", "green", "yellow", "orange", "brown", "pink", "purple")
_UNKNOWN_CELLS = ("", "unknown", "?", "-1", "na", "n/a")
_VALUE_ALIASES = {"true": "yes", "1": "yes", "y": "yes", "false": "no", "0": "no", "n": "no", "gray": "grey"}


@dataclass(frozen=True)
class Attribute:
    """One attribute: its ``name``, its ``values`` (label = index) and whether only a visible camera sees it."""

    name: str
    values: tuple[str, ...]
    visible_only: bool = False

    @property
    def binary(self) -> bool:
        return self.values == ("no", "yes")


#: The attribute table (see the module docstring): the generator, readers, heads and search filter use it.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("gender", ("male", "female")),
    Attribute("sleeves", ("long", "short")),
    Attribute("top_pattern", ("plain", "horizontal-stripes", "vertical-stripes", "checks", "logo")),
    Attribute("bottom", ("trousers", "shorts", "skirt")),
    Attribute("bag", ("no", "yes")),
    Attribute("backpack", ("no", "yes")),
    Attribute("hat", ("no", "yes")),
    Attribute("hair", ("short", "medium", "long")),
    Attribute("top_colour", COLOURS, visible_only=True),
    Attribute("bottom_colour", COLOURS, visible_only=True),
)
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
#: Values per attribute, in table order (the sizes of the attribute heads).
NUM_VALUES: tuple[int, ...] = tuple(len(a.values) for a in ATTRIBUTES)
_BY_NAME = {a.name: i for i, a in enumerate(ATTRIBUTES)}
#: Columns of the visible-only attributes.
VISIBLE_ONLY = np.array([a.visible_only for a in ATTRIBUTES])


def attribute_index(name: str, where: str = "") -> int:
    """The column of attribute ``name`` (``color`` spelt either way, any case); one sentence if unknown."""
    key = name.strip().lower().replace("color", "colour").replace("-", "_")
    if key not in _BY_NAME:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{name!r} is not a known attribute; the attributes are {', '.join(ATTRIBUTE_NAMES)}")
    return _BY_NAME[key]


def value_index(column: int, value: str, where: str = "") -> int:
    """The label of ``value`` for attribute ``column``; ``-1`` for an unknown cell; one sentence if invalid."""
    text = value.strip().lower()
    if text in _UNKNOWN_CELLS:
        return UNKNOWN
    attr = ATTRIBUTES[column]
    text = _VALUE_ALIASES.get(text, text) if text not in attr.values else text
    if text not in attr.values:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{value.strip()!r} is not a value of attribute {attr.name}; "
                          f"use one of {', '.join(attr.values)} (or leave the cell empty for unknown)")
    return attr.values.index(text)


def encode(labels: Mapping[str, str | None], modality: str | None = None) -> np.ndarray:
    """``{name: value or None}`` -> int64 ``[A]`` (missing names unknown; colours unknown on infrared)."""
    row = np.full(len(ATTRIBUTES), UNKNOWN, dtype=np.int64)
    for name, value in labels.items():
        column = attribute_index(name)
        row[column] = UNKNOWN if value is None else value_index(column, str(value))
    if modality == INFRARED:
        row[VISIBLE_ONLY] = UNKNOWN
    return row


def decode(row: Sequence[int]) -> dict[str, str | None]:
    """int ``[A]`` -> ``{name: value or None}``."""
    return {a.name: (a.values[int(v)] if int(v) >= 0 else None) for a, v in zip(ATTRIBUTES, row)}


def mask_invisible(labels: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
    """``labels`` ``[N, A]`` with the visible-only columns of infrared rows set to unknown (a copy)."""
    out = np.array(labels, dtype=np.int64, copy=True)
    infrared = np.array([m == INFRARED for m in modalities], dtype=bool)
    if out.size and infrared.any():
        out[np.ix_(infrared, VISIBLE_ONLY)] = UNKNOWN
    return out


def _key(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def attribute_csv_text(rel_paths: Sequence[str], labels: np.ndarray) -> str:
    """An attribute CSV (header ``path`` + every attribute; unknown cells empty) for ``labels`` ``[N, A]``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("path", *ATTRIBUTE_NAMES))
    for rel, row in zip(rel_paths, labels):
        writer.writerow((rel, *(a.values[int(v)] if int(v) >= 0 else "" for a, v in zip(ATTRIBUTES, row))))
    return buf.getvalue()



__all__ = ["ATTRIBUTES", "ATTRIBUTE_FILE", "ATTRIBUTE_NAMES", "COLOURS", "NUM_VALUES", "UNKNOWN", "VISIBLE_ONLY",
           "Attribute", "attribute_csv_text", "attribute_index", "decode", "encode", "mask_invisible", "value_index"]
