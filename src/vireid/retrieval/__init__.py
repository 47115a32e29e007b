"""Retrieval: embeddings of image collections, FAISS gallery indexes and search.

Data flow: images -> :func:`~vireid.retrieval.extract.extract_featureset` (with an
:class:`~vireid.inference.embedder.Embedder`) -> :class:`FeatureSet` (saved as a feature folder) ->
:meth:`GalleryIndex.build` (saved as an index folder) -> :meth:`GalleryIndex.search` /
:func:`~vireid.retrieval.search.search_images`.

Public API: :class:`FeatureSet`, :class:`Metadata`, :class:`GalleryIndex` (``build``, ``load``,
``save``, ``search``, ``metadata``, ``image_path``).
"""

from vireid.retrieval.features import FeatureSet, Metadata
from vireid.retrieval.index import GalleryIndex

__all__ = ["FeatureSet", "GalleryIndex", "Metadata"]
