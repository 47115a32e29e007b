"""MediaPipe BlazePose landmarks -> MPII joints, and joints of an original image -> the cached image's
pixel frame (PDFENet §3.2 takes MPII-order joints; see :mod:`vireid.data.pose`)."""

from __future__ import annotations

import numpy as np

from vireid.data.synth.render import MPII_JOINTS

NUM_JOINTS = 16

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


__all__ = ["MEDIAPIPE_DIRECT", "MEDIAPIPE_LANDMARKS", "MPII_JOINTS", "NUM_JOINTS", "UPPER_NECK_FRACTION",
           "mediapipe_to_mpii", "scale_joints"]
