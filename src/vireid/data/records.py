"""Plain records shared by every dataset reader, the generator, the loaders and the protocols.

A record is one image: where it is, whose it is, which camera took it and in which
modality. Readers return lists of records; nothing downstream parses file names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

VISIBLE = "visible"
INFRARED = "infrared"
MODALITIES = (VISIBLE, INFRARED)
#: Integer codes used in tensors (modality labels in batches, ``modality_codes``).
MODALITY_CODE = {VISIBLE: 0, INFRARED: 1}


@dataclass(frozen=True)
class ImageRecord:
    """One image.

    ``pid`` is the dataset's own identity number for query/gallery records and the
    relabelled contiguous training label (0..N-1) for training records; ``orig_pid``
    always keeps the dataset's number. ``camid`` is the dataset's camera number
    (SYSU-MM01: 1..6). ``modality`` is ``"visible"`` or ``"infrared"``.
    ``tracklet`` is the id of the tracklet (video sequence) the image is a frame of, unique within
    its dataset, or ``-1`` for a still image (every image-based dataset).
    ``description`` is the image's text description when the reader has one (a CSV manifest's
    ``description`` column), else ``None`` (descriptions may also come from a description file:
    :mod:`vireid.data.text.descriptions`).
    """

    path: str
    pid: int
    camid: int
    modality: str
    orig_pid: int = -1
    tracklet: int = -1
    description: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r} for {self.path}")
        if self.orig_pid == -1:
            object.__setattr__(self, "orig_pid", self.pid)


def relabel(records: list[ImageRecord]) -> tuple[list[ImageRecord], dict[int, int]]:
    """Map the identities of ``records`` to contiguous labels 0..N-1 (sorted by original id).

    Returns the relabelled records (``orig_pid`` keeps the original) and the mapping.
    """
    mapping = {pid: i for i, pid in enumerate(sorted({r.orig_pid for r in records}))}
    out = [replace(r, pid=mapping[r.orig_pid]) for r in records]
    return out, mapping
