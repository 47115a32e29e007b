"""Body joints per image for pose-guided methods (PDFENet §3.2): sources, the pose cache,
and the MediaPipe -> MPII joint mapping.

Every joint array here is float32 ``[..., 16, 3]`` = ``(x, y, visible)`` in the MPII order of
:data:`vireid.data.synth.render.MPII_JOINTS` (0 r-ankle, 1 r-knee, 2 r-hip, 3 l-hip, 4 l-knee,
5 l-ankle, 6 pelvis, 7 thorax, 8 upper-neck, 9 head-top, 10 r-wrist, 11 r-elbow, 12 r-shoulder,
13 l-shoulder, 14 l-elbow, 15 l-wrist; left/right are the person's own sides). ``x``/``y`` are pixel
coordinates whose integers are pixel centres; ``visible`` is 0/1 for synthetic joints and the
estimator's score in [0, 1] for estimated ones (0 for every joint of an image where no person was
found).

Where joints come from (``data.joints``):

* ``synthetic`` -- the generator's exact joints (``synth_joints.npz`` of a ``vireid synth`` folder);
* a path -- a *pose cache* written once per dataset by ``vireid pose-cache ROOT --format FMT``
  (:func:`build_pose_cache`), which runs a pose estimator over every image of the dataset;
* ``auto`` -- the synthetic joints when the root is a synth folder, else the default pose cache
  :func:`default_pose_cache_path` (``<parent>/<root name>.pose.npz``, next to the dataset folder so the
  dataset itself is never written to).

:func:`load_record_joints` returns the joints of a list of records in the pixel frame of the cached
images (``data.height`` x ``data.width``): the images are resized without keeping the aspect ratio
(:func:`vireid.data.images.decode_image`), so ``x' = (x + 0.5) * W' / W - 0.5`` and likewise for ``y``.

Pose cache file (``.npz``, written atomically, resumable): ``paths`` (str [N], relative to the dataset
root, ``/``-separated, sorted), ``joints`` (float32 [N, 16, 3], original image pixels), ``sizes``
(int32 [N, 2], original (height, width) after EXIF orientation), ``detected`` (bool [N]) and ``meta``
(a JSON string: estimator, its settings and version, dataset format, ``complete``).

MediaPipe (``mediapipe==0.10.21``, the optional ``pose`` extra; it needs numpy<2) ships its pose
landmark model inside the wheel and runs offline. Its 33 BlazePose landmarks are mapped to the 16
MPII joints by :func:`mediapipe_to_mpii` (see there for the derived joints).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vireid.data.synth.render import MPII_JOINTS
from vireid.errors import ConfigError, DatasetError, VireidError

if TYPE_CHECKING:
    import torch

NUM_JOINTS = 16
POSE_CACHE_VERSION = 1
SYNTHETIC_SOURCE = "synthetic"
AUTO_SOURCE = "auto"
#: How to install the optional estimator (printed when mediapipe cannot be imported).
MEDIAPIPE_HINT = (
    "install the pose extra with `pip install 'vireid[pose]'` (mediapipe==0.10.21) in an environment "
    "with numpy<2, or use --estimator synthetic for vireid synth data"
)

#: The 33 BlazePose landmarks in MediaPipe's order (``mediapipe.solutions.pose.PoseLandmark``).
MEDIAPIPE_LANDMARKS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)
_MP = {name: i for i, name in enumerate(MEDIAPIPE_LANDMARKS)}
_MPII = {name: i for i, name in enumerate(MPII_JOINTS)}
#: MPII joints that are a MediaPipe landmark as is (MPII index -> MediaPipe index).
MEDIAPIPE_DIRECT = {
    _MPII["r-ankle"]: _MP["right_ankle"], _MPII["r-knee"]: _MP["right_knee"], _MPII["r-hip"]: _MP["right_hip"],
    _MPII["l-hip"]: _MP["left_hip"], _MPII["l-knee"]: _MP["left_knee"], _MPII["l-ankle"]: _MP["left_ankle"],
    _MPII["r-wrist"]: _MP["right_wrist"], _MPII["r-elbow"]: _MP["right_elbow"],
    _MPII["r-shoulder"]: _MP["right_shoulder"], _MPII["l-shoulder"]: _MP["left_shoulder"],
    _MPII["l-elbow"]: _MP["left_elbow"], _MPII["l-wrist"]: _MP["left_wrist"],
}
#: Where the upper neck sits on the segment thorax -> mouth centre (0 thorax, 1 mouth): MPII marks the
#: top of the neck just under the chin, a little below the mouth.
UPPER_NECK_FRACTION = 0.7


def mediapipe_to_mpii(landmarks: np.ndarray) -> np.ndarray:
    """MediaPipe's 33 landmarks ``[..., 33, >=3]`` (x, y, score) -> MPII joints ``[..., 16, 3]``.

    Twelve joints are landmarks as is (ankles, knees, hips, wrists, elbows, shoulders; both use the
    person's own left/right). The four others are derived, their score being the smallest score of the
    landmarks they are made from:

    * pelvis = midpoint of the hips; thorax = midpoint of the shoulders;
    * upper-neck = ``thorax + 0.7 (mouth centre - thorax)`` (:data:`UPPER_NECK_FRACTION`; the mouth
      centre is the midpoint of the mouth corners);
    * head-top = ``ear centre + (ear centre - upper-neck)``: the ears sit about half-way up the head,
      so the top of the skull is as far above the ears as the upper neck is below them.
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim < 2 or lm.shape[-2] != len(MEDIAPIPE_LANDMARKS) or lm.shape[-1] < 3:
        raise ValueError(f"expected MediaPipe landmarks of shape [..., 33, 3], got {lm.shape}")
    xy, score = lm[..., :2], lm[..., 2]
    out = np.zeros((*lm.shape[:-2], NUM_JOINTS, 3), dtype=np.float32)
    mpii_index = np.fromiter(MEDIAPIPE_DIRECT.keys(), dtype=np.int64)
    mp_index = np.fromiter(MEDIAPIPE_DIRECT.values(), dtype=np.int64)
    out[..., mpii_index, :2] = xy[..., mp_index, :]
    out[..., mpii_index, 2] = score[..., mp_index]

    def mid(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        i, j = _MP[a], _MP[b]
        return (xy[..., i, :] + xy[..., j, :]) / 2, np.minimum(score[..., i], score[..., j])

    pelvis, pelvis_s = mid("left_hip", "right_hip")
    thorax, thorax_s = mid("left_shoulder", "right_shoulder")
    mouth, mouth_s = mid("mouth_left", "mouth_right")
    ears, ears_s = mid("left_ear", "right_ear")
    neck = thorax + UPPER_NECK_FRACTION * (mouth - thorax)
    neck_s = np.minimum(thorax_s, mouth_s)
    top = 2 * ears - neck
    top_s = np.minimum(ears_s, neck_s)
    for name, point, s in (("pelvis", pelvis, pelvis_s), ("thorax", thorax, thorax_s),
                           ("upper-neck", neck, neck_s), ("head-top", top, top_s)):
        out[..., _MPII[name], :2] = point
        out[..., _MPII[name], 2] = s
    return out


def scale_joints(joints: np.ndarray, sizes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Joints ``[N, J, 3]`` of images of ``sizes`` ``[N, 2]`` (height, width) -> the pixel frame of the
    same images resized to ``height`` x ``width`` (pixel centres at integers; visibility kept)."""
    out = np.array(joints, dtype=np.float32, copy=True)
    sizes = np.asarray(sizes, dtype=np.float32).reshape(-1, 1, 2)
    out[..., 0] = (out[..., 0] + 0.5) * (float(width) / sizes[..., 1]) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (float(height) / sizes[..., 0]) - 0.5
    return out


# ----------------------------------------------------------------------------- pose cache files


@dataclass
class PoseCache:
    """The content of a pose-cache file (see the module docstring)."""

    paths: np.ndarray  # str [N], relative to the dataset root, sorted
    joints: np.ndarray  # float32 [N, 16, 3], original pixels
    sizes: np.ndarray  # int32 [N, 2] (height, width)
    detected: np.ndarray  # bool [N]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    @classmethod
    def empty(cls, meta: dict | None = None) -> PoseCache:
        return cls(np.zeros(0, dtype=str), np.zeros((0, NUM_JOINTS, 3), np.float32), np.zeros((0, 2), np.int32),
                   np.zeros(0, dtype=bool), dict(meta or {}))

    def sorted(self) -> PoseCache:
        order = np.argsort(self.paths, kind="stable")
        return PoseCache(self.paths[order], self.joints[order], self.sizes[order], self.detected[order], self.meta)

    def lookup(self, rel_paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row of each relative path (vectorised: binary search in the sorted paths) and a found mask."""
        keys = np.asarray(list(rel_paths), dtype=str)
        if len(self) == 0 or keys.size == 0:
            return np.zeros(keys.shape, dtype=np.int64), np.zeros(keys.shape, dtype=bool)
        rows = np.clip(np.searchsorted(self.paths, keys), 0, len(self) - 1)
        return rows, self.paths[rows] == keys


def write_pose_cache(path: str | Path, cache: PoseCache) -> Path:
    """Write ``cache`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"pose cache folder {path.parent} cannot be created ({err}); pass a writable --out") from None
    cache = cache.sorted()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, paths=cache.paths.astype(str), joints=cache.joints.astype(np.float32),
                     sizes=cache.sizes.astype(np.int32), detected=cache.detected.astype(bool),
                     meta=np.asarray(json.dumps(cache.meta, sort_keys=True)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise ConfigError(f"pose cache {path} cannot be written ({err}); pass a writable --out") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_pose_cache(path: str | Path) -> PoseCache:
    """Read a pose-cache file; a missing or foreign file raises a DatasetError saying how to make one."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"pose cache {path} does not exist; create it with `vireid pose-cache DATASET_ROOT "
                           f"--format FORMAT --out {path}`")
    try:
        with np.load(path, allow_pickle=False) as data:
            cache = PoseCache(data["paths"].astype(str), data["joints"].astype(np.float32),
                              data["sizes"].astype(np.int32), data["detected"].astype(bool),
                              json.loads(str(data["meta"])))
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{path} is not a vireid pose cache ({type(err).__name__}: {err}); delete it and run "
                           "`vireid pose-cache` again") from None
    if cache.joints.shape != (len(cache), NUM_JOINTS, 3) or cache.sizes.shape != (len(cache), 2):
        raise DatasetError(f"pose cache {path} holds arrays of inconsistent shapes; delete it and run "
                           "`vireid pose-cache` again")
    return cache.sorted()


def default_pose_cache_path(root: str | Path) -> Path:
    """``<parent>/<root name>.pose.npz``: next to the dataset folder (the dataset is never written to)."""
    root = Path(os.path.abspath(root))
    return root.parent / f"{root.name}.pose.npz"


def relative_keys(paths: Iterable[str | Path], root: str | Path) -> list[str]:
    """Paths relative to ``root``, ``/``-separated (the keys of the pose cache and of synthetic joints)."""
    base = os.path.abspath(root)
    return [Path(os.path.relpath(os.path.abspath(p), base)).as_posix() for p in paths]


# ----------------------------------------------------------------------------- synthetic joints


def is_synthetic_root(root: str | Path) -> bool:
    from vireid.data.synth.generator import JOINTS_FILE

    return (Path(root) / JOINTS_FILE).is_file()


def synthetic_pose_cache(root: str | Path) -> PoseCache:
    """The generator's stored joints of a ``vireid synth`` folder as a :class:`PoseCache` (exact joints,
    every image 'detected', visibility 0/1)."""
    from vireid.data.synth.generator import JOINTS_FILE, META_FILE

    root = Path(root)
    joints_path, meta_path = root / JOINTS_FILE, root / META_FILE
    if not joints_path.is_file():
        raise DatasetError(f"{joints_path} does not exist: {root} is not a vireid synth folder; set data.joints to "
                           f"auto or to a pose cache made by `vireid pose-cache {root} --format FORMAT`")
    try:
        args = json.loads(meta_path.read_text())["arguments"]
        size = (int(args["height"]), int(args["width"]))
        with np.load(joints_path, allow_pickle=False) as data:
            paths, joints = data["paths"].astype(str), data["joints"].astype(np.float32)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"the joints of synthetic dataset {root} cannot be read ({type(err).__name__}: {err}); "
                           f"delete {root} and run vireid synth again") from None
    n = len(paths)
    meta = {"estimator": SYNTHETIC_SOURCE, "complete": True, "version": POSE_CACHE_VERSION}
    return PoseCache(paths, joints, np.tile(np.asarray(size, np.int32), (n, 1)), np.ones(n, bool), meta).sorted()


# ----------------------------------------------------------------------------- records -> joints


def resolve_joint_source(data_cfg: Any) -> tuple[str, Path]:
    """``(kind, path)`` for ``data.joints``: ``("synthetic", root)`` or ``("cache", file)``."""
    value = str(data_cfg.joints)
    root = Path(data_cfg.root)
    if value == SYNTHETIC_SOURCE:
        return SYNTHETIC_SOURCE, root
    if value == AUTO_SOURCE:
        if is_synthetic_root(root):
            return SYNTHETIC_SOURCE, root
        cache = default_pose_cache_path(root)
        if not cache.is_file():
            raise DatasetError(
                f"data.joints is auto but dataset {root} has neither synthetic joints nor a pose cache at {cache}; "
                f"create it with `vireid pose-cache {root} --format {data_cfg.format}` or set data.joints to a "
                "pose-cache file"
            )
        return "cache", cache
    path = Path(value)
    if not path.is_file():
        raise ConfigError(
            f"config key 'data.joints' is {value!r}, which is neither synthetic, auto nor an existing pose-cache "
            f"file; create one with `vireid pose-cache {root} --format {data_cfg.format} --out {value}`"
        )
    return "cache", path


def load_record_joints(records: Sequence[Any], data_cfg: Any) -> torch.Tensor:
    """Joints ``[N, 16, 3]`` (x, y, visible) of ``records`` in the pixel frame of the cached images
    (``data.height`` x ``data.width``), from the source named by ``data.joints`` (module docstring).

    Raises a DatasetError naming how many images (and the first) have no joints in the source and how
    to make the pose cache.
    """
    import torch

    kind, where = resolve_joint_source(data_cfg)
    cache = synthetic_pose_cache(where) if kind == SYNTHETIC_SOURCE else read_pose_cache(where)
    if not records:
        return torch.zeros(0, NUM_JOINTS, 3)
    keys = relative_keys([r.path for r in records], data_cfg.root)
    rows, found = cache.lookup(keys)
    if not found.all():
        missing = [k for k, ok in zip(keys, found) if not ok]
        hint = (f"run `vireid pose-cache {data_cfg.root} --format {data_cfg.format}"
                + (f" --out {where}`" if kind == "cache" else "`"))
        if kind == "cache" and not cache.meta.get("complete", False):
            hint += " again to finish it (it resumes)"
        raise DatasetError(
            f"{len(missing)} of {len(keys)} images have no joints in {where}, first {missing[0]}; {hint}"
        )
    joints = scale_joints(cache.joints[rows], cache.sizes[rows], data_cfg.height, data_cfg.width)
    return torch.from_numpy(np.ascontiguousarray(joints, dtype=np.float32))


# ----------------------------------------------------------------------------- estimators


class PoseEstimator:
    """One image (uint8 HxWx3, original size) -> ``(joints [16, 3] in its pixels, detected)``."""

    name: str = "estimator"

    def settings(self) -> dict:
        return {}

    def estimate(self, image: np.ndarray, rel_path: str) -> tuple[np.ndarray, bool]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass


class SyntheticPoseEstimator(PoseEstimator):
    """Copies the exact joints stored by ``vireid synth`` (no image is looked at)."""

    name = SYNTHETIC_SOURCE

    def __init__(self, root: str | Path) -> None:
        self.cache = synthetic_pose_cache(root)

    def estimate_many(self, rel_paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, found = self.cache.lookup(rel_paths)
        if not found.all():
            first = next(k for k, ok in zip(rel_paths, found) if not ok)
            raise DatasetError(f"synthetic joints do not cover {first}; the synth folder is incomplete, run vireid "
                               "synth again")
        return self.cache.joints[rows], self.cache.sizes[rows], self.cache.detected[rows]


class MediaPipePoseEstimator(PoseEstimator):
    """MediaPipe BlazePose (the full landmark model shipped in the ``mediapipe==0.10.21`` wheel), static
    image mode, mapped to MPII by :func:`mediapipe_to_mpii`.

    Re-id crops are small and tight (SYSU-MM01 about 110x40 after the paper-figure crops, 288x144 in the
    release); BlazePose's person detector misses most of them as they are. Each image is therefore
    letterboxed first: resized to ``target_height`` pixels high (aspect kept) and centred on a square
    mid-grey canvas with a margin of ``pad_fraction`` of that height on each side. On the 60 SYSU-MM01
    images of ``tests/data/shared/real-mini`` this raised the detection rate from 18/60 (as is) to 51/60
    (``min_detection_confidence`` 0.3), infrared included. Landmarks are mapped back to the original pixels.
    """

    name = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.3, target_height: int = 256,
                 pad_fraction: float = 0.25, fill: int = 128) -> None:
        mp_pose = self.load_module()
        import mediapipe

        self.version = str(getattr(mediapipe, "__version__", "unknown"))
        self.min_detection_confidence = float(min_detection_confidence)
        self.target_height = int(target_height)
        self.pad_fraction = float(pad_fraction)
        self.fill = int(fill)
        self._pose = mp_pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                  min_detection_confidence=self.min_detection_confidence)

    @staticmethod
    def load_module() -> Any:
        """``mediapipe.python.solutions.pose``, or a VireidError saying how to install it."""
        try:
            from mediapipe.python.solutions import pose as mp_pose
        except Exception as err:  # ImportError, or a numpy 2 / protobuf clash inside mediapipe
            raise VireidError(f"the mediapipe pose estimator cannot be loaded ({type(err).__name__}: {err}); "
                              f"{MEDIAPIPE_HINT}") from None
        return mp_pose

    def settings(self) -> dict:
        return {"mediapipe": self.version, "model_complexity": 1, "min_detection_confidence": self.min_detection_confidence,
                "target_height": self.target_height, "pad_fraction": self.pad_fraction, "fill": self.fill}

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """``(canvas, scale, x offset, y offset)``: original pixel edge ``u`` is at canvas edge ``u * scale + offset``."""
        from PIL import Image

        h, w = image.shape[:2]
        scale = self.target_height / float(h)
        new_w = max(1, int(round(w * scale)))
        resized = np.asarray(Image.fromarray(image).resize((new_w, self.target_height), Image.BILINEAR))
        side = max(int(round(self.target_height * (1 + 2 * self.pad_fraction))), new_w)
        canvas = np.full((side, side, 3), self.fill, dtype=np.uint8)
        oy, ox = (side - self.target_height) // 2, (side - new_w) // 2
        canvas[oy:oy + self.target_height, ox:ox + new_w] = resized
        return canvas, scale, float(ox), float(oy)

    def estimate(self, image: np.ndarray, rel_path: str = "") -> tuple[np.ndarray, bool]:
        canvas, scale, ox, oy = self.letterbox(image)
        result = self._pose.process(canvas)
        if result.pose_landmarks is None:
            return np.zeros((NUM_JOINTS, 3), np.float32), False
        side = canvas.shape[0]
        lm = np.asarray([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float32)
        # normalised canvas coordinates (0..1 over the edges) -> original pixels (integers = pixel centres)
        lm[:, 0] = (lm[:, 0] * side - ox) / scale - 0.5
        lm[:, 1] = (lm[:, 1] * side - oy) / scale - 0.5
        lm[:, 2] = np.clip(lm[:, 2], 0.0, 1.0)
        return mediapipe_to_mpii(lm), True

    def close(self) -> None:
        self._pose.close()


ESTIMATORS: dict[str, Callable[..., PoseEstimator]] = {
    SYNTHETIC_SOURCE: SyntheticPoseEstimator,
    "mediapipe": MediaPipePoseEstimator,
}


# ----------------------------------------------------------------------------- building a cache


@dataclass
class PoseCacheReport:
    path: Path
    images: int
    new: int
    detected: int
    seconds: float


def dataset_image_paths(root: str | Path, fmt: str, options: dict | None = None) -> list[str]:
    """Every image of the dataset (train, val, test, query, gallery), once, as absolute paths."""
    from vireid.data.datasets import build_dataset, dataset_options

    options = dict(options or {})
    if "require_train" in dataset_options(fmt):
        options.setdefault("require_train", False)  # evaluation-only copies have joints too
    dataset = build_dataset(fmt, root, **options)
    seen: dict[str, None] = {}
    for split in ("train", "val", "test", "query", "gallery"):
        for record in getattr(dataset, split, None) or []:
            seen.setdefault(os.path.abspath(record.path), None)
    if not seen:
        raise DatasetError(f"dataset {root} ({fmt}) lists no images; check the root and --format")
    return sorted(seen)


def build_pose_cache(
    root: str | Path,
    fmt: str,
    out: str | Path | None = None,
    estimator: str = AUTO_SOURCE,
    options: dict | None = None,
    estimator_options: dict | None = None,
    overwrite: bool = False,
    save_every: int = 1000,
    workers: int = 1,
    progress: bool = True,
) -> PoseCacheReport:
    """Run a pose estimator once over every image of a dataset into a pose-cache file.

    ``estimator``: ``synthetic`` (copy a synth folder's joints), ``mediapipe`` or ``auto`` (synthetic
    for synth folders, else mediapipe). The file is rewritten atomically every ``save_every`` images and
    at the end, so an interrupted run resumes where it stopped (``overwrite=True`` starts again).
    ``workers`` > 1 runs that many estimator processes on chunks of images (results kept in order).
    """
    t0 = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else default_pose_cache_path(root)
    if estimator == AUTO_SOURCE:
        estimator = SYNTHETIC_SOURCE if is_synthetic_root(root) else "mediapipe"
    if estimator not in ESTIMATORS:
        raise ConfigError(f"--estimator {estimator!r} is unknown; use {', '.join([AUTO_SOURCE, *ESTIMATORS])}")
    paths = dataset_image_paths(root, fmt, options)
    keys = relative_keys(paths, root)

    done = PoseCache.empty()
    if out.is_file() and not overwrite:
        done = read_pose_cache(out)
        if done.meta.get("estimator") != estimator:
            raise ConfigError(f"{out} was made with estimator {done.meta.get('estimator')!r}, not {estimator!r}; "
                              "pass --overwrite to replace it or choose another --out")
    if estimator == "mediapipe":
        MediaPipePoseEstimator.load_module()  # fail early, in this process, when the extra is missing
    _, found = done.lookup(keys)
    todo = [i for i, ok in enumerate(found) if not ok]
    meta: dict = {"estimator": estimator, "settings": {}, "format": fmt, "version": POSE_CACHE_VERSION}
    parts = [done]

    def flush(complete: bool) -> None:
        merged = _concat(parts, {**meta, "complete": complete})
        parts[:] = [merged]
        write_pose_cache(out, merged)

    finished = False
    try:
        if estimator == SYNTHETIC_SOURCE:  # no pixels to look at: one vectorised lookup
            est = SyntheticPoseEstimator(root)
            todo_keys = [keys[i] for i in todo]
            joints, sizes, detected = est.estimate_many(todo_keys)
            parts.append(PoseCache(np.asarray(todo_keys, dtype=str), joints, sizes, detected))
            meta["settings"] = est.settings()
        else:
            from tqdm import tqdm

            bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=f"pose ({estimator})", unit="img",
                       dynamic_ncols=True, disable=None if progress else True)
            rows: list[tuple[str, np.ndarray, tuple[int, int], bool]] = []
            since_flush = 0
            try:
                items = [(paths[i], keys[i]) for i in todo]
                for settings, chunk in _estimate_chunks(estimator, dict(estimator_options or {}), items, workers):
                    meta["settings"] = settings
                    rows += chunk
                    since_flush += len(chunk)
                    bar.update(len(chunk))
                    if since_flush >= max(int(save_every), 1):
                        parts.append(_from_rows(rows))
                        rows, since_flush = [], 0
                        flush(complete=False)
            finally:  # keep what was estimated, even when interrupted
                parts.append(_from_rows(rows))
                bar.close()
        finished = True
    finally:
        flush(complete=finished)
    cache = parts[0]
    return PoseCacheReport(out, len(cache), len(todo), int(cache.detected.sum()), time.perf_counter() - t0)


