"""Query images -> embeddings (:func:`vireid.inference.loading.load_embedder`) -> index search ->
result rows (path, score, identity, camera, modality), as a table or JSON.

A query's modality matters twice: two-stream models embed visible and infrared images through
different stems, and cross-modality search looks only at the *other* modality of the gallery.
When it is not given, :func:`guess_modality` reads it from the pixels (infrared images are stored
with three identical channels).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.datasets.base import parse_modality
from vireid.data.records import INFRARED, VISIBLE
from vireid.errors import VireidError
from vireid.retrieval.index import GalleryIndex
from vireid.retrieval.tracklets import tracklet_frames

OTHER_MODALITY = {VISIBLE: INFRARED, INFRARED: VISIBLE}


def guess_modality(path: str | Path, tolerance: int = 8) -> str:
    """``"infrared"`` when the image's three channels are (nearly) equal, else ``"visible"``
    (:func:`vireid.data.modality.is_grey`, the policy shared by every entry point).

    Near-infrared and thermal cameras give grey images (SYSU-MM01, LLCM, RegDB all store them so);
    ``tolerance`` allows for JPEG chroma noise. Decoding problems raise DatasetError naming the file.
    """
    from vireid.data.images import decode_image
    from vireid.data.modality import is_grey

    return INFRARED if is_grey(decode_image(path, size=(128, 64)), tolerance) else VISIBLE


def check_compatible(index: GalleryIndex, embedder, force: bool = False) -> list[str]:
    """Raise VireidError when the model's embeddings cannot be searched in ``index``: another
    embedding size, or another model's weights (the fingerprint recorded by ``vireid extract``;
    ``force`` turns that refusal into a returned warning)."""
    from vireid.inference.embedder import check_fingerprint

    notes = []
    warning = check_fingerprint(index.info.get("fingerprint"), embedder, "the index", force=force)
    if warning:
        notes.append(warning)
    if int(embedder.dim) != index.dim:
        built = index.info.get("model") or "another model"
        raise VireidError(
            f"the model gives {embedder.dim}-dim embeddings but the index holds {index.dim}-dim features (built with "
            f"{built}); search with the checkpoint the index was built from or rebuild the index"
        )
    return notes


def query_modalities(paths: Sequence[str | Path], modality: str | None,
                     notes: list[str] | None = None) -> list[str]:
    """One modality per query: ``modality`` for all (any spelling), or guessed from each image
    (``None``/``"auto"``). ``notes`` receives the decisions and warnings (:mod:`vireid.data.modality`)."""
    from vireid.data.images import decode_image
    from vireid.data.modality import describe, resolve_modalities

    images = [decode_image(p, size=(128, 64)) for p in paths]
    names = [Path(p).name for p in paths]
    mods, warnings, guessed = resolve_modalities(images, modality, names)
    if notes is not None:
        notes.extend(f"query {line}" for line, g in zip(describe(mods, guessed, names), guessed) if g)
        notes.extend(f"warning: {w}" for w in warnings)
    return mods


def search_images(index: GalleryIndex, embedder, paths: Sequence[str | Path], *, modality: str | None = None,
                  k: int = 10, cross_modality: bool = False, gallery_modality: str | None = None,
                  rerank: bool = False, rerank_candidates: int = 100, batch_size: int = 64, force: bool = False,
                  notes: list[str] | None = None, where: str | None = None) -> list[dict[str, Any]]:
    """Search the gallery for each query image (or tracklet folder: one query from its frames,
    :func:`~vireid.retrieval.tracklets.tracklet_frames`); one result dict per query.

    Each dict: ``query`` (path), ``modality`` (of the query), ``searched`` (gallery modality or
    ``"all"``), ``results``: list of ``{rank, index, path, image, score, pid, camid, modality}``
    (``path`` as stored in the index, ``image`` absolute, ``pid`` / ``camid`` ``None`` when unknown).
    ``cross_modality`` searches only the modality other than each query's; ``gallery_modality``
    names one gallery modality for all queries (the two are exclusive). ``force`` searches an index
    built by another model (with a warning); ``notes`` receives the modality decisions and warnings.
    ``where`` filters the gallery by modality and attribute labels (:mod:`vireid.retrieval.attributes`);
    the answers then say which labels were used (``attribute_labels``: stored or predicted).
    """
    from vireid.retrieval.attributes import bind_where

    where_search = bind_where(where, index, cross_modality=cross_modality, gallery_modality=gallery_modality)
    gallery_modality = where_search.gallery_modality
    if not paths:
        raise VireidError("no query images given; pass one or more image files (or tracklet folders)")
    if cross_modality and gallery_modality:
        raise VireidError("--cross-modality and --gallery-modality exclude each other; pass only one")
    notes = notes if notes is not None else []
    notes.extend(check_compatible(index, embedder, force=force))
    paths = [Path(p).expanduser().absolute() for p in paths]
    # a folder is a tracklet query: its frames (vireid.retrieval.tracklets), its modality that of its first frame
    tracklets = {i: tracklet_frames(p) for i, p in enumerate(paths) if p.is_dir()}
    mods = query_modalities([tracklets[i][0] if i in tracklets else p for i, p in enumerate(paths)], modality, notes)
    if gallery_modality is not None:
        target = parse_modality(gallery_modality)
        if target is None:
            raise VireidError(f"gallery modality {gallery_modality!r} is unknown; use visible or infrared")
        filters: list[str | None] | None = [target] * len(paths)
    elif cross_modality:
        filters = [OTHER_MODALITY[m] for m in mods]
    else:
        filters = None
    images = [i for i in range(len(paths)) if i not in tracklets]
    feats = np.zeros((len(paths), int(embedder.dim)), dtype=np.float32)
    if images:
        feats[images] = embedder.embed_paths([str(paths[i]) for i in images], [mods[i] for i in images],
                                             batch_size=batch_size)
    for i, frames in tracklets.items():
        feats[i] = embedder.embed_tracklet(frames, mods[i])
    scores, rows = where_search.search(index, feats, k, filters, rerank=rerank, rerank_candidates=rerank_candidates)
    meta = index.metadata
    labels = getattr(index, "attributes", None)
    out = []
    for qi, path in enumerate(paths):
        valid = rows[qi] >= 0
        hits = []
        for rank, (row, score) in enumerate(zip(rows[qi][valid].tolist(), scores[qi][valid].tolist()), start=1):
            entry = meta.row(row)
            hits.append({
                "rank": rank,
                "index": row,
                "path": entry["path"],
                "image": str(index.image_path(row)),
                "score": round(float(score), 6),
                "pid": entry["pid"] if entry["pid"] >= 0 else None,
                "camid": entry["camid"] if entry["camid"] >= 0 else None,
                "modality": entry["modality"],
            })
        out.append(where_search.annotate({
            "query": str(path),
            **({"frames": len(tracklets[qi])} if qi in tracklets else {}),
            "modality": mods[qi],
            "searched": filters[qi] if filters is not None else "all",
            "reranked": bool(rerank),
            "results": hits,
        }, labels))
    return out


def format_results(results: list[dict[str, Any]]) -> str:
    """Plain-text tables, one per query."""
    blocks = []
    for res in results:
        frames = f", tracklet of {res['frames']} frames" if "frames" in res else ""
        head = f"query {res['query']} ({res['modality']}{frames}) -> {res['searched']} gallery"
        if res["reranked"]:
            head += ", re-ranked"
        if res.get("where"):
            source = res.get("attribute_labels")
            head += f", where {res['where']}" + (f" ({source} attribute labels)" if source else "")
        rows = [("rank", "score", "identity", "camera", "modality", "path")]
        for hit in res["results"]:
            rows.append((str(hit["rank"]), f"{hit['score']:.4f}", "-" if hit["pid"] is None else str(hit["pid"]),
                         "-" if hit["camid"] is None else str(hit["camid"]), hit["modality"], hit["path"]))
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        lines = ["  ".join(r[c].rjust(widths[c]) if c < 4 else r[c].ljust(widths[c]) for c in range(5)) + "  " + r[5]
                 for r in rows]
        if len(rows) == 1:
            lines.append("(no gallery images pass the filter)" if res.get("where") else
                         "(no gallery images of that modality)")
        blocks.append(head + "\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def results_json(results: list[dict[str, Any]]) -> str:
    return json.dumps(results, indent=2)
