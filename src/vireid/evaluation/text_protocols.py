"""Protocols of the text methods (:mod:`vireid.modeling.methods.text_reid`).

Both read the features a text method gives in evaluation mode with the ``tokens`` side input:
``[N, 2D]`` per pool image, the first half its image embedding (the gallery side), the second half its
query-side embedding (its description's, or its fused image + description embedding). Features of
any other width are one :class:`ProtocolError` sentence. (Every other protocol run on such a model gets
its image columns only, ``model.gallery_columns``:
:func:`vireid.workflows.evaluate_model.evaluate_features`.)

* ``text-to-visible`` / ``text-to-infrared`` (any dataset): every image's **description** is a query;
  the gallery is every pool image of that modality. A match is an image of the description's
  person; gallery images of that person from the camera of the described image are ignored (the
  Market-1501 / LLCM "same-camera" rule: the described image itself and its near-duplicates from the
  same walk). Plain CMC, mAP and mINP, one trial, with the exact ranking code of
  :mod:`vireid.evaluation.metrics` (:func:`~vireid.evaluation.protocols.runner.run_trials`).
* ``<protocol>+text`` for each single-shot cross-modality protocol (``sysu-all-single+text``, ...,
  ``llcm-i2v+text``): **text-assisted** cross-modality matching -- the protocol's own queries, galleries,
  trials and rules, the query images embedded together with their descriptions (the query side) and
  the gallery images alone (the gallery side). ``settings["image_only"]`` holds the same protocol's
  figures with the image-only query embeddings of the same model, for the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.evaluation.protocols.draws import WholeModality
from vireid.evaluation.protocols.options import ProtocolOptions
from vireid.evaluation.protocols.results import METRIC_KEYS, ProtocolError, ProtocolResult
from vireid.evaluation.protocols.specs import PROTOCOLS, ProtocolSpec, register_protocol

#: Dataset family of the text -> image protocols: they fit every dataset with descriptions.
ANY_FAMILY = "any"
#: The cross-modality protocols that get a text-assisted twin ``<name>+text``.
ASSISTED_BASES = ("sysu-all-single", "sysu-indoor-single", "regdb-v2t", "regdb-t2v", "llcm-v2i", "llcm-i2v")


def split_text_features(features: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(gallery side, query side) halves of a text method's ``[N, 2D]`` evaluation features."""
    if isinstance(features, tuple):
        raise ProtocolError(f"protocol {name} splits a text method's [N, 2D] features itself; pass one tensor")
    feats = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if feats.dim() != 2 or feats.shape[1] % 2:
        raise ProtocolError(
            f"protocol {name} needs a text method's features (image and query-side embeddings side by side, an even "
            f"width), got shape {tuple(feats.shape)}; evaluate a text_image or text_fusion model with "
            "data.extras.tokens"
        )
    half = feats.shape[1] // 2
    return feats[:, :half], feats[:, half:]


@dataclass(frozen=True)
class AllImages:
    """Every pool image is a query (through its description)."""

    def __call__(self, pool: Sequence[ImageRecord]) -> np.ndarray:
        return np.arange(len(pool))


@dataclass(frozen=True)
class _QuerySideSpec(ProtocolSpec):
    """A protocol whose queries are the query-side half of a text method's [N, 2D] features and whose
    gallery is the image half; ``query_label`` names that query side in the result's settings."""

    #: reads the whole [N, 2D] features (the evaluation gives other protocols the image columns only)
    reads_query_side = True
    query_label = ""

    def __call__(self, features: Any, pool: Sequence[ImageRecord], options: ProtocolOptions | None = None,
                 **keywords: Any) -> ProtocolResult:
        gallery_side, query_side = split_text_features(features, self.name)
        result = super().__call__((query_side, gallery_side), pool, options, **keywords)
        result.settings["query"] = self.query_label
        self.annotate(result, gallery_side, pool, options, **keywords)
        return result

    def annotate(self, result: ProtocolResult, gallery_side: Any, pool: Sequence[ImageRecord],
                 options: ProtocolOptions | None, **keywords: Any) -> None:
        """Add to ``result.settings`` (nothing by default)."""


@dataclass(frozen=True)
class TextToImageSpec(_QuerySideSpec):
    """Descriptions as queries against one modality's images (see the module doc)."""

    query_label = "description"


@dataclass(frozen=True)
class TextAssistedSpec(_QuerySideSpec):
    """A cross-modality protocol with (image + description) queries (see the module doc); its settings
    also hold the same protocol's image-only figures."""

    query_label = "image+description"

    def annotate(self, result: ProtocolResult, gallery_side: Any, pool: Sequence[ImageRecord],
                 options: ProtocolOptions | None, **keywords: Any) -> None:
        image_only = ProtocolSpec.__call__(self, gallery_side, pool, options, **keywords)
        result.settings["image_only"] = {key: image_only.mean[key] for key in METRIC_KEYS}


def text_to_image_spec(modality: str) -> TextToImageSpec:
    return TextToImageSpec(
        name=f"text-to-{modality}", description=f"every description queries every {modality} image of the pool",
        dataset="any", query=AllImages(), gallery=WholeModality(modality), cam_rule="same-camera", dedup_cmc=False,
        trials=None, settings={"gallery_modality": modality}, family=ANY_FAMILY,
    )


def text_assisted_spec(base: ProtocolSpec) -> TextAssistedSpec:
    values = {f.name: getattr(base, f.name) for f in fields(base) if f.init}
    values.update(name=f"{base.name}+text", description=f"{base.description} (queries: image + description)",
                  family=base.protocol_family)
    return TextAssistedSpec(**values)


for _modality in (VISIBLE, INFRARED):
    register_protocol(text_to_image_spec(_modality))
for _base in ASSISTED_BASES:
    register_protocol(text_assisted_spec(PROTOCOLS.get(_base)))

__all__ = ["ANY_FAMILY", "ASSISTED_BASES", "AllImages", "TextAssistedSpec", "TextToImageSpec", "split_text_features",
           "text_assisted_spec", "text_to_image_spec"]
