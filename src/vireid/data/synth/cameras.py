"""Synthetic cameras: modality, place, lighting and background style of each camera.

The SYSU-MM01 layout is mirrored: cameras 1, 2, 4, 5 are visible, 3 and 6 infrared; 1, 2, 3 are
indoor and 4, 5, 6 outdoor. RegDB has one co-located visible/thermal pair.
Backgrounds are drawn once per camera (a template larger than the frame) and each image takes a
randomly shifted window of it, so a camera's scenes look alike without costing a full draw per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vireid.data.records import INFRARED, VISIBLE


@dataclass(frozen=True)
class CameraSpec:
    """One camera. ``gains`` is the white balance (RGB multipliers), ``brightness``/``contrast``/``gamma``
    the exposure; for infrared cameras ``background_heat`` is the mean level of the scene and
    ``blur`` (in fractions of the frame height) the optics/heat-diffusion blur."""

    camid: int
    modality: str
    indoor: bool
    style: str
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise: float = 0.01
    blur: float = 0.002
    background_heat: float = 0.3
    person_gain: float = 1.0
    front_probability: float = 0.45
    side_probability: float = 0.2

    @property
    def is_infrared(self) -> bool:
        return self.modality == INFRARED


SYSU_CAMERAS: dict[int, CameraSpec] = {
    1: CameraSpec(1, VISIBLE, True, "indoor-corridor", gains=(1.07, 1.0, 0.88), brightness=1.0, contrast=0.95,
                  gamma=1.0, noise=0.012, front_probability=0.5),
    2: CameraSpec(2, VISIBLE, True, "indoor-hall", gains=(0.95, 1.02, 1.06), brightness=0.95, contrast=0.95,
                  gamma=1.0, noise=0.015, front_probability=0.42),
    3: CameraSpec(3, INFRARED, True, "indoor-corridor", brightness=1.0, contrast=0.8, noise=0.035, blur=0.006,
                  background_heat=0.38, person_gain=1.0, front_probability=0.5),
    4: CameraSpec(4, VISIBLE, False, "outdoor-street", gains=(1.0, 1.0, 0.97), brightness=1.1, contrast=1.1,
                  gamma=0.95, noise=0.01, front_probability=0.5),
    5: CameraSpec(5, VISIBLE, False, "outdoor-campus", gains=(0.94, 0.99, 1.08), brightness=0.85, contrast=1.0,
                  gamma=1.05, noise=0.014, front_probability=0.4),
    6: CameraSpec(6, INFRARED, False, "outdoor-street", brightness=1.0, contrast=0.8, noise=0.04,
                  blur=0.008, background_heat=0.26, person_gain=1.0, front_probability=0.45),
}

#: NPU-ReID (dual-path Swin): 8 cameras installed alternately visible/thermal, 1-4 indoor, 5-8 outdoor, each
#: with its own view (no two cameras share a place, unlike SYSU-MM01's co-located pairs).
NPU_CAMERAS: dict[int, CameraSpec] = {
    1: CameraSpec(1, VISIBLE, True, "indoor-corridor", gains=(1.05, 1.0, 0.9), brightness=1.0, contrast=0.95,
                  noise=0.012, front_probability=0.55, side_probability=0.15),
    2: CameraSpec(2, INFRARED, True, "indoor-hall", brightness=1.0, contrast=0.8, noise=0.03, blur=0.005,
                  background_heat=0.36, front_probability=0.35, side_probability=0.35),
    3: CameraSpec(3, VISIBLE, True, "indoor-hall", gains=(0.95, 1.02, 1.07), brightness=0.92, contrast=0.95,
                  noise=0.015, front_probability=0.3, side_probability=0.4),
    4: CameraSpec(4, INFRARED, True, "indoor-corridor", brightness=1.0, contrast=0.85, noise=0.035, blur=0.006,
                  background_heat=0.4, front_probability=0.55, side_probability=0.15),
    5: CameraSpec(5, VISIBLE, False, "outdoor-street", gains=(1.0, 1.0, 0.96), brightness=1.1, contrast=1.1,
                  gamma=0.95, noise=0.01, front_probability=0.5, side_probability=0.2),
    6: CameraSpec(6, INFRARED, False, "outdoor-campus", brightness=1.0, contrast=0.8, noise=0.04, blur=0.008,
                  background_heat=0.25, front_probability=0.3, side_probability=0.4),
    7: CameraSpec(7, VISIBLE, False, "outdoor-campus", gains=(0.94, 0.99, 1.08), brightness=0.85, contrast=1.0,
                  gamma=1.05, noise=0.014, front_probability=0.35, side_probability=0.35),
    8: CameraSpec(8, INFRARED, False, "outdoor-street", brightness=1.0, contrast=0.8, noise=0.04, blur=0.008,
                  background_heat=0.28, front_probability=0.5, side_probability=0.2),
}

REGDB_CAMERAS: dict[str, CameraSpec] = {
    VISIBLE: CameraSpec(1, VISIBLE, False, "outdoor-campus", gains=(0.97, 1.0, 1.05), brightness=0.9,
                        contrast=0.95, noise=0.02, front_probability=0.5, side_probability=0.0),
    INFRARED: CameraSpec(2, INFRARED, False, "outdoor-campus", brightness=1.0, contrast=0.85, noise=0.03,
                         blur=0.012, background_heat=0.18, person_gain=1.05, front_probability=0.5,
                         side_probability=0.0),
}


def camera_rng(seed: int, camid: int, salt: int = 0) -> np.random.Generator:
    """Generator for a camera's fixed scene (background template)."""
    return np.random.default_rng([int(seed), 0xCA, int(camid), int(salt)])


