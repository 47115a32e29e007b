"""Attribute labels of synthetic images, from the identity traits (:mod:`vireid.data.synth.traits`).

Every label is a fact the renderer draws from the traits, so it is true of the image: gender, sleeve
length, the top's pattern, the bottom garment, bag, backpack, hat, hair length, and the palette colour
of the top and of the bottom, the last two for **visible** images only (an infrared camera does not
see colour: those labels are unknown on infrared images). Names and values: :data:`vireid.data.attribute_table.ATTRIBUTES`.

The generator writes them as ``attributes.csv`` (one row per image path, one column per attribute,
unknown cells empty) next to the layout; image bytes and split files are unchanged, and no random
number is drawn (the labels are a function of the traits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vireid.data.attribute_table import ATTRIBUTE_FILE, _key, attribute_csv_text, encode, mask_invisible
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.synth.cameras import NPU_CAMERAS, SYSU_CAMERAS
from vireid.data.synth.traits import IdentityTraits, sample_identity_traits

#: Colour name of each top palette entry (``traits._TOP_COLOURS``, same order): black, white, navy, grey,
#: red, blue, yellow, green, beige, brown, pink, maroon, orange, purple, teal, light blue.
TOP_COLOUR_NAMES = ("black", "white", "blue", "grey", "red", "blue", "yellow", "green", "brown", "brown", "pink",
                    "red", "orange", "purple", "blue", "blue")
#: Colour name of each bottom palette entry (``traits._BOTTOM_COLOURS``): black, dark denim, light denim,
#: grey, khaki, navy, brown, off-white, red, olive.
BOTTOM_COLOUR_NAMES = ("black", "blue", "blue", "grey", "brown", "blue", "brown", "white", "red", "green")


def trait_labels(traits: IdentityTraits) -> dict[str, str]:
    """Every attribute of identity ``traits`` as seen by a visible camera (``{name: value}``)."""
    return {
        "gender": traits.gender,
        "sleeves": "long" if traits.long_sleeves else "short",
        "top_pattern": traits.top_pattern,
        "bottom": traits.bottom_kind,
        "bag": "yes" if traits.has_bag else "no",
        "backpack": "yes" if traits.has_backpack else "no",
        "hat": "yes" if traits.has_hat else "no",
        "hair": traits.hair_length,
        "top_colour": TOP_COLOUR_NAMES[traits.top_colour_index],
        "bottom_colour": BOTTOM_COLOUR_NAMES[traits.bottom_colour_index],
    }


def image_labels(traits: IdentityTraits, modality: str) -> np.ndarray:
    """int64 ``[A]`` labels of one image of ``traits`` in ``modality`` (colours unknown on infrared)."""
    return encode(trait_labels(traits), modality)


_SYSU_PATH = re.compile(r"^cam(\d+)/(\d+)/[^/]+$")
_REGDB_PATH = re.compile(r"^(Visible|Thermal|Depth)/(\d+)/[^/]+$")
_VCM_PATH = re.compile(r"^(?:Train|Test)/(\d+)/(rgb|ir)/D\d+/[^/]+$")  # vireid.data.synth.video.frame_path


def path_identity(layout: str, rel: str) -> tuple[int, str] | None:
    """(identity, modality) of a generated image from its relative path in ``layout``; ``None`` if not one."""
    if layout == "hitsz-vcm":
        match = _VCM_PATH.match(rel)
        return None if not match else (int(match.group(1)), INFRARED if match.group(2) == "ir" else VISIBLE)
    if layout == "regdb":
        match = _REGDB_PATH.match(rel)
        if not match:
            return None
        return int(match.group(2)), VISIBLE if match.group(1) == "Visible" else INFRARED  # depth: no colour either
    match = _SYSU_PATH.match(rel)
    cameras = NPU_CAMERAS if layout == "npu-reid" else SYSU_CAMERAS
    if not match or int(match.group(1)) not in cameras:
        return None
    return int(match.group(2)), INFRARED if cameras[int(match.group(1))].is_infrared else VISIBLE


def synthetic_labels(seed: int, layout: str, rel_paths: Sequence[str]) -> np.ndarray:
    """int64 ``[N, A]`` labels of generated images (by relative path) of a dataset made with ``seed``."""
    cache: dict[int, dict[str, str]] = {}
    rows, modalities = [], []
    for rel in rel_paths:
        found = path_identity(layout, rel)
        if found is None:
            raise ValueError(f"{rel} is not an image path of the synthetic {layout} layout")
        pid, modality = found
        if pid not in cache:
            cache[pid] = trait_labels(sample_identity_traits(seed, pid))
        rows.append(encode(cache[pid]))
        modalities.append(modality)
    labels = np.stack(rows) if rows else np.zeros((0, len(encode({}))), dtype=np.int64)
    return mask_invisible(labels, modalities)


def write_attribute_file(root: str | Path, seed: int, layout: str, rel_paths: Sequence[str]) -> Path:
    """Write ``attributes.csv`` of a generated dataset (rows in ``rel_paths`` order); returns its path."""
    path = Path(root) / ATTRIBUTE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(attribute_csv_text(rel_paths, synthetic_labels(seed, layout, rel_paths)), encoding="utf-8")
    tmp.replace(path)
    return path


def synthetic_attribute_table(root: str | Path) -> dict[str, np.ndarray] | None:
    """``{absolute path: labels}`` of a complete synthetic output at ``root`` without an ``attributes.csv``
    (made before attributes existed), recomputed from its traits; ``None`` when ``root`` is not one."""
    root = Path(root).expanduser().absolute()
    try:
        meta = json.loads((root / "synth_meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != "vireid.synth" or not meta.get("complete"):
        return None
    args = meta.get("arguments") or {}
    layout = args.get("format", "sysu-mm01")
    folders = ("Visible", "Thermal", "Depth") if layout == "regdb" else tuple(p.name for p in root.glob("cam*"))
    rel_paths = sorted(p.relative_to(root).as_posix() for folder in folders for p in (root / folder).glob("*/*")
                       if p.is_file())
    rel_paths = [r for r in rel_paths if path_identity(layout, r) is not None]
    labels = synthetic_labels(int(args.get("seed", 0)), layout, rel_paths)
    return {_key(root / rel): row for rel, row in zip(rel_paths, labels)}


__all__ = ["BOTTOM_COLOUR_NAMES", "TOP_COLOUR_NAMES", "image_labels", "path_identity", "synthetic_attribute_table",
           "synthetic_labels", "trait_labels", "write_attribute_file"]
