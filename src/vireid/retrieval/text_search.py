"""Search a gallery index with words: a description, alone or with a query image (``vireid search --text``,
the page's text box).

A text method (:mod:`vireid.modeling.methods.text_reid`) embeds its gallery images as usual (``vireid
extract`` / ``index`` need no descriptions); a query is embedded by the model's ``embed_query``: the
description alone (``text_image``: its text embedding; ``text_fusion``: the fusion of the text with no
image), or the description with a query image (``text_image``: the average of the two normalised
embeddings; ``text_fusion``: the early / late / attention fusion it was trained with). The sentence is
tokenized exactly as the model's training data were (the shipped tokenizer with the run's
``data.extras.tokens`` ``max_length`` / ``vocab``).

Bad input is one :class:`~vireid.errors.VireidError` sentence: an empty text, a text longer than
:data:`MAX_QUERY_CHARS`, a model that was not trained with text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vireid.data.datasets.base import parse_modality
from vireid.data.text.tokenizer import make_tokenizer
from vireid.data.text.tokens import tokens_settings
from vireid.errors import VireidError
from vireid.retrieval.index import GalleryIndex
from vireid.retrieval.search import OTHER_MODALITY, check_compatible, query_modalities

#: The longest query text accepted (characters): a description is a sentence or two.
MAX_QUERY_CHARS = 300


def check_query_text(text: Any) -> str:
    """``text`` stripped; VireidError when it is empty or longer than :data:`MAX_QUERY_CHARS`."""
    value = "" if text is None else str(text).strip()
    if not value:
        raise VireidError("the query text is empty; describe the person, for example \"man, dark coat, backpack\"")
    if len(value) > MAX_QUERY_CHARS:
        raise VireidError(f"the query text has {len(value)} characters; give at most {MAX_QUERY_CHARS} (a sentence or "
                          "two about the person)")
    return value


def text_model(embedder: Any) -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer behind ``embedder`` for text queries; VireidError when it cannot embed text."""
    model = getattr(embedder, "model", None)
    config = getattr(embedder, "config", None)
    settings = tokens_settings(getattr(config, "data", None)) if config is not None else None
    if model is None or not callable(getattr(model, "embed_query", None)) or settings is None:
        source = getattr(embedder, "source", None) or "this model"
        raise VireidError(f"{source} was not trained with text descriptions, so it cannot search with words; use a "
                          "run of a text recipe (text_synth, text_fusion_synth: model.method text_image or "
                          "text_fusion with data.extras.tokens) and an index built with it")
    return model, make_tokenizer(settings["tokenizer"], settings["max_length"], settings["vocab"])


def embed_text_queries(embedder: Any, texts: list[str], images: list[np.ndarray] | None = None,
                       modalities: list[str] | None = None) -> np.ndarray:
    """L2-normalised query embeddings ``[S, D]`` of descriptions, optionally each with a query image
    (``HxWx3`` uint8 arrays, any size, and their modalities)."""
    model, tokenizer = text_model(embedder)
    device = getattr(embedder, "device", torch.device("cpu"))
    tokens = tokenizer.encode_batch([check_query_text(t) for t in texts]).to(device)
    pixels = codes = None
    if images is not None:
        from vireid.inference.embedder import modality_codes

        pixels = embedder.preprocess(np.stack([embedder.resize(img) for img in images])).to(device)
        codes = torch.as_tensor(modality_codes(modalities or ["visible"] * len(images), len(images)), device=device)
    with torch.no_grad():
        feats = model.embed_query(pixels, codes, tokens).float()
    return torch.nn.functional.normalize(feats, dim=1).cpu().numpy()


def search_text(index: GalleryIndex, embedder: Any, text: str, *, image: str | Path | None = None,
                modality: str | None = None, k: int = 10, cross_modality: bool = False,
                gallery_modality: str | None = None, rerank: bool = False, rerank_candidates: int = 100,
                force: bool = False, notes: list[str] | None = None, where: str | None = None) -> list[dict[str, Any]]:
    """Search the gallery for a description (and a query image of that person); one result dict, shaped as
    :func:`~vireid.retrieval.search.search_images`' (``query`` is the text, ``modality`` ``"text"`` or
    ``"<image modality>+text"``). ``cross_modality`` needs the image; ``gallery_modality`` names one gallery
    modality; default: the whole gallery. ``where`` filters the gallery by modality and attribute labels, as
    for image queries (:func:`vireid.retrieval.attributes.bind_where`)."""
    from vireid.retrieval.attributes import bind_where

    text = check_query_text(text)
    where_search = bind_where(where, index, cross_modality=cross_modality, gallery_modality=gallery_modality)
    gallery_modality = where_search.gallery_modality
    notes = notes if notes is not None else []
    if cross_modality and gallery_modality:
        raise VireidError("--cross-modality and --gallery-modality exclude each other; pass only one")
    if cross_modality and image is None:
        raise VireidError("--cross-modality needs a query image (it searches the modality other than the image's); "
                          "pass an image or use --gallery-modality")
    model, tokenizer = text_model(embedder)
    notes.extend(check_compatible(index, embedder, force=force))
    unknown = tokenizer.unknown_words(text)
    if unknown:
        notes.append(f"warning: the model's vocabulary does not know {', '.join(repr(w) for w in unknown[:8])}; "
                     "those words are read as unknown")
    images = mods = None
    query = repr(text)
    if image is not None:
        from vireid.data.images import decode_image

        path = Path(image).expanduser().absolute()
        if not path.is_file():
            raise VireidError(f"query image {path} does not exist; pass an image file with --text, or none")
        mods = query_modalities([path], modality, notes)
        images = [decode_image(path)]
        query = f"{text!r} + {path}"
    if gallery_modality is not None:
        target = parse_modality(gallery_modality)
        if target is None:
            raise VireidError(f"gallery modality {gallery_modality!r} is unknown; use visible or infrared")
        filters: list[str | None] | None = [target]
    elif cross_modality:
        assert mods is not None
        filters = [OTHER_MODALITY[mods[0]]]
    else:
        filters = None
    feats = embed_text_queries(embedder, [text], images, mods)
    scores, rows = where_search.search(index, feats, k, filters, rerank=rerank, rerank_candidates=rerank_candidates)
    meta = index.metadata
    valid = rows[0] >= 0
    hits = []
    for rank, (row, score) in enumerate(zip(rows[0][valid].tolist(), scores[0][valid].tolist()), start=1):
        entry = meta.row(row)
        hits.append({"rank": rank, "index": row, "path": entry["path"], "image": str(index.image_path(row)),
                     "score": round(float(score), 6), "pid": entry["pid"] if entry["pid"] >= 0 else None,
                     "camid": entry["camid"] if entry["camid"] >= 0 else None, "modality": entry["modality"]})
    return [where_search.annotate({"query": query, "text": text, "modality": "text" if mods is None else f"{mods[0]}+text",
                                   "searched": filters[0] if filters is not None else "all", "reranked": bool(rerank),
                                   "results": hits}, getattr(index, "attributes", None))]


__all__ = ["MAX_QUERY_CHARS", "check_query_text", "embed_text_queries", "search_text", "text_model"]
