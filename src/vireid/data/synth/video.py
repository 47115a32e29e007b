"""Synthetic tracklets in the HITSZ-VCM layout (``vireid synth --format hitsz-vcm``): consecutive frames of
one walk per tracklet, read back by the real HITSZ-VCM reader (:mod:`vireid.data.datasets.hitsz_vcm`).

**A walk** (:func:`walk_poses`) starts from one pose of the still-image machinery
(:func:`~vireid.data.synth.render.sample_pose`: viewpoint, gait phase, stride, scale, placement) and then,
frame by frame:

* the gait phase advances by a per-walk step (0.55-0.95 rad a frame, a stride cycle every 7-11 frames);
* the person drifts across the crop in the walking direction (side views: towards the side they face;
  front/back views: a small sideways drift) and grows (front view: approaching) or shrinks (back view);
* about half of the walks pass an occluder -- a pole (full height) or a box (legs) -- that slides across the
  frame against the walking direction, so some frames are occluded and others not.

The viewpoint, the identity's traits and the camera's scene and exposure stay fixed within a walk (one
render generator per tracklet, recreated for every frame: the background window and exposure are the same in
every frame, only the person moves). Every draw comes from new generators seeded by
``(seed, salt, identity, camera, tracklet)``; nothing is drawn from the still-image generators, so the default
layouts' bytes do not change.

**Layout** (what the reference loader reads, with the two archives unpacked into ``Train/`` and ``Test/``)::

    root/Train/<pid:04d>/<rgb|ir>/D<cam>/<frame:04d>.jpg     training identities
    root/Test/<pid:04d>/<rgb|ir>/D<cam>/<frame:04d>.jpg      test identities
    root/info/{train,test}_name.txt                          frame names <pid>M<m>D<cam>T<tracklet>F<frame>.jpg
    root/info/track_{train,test}_info.txt                    "m start end pid camid" (m: 1 infrared, 2 visible)
    root/info/query_IDX.txt                                  the infrared test tracklets (1-based rows)

Cameras (:data:`VCM_CAMERAS`): 1 visible indoor, 2 visible outdoor, 3 infrared indoor, 4 infrared outdoor (the
SYSU-MM01-layout cameras 1, 4, 3 and 6 with new numbers, hence their own scenes). Each identity has
``tracklets`` walks per camera of ``frames`` frames each. About half of the identities (rounded up) train,
the rest are tested (a seeded shuffle, like HITSZ-VCM's 500 / 427 split).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.data.records import INFRARED, VISIBLE
from vireid.data.synth.cameras import SYSU_CAMERAS, CameraSpec, SceneTemplate, make_scene_template
from vireid.data.synth.render import PoseParams, render_identity_image, sample_pose
from vireid.data.synth.traits import sample_identity_traits

#: Camera number -> camera of the synthetic HITSZ-VCM layout (two per modality).
VCM_CAMERAS: dict[int, CameraSpec] = {
    1: replace(SYSU_CAMERAS[1], camid=1),
    2: replace(SYSU_CAMERAS[4], camid=2),
    3: replace(SYSU_CAMERAS[3], camid=3),
    4: replace(SYSU_CAMERAS[6], camid=4),
}
#: Modality column of the info files (``1`` infrared, ``2`` visible) and image folder, per modality.
MODALITY_COLUMN = {INFRARED: 1, VISIBLE: 2}
MODALITY_FOLDER = {INFRARED: "ir", VISIBLE: "rgb"}
JPEG_QUALITY = 92
_WALK_SALT = 0x7A1C  # the walk's pose generator
_RENDER_SALT = 0x7A1D  # the walk's render generator (scene window, exposure, noise)
_SPLIT_SALT = 0x7C


def vcm_split(num_ids: int, seed: int) -> dict[str, list[int]]:
    """Identities 1..num_ids into ``train`` (half, rounded up) and ``test`` by a seeded shuffle."""
    order = np.random.default_rng([int(seed), _SPLIT_SALT]).permutation(np.arange(1, num_ids + 1))
    n_train = (num_ids + 1) // 2
    return {"train": sorted(int(i) for i in order[:n_train]), "test": sorted(int(i) for i in order[n_train:])}


def tracklet_number(camid: int, k: int, tracklets: int) -> int:
    """1-based tracklet number of walk ``k`` (1-based) of camera ``camid``, unique per identity."""
    return (camid - 1) * tracklets + k


def frame_name(pid: int, camid: int, tracklet: int, frame: int) -> str:
    """HITSZ-VCM frame name ``<pid:04d>M<m>D<cam>T<tracklet:04d>F<frame:04d>.jpg`` (``frame`` unique per folder)."""
    m = MODALITY_COLUMN[VCM_CAMERAS[camid].modality]
    return f"{pid:04d}M{m}D{camid}T{tracklet:04d}F{frame:04d}.jpg"


def frame_path(split: str, pid: int, camid: int, frame: int) -> str:
    """Relative path of a frame: ``Train|Test/<pid>/<rgb|ir>/D<cam>/<frame>.jpg``."""
    folder = MODALITY_FOLDER[VCM_CAMERAS[camid].modality]
    return f"{split.capitalize()}/{pid:04d}/{folder}/D{camid}/{frame:04d}.jpg"


def walk_rng(seed: int, pid: int, camid: int, tracklet: int, salt: int = _WALK_SALT) -> np.random.Generator:
    """The generator of one walk (its own seed; never an image generator of the still-image layouts)."""
    return np.random.default_rng([int(seed), salt, int(pid), int(camid), int(tracklet)])


def walk_poses(rng: np.random.Generator, camera: CameraSpec, frames: int, height: int, width: int) -> list[PoseParams]:
    """The poses of ``frames`` consecutive frames of one walk (see the module docstring)."""
    start = sample_pose(rng, camera, height, width)
    step = float(rng.uniform(0.55, 0.95))
    if start.view in ("left", "right"):  # side views walk towards the side they face
        direction = -1.0 if start.view == "left" else 1.0
        drift = float(rng.uniform(0.06, 0.14)) * width
    else:
        direction = -1.0 if rng.random() < 0.5 else 1.0
        drift = float(rng.uniform(0.0, 0.06)) * width
    growth = {"front": 1.0, "back": -1.0}.get(start.view, 0.0) * float(rng.uniform(0.0, 0.006))
    span = max(frames - 1, 1)
    centre0 = start.center_x - direction * drift / 2
    occluder = None
    if rng.random() < 0.5:  # something the walk passes: it slides against the walking direction
        pole = rng.random() < 0.5
        w = float(rng.uniform(0.07, 0.14) if pole else rng.uniform(0.3, 0.6)) * width
        y0 = 0.0 if pole else float(rng.uniform(0.62, 0.82)) * height
        speed = float(rng.uniform(0.12, 0.3)) * width
        x_start = float(rng.uniform(0.0, width))
        occluder = (pole, w, y0, speed, x_start)
    poses = []
    for f in range(frames):
        occ = None
        if occluder is not None:
            _, w, y0, speed, x_start = occluder
            x0 = x_start - direction * speed * f - w / 2
            if x0 < width and x0 + w > 0:
                occ = (x0, y0, x0 + w, float(height))
        poses.append(replace(
            start,
            phase=float((start.phase + step * f) % (2 * math.pi)),
            center_x=float(centre0 + direction * drift * f / span),
            scale=float(start.scale * (1.0 + growth * f)),
            occluder=occ,
        ))
    return poses


_SCENES: dict[tuple, SceneTemplate] = {}


def _scene(camera: CameraSpec, seed: int, height: int, width: int) -> SceneTemplate:
    key = (camera, seed, height, width)
    if key not in _SCENES:
        if len(_SCENES) > 16:
            _SCENES.clear()
        _SCENES[key] = make_scene_template(camera, seed, height, width)
    return _SCENES[key]


def render_vcm_identity(root: Path, pid: int, split: str, seed: int, tracklets: int, frames: int, height: int,
                        width: int) -> list[tuple[str, np.ndarray]]:
    """Render and write every walk of identity ``pid``; returns ``(relative path, joints)`` per frame."""
    traits = sample_identity_traits(seed, pid)
    out: list[tuple[str, np.ndarray]] = []
    for camid, camera in VCM_CAMERAS.items():
        scene = _scene(camera, seed, height, width)
        for k in range(1, tracklets + 1):
            t = tracklet_number(camid, k, tracklets)
            poses = walk_poses(walk_rng(seed, pid, camid, t), camera, frames, height, width)
            for f, pose in enumerate(poses):
                rng = walk_rng(seed, pid, camid, t, _RENDER_SALT)  # same scene window and exposure every frame
                image = render_identity_image(traits, camera, rng, height, width, scene=scene, pose=pose)
                rel = frame_path(split, pid, camid, (t - 1) * frames + f + 1)
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = image.pixels if image.pixels.ndim == 3 else np.repeat(image.pixels[..., None], 3, axis=2)
                Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=JPEG_QUALITY)
                out.append((rel, image.joints))
    return out


def write_vcm_info(root: Path, split: dict[str, list[int]], tracklets: int, frames: int) -> dict[str, int]:
    """Write ``info/``: the name lists, the tracklet lines and the query rows (every infrared test tracklet).
    Returns counts for the metadata."""
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in ("train", "test"):
        names: list[str] = []
        lines: list[str] = []
        query_rows: list[int] = []
        for pid in split[name]:
            for camid, camera in VCM_CAMERAS.items():
                for k in range(1, tracklets + 1):
                    t = tracklet_number(camid, k, tracklets)
                    start = len(names) + 1
                    names.extend(frame_name(pid, camid, t, (t - 1) * frames + f + 1) for f in range(frames))
                    lines.append(f"{MODALITY_COLUMN[camera.modality]} {start} {len(names)} {pid} {camid}")
                    if camera.modality == INFRARED:
                        query_rows.append(len(lines))
        (info / f"{name}_name.txt").write_text("\n".join(names) + "\n")
        (info / f"track_{name}_info.txt").write_text("\n".join(lines) + "\n")
        counts[f"{name}_tracklets"] = len(lines)
        counts[f"{name}_frames"] = len(names)
        if name == "test":
            (info / "query_IDX.txt").write_text(" ".join(map(str, query_rows)) + "\n")
            counts["query_tracklets"] = len(query_rows)
    return counts
