"""Attribute-filtered search: gallery attribute labels kept with features and indexes, and the ``--where`` filter.

**Filter syntax** (``vireid search --where``, the page's filter box, ``POST /api/search`` field ``where``):
comma-separated clauses ``name=value``; ``|`` between values means "any of them"; names and values as in
:data:`vireid.data.attribute_table.ATTRIBUTES`, plus ``modality`` (``visible`` / ``infrared``, any spelling
of :data:`vireid.data.datasets.base.MODALITY_ALIASES`), which restricts the gallery modality. Spaces are
ignored. "Infrared images of people with a backpack"::

    modality=infrared,backpack=yes
    modality=visible,top_colour=red|orange,bottom=skirt

A gallery image passes when every clause holds; an unknown label (e.g. a colour of an infrared image)
never passes a clause on that attribute. An unknown name or value is one sentence naming the known ones.

**Gallery labels.** ``vireid extract`` stores one label row per gallery image in ``attributes.csv`` of the
feature folder (``vireid index`` copies it into the index folder), and records where they came from in the
folder's info as ``attributes``: ``stored`` — the dataset's own labels (a ``csv`` manifest's attribute
columns, an ``attributes.csv`` beside the layout, synthetic data; :func:`vireid.data.attributes.dataset_attribute_table`),
or, when the images have none, ``predicted`` — the model's attribute heads (``model.method: attributes``).
Search results say which the filter used.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from vireid.data.attribute_table import ATTRIBUTE_NAMES, ATTRIBUTES, attribute_csv_text, attribute_index, decode, value_index
from vireid.data.datasets.base import parse_modality
from vireid.errors import VireidError
from vireid.retrieval.features import Metadata

#: File of per-image attribute labels in a feature or index folder (rows in ``meta.csv`` order).
GALLERY_ATTRIBUTE_FILE = "attributes.csv"
#: Where gallery labels come from (``info["attributes"]``).
LABEL_SOURCES = ("stored", "predicted")


@dataclass(frozen=True)
class AttributeFilter:
    """A parsed ``--where``: the gallery ``modality`` (or None) and, per attribute column, the allowed labels."""

    text: str
    modality: str | None = None
    clauses: dict[int, frozenset[int]] = field(default_factory=dict)

    def mask(self, labels: np.ndarray) -> np.ndarray:
        """``[N]`` bool: the rows of ``labels`` ``[N, A]`` that satisfy every attribute clause."""
        labels = np.asarray(labels)
        keep = np.ones(len(labels), dtype=bool)
        for column, allowed in self.clauses.items():
            keep &= np.isin(labels[:, column], sorted(allowed))
        return keep

    def describe(self) -> str:
        parts = [f"modality={self.modality}"] if self.modality else []
        for column, allowed in self.clauses.items():
            attr = ATTRIBUTES[column]
            parts.append(f"{attr.name}={'|'.join(attr.values[v] for v in sorted(allowed))}")
        return ",".join(parts)


def parse_where(text: str | None) -> AttributeFilter | None:
    """The filter ``text`` means (module docstring); ``None`` for no filter; VireidError for a bad one."""
    if text is None or not text.strip():
        return None
    modality: str | None = None
    clauses: dict[int, frozenset[int]] = {}
    known = "modality, " + ", ".join(ATTRIBUTE_NAMES)
    for raw in text.split(","):
        clause = raw.strip()
        if not clause:
            continue
        if clause.count("=") != 1:
            raise VireidError(f"filter clause {clause!r} is not name=value; write e.g. modality=infrared,backpack=yes "
                              f"(names: {known})")
        name, values = (part.strip() for part in clause.split("="))
        options = [v.strip() for v in values.split("|") if v.strip()]
        if not options:
            raise VireidError(f"filter clause {clause!r} gives no value; write {name}=<value>")
        if name.lower() == "modality":
            parsed = {parse_modality(v) for v in options}
            if None in parsed or len(parsed) != 1:
                raise VireidError(f"filter modality={values} is not one modality; use modality=visible or "
                                  "modality=infrared (leave it out for both)")
            modality = parsed.pop()
            continue
        try:
            column = attribute_index(name)
        except VireidError as err:
            raise VireidError(f"in the filter {text.strip()!r}: {err}; or modality") from None
        attr = ATTRIBUTES[column]
        labels = set()
        for option in options:
            label = _filter_value(column, option)
            if label < 0:
                raise VireidError(f"in the filter {text.strip()!r}: {option!r} is not a value of attribute {attr.name}; "
                                  f"use one of {', '.join(attr.values)}")
            labels.add(label)
        labels = frozenset(labels)
        clauses[column] = clauses.get(column, frozenset()) & labels if column in clauses else labels
    return AttributeFilter(text.strip(), modality, clauses)


def _filter_value(column: int, value: str) -> int:
    """The label of a filter value (-1 when it is not one of the attribute's values or their spellings)."""
    try:
        return value_index(column, value)
    except VireidError:
        return -1


# ----------------------------------------------------------------------------- gallery labels


def stored_labels(meta: Metadata, source: str | Path, fmt: str | None) -> np.ndarray | None:
    """The dataset's own labels ``[N, A]`` of the gallery rows ``meta`` read from ``source`` (format ``fmt``);
    ``None`` when it has no attribute labels."""
    from vireid.data.attributes import dataset_attribute_table, record_labels

    table = dataset_attribute_table(source, fmt)
    if not table:
        return None
    records = [SimpleNamespace(path=str(meta.image_path(i)), modality=str(meta.modalities[i])) for i in range(len(meta))]
    labels = record_labels(records, table)
    return labels if bool((labels >= 0).any()) else None


def can_predict(embedder: Any) -> bool:
    """Whether ``embedder``'s model has attribute heads (``predict_attributes``)."""
    return callable(getattr(getattr(embedder, "model", None), "predict_attributes", None))


def predicted_labels(embedder: Any, meta: Metadata, batch_size: int = 64) -> np.ndarray:
    """Labels ``[N, A]`` of the gallery images predicted by the model's attribute heads (colours unknown on
    infrared images)."""
    import torch

    from vireid.data.images import decode_image
    from vireid.inference.embedder import modality_codes

    model = embedder.model
    device = getattr(embedder, "device", torch.device("cpu"))
    codes = modality_codes(list(meta.modalities), len(meta))
    out = np.zeros((len(meta), len(ATTRIBUTES)), dtype=np.int64)
    for start in range(0, len(meta), batch_size):
        rows = range(start, min(start + batch_size, len(meta)))
        pixels = np.stack([decode_image(str(meta.image_path(i)), size=embedder.input_size,
                                        resample=embedder.resample).transpose(2, 0, 1) for i in rows])
        batch = embedder.preprocess(pixels).to(device)
        labels = model.predict_attributes(batch, torch.as_tensor(codes[start:start + len(rows)], device=device))
        out[start:start + len(rows)] = labels.cpu().numpy()
    return out


def gallery_labels(embedder: Any, meta: Metadata, source: str | Path, fmt: str | None,
                   batch_size: int = 64) -> tuple[np.ndarray | None, str | None]:
    """``(labels [N, A], "stored" | "predicted")`` for a gallery, or ``(None, None)`` when the images have no
    labels and the model no attribute heads."""
    labels = stored_labels(meta, source, fmt) if fmt != "plain" else stored_labels(meta, source, None)
    if labels is not None:
        return labels, "stored"
    if can_predict(embedder):
        return predicted_labels(embedder, meta, batch_size), "predicted"
    return None, None


def write_labels(folder: str | Path, meta: Metadata, labels: np.ndarray) -> Path:
    """``attributes.csv`` of a feature or index folder (rows in ``meta`` order)."""
    path = Path(folder) / GALLERY_ATTRIBUTE_FILE
    path.write_text(attribute_csv_text([str(p) for p in meta.paths], labels), encoding="utf-8")
    return path


def read_labels(folder: str | Path, meta: Metadata) -> np.ndarray | None:
    """The labels ``[N, A]`` of a feature or index folder; ``None`` when it has none; VireidError if corrupt."""
    path = Path(folder) / GALLERY_ATTRIBUTE_FILE
    if not path.is_file():
        return None
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header = tuple(c.strip() for c in rows[0]) if rows else ()
    if header != ("path", *ATTRIBUTE_NAMES) or len(rows) - 1 != len(meta):
        raise VireidError(f"{path} does not hold one attribute row per gallery image with the header "
                          f"path,{','.join(ATTRIBUTE_NAMES)}; extract the features again")
    labels = np.full((len(meta), len(ATTRIBUTES)), -1, dtype=np.int64)
    for i, row in enumerate(rows[1:]):
        if row[0] != str(meta.paths[i]):
            raise VireidError(f"{path} line {i + 2} is for {row[0]}, not {meta.paths[i]}; extract the features again")
        for column, cell in enumerate(row[1:]):
            labels[i, column] = value_index(column, cell, f"{path} line {i + 2}")
    return labels


def describe_labels(labels: np.ndarray, row: int) -> dict[str, str | None]:
    """``{name: value or None}`` of gallery ``row``."""
    return decode(labels[row].tolist())


# ----------------------------------------------------------------------------- filtered search


def filtered_search(index: Any, feats: np.ndarray, k: int, modality: Any, keep: np.ndarray, **search: Any
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` restricted to the gallery rows where ``keep`` is True: the top-``k`` allowed rows of
    each query (-1 / -inf padding). Searches ever deeper (x8 per round) until each query has ``k`` allowed
    rows or the whole gallery was ranked, so the result is exact for exact indexes. ``search``: further
    keywords of ``index.search`` (re-ranking)."""
    total = int(index.ntotal)
    nq = len(feats)
    scores = np.full((nq, k), -np.inf, np.float32)
    rows = np.full((nq, k), -1, np.int64)
    if not keep.any() or total == 0:
        return scores, rows
    depth = min(total, max(8 * k, 64))
    while True:
        s, r = index.search(feats, k=depth, modality=modality, **search)
        enough = True
        for q in range(nq):
            valid = r[q] >= 0
            allowed = valid.copy()
            allowed[valid] = keep[r[q][valid]]
            picked = np.flatnonzero(allowed)[:k]
            scores[q, :len(picked)], rows[q, :len(picked)] = s[q][picked], r[q][picked]
            scores[q, len(picked):], rows[q, len(picked):] = -np.inf, -1
            enough &= len(picked) == k or int(valid.sum()) < depth
        if enough or depth >= total:
            return scores, rows
        depth = min(total, depth * 8)


def gallery_mask(index: Any, where: AttributeFilter) -> tuple[np.ndarray, str | None]:
    """The gallery rows passing ``where``'s attribute clauses and the label source (None: no attribute clause);
    one sentence when the index holds no labels."""
    labels = getattr(index, "attributes", None)
    if not where.clauses:
        return np.ones(int(index.ntotal), dtype=bool), None
    if labels is None:
        raise VireidError("the index holds no attribute labels, so it cannot be filtered by attributes; extract the "
                          "gallery from images with attribute labels (an attributes.csv or a manifest's attribute "
                          "columns) or with a model with attribute heads (model.method: attributes), then index again")
    source = str(getattr(index, "info", {}).get("attributes") or "stored")
    return where.mask(labels), source


@dataclass
class WhereSearch:
    """A parsed ``--where`` filter bound to one gallery (:func:`bind_where`): the gallery modality it implies,
    the rows it keeps and which labels decided (``stored`` / ``predicted``)."""

    filter: AttributeFilter | None
    gallery_modality: str | None
    keep: np.ndarray | None = None
    label_source: str | None = None

    def search(self, index: Any, feats: np.ndarray, k: int, modality: Any, **search: Any) -> tuple:
        """``index.search`` through the filter (unfiltered when it has no attribute clause)."""
        if self.keep is not None and self.filter is not None and self.filter.clauses:
            return filtered_search(index, feats, k, modality, self.keep, **search)
        return index.search(feats, k=k, modality=modality, **search)

    def annotate(self, result: dict, labels: np.ndarray | None = None) -> dict:
        """``result`` (one query's answer) with the filter and each hit's attribute labels, in place."""
        if labels is not None:
            for hit in result["results"]:
                hit["attributes"] = describe_labels(labels, hit["index"])
        if self.filter is not None:
            result.update(where=self.filter.describe(), attribute_labels=self.label_source)
        return result


def bind_where(where: str | None, index: Any, *, cross_modality: bool = False,
               gallery_modality: str | None = None) -> WhereSearch:
    """Parse ``where`` and bind it to ``index``: its ``modality=`` becomes the gallery modality (refused with
    ``--cross-modality`` or a different ``--gallery-modality``), its attribute clauses a row mask."""
    from vireid.errors import VireidError

    parsed = parse_where(where)
    if parsed is None:
        return WhereSearch(None, gallery_modality)
    if parsed.modality is not None:
        if cross_modality:
            raise VireidError("--cross-modality and the filter's modality= exclude each other; keep one")
        if gallery_modality is not None and parse_modality(gallery_modality) != parsed.modality:
            raise VireidError(f"--gallery-modality {gallery_modality} and the filter's modality={parsed.modality} "
                              "disagree; keep one")
        gallery_modality = parsed.modality
    keep, source = gallery_mask(index, parsed)
    return WhereSearch(parsed, gallery_modality, keep, source)


__all__ = ["GALLERY_ATTRIBUTE_FILE", "LABEL_SOURCES", "AttributeFilter", "WhereSearch", "bind_where", "can_predict", "describe_labels",
           "filtered_search", "gallery_labels", "gallery_mask", "parse_where", "predicted_labels", "read_labels",
           "stored_labels", "write_labels"]
