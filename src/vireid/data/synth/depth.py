"""Depth images of a synthetic moment (the survey §4.1: "visible, infrared; depth if present").

A depth camera co-located with the RegDB visible/thermal pair sees the same moment: the person's
part-label map of that pose (:func:`~vireid.data.synth.render.draw_part_labels`, the very map the
visible and thermal images were coloured from) becomes a range image:

* the person stands at distance ``d = 0.45 / pose.scale`` (a larger figure is closer), limbs on the far
  side of a side view ``0.025`` further, an occluder (box or pole) at ``0.8 d``;
* the scene is a wall at distance 1.0 above the horizon (60 % of the height) and a floor below whose
  distance falls linearly to 0.55 at the bottom row;
* sensor effects, as in structured-light cameras: noise growing with distance (sigma ``0.01 d``) and
  missing readings (value 0) on a random third of the pixels at depth edges (silhouettes).

Encoding: 8-bit grey, near = bright, ``value = round(255 * (1.2 - d) / 1.2)``; 0 = no reading.
Everything is vectorised numpy over the frame.
"""

from __future__ import annotations

import numpy as np

from vireid.data.synth.render import BACKGROUND, FAR, OCCLUDER, PoseParams

MAX_DEPTH = 1.2
HORIZON = 0.6


def render_depth(labels: np.ndarray, pose: PoseParams, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W) depth image of the moment drawn as ``labels`` with ``pose`` (see the module doc)."""
    h, w = labels.shape
    rows = np.arange(h, dtype=np.float32) / max(h - 1, 1)
    floor = 1.0 - (1.0 - 0.55) * np.clip((rows - HORIZON) / (1.0 - HORIZON), 0.0, 1.0)
    depth = np.broadcast_to(floor[:, None], (h, w)).astype(np.float32)
    person = np.float32(0.45 / max(pose.scale, 1e-3))
    is_person = (labels != BACKGROUND) & (labels != OCCLUDER)
    depth = np.where(is_person, person + np.float32(0.025) * (labels >= FAR), depth)
    depth = np.where(labels == OCCLUDER, np.float32(0.8) * person, depth).astype(np.float32)
    depth += rng.standard_normal((h, w)).astype(np.float32) * np.float32(0.01) * depth
    # missing readings along depth discontinuities (either side of a silhouette edge)
    edge = np.zeros((h, w), dtype=bool)
    jump = np.abs(np.diff(depth, axis=1)) > 0.05
    edge[:, 1:] |= jump
    edge[:, :-1] |= jump
    jump = np.abs(np.diff(depth, axis=0)) > 0.05
    edge[1:, :] |= jump
    edge[:-1, :] |= jump
    holes = edge & (rng.random((h, w)) < 1.0 / 3.0)
    value = np.clip(np.round(255.0 * (MAX_DEPTH - depth) / MAX_DEPTH), 1, 255).astype(np.uint8)
    value[holes] = 0
    return value


__all__ = ["HORIZON", "MAX_DEPTH", "render_depth"]