def _scene_colours(style: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Base colours of a scene style (sRGB 0..1), jittered per camera."""
    palettes = {
        "indoor-corridor": {"wall": (0.78, 0.74, 0.66), "floor": (0.52, 0.50, 0.47), "accent": (0.45, 0.32, 0.22),
                            "detail": (0.90, 0.90, 0.88)},
        "indoor-hall": {"wall": (0.86, 0.87, 0.88), "floor": (0.42, 0.46, 0.52), "accent": (0.30, 0.38, 0.55),
                        "detail": (0.65, 0.65, 0.62)},
        "outdoor-street": {"wall": (0.62, 0.60, 0.58), "floor": (0.40, 0.40, 0.41), "accent": (0.22, 0.40, 0.18),
                           "detail": (0.70, 0.55, 0.45)},
        "outdoor-campus": {"wall": (0.70, 0.62, 0.55), "floor": (0.55, 0.52, 0.48), "accent": (0.18, 0.35, 0.15),
                           "detail": (0.35, 0.45, 0.30)},
    }
    base = palettes[style]
    return {k: np.clip(np.asarray(v) * rng.uniform(0.9, 1.1, 3), 0, 1) for k, v in base.items()}


def _draw_scene(draw: ImageDraw.ImageDraw, size: tuple[int, int], style: str, levels: dict[str, tuple],
                rng: np.random.Generator) -> None:
    """Draw the layout of a scene: wall, floor, doors/pillars or trees, with ``levels`` as fill values."""
    width, height = size
    horizon = int(height * rng.uniform(0.55, 0.7))
    draw.rectangle([0, 0, width, horizon], fill=levels["wall"])
    draw.rectangle([0, horizon, width, height], fill=levels["floor"])
    if style.startswith("indoor"):
        x = int(rng.uniform(0, width * 0.3))
        while x < width:
            w = int(width * rng.uniform(0.12, 0.25))
            top = int(horizon * rng.uniform(0.15, 0.35))
            kind = rng.random()
            fill = levels["accent"] if kind < 0.6 else levels["detail"]
            draw.rectangle([x, top, x + w, horizon], fill=fill)
            if kind < 0.6:  # a door frame
                draw.rectangle([x + w // 6, top + w // 6, x + w - w // 6, horizon], outline=levels["detail"],
                               width=max(1, w // 14))
            x += w + int(width * rng.uniform(0.15, 0.45))
        for _ in range(3):  # ceiling lights / signs
            cx, cy = rng.uniform(0, width), rng.uniform(0, horizon * 0.15)
            draw.rectangle([cx, cy, cx + width * 0.12, cy + height * 0.02], fill=levels["light"])
        draw.line([0, horizon, width, horizon], fill=levels["detail"], width=max(1, height // 120))
    else:
        for _ in range(int(rng.integers(3, 7))):  # trees / bushes
            cx, cy = rng.uniform(0, width), rng.uniform(horizon * 0.2, horizon * 0.9)
            r = rng.uniform(0.06, 0.16) * width
            draw.ellipse([cx - r, cy - r * 1.3, cx + r, cy + r * 1.3], fill=levels["accent"])
            if cy + r < horizon:  # trunk down to the ground line
                draw.rectangle([cx - r * 0.12, cy + r, cx + r * 0.12, horizon], fill=levels["detail"])
        for _ in range(int(rng.integers(1, 4))):  # kerbs / paving lines
            y = rng.uniform(horizon, height)
            draw.line([0, y, width, y + rng.uniform(-0.05, 0.05) * height], fill=levels["detail"],
                      width=max(1, height // 100))


@dataclass
class SceneTemplate:
    """A camera's background, larger than the frame: RGB for visible cameras, levels for infrared."""

    image: np.ndarray  # float32 (Ht, Wt, 3) in 0..1 (visible) or (Ht, Wt) (infrared)
    noise: np.ndarray  # float32 (Ht, Wt, 3) standard-normal bank: sensor noise / texture windows

    def window(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A randomly placed frame-sized window of the template."""
        return self._crop(self.image, rng, height, width)

    def noise_window(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """A randomly placed (H, W, 3) window of standard-normal noise (cheaper than fresh draws)."""
        return self._crop(self.noise, rng, height, width)

    @staticmethod
    def _crop(arr: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        th, tw = arr.shape[:2]
        y = int(rng.integers(0, th - height + 1))
        x = int(rng.integers(0, tw - width + 1))
        return arr[y : y + height, x : x + width]


def make_scene_template(camera: CameraSpec, seed: int, height: int, width: int) -> SceneTemplate:
    """Draw camera ``camera``'s scene once (deterministic for the seed and frame size)."""
    rng = camera_rng(seed, camera.camid, 1 if camera.is_infrared else 0)
    size = (width * 2, int(height * 1.25))
    colours = _scene_colours(camera.style, rng)
    if camera.is_infrared:
        # Heat: walls and floor cool and flat, lamps/sunlit patches warm; low contrast overall.
        base = camera.background_heat
        levels = {
            "wall": int(255 * np.clip(base + rng.uniform(-0.03, 0.05), 0, 1)),
            "floor": int(255 * np.clip(base - rng.uniform(0.02, 0.08), 0, 1)),
            "accent": int(255 * np.clip(base + rng.uniform(-0.08, 0.06), 0, 1)),
            "detail": int(255 * np.clip(base + rng.uniform(0.02, 0.12), 0, 1)),
            "light": int(255 * np.clip(base + 0.35, 0, 1)),
        }
        img = Image.new("L", size, levels["wall"])
        _draw_scene(ImageDraw.Draw(img), size, camera.style, levels, rng)
        img = img.filter(ImageFilter.GaussianBlur(radius=max(1.0, height * 0.01)))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        # smooth large-scale temperature variation
        yy = np.linspace(0.0, 1.0, arr.shape[0], dtype=np.float32)[:, None]
        arr = arr + np.float32(rng.uniform(-0.06, 0.06)) * (yy - 0.5)
        return SceneTemplate(np.clip(arr, 0.0, 1.0).astype(np.float32), _noise_bank(rng, arr.shape[:2]))
    levels = {k: tuple(int(255 * c) for c in v) for k, v in colours.items()}
    levels["light"] = (250, 250, 240)
    img = Image.new("RGB", size, levels["wall"])
    _draw_scene(ImageDraw.Draw(img), size, camera.style, levels, rng)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(0.6, height * 0.004)))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    grain = rng.normal(0.0, 0.025, arr.shape[:2]).astype(np.float32)[..., None]
    return SceneTemplate(np.clip(arr + grain, 0.0, 1.0).astype(np.float32), _noise_bank(rng, arr.shape[:2]))


def _noise_bank(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.standard_normal((*shape, 3), dtype=np.float32)
