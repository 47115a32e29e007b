"""Pose estimators: one image -> MPII joints (the synthetic copy and MediaPipe BlazePose)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.pose.mapping import NUM_JOINTS, mediapipe_to_mpii
from vireid.data.pose.synthetic import SYNTHETIC_SOURCE, synthetic_pose_cache
from vireid.errors import DatasetError, VireidError

#: How to install the optional estimator (printed when mediapipe cannot be imported).
MEDIAPIPE_HINT = (
    "install the pose extra with `pip install 'vireid[pose]'` (mediapipe==0.10.21) in an environment "
    "with numpy<2, or use --estimator synthetic for vireid synth data"
)


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


__all__ = ["ESTIMATORS", "MEDIAPIPE_HINT", "MediaPipePoseEstimator", "PoseEstimator", "SyntheticPoseEstimator"]