#: Images per task handed to a worker process.
_CHUNK = 32
_WORKER_ESTIMATOR: PoseEstimator | None = None


def _init_worker(name: str, options: dict) -> None:
    global _WORKER_ESTIMATOR
    _WORKER_ESTIMATOR = ESTIMATORS[name](**options)


def _run_chunk(items: Sequence[tuple[str, str]]) -> tuple[dict, list[tuple[str, np.ndarray, tuple[int, int], bool]]]:
    """Estimate the joints of ``(path, key)`` items with this process's estimator."""
    from vireid.data.images import decode_image

    est = _WORKER_ESTIMATOR
    assert est is not None, "worker estimator not initialised"
    rows = []
    for path, key in items:
        image = decode_image(path)
        joints, detected = est.estimate(image, key)
        rows.append((key, joints, (int(image.shape[0]), int(image.shape[1])), bool(detected)))
    return est.settings(), rows


def _estimate_chunks(name: str, options: dict, items: list[tuple[str, str]], workers: int):
    """Yield ``(settings, rows)`` per chunk of ``items``, in order; in this process or in ``workers``."""
    if int(workers) <= 1 or len(items) <= _CHUNK:  # in this process, one image at a time
        _init_worker(name, options)
        try:
            for item in items:
                yield _run_chunk([item])
        finally:
            global _WORKER_ESTIMATOR
            if _WORKER_ESTIMATOR is not None:
                _WORKER_ESTIMATOR.close()
                _WORKER_ESTIMATOR = None
        return
    from concurrent.futures import ProcessPoolExecutor

    chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    executor = ProcessPoolExecutor(max_workers=int(workers), initializer=_init_worker, initargs=(name, options))
    try:
        yield from executor.map(_run_chunk, chunks)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _from_rows(rows: list[tuple[str, np.ndarray, tuple[int, int], bool]]) -> PoseCache:
    if not rows:
        return PoseCache.empty()
    return PoseCache(np.asarray([r[0] for r in rows], dtype=str), np.stack([r[1] for r in rows]).astype(np.float32),
                     np.asarray([r[2] for r in rows], dtype=np.int32), np.asarray([r[3] for r in rows], dtype=bool))


def _concat(parts: list[PoseCache], meta: dict) -> PoseCache:
    parts = [p for p in parts if len(p)] or [PoseCache.empty()]
    return PoseCache(np.concatenate([p.paths.astype(str) for p in parts]), np.concatenate([p.joints for p in parts]),
                     np.concatenate([p.sizes for p in parts]), np.concatenate([p.detected for p in parts]),
                     dict(meta)).sorted()


__all__ = [
    "ESTIMATORS",
    "MEDIAPIPE_LANDMARKS",
    "MPII_JOINTS",
    "MediaPipePoseEstimator",
    "PoseCache",
    "PoseCacheReport",
    "PoseEstimator",
    "SyntheticPoseEstimator",
    "build_pose_cache",
    "dataset_image_paths",
    "default_pose_cache_path",
    "load_record_joints",
    "mediapipe_to_mpii",
    "read_pose_cache",
    "relative_keys",
    "resolve_joint_source",
    "scale_joints",
    "synthetic_pose_cache",
    "write_pose_cache",
]
