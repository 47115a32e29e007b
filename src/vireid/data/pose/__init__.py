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

By job: :mod:`~vireid.data.pose.mapping` (MediaPipe -> MPII, scaling), :mod:`~vireid.data.pose.cache`
(pose-cache files), :mod:`~vireid.data.pose.synthetic` (the generator's joints),
:mod:`~vireid.data.pose.sources` (``data.joints`` -> joints of records), :mod:`~vireid.data.pose.estimators`
and :mod:`~vireid.data.pose.build` (``vireid pose-cache``, with its process pool). The joints reach a model as
the ``joints`` side input (:class:`vireid.data.extras.JointsExtra`).
"""

from vireid.data.pose.build import PoseCacheReport, build_pose_cache, dataset_image_paths
from vireid.data.pose.cache import (
    POSE_CACHE_VERSION,
    PoseCache,
    default_pose_cache_path,
    read_pose_cache,
    relative_keys,
    write_pose_cache,
)
from vireid.data.pose.estimators import (
    ESTIMATORS,
    MEDIAPIPE_HINT,
    MediaPipePoseEstimator,
    PoseEstimator,
    SyntheticPoseEstimator,
)
from vireid.data.pose.mapping import (
    MEDIAPIPE_DIRECT,
    MEDIAPIPE_LANDMARKS,
    MPII_JOINTS,
    NUM_JOINTS,
    UPPER_NECK_FRACTION,
    mediapipe_to_mpii,
    scale_joints,
)
from vireid.data.pose.sources import AUTO_SOURCE, load_record_joints, resolve_joint_source
from vireid.data.pose.synthetic import SYNTHETIC_SOURCE, is_synthetic_root, synthetic_pose_cache

__all__ = [
    "AUTO_SOURCE",
    "ESTIMATORS",
    "MEDIAPIPE_DIRECT",
    "MEDIAPIPE_HINT",
    "MEDIAPIPE_LANDMARKS",
    "MPII_JOINTS",
    "NUM_JOINTS",
    "POSE_CACHE_VERSION",
    "SYNTHETIC_SOURCE",
    "UPPER_NECK_FRACTION",
    "MediaPipePoseEstimator",
    "PoseCache",
    "PoseCacheReport",
    "PoseEstimator",
    "SyntheticPoseEstimator",
    "build_pose_cache",
    "dataset_image_paths",
    "default_pose_cache_path",
    "is_synthetic_root",
    "load_record_joints",
    "mediapipe_to_mpii",
    "read_pose_cache",
    "relative_keys",
    "resolve_joint_source",
    "scale_joints",
    "synthetic_pose_cache",
    "write_pose_cache",
]
