"""Identity-level traits of a synthetic person: what stays the same in every image of one identity.

Two families of traits matter for cross-modality re-identification and are kept apart on purpose:

* **colour** traits (clothing, hair and skin colours) are seen only by visible cameras;
* **material** traits (``heat`` levels: how bright a garment looks to an infrared camera, from its
  thickness and emissivity) are seen only by infrared cameras and are sampled independently of colour.

Everything else (body proportions, clothing layout, patterns, accessories, hair length) is seen by
both modalities, so a model can bridge the gap only by learning those shared cues — the modality gap
that a colour-histogram matcher cannot cross.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

TOP_PATTERNS = ("plain", "horizontal-stripes", "vertical-stripes", "checks", "logo")
BOTTOM_KINDS = ("trousers", "shorts", "skirt")
LOGO_SHAPES = ("circle", "square", "triangle", "bar")
HAIR_LENGTHS = ("short", "medium", "long")

# Clothing colours (sRGB 0..1): a plausible street-wear palette; each draw is jittered.
_TOP_COLOURS = np.array(
    [
        (0.08, 0.08, 0.09), (0.92, 0.92, 0.90), (0.12, 0.16, 0.38), (0.50, 0.50, 0.52), (0.78, 0.12, 0.12),
        (0.15, 0.35, 0.75), (0.95, 0.80, 0.15), (0.18, 0.52, 0.25), (0.76, 0.68, 0.50), (0.45, 0.28, 0.15),
        (0.92, 0.55, 0.68), (0.55, 0.08, 0.18), (0.95, 0.50, 0.10), (0.45, 0.22, 0.60), (0.10, 0.55, 0.58),
        (0.55, 0.75, 0.90),
    ],
    dtype=np.float64,
)
_BOTTOM_COLOURS = np.array(
    [
        (0.08, 0.08, 0.10), (0.20, 0.30, 0.50), (0.35, 0.45, 0.65), (0.40, 0.40, 0.42), (0.72, 0.64, 0.48),
        (0.12, 0.14, 0.30), (0.40, 0.26, 0.15), (0.85, 0.85, 0.82), (0.60, 0.12, 0.15), (0.25, 0.35, 0.20),
    ],
    dtype=np.float64,
)
_BOTTOM_COLOUR_P = np.array([0.2, 0.16, 0.12, 0.1, 0.1, 0.1, 0.06, 0.06, 0.05, 0.05])
_HAIR_COLOURS = np.array(
    [(0.05, 0.04, 0.04), (0.18, 0.11, 0.06), (0.35, 0.22, 0.12), (0.75, 0.60, 0.35), (0.55, 0.53, 0.52)],
    dtype=np.float64,
)
_HAIR_COLOUR_P = np.array([0.5, 0.25, 0.12, 0.08, 0.05])
_SKIN_TONES = np.array(
    [(0.96, 0.80, 0.69), (0.88, 0.68, 0.53), (0.76, 0.57, 0.42), (0.55, 0.38, 0.26), (0.36, 0.24, 0.17)],
    dtype=np.float64,
)
_ACCESSORY_COLOURS = np.array(
    [(0.08, 0.08, 0.08), (0.35, 0.22, 0.12), (0.15, 0.20, 0.45), (0.60, 0.10, 0.12), (0.50, 0.50, 0.50),
     (0.85, 0.75, 0.30), (0.20, 0.45, 0.30)],
    dtype=np.float64,
)


@dataclass(frozen=True)
class IdentityTraits:
    """Everything that identifies one synthetic person.

    Lengths are fractions of the person's height in the image; colours are sRGB triples in 0..1;
    ``*_heat`` values are infrared brightness levels in 0..1 derived from material (thickness,
    emissivity), independent of the colours.
    """

    pid: int
    gender: str  # "male" / "female": only used for RegDB-style file names
    # body proportions
    stature: float  # fraction of the frame height the person fills at scale 1
    head: float
    shoulder: float
    hip: float
    leg: float
    build: float  # limb thickness multiplier
    # clothing layout
    top_length: float  # where the top ends, as a fraction of the thorax->pelvis span (>1: over the hips)
    long_sleeves: bool
    bottom_kind: str
    bottom_length: float  # shorts/skirt hem as a fraction of the leg length from the hip
    top_pattern: str
    pattern_period: float  # stripe/check period as a fraction of the height
    pattern_phase: float
    logo_shape: str
    logo_size: float
    # colours (visible only)
    skin_colour: tuple[float, float, float]
    hair_colour: tuple[float, float, float]
    top_colour: tuple[float, float, float]
    pattern_colour: tuple[float, float, float]
    bottom_colour: tuple[float, float, float]
    shoe_colour: tuple[float, float, float]
    bag_colour: tuple[float, float, float]
    backpack_colour: tuple[float, float, float]
    hat_colour: tuple[float, float, float]
    # materials (infrared only)
    skin_heat: float
    hair_heat: float
    top_heat: float
    pattern_heat: float
    bottom_heat: float
    shoe_heat: float
    bag_heat: float
    backpack_heat: float
    hat_heat: float
    # hair and accessories
    hair_length: str
    has_hat: bool
    has_backpack: bool
    has_bag: bool
    bag_side: int  # +1: on the person's right, -1: left
    backpack_size: float
    # palette entries of the top and bottom colours (attribute labels: vireid.data.synth.attributes)
    top_colour_index: int = -1
    bottom_colour_index: int = -1

    def to_dict(self) -> dict:
        """JSON-friendly view (for metadata and debugging)."""
        return asdict(self)


def identity_rng(seed: int, pid: int) -> np.random.Generator:
    """The generator for identity ``pid``'s traits: independent of every other identity and of the images."""
    return np.random.default_rng([int(seed), int(pid), 0x1D])


