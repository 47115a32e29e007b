"""Per-image text descriptions of the synthetic data (``Text/descriptions.json`` of a ``vireid synth`` output).

The text-assisted visible-infrared datasets (Tri-SYSU-MM01, Tri-RegDB, Tri-LLCM of TVI-LFM, Hu, Yang and
Ye, NeurIPS 2024) give every image a sentence about the person in a ``Text`` folder beside the images;
the infrared sentences never name a colour, since an infrared camera does not see one. This module
writes such sentences for the synthetic images, from what the generator knows:

* the identity's traits (:mod:`vireid.data.synth.traits`): gender, top (long or short sleeves, its
  pattern), bottom (trousers, shorts, skirt), bag / backpack, hat, hair length, build (limb thickness);
* the colours -- **visible images only** -- named from the traits' sRGB values by :func:`colour_name`
  (the nearest entry of a small palette, :data:`COLOUR_NAMES`);
* the gait of that image: the stride of its rendered pose, read off the image's own body joints (the
  horizontal ankle distance over the body height; :func:`stride_of`), so nothing is drawn from the
  image's generator.

The wording varies: each image draws its phrasings and clause order from a *new* generator seeded by
(seed, identity, camera, image index, :data:`DESCRIPTION_SALT`) (:func:`description_rng`), so two images
of one person rarely read alike and a model cannot match on sentence form. Writing the file changes
no image byte and no split file; a dataset made before this file existed gets it on the next
:func:`~vireid.data.synth.generator.generate_dataset` call (:func:`ensure_descriptions`).

The file is a JSON object ``{relative image path: sentence}`` (keys sorted); readers take it through
:func:`vireid.data.text.descriptions.read_description_file`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from vireid.data.synth.traits import IdentityTraits

#: Folder and file of the descriptions inside a dataset root (Tri-SYSU style: a ``Text`` folder).
TEXT_DIR = "Text"
DESCRIPTIONS_FILE = "descriptions.json"
#: Salt of :func:`description_rng`: keeps the text draws apart from every image, scene and identity stream.
DESCRIPTION_SALT = 0x7E47

#: The palette colours are named from (sRGB in 0..1), nearest by Euclidean distance.
COLOUR_NAMES: dict[str, tuple[float, float, float]] = {
    "black": (0.08, 0.08, 0.09),
    "white": (0.92, 0.92, 0.90),
    "grey": (0.48, 0.48, 0.50),
    "navy": (0.12, 0.15, 0.35),
    "blue": (0.17, 0.35, 0.72),
    "light blue": (0.50, 0.70, 0.88),
    "red": (0.78, 0.13, 0.13),
    "dark red": (0.55, 0.09, 0.17),
    "pink": (0.92, 0.56, 0.68),
    "orange": (0.95, 0.50, 0.10),
    "yellow": (0.94, 0.80, 0.16),
    "green": (0.18, 0.52, 0.25),
    "olive": (0.25, 0.35, 0.20),
    "teal": (0.10, 0.55, 0.58),
    "purple": (0.45, 0.22, 0.60),
    "brown": (0.42, 0.26, 0.15),
    "beige": (0.74, 0.66, 0.49),
}
#: Every word a colour name uses: an infrared sentence holds none of them.
COLOUR_WORDS = frozenset(word for name in COLOUR_NAMES for word in name.split()) | {"gray", "colour", "color",
                                                                                   "coloured", "colored"}

_PALETTE = np.array(list(COLOUR_NAMES.values()), dtype=np.float64)
_NAMES = list(COLOUR_NAMES)

_PATTERN = {"plain": "plain", "horizontal-stripes": "horizontally striped", "vertical-stripes": "vertically striped",
            "checks": "checked", "logo": ""}
# MPII joint indices (vireid.data.synth.render.MPII_JOINTS)
_R_ANKLE, _L_ANKLE, _HEAD_TOP = 0, 5, 9
_AN = re.compile(r"\b([Aa]) ([aeiou])")


def colour_name(rgb: Any) -> str:
    """The palette name (:data:`COLOUR_NAMES`) nearest to an sRGB triple in 0..1."""
    value = np.asarray(rgb, dtype=np.float64).reshape(3)
    return _NAMES[int(np.argmin(((_PALETTE - value) ** 2).sum(axis=1)))]


def description_rng(seed: int, pid: int, camid: int, index: int) -> np.random.Generator:
    """The generator of one image's wording: new, and independent of the image's own generator."""
    return np.random.default_rng([int(seed), int(pid), int(camid), int(index), DESCRIPTION_SALT])


def stride_of(joints: np.ndarray | None) -> float | None:
    """Horizontal ankle distance over the head-to-ankle height of one image's joints ``[16, 3]``; None when
    an ankle or the head is not visible (then no gait is described)."""
    if joints is None:
        return None
    joints = np.asarray(joints, dtype=np.float64)
    used = joints[[_R_ANKLE, _L_ANKLE, _HEAD_TOP]]
    if used.shape != (3, 3) or not bool((used[:, 2] > 0).all()):
        return None
    height = max(abs(0.5 * (used[0, 1] + used[1, 1]) - used[2, 1]), 1.0)
    return float(abs(used[0, 0] - used[1, 0]) / height)


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def describe_image(traits: IdentityTraits, infrared: bool, rng: np.random.Generator,
                   joints: np.ndarray | None = None) -> str:
    """One sentence about the person of ``traits`` as one image shows them.

    ``infrared`` leaves every colour out; ``rng`` picks the phrasings (:func:`description_rng`);
    ``joints`` (the image's ``[16, 3]`` MPII joints) give the gait."""
    def colour(rgb) -> str:
        return "" if infrared else colour_name(rgb) + " "

    man = traits.gender == "male"
    subject = _pick(rng, ("a man", "a male pedestrian", "a young man") if man
                    else ("a woman", "a female pedestrian", "a young woman"))
    sleeves = _pick(rng, ("long-sleeved", "long sleeve")) if traits.long_sleeves else _pick(rng, ("short-sleeved",
                                                                                                  "short sleeve"))
    garment = _pick(rng, ("top", "shirt")) if traits.long_sleeves else _pick(rng, ("top", "shirt", "t-shirt"))
    pattern = _PATTERN[traits.top_pattern]
    top = f"{colour(traits.top_colour)}{pattern + ' ' if pattern else ''}{sleeves} {garment}"
    if traits.top_pattern == "logo":
        top += _pick(rng, (" with a logo", " with a printed logo"))
    elif traits.top_pattern != "plain" and not infrared:
        top += f" with {colour_name(traits.pattern_colour)} " + ("checks" if traits.top_pattern == "checks"
                                                                 else "stripes")
    bottom_word = {"trousers": _pick(rng, ("trousers", "pants", "long trousers")), "shorts": "shorts",
                   "skirt": _pick(rng, ("skirt", "short skirt" if traits.bottom_length < 0.6 else "long skirt"))}
    bottom = f"{colour(traits.bottom_colour)}{bottom_word[traits.bottom_kind]}"
    clothes = _pick(rng, ("wearing a {t} and {b}", "in a {t} and {b}", "dressed in a {t} and {b}",
                          "wearing {b} and a {t}")).format(t=top, b=bottom)

    extras = []
    if traits.has_backpack:
        extras.append(_pick(rng, ("carrying a {c}backpack", "with a {c}backpack", "wearing a {c}backpack"))
                      .format(c=colour(traits.backpack_colour)))
    if traits.has_bag:
        side = "right" if traits.bag_side > 0 else "left"
        extras.append(_pick(rng, ("carrying a {c}bag", "with a {c}bag on the {s} side", "holding a {c}handbag"))
                      .format(c=colour(traits.bag_colour), s=side))
    if traits.has_hat:
        extras.append(_pick(rng, ("wearing a {c}hat", "with a {c}cap")).format(c=colour(traits.hat_colour)))
    if not (traits.has_backpack or traits.has_bag) and rng.random() < 0.5:
        extras.append(_pick(rng, ("carrying nothing", "without a bag")))

    details = []
    hair = f"{traits.hair_length} {colour(traits.hair_colour)}hair".replace("  ", " ")
    details.append(f"has {hair}" if not traits.has_hat or rng.random() < 0.5 else "")
    build = "slim" if traits.build < 0.95 else ("heavy" if traits.build > 1.15 else "medium")
    looks = {"slim": "slim", "heavy": "heavy-set", "medium": "of average size"}[build]
    details.append(_pick(rng, (f"of {build} build", f"has a {build} build", f"looks {looks}")))
    stride = stride_of(joints)
    if stride is not None:
        gait = ("walking with a long stride" if stride > 0.2 else "walking with short steps" if stride > 0.08
                else "standing with feet together")
        details.append(gait)
    if infrared and rng.random() < 0.5:  # what a thermal camera does show: how warm the top reads
        details.append("the top appears " + ("bright" if traits.top_heat > 0.6 else "dim") + " in the thermal image")
    details = [d for d in details if d]
    order = rng.permutation(len(details))
    details = [details[i] for i in order]

    head = f"{subject} {clothes}"
    if extras:
        head += ", " + ", ".join(extras)
    sentence = head + ". " + ". ".join(_capitalise(_with_subject(d, man)) for d in details) + "."
    return _capitalise(sentence)


def _with_subject(clause: str, man: bool) -> str:
    """A detail clause as a sentence about the person ("has long hair" -> "he has long hair")."""
    pronoun = "he" if man else "she"
    if clause.startswith(("has ", "looks ")):
        return f"{pronoun} {clause}"
    if clause.startswith(("of ", "walking", "standing")):
        return f"{pronoun} is {clause}"
    return clause


def _capitalise(text: str) -> str:
    text = _AN.sub(lambda m: m.group(1) + "n " + m.group(2), text)  # "a orange" -> "an orange"
    return text[:1].upper() + text[1:]


def synth_image_list(args: Any) -> list[tuple[str, int, int, int, bool]]:
    """Every described image of a synth output made with ``args`` (its :class:`SynthArguments`):
    ``(relative path, identity, camera, image index, infrared)`` in the generator's order (depth images
    are not described)."""
    from vireid.data.records import INFRARED, VISIBLE
    from vireid.data.synth.cameras import NPU_CAMERAS, REGDB_CAMERAS, SYSU_CAMERAS
    from vireid.data.synth.layouts import regdb_image_path, sysu_image_path
    from vireid.data.synth.traits import sample_identity_traits

    out = []
    for pid in range(1, int(args.ids) + 1):
        if args.format == "regdb":
            gender = sample_identity_traits(args.seed, pid).gender
            view = "front" if np.random.default_rng([args.seed, pid, 0x51DE]).random() < 0.5 else "back"
            for k in range(1, args.images_per_camera + 1):
                counter = (pid - 1) * args.images_per_camera + k
                for folder, camera in (("Visible", REGDB_CAMERAS[VISIBLE]), ("Thermal", REGDB_CAMERAS[INFRARED])):
                    out.append((regdb_image_path(folder, gender, view, counter, pid), pid, camera.camid, k,
                                camera.is_infrared))
        elif args.format == "hitsz-vcm":  # every frame of every walk (vireid.data.synth.video)
            from vireid.data.synth.video import VCM_CAMERAS, frame_path, tracklet_number, vcm_split

            if pid == 1:
                train_ids = set(vcm_split(int(args.ids), args.seed)["train"])
            frames = int(args.frames_per_tracklet)
            split = "train" if pid in train_ids else "test"
            for camid, camera in VCM_CAMERAS.items():
                for k in range(1, args.images_per_camera + 1):
                    first = (tracklet_number(camid, k, args.images_per_camera) - 1) * frames
                    for n in range(first + 1, first + frames + 1):
                        out.append((frame_path(split, pid, camid, n), pid, camid, n, camera.is_infrared))
        else:
            cameras = NPU_CAMERAS if args.format == "npu-reid" else SYSU_CAMERAS
            for camid, camera in cameras.items():
                for k in range(1, args.images_per_camera + 1):
                    out.append((sysu_image_path(camid, pid, k), pid, camid, k, camera.is_infrared))
    return out


def synth_descriptions(args: Any, joints: dict[str, np.ndarray] | None = None) -> dict[str, str]:
    """``{relative path: sentence}`` of every image of a synth output made with ``args``; ``joints``
    (``{relative path: [16, 3]}``, :func:`~vireid.data.synth.generator.load_joints`) give each image's gait."""
    from vireid.data.synth.traits import sample_identity_traits

    traits: dict[int, IdentityTraits] = {}
    out = {}
    for rel, pid, camid, k, infrared in synth_image_list(args):
        if pid not in traits:
            traits[pid] = sample_identity_traits(args.seed, pid)
        rng = description_rng(args.seed, pid, camid, k)
        out[rel] = describe_image(traits[pid], infrared, rng, None if joints is None else joints.get(rel))
    return dict(sorted(out.items()))


def write_descriptions(root: str | Path, args: Any, joints: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``Text/descriptions.json`` under ``root`` (see the module doc); returns its path."""
    folder = Path(root) / TEXT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DESCRIPTIONS_FILE
    tmp = folder / (DESCRIPTIONS_FILE + ".tmp")
    tmp.write_text(json.dumps(synth_descriptions(args, joints), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def ensure_descriptions(root: str | Path, args: Any, joints: Any) -> Path:
    """``Text/descriptions.json`` of a complete synth output, written when it is missing; ``joints`` is a
    callable returning ``{relative path: [16, 3]}`` (called only when the file is written)."""
    path = Path(root) / TEXT_DIR / DESCRIPTIONS_FILE
    if path.is_file():
        return path
    return write_descriptions(root, args, joints())


__all__ = [
    "COLOUR_NAMES",
    "COLOUR_WORDS",
    "DESCRIPTIONS_FILE",
    "DESCRIPTION_SALT",
    "TEXT_DIR",
    "colour_name",
    "describe_image",
    "description_rng",
    "ensure_descriptions",
    "stride_of",
    "synth_descriptions",
    "synth_image_list",
    "write_descriptions",
]
