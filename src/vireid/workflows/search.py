"""Embed a gallery, index it and query it (``vireid extract``, ``vireid index``, ``vireid search``):
each function loads what it needs, calls :mod:`vireid.retrieval` and returns the text the command prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import vireid.builtins  # noqa: F401  (the dataset readers a command names)

from vireid.errors import VireidError


def extract_features(checkpoint: Path, images: Path, out: Path, *, fmt: Optional[str] = None,
                     modality: Optional[str] = None, split: str = "all", options: Optional[dict] = None,
                     batch_size: int = 64, device: str = "cpu", flip: Optional[bool] = None,
                     amp: Optional[str] = None, as_json: bool = False, tracklets: bool = False) -> str:
    """Embed every image of a dataset, manifest or folder and save a feature folder
    (:func:`vireid.retrieval.extract.extract_featureset`); the summary line, or JSON. ``tracklets``: one
    embedding per tracklet instead (:mod:`vireid.retrieval.tracklets`)."""
    from vireid.inference.loading import load_embedder
    from vireid.retrieval.extract import collect_images, extract_featureset

    if tracklets:
        from vireid.retrieval.tracklets import collect_tracklets

        meta, frames, used = collect_tracklets(images, fmt, modality=modality, split=split, options=dict(options or {}))
    else:
        meta, used = collect_images(images, fmt, modality=modality, split=split, options=dict(options or {}))
    embedder = load_embedder(checkpoint, device=device, amp=amp)
    if flip is not None:
        embedder.flip = flip
    info = {"source": str(images.expanduser().absolute()), "format": used, "split": split}
    if tracklets:
        from vireid.retrieval.tracklets import extract_tracklet_featureset

        feats = extract_tracklet_featureset(embedder, meta, frames, progress=not as_json, info=info)
    else:
        feats = extract_featureset(embedder, meta, batch_size=batch_size, progress=not as_json, info=info)
    # attribute labels for filtered search: the images' own, else the model's predictions (if it has heads)
    from vireid.retrieval.attributes import gallery_labels, write_labels

    labels, label_source = (None, None) if tracklets else gallery_labels(embedder, meta, images.expanduser().absolute(),
                                                                         used, batch_size)
    if labels is not None:
        feats.info["attributes"] = label_source
    path = feats.save(out)
    if labels is not None:
        write_labels(path, meta, labels)
    counts = {m: int((meta.modalities == m).sum()) for m in ("visible", "infrared")}
    unit = "tracklet" if tracklets else "image"
    if as_json:
        return json.dumps({"out": str(path), "num": len(feats), "dim": feats.dim, "format": used,
                           "modalities": counts, "unit": unit, "attributes": label_source})
    what = f" (one per tracklet, {feats.info['num_frames']} frames)" if tracklets else ""
    labelled = f"; {label_source} attribute labels" if labels is not None else ""
    return (f"wrote {len(feats)} {feats.dim}-dim embeddings{what} ({counts['visible']} visible, "
            f"{counts['infrared']} infrared; read as {used}{labelled}) to {path}")


def build_index(features: Path, out: Path, kind: str = "auto", *, params: Optional[dict] = None,
                as_json: bool = False) -> str:
    """Build and save a FAISS gallery index (:class:`vireid.retrieval.index.GalleryIndex`) over a feature
    folder; ``params`` holds the index settings given (``None`` values are left out)."""
    from vireid.retrieval.features import FeatureSet
    from vireid.retrieval.index import GalleryIndex

    from vireid.retrieval.attributes import read_labels

    feats = FeatureSet.load(features)
    given = {k: v for k, v in (params or {}).items() if v is not None}
    index = GalleryIndex.build(feats, kind, progress=not as_json, **given)
    index.attributes = read_labels(features, feats.meta)  # attribute labels travel with the gallery
    path = index.save(out)
    if as_json:
        return json.dumps({"out": str(path), "kind": index.kind, "num": index.ntotal, "dim": index.dim,
                           "modalities": index.counts(), "params": index.params})
    return f"wrote {index.describe()} to {path}"


def search_gallery(queries: Sequence[Path], index: Path, checkpoint: Path, *, k: int = 10,
                   modality: Optional[str] = None, cross_modality: bool = False,
                   gallery_modality: Optional[str] = None, rerank: bool = False, rerank_candidates: int = 100,
                   search_params: Optional[dict] = None, device: str = "cpu", flip: Optional[bool] = None,
                   force: bool = False, amp: Optional[str] = None, as_json: bool = False,
                   where: Optional[str] = None) -> tuple[list[str], str]:
    """Rank an index's gallery for query images (:func:`vireid.retrieval.search.search_images`); a query that is
    a folder is a tracklet: its frames give one embedding (:mod:`vireid.retrieval.tracklets`). ``where``
    filters the gallery by modality and attributes (:mod:`vireid.retrieval.attributes`).

    Returns (notes, results text): the notes are the modality decisions and warnings the command prints
    to stderr (with ``as_json`` only the warnings), the text the ranked lists (or JSON)."""
    from vireid.inference.loading import load_embedder
    from vireid.retrieval.index import GalleryIndex
    from vireid.retrieval.search import format_results, results_json, search_images

    from vireid.retrieval.attributes import parse_where

    parse_where(where)  # a bad filter is refused before anything is loaded
    missing = [str(q) for q in queries if not q.is_file() and not q.is_dir()]
    if missing:
        raise VireidError(f"query image {missing[0]} does not exist; pass image files (or tracklet folders of frames)")
    gallery = GalleryIndex.load(index)
    settings = dict(search_params or {})
    gallery.set_search_params(**{key: v for key, v in settings.items() if v is not None and key in gallery.params})
    ignored = [f"--{key.replace('_', '-')}" for key, v in settings.items()
               if v is not None and key not in gallery.params]
    if ignored:
        raise VireidError(f"{', '.join(ignored)} does not apply to a {gallery.kind} index; drop it")
    embedder = load_embedder(checkpoint, device=device, amp=amp)
    recorded_flip = gallery.info.get("flip")
    embedder.flip = flip if flip is not None else (bool(recorded_flip) if recorded_flip is not None else embedder.flip)
    notes: list[str] = []
    results = search_images(gallery, embedder, list(queries), modality=modality, k=k, cross_modality=cross_modality,
                            gallery_modality=gallery_modality, rerank=rerank, rerank_candidates=rerank_candidates,
                            force=force, notes=notes, where=where)
    # with JSON the decisions are in the output ("modality"); warnings still go to stderr
    shown = [note for note in notes if not as_json or note.startswith("warning")]
    return shown, (results_json(results) if as_json else format_results(results))


def search_gallery_text(text: str, index: Path, checkpoint: Path, *, image: Optional[Path] = None, k: int = 10,
                        modality: Optional[str] = None, cross_modality: bool = False,
                        gallery_modality: Optional[str] = None, rerank: bool = False, rerank_candidates: int = 100,
                        search_params: Optional[dict] = None, device: str = "cpu", force: bool = False,
                        amp: Optional[str] = None, as_json: bool = False,
                        where: Optional[str] = None) -> tuple[list[str], str]:
    """Rank an index's gallery for a description, alone or with one query image of the person
    (:func:`vireid.retrieval.text_search.search_text`; the model must be a text method's run); ``where``
    filters the gallery as for image queries.

    Returns (notes, results text) as :func:`search_gallery`."""
    from vireid.inference.loading import load_embedder
    from vireid.retrieval.index import GalleryIndex
    from vireid.retrieval.search import format_results, results_json
    from vireid.retrieval.text_search import check_query_text, search_text

    from vireid.retrieval.attributes import parse_where

    check_query_text(text)  # before anything is loaded
    parse_where(where)
    gallery = GalleryIndex.load(index)
    settings = dict(search_params or {})
    gallery.set_search_params(**{key: v for key, v in settings.items() if v is not None and key in gallery.params})
    embedder = load_embedder(checkpoint, device=device, amp=amp)
    notes: list[str] = []
    results = search_text(gallery, embedder, text, image=image, modality=modality, k=k, cross_modality=cross_modality,
                          gallery_modality=gallery_modality, rerank=rerank, rerank_candidates=rerank_candidates,
                          force=force, notes=notes, where=where)
    shown = [note for note in notes if not as_json or note.startswith("warning")]
    return shown, (results_json(results) if as_json else format_results(results))