def _jitter_colour(rng: np.random.Generator, base: np.ndarray, amount: float) -> tuple[float, float, float]:
    colour = np.clip(base * rng.uniform(1 - amount, 1 + amount) + rng.normal(0.0, amount / 2, 3), 0.02, 0.98)
    return tuple(float(c) for c in colour)


def _material_heat(rng: np.random.Generator) -> float:
    """Infrared level of a fabric from thickness and emissivity: thin, emissive cloth passes body heat."""
    thickness = rng.uniform(0.0, 1.0)
    emissivity = rng.uniform(0.55, 1.0)
    return float(np.clip(0.25 + 0.7 * emissivity * (1.0 - 0.65 * thickness), 0.2, 0.92))


def sample_identity_traits(seed: int, pid: int) -> IdentityTraits:
    """Draw the traits of identity ``pid`` for generator seed ``seed`` (deterministic)."""
    rng = identity_rng(seed, pid)
    gender = "female" if rng.random() < 0.5 else "male"
    female = gender == "female"
    bottom_kind = str(rng.choice(BOTTOM_KINDS, p=[0.55, 0.2, 0.25] if female else [0.78, 0.22, 0.0]))
    bottom_length = {
        "trousers": 1.0,
        "shorts": float(rng.uniform(0.35, 0.6)),
        "skirt": float(rng.uniform(0.4, 0.85)),
    }[bottom_kind]
    hair_length = str(rng.choice(HAIR_LENGTHS, p=[0.15, 0.3, 0.55] if female else [0.75, 0.22, 0.03]))
    top_colour_idx = int(rng.integers(len(_TOP_COLOURS)))
    pattern_idx = (top_colour_idx + int(rng.integers(3, len(_TOP_COLOURS) - 2))) % len(_TOP_COLOURS)
    top_heat = _material_heat(rng)
    pattern_contrast = float(rng.uniform(0.12, 0.28)) * (1.0 if rng.random() < 0.5 else -1.0)
    pattern_heat = float(np.clip(top_heat + pattern_contrast, 0.1, 0.98))
    if abs(pattern_heat - top_heat) < 0.1:  # clipped against a bound: flip the contrast
        pattern_heat = float(np.clip(top_heat - pattern_contrast, 0.1, 0.98))
    bottom_colour_index: list[int] = []  # drawn in place below (the draw order fixes every image's bytes)

    def bottom_colour_draw() -> int:
        bottom_colour_index.append(int(rng.choice(len(_BOTTOM_COLOURS), p=_BOTTOM_COLOUR_P)))
        return bottom_colour_index[0]

    traits = IdentityTraits(
        pid=int(pid),
        gender=gender,
        stature=float(rng.uniform(0.80, 0.93)),
        head=float(rng.uniform(0.115, 0.145)),
        shoulder=float(rng.uniform(0.21, 0.28) * (0.92 if female else 1.0)),
        hip=float(rng.uniform(0.15, 0.20) * (1.08 if female else 1.0)),
        leg=float(rng.uniform(0.44, 0.51)),
        build=float(rng.uniform(0.8, 1.3)),
        top_length=float(rng.uniform(0.75, 1.2)),
        long_sleeves=bool(rng.random() < 0.5),
        bottom_kind=bottom_kind,
        bottom_length=bottom_length,
        top_pattern=str(rng.choice(TOP_PATTERNS, p=[0.32, 0.2, 0.13, 0.17, 0.18])),
        pattern_period=float(rng.uniform(0.028, 0.06)),
        pattern_phase=float(rng.uniform(0.0, 1.0)),
        logo_shape=str(rng.choice(LOGO_SHAPES)),
        logo_size=float(rng.uniform(0.05, 0.09)),
        skin_colour=_jitter_colour(rng, _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], 0.05),
        hair_colour=_jitter_colour(rng, _HAIR_COLOURS[int(rng.choice(len(_HAIR_COLOURS), p=_HAIR_COLOUR_P))], 0.08),
        top_colour=_jitter_colour(rng, _TOP_COLOURS[top_colour_idx], 0.1),
        pattern_colour=_jitter_colour(rng, _TOP_COLOURS[pattern_idx], 0.1),
        bottom_colour=_jitter_colour(rng, _BOTTOM_COLOURS[bottom_colour_draw()], 0.1),
        shoe_colour=_jitter_colour(rng, _ACCESSORY_COLOURS[int(rng.integers(len(_ACCESSORY_COLOURS)))], 0.1),
        bag_colour=_jitter_colour(rng, _ACCESSORY_COLOURS[int(rng.integers(len(_ACCESSORY_COLOURS)))], 0.1),
        backpack_colour=_jitter_colour(rng, _TOP_COLOURS[int(rng.integers(len(_TOP_COLOURS)))], 0.1),
        hat_colour=_jitter_colour(rng, _TOP_COLOURS[int(rng.integers(len(_TOP_COLOURS)))], 0.1),
        skin_heat=float(rng.uniform(0.86, 0.97)),
        hair_heat=float(rng.uniform(0.45, 0.62)),
        top_heat=top_heat,
        pattern_heat=pattern_heat,
        bottom_heat=_material_heat(rng),
        shoe_heat=float(rng.uniform(0.25, 0.45)),
        bag_heat=float(rng.uniform(0.15, 0.4)),
        backpack_heat=float(rng.uniform(0.15, 0.45)),
        hat_heat=float(rng.uniform(0.3, 0.6)),
        hair_length=hair_length,
        has_hat=bool(rng.random() < 0.18),
        has_backpack=bool(rng.random() < 0.35),
        has_bag=bool(rng.random() < 0.3),
        bag_side=1 if rng.random() < 0.5 else -1,
        backpack_size=float(rng.uniform(0.8, 1.2)),
    )
    return replace(traits, top_colour_index=top_colour_idx, bottom_colour_index=bottom_colour_index[0])
