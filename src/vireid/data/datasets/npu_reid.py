"""NPU-ReID reader (dual-path Swin, §3): 600 identities, 8 cameras (4 visible, 4 thermal), half indoor.

The paper describes the cameras but not a release layout, so vireid reads NPU-ReID in the
SYSU-MM01 shape, with eight camera folders::

    root/cam1 ... cam8/<identity>/<image>
    root/exp/train_id.txt, val_id.txt, test_id.txt   one line of comma-separated identity numbers

Cameras (installed alternately, half indoor, §3): 1 visible, 2 thermal, 3 visible, 4 thermal
(indoor); 5 visible, 6 thermal, 7 visible, 8 thermal (outdoor). ``vireid synth --format npu-reid``
writes this layout. Thermal images are single-channel and are repeated to three channels on
decoding (:func:`vireid.data.images.decode_image`). The paper's split "480 / 120 / 120" of 600
identities is read as 480 training identities of which 120 are held out for validation (360 + 120),
and 120 test identities; the reader itself takes whatever the split files list. The evaluation
protocols are in :mod:`vireid.evaluation.npu`.
"""

from __future__ import annotations

from vireid.data.datasets.base import DATASETS
from vireid.data.datasets.sysu_mm01 import SYSUMM01
from vireid.data.records import INFRARED, VISIBLE

#: Camera number -> modality (odd visible, even thermal).
NPU_CAMERA_MODALITY: dict[int, str] = {c: (VISIBLE if c % 2 else INFRARED) for c in range(1, 9)}
#: Indoor cameras (the others are outdoor).
NPU_INDOOR_CAMERAS = (1, 2, 3, 4)
NPU_OUTDOOR_CAMERAS = (5, 6, 7, 8)


@DATASETS.register("npu-reid")
class NPUReID(SYSUMM01):
    """NPU-ReID in vireid's layout (module docstring). Options as :class:`SYSUMM01`:
    ``train_includes_val`` (default True: train on train + val identities), ``split_dir``,
    ``require_train``."""

    name = "npu-reid"
    protocol_family = "npu"
    camera_modality = NPU_CAMERA_MODALITY


__all__ = ["NPUReID", "NPU_CAMERA_MODALITY", "NPU_INDOOR_CAMERAS", "NPU_OUTDOOR_CAMERAS"]
