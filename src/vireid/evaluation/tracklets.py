"""Tracklet-to-tracklet protocols (video visible-infrared ReID): ``vcm-i2v`` and ``vcm-v2i``.

A video dataset's evaluation pool holds frames (one :class:`~vireid.data.records.ImageRecord` per frame,
``tracklet`` set; the HITSZ-VCM reader, synthetic tracklets, your own tracklet folders). A tracklet is
the unit that is queried and retrieved, so before ranking the pool is reduced to one row per tracklet
(:func:`tracklet_pool`): its feature is the mean of its frames' rows. For a temporal model
(``model.method: temporal``) every frame's row already is its tracklet's embedding (the mean only joins
the pieces of a tracklet that feature extraction had to split across batches); for a single-image model
it is temporal average pooling of the frame embeddings at test time. A still image (``tracklet`` -1) is
a tracklet of its own.

The two directions (MITML, Lin et al., CVPR 2022, reference ``test.py``: ``test`` = infrared -> visible,
``test2`` = visible -> infrared):

* ``vcm-i2v``: queries = every infrared tracklet of the pool, gallery = every visible tracklet;
* ``vcm-v2i``: queries = every visible tracklet, gallery = every infrared tracklet.

Ranking is the toolkit's one exact ranking code (:func:`~vireid.evaluation.protocols.runner.run_trials`,
with re-ranking, precision and the metric of :class:`~vireid.evaluation.protocols.options.ProtocolOptions`)
with the reference's camera rule: gallery tracklets of the query's identity *and* camera are skipped
(``eval_metrics.evaluate`` of the MITML code: ``remove = (g_pids == q_pid) & (g_camids == q_camid)``,
vireid's ``"same-camera"``), and the plain (not identity-de-duplicated) CMC; one fixed gallery (no trials).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from vireid.data.records import INFRARED, VISIBLE, ImageRecord
from vireid.evaluation.protocols.draws import QueryRule, WholeModality
from vireid.evaluation.protocols.options import ProtocolOptions
from vireid.evaluation.protocols.results import ProtocolError, ProtocolResult
from vireid.evaluation.protocols.runner import _check_features
from vireid.evaluation.protocols.specs import ProtocolSpec, register_protocol


def tracklet_groups(pool: Sequence[ImageRecord]) -> tuple[np.ndarray, list[int]]:
    """``(group of each record [N], first record of each group)``: records with one ``tracklet`` id >= 0 form
    one group (in order of first appearance); every still image (-1) is a group of its own.

    The frames of one tracklet must share identity, camera and modality (one :class:`ProtocolError`
    sentence otherwise)."""
    group = np.empty(len(pool), dtype=np.int64)
    firsts: list[int] = []
    seen: dict[int, int] = {}
    for i, record in enumerate(pool):
        tid = int(getattr(record, "tracklet", -1))
        if tid >= 0 and tid in seen:
            g = seen[tid]
            first = pool[firsts[g]]
            for field, label in (("orig_pid", "identity"), ("camid", "camera"), ("modality", "modality")):
                if getattr(record, field) != getattr(first, field):
                    raise ProtocolError(
                        f"tracklet {tid} mixes frames of {label} {getattr(first, field)!r} ({first.path}) and "
                        f"{getattr(record, field)!r} ({record.path}); the frames of one tracklet must share identity, "
                        "camera and modality, so give them different tracklet ids")
        else:
            g = len(firsts)
            firsts.append(i)
            if tid >= 0:
                seen[tid] = g
        group[i] = g
    return group, firsts


def tracklet_pool(features: Any, pool: Sequence[ImageRecord]) -> tuple[torch.Tensor, list[ImageRecord], np.ndarray]:
    """``(features [G, D], records [G], group of each frame [N])``: one row per tracklet, the mean of its frames'
    rows (a feature pair ``(query_side, gallery_side)`` is reduced side by side). Each tracklet's record is its
    first frame's."""
    if len(pool) == 0:
        raise ProtocolError("the evaluation pool holds no frames; check the dataset's test split")
    group, firsts = tracklet_groups(pool)
    records = [pool[i] for i in firsts]

    def reduce(feats: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(group, device=feats.device)
        sums = feats.new_zeros(len(firsts), feats.shape[1]).index_add(0, index, feats)
        counts = torch.bincount(index, minlength=len(firsts)).to(feats.dtype).unsqueeze(1)
        return sums / counts

    feats = _check_features(features, pool)
    if isinstance(feats, tuple):
        return (reduce(feats[0].float()), reduce(feats[1].float())), records, group  # type: ignore[return-value]
    return reduce(feats.float()), records, group


@dataclass(frozen=True)
class TrackletProtocolSpec(ProtocolSpec):
    """A :class:`ProtocolSpec` ranked over tracklets: the frame pool is reduced by :func:`tracklet_pool` first,
    then the spec's queries and gallery are chosen among the tracklets. The result records ``unit: tracklet``
    and the number of frames. ``unit`` lets ``vireid eval`` run it on any data whose frames carry tracklet ids
    (your own tracklet folders or CSV), not only on the ``vcm`` family."""

    unit: ClassVar[str] = "tracklet"

    def __call__(self, features: Any, pool: Sequence[ImageRecord], options: ProtocolOptions | None = None,
                 **keywords: Any) -> ProtocolResult:
        feats, records, _ = tracklet_pool(features, pool)
        result = ProtocolSpec.__call__(self, feats, records, options, **keywords)
        result.settings.update(unit="tracklet", num_frames=len(pool), num_tracklets=len(records))
        return result


_DIRECTIONS = {"infrared-to-visible": ("i2v", INFRARED, VISIBLE), "visible-to-infrared": ("v2i", VISIBLE, INFRARED)}


def tracklet_spec(direction: str = "infrared-to-visible") -> TrackletProtocolSpec:
    """The tracklet-to-tracklet protocol of one direction (see the module docstring)."""
    if direction not in _DIRECTIONS:
        raise ProtocolError(f"unknown tracklet direction {direction!r}; use 'infrared-to-visible' or 'visible-to-infrared'")
    short, query_mod, gallery_mod = _DIRECTIONS[direction]
    return TrackletProtocolSpec(
        name=f"vcm-{short}", description=f"tracklet to tracklet, {direction.replace('-to-', ' -> ')} (HITSZ-VCM / video data)",
        dataset="vcm", query=QueryRule(query_mod), gallery=WholeModality(gallery_mod), cam_rule="same-camera",
        dedup_cmc=False, trials=None, settings={"direction": direction},
    )


def tracklet_protocol(features: Any, pool: Sequence[ImageRecord], direction: str = "infrared-to-visible",
                      options: ProtocolOptions | None = None, **ranking: Any) -> ProtocolResult:
    """Tracklet-to-tracklet CMC / mAP / mINP of frame features ``[N, D]`` over a frame pool, one direction."""
    return tracklet_spec(direction)(features, pool, options, **ranking)


def single_frame_pool(pool: Sequence[ImageRecord]) -> list[ImageRecord]:
    """The pool with every frame a still image (tracklet -1): the same protocols then rank single frames
    (each frame a query and a gallery item), the single-frame baseline of a tracklet table."""
    return [replace(r, tracklet=-1) for r in pool]


for _direction in _DIRECTIONS:
    register_protocol(tracklet_spec(_direction))

__all__ = ["TrackletProtocolSpec", "single_frame_pool", "tracklet_groups", "tracklet_pool", "tracklet_protocol",
           "tracklet_spec"]
