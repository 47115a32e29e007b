"""Drawing one synthetic person: pose -> joints -> part-label map -> visible or infrared pixels.

The person is drawn once as a map of part labels (skin, hair, top, pattern, bottom, shoes, bag, ...)
with Pillow's C drawing routines; a modality then turns labels into pixels with one table lookup:
colours under the camera's light for visible cameras, material heat for infrared ones. Everything
per pixel is vectorised numpy; nothing loops over pixels in Python.

Joints follow the MPII order (:data:`MPII_JOINTS`) and are returned in the final image's pixel
coordinates with a visibility flag (0 when outside the frame or behind an occluder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vireid.data.synth.cameras import CameraSpec, SceneTemplate, make_scene_template
from vireid.data.synth.traits import IdentityTraits

MPII_JOINTS = (
    "r-ankle", "r-knee", "r-hip", "l-hip", "l-knee", "l-ankle", "pelvis", "thorax",
    "upper-neck", "head-top", "r-wrist", "r-elbow", "r-shoulder", "l-shoulder", "l-elbow", "l-wrist",
)

# Part labels of the label map. FAR is added to the limbs on the far side of a side view (shaded).
BACKGROUND, SKIN, HAIR, TOP, PATTERN, BOTTOM, SHOE, BAG, BACKPACK, HAT, LOGO, OCCLUDER, STRAP = range(13)
FAR = 16
N_LABELS = 32
VIEWS = ("front", "back", "left", "right")  # left/right: side views, walking towards that image side


@dataclass(frozen=True)
class PoseParams:
    """Per-image pose and framing: viewpoint, walking phase, stride, scale, placement and occluder.

    ``occluder`` is ``None`` or ``(x0, y0, x1, y1)`` in pixels (a box or pole in front of the person).
    """

    view: str
    phase: float
    stride: float
    scale: float
    center_x: float
    foot_y: float
    occluder: tuple[float, float, float, float] | None = None


@dataclass
class RenderedImage:
    """One rendered image: ``pixels`` uint8 (H, W, 3) visible or (H, W) infrared; ``joints`` float32
    (16, 3) rows ``(x, y, visible)`` in MPII order; ``labels`` the part-label map (H, W) uint8."""

    pixels: np.ndarray
    joints: np.ndarray
    labels: np.ndarray


def sample_pose(rng: np.random.Generator, camera: CameraSpec, height: int, width: int) -> PoseParams:
    """Draw a viewpoint (camera-dependent mix of front/back/side), walking phase, scale, crop jitter
    and, sometimes (about one image in eight), a box or pole occluding part of the body."""
    u = rng.random()
    if u < camera.front_probability:
        view = "front"
    elif u < camera.front_probability + camera.side_probability:
        view = "left" if rng.random() < 0.5 else "right"
    else:
        view = "back"
    occluder = None
    if rng.random() < 0.125:
        if rng.random() < 0.5:  # a box / bench / bin in front of the legs, from one side
            w = rng.uniform(0.35, 0.8) * width
            x0 = 0.0 if rng.random() < 0.5 else width - w
            occluder = (x0, rng.uniform(0.62, 0.82) * height, x0 + w, float(height))
        else:  # a pole or pillar, full height
            w = rng.uniform(0.07, 0.14) * width
            x0 = rng.uniform(0.1, 0.9) * width - w / 2
            occluder = (x0, 0.0, x0 + w, float(height))
    return PoseParams(
        view=view,
        phase=float(rng.uniform(0.0, 2 * math.pi)),
        stride=float(rng.uniform(0.5, 1.15)),
        scale=float(rng.uniform(0.9, 1.05)),
        center_x=float(width / 2 + rng.uniform(-0.08, 0.08) * width),
        foot_y=float(height * rng.uniform(0.95, 1.02)),
        occluder=occluder,
    )


@dataclass
class _Body:
    """Resolved geometry of one drawing (pixels)."""

    ph: float  # person height
    cx: float
    joints: np.ndarray  # (16, 2)
    head_top: float
    head_h: float
    head_w: float
    head_cx: float
    thorax_y: float
    pelvis_y: float
    shoulder_w: float
    hip_w: float
    depth: float  # torso width as drawn (front/back: shoulders, side: body depth)
    facing: int  # side views: +1 walking right, -1 left; 0 front/back
    right_sign: int  # image-x direction of the person's right side (front -1, back +1, side 0)


def _segment(x: float, y: float, length: float, angle: float, body_view: str, facing: int, lateral: float
             ) -> tuple[float, float]:
    """End of a limb segment of ``length`` swung ``angle`` radians forward from hanging straight down."""
    if body_view in ("left", "right"):
        return x + facing * length * math.sin(angle), y + length * math.cos(angle)
    depth_shift = 0.15 if body_view == "front" else -0.15  # towards the camera looks lower
    return x + lateral, y + length * math.cos(angle) + depth_shift * length * math.sin(angle)


def _body(traits: IdentityTraits, pose: PoseParams, height: int) -> _Body:
    ph = height * traits.stature * pose.scale
    cx, foot = pose.center_x, pose.foot_y
    view = pose.view
    facing = {"left": -1, "right": 1}.get(view, 0)
    right_sign = {"front": -1, "back": 1}.get(view, 0)
    head_h = traits.head * ph
    head_w = head_h * 0.78
    head_top = foot - ph
    upper_neck = head_top + head_h
    thorax = upper_neck + 0.045 * ph
    ankle_y = foot - 0.03 * ph
    leg_len = traits.leg * ph
    pelvis = ankle_y - leg_len
    hip_y = pelvis + 0.02 * ph
    sw, hw = traits.shoulder * ph, traits.hip * ph
    side = facing != 0
    depth = 0.55 * sw if side else sw
    head_cx = cx + facing * 0.012 * ph
    joints = np.zeros((16, 2), dtype=np.float64)
    joints[6] = (cx, pelvis)
    joints[7] = (cx, thorax)
    joints[8] = (head_cx - facing * 0.005 * ph, upper_neck)
    joints[9] = (head_cx, head_top)
    amp_leg = 0.45 * pose.stride
    amp_arm = 0.5 * pose.stride
    limb_t = 0.045 * ph * traits.build
    for name, offset, (hip_i, knee_i, ankle_i, sh_i, elb_i, wr_i) in (
        ("r", 0.0, (2, 1, 0, 12, 11, 10)),
        ("l", math.pi, (3, 4, 5, 13, 14, 15)),
    ):
        lat = right_sign if name == "r" else -right_sign
        swing = math.sin(pose.phase + offset)
        thigh_a = amp_leg * swing
        knee_flex = 0.12 + 0.6 * pose.stride * max(0.0, math.cos(pose.phase + offset))
        hip = (cx + lat * hw * 0.32, hip_y)
        knee = _segment(*hip, leg_len * 0.5, thigh_a, view, facing, lat * 0.005 * ph)
        ankle = _segment(*knee, leg_len * 0.5, thigh_a - knee_flex, view, facing, lat * 0.012 * ph)
        shoulder = (cx + lat * (sw / 2 - limb_t * 0.45), thorax + 0.01 * ph)
        arm_a = -amp_arm * swing
        elbow = _segment(*shoulder, 0.17 * ph, arm_a, view, facing, lat * limb_t * 0.3)
        wrist = _segment(*elbow, 0.15 * ph, arm_a + 0.2 + 0.35 * max(0.0, -swing) * pose.stride, view, facing,
                         lat * 0.008 * ph)
        joints[hip_i], joints[knee_i], joints[ankle_i] = hip, knee, ankle
        joints[sh_i], joints[elb_i], joints[wr_i] = shoulder, elbow, wrist
    return _Body(ph, cx, joints, head_top, head_h, head_w, head_cx, thorax, pelvis, sw, hw, depth, facing,
                 right_sign)


def _limb(draw: ImageDraw.ImageDraw, p0, p1, width: float, label: int) -> None:
    """A thick segment with round caps."""
    r = width / 2
    draw.line([tuple(p0), tuple(p1)], fill=label, width=max(1, int(round(width))))
    for x, y in (p0, p1):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=label)


def _point_along(p0, p1, t: float) -> tuple[float, float]:
    return (p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t)


def _draw_leg(draw, body: _Body, traits: IdentityTraits, hip, knee, ankle, far: int) -> None:
    ph = body.ph
    thick = 0.075 * ph * traits.build
    bare = thick * 0.78
    kind = traits.bottom_kind
    if kind == "trousers":
        _limb(draw, hip, knee, thick, BOTTOM + far)
        _limb(draw, knee, ankle, thick * 0.85, BOTTOM + far)
    else:
        _limb(draw, hip, knee, bare, SKIN + far)
        _limb(draw, knee, ankle, bare * 0.8, SKIN + far)
        if kind == "shorts":  # cloth from the hip down to the hem (fraction of the thigh+shin length)
            t = traits.bottom_length * 2.0
            end = _point_along(hip, knee, min(t, 1.0)) if t <= 1.0 else _point_along(knee, ankle, t - 1.0)
            _limb(draw, hip, end, thick * 1.05, BOTTOM + far)
    sx, sy = ankle
    fwd = body.facing * 0.035 * ph
    sh = 0.03 * ph
    draw.ellipse([sx - thick * 0.45 + min(fwd, 0), sy - sh * 0.4, sx + thick * 0.45 + max(fwd, 0), sy + sh],
                 fill=SHOE + far)


def _draw_arm(draw, body: _Body, traits: IdentityTraits, shoulder, elbow, wrist, far: int) -> None:
    ph = body.ph
    thick = 0.048 * ph * traits.build
    if traits.long_sleeves:
        _limb(draw, shoulder, elbow, thick, TOP + far)
        _limb(draw, elbow, wrist, thick * 0.85, TOP + far)
    else:
        _limb(draw, elbow, wrist, thick * 0.7, SKIN + far)
        _limb(draw, shoulder, _point_along(shoulder, elbow, 0.55), thick * 1.05, TOP + far)
        _limb(draw, _point_along(shoulder, elbow, 0.5), elbow, thick * 0.75, SKIN + far)
    r = thick * 0.42
    hx, hy = wrist[0] + body.facing * r * 0.5, wrist[1] + r * 0.6
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=SKIN + far)


def _torso_polygon(body: _Body, bottom_y: float, extra: float = 1.0) -> list[tuple[float, float]]:
    """Torso outline from the shoulders down to ``bottom_y`` (tapering from shoulders to hips)."""
    ph, cx, top = body.ph, body.cx, body.thorax_y
    span = max(body.pelvis_y - top, 1.0)
    half_top = body.depth / 2 * extra
    if body.facing:
        half_bottom = 0.55 * body.hip_w * extra
        lean = body.facing * 0.02 * ph
        t = (bottom_y - top) / span
        half_b = half_top + (half_bottom - half_top) * t
        return [(cx - half_top + lean, top - 0.01 * ph), (cx + half_top + lean, top - 0.01 * ph),
                (cx + half_b, bottom_y), (cx - half_b, bottom_y)]
    half_hip = body.hip_w / 2 * 1.08 * extra
    t = (bottom_y - top) / span
    half_b = half_top + (half_hip - half_top) * min(t, 1.0) + max(t - 1.0, 0.0) * 0.1 * ph
    return [
        (cx - half_top, top + 0.03 * ph), (cx - half_top + 0.035 * ph, top - 0.012 * ph),
        (cx + half_top - 0.035 * ph, top - 0.012 * ph), (cx + half_top, top + 0.03 * ph),
        (cx + half_b, bottom_y), (cx - half_b, bottom_y),
    ]


def _draw_head(draw, body: _Body, traits: IdentityTraits, view: str) -> None:
    ph, cx, top, hh, hw = body.ph, body.head_cx, body.head_top, body.head_h, body.head_w
    f = body.facing
    nw = hw * 0.42
    neck = [body.cx - nw / 2, top + hh * 0.8, body.cx + nw / 2, body.thorax_y + 0.01 * ph]
    head_box = [cx - hw / 2, top, cx + hw / 2, top + hh]
    hair_box = [cx - hw * 0.54, top - 0.006 * ph, cx + hw * 0.54, top + hh * 0.82]
    length = traits.hair_length
    if view == "back":
        draw.rectangle(neck, fill=SKIN)
        draw.ellipse(head_box, fill=SKIN)
        draw.ellipse(hair_box, fill=HAIR)
        if length != "short":  # hair over the neck and, when long, down the back
            drop = body.thorax_y + (0.18 * ph if length == "long" else 0.0)
            half = hw * (0.5 if length == "long" else 0.45)
            draw.polygon([(cx - hw * 0.5, top + hh * 0.4), (cx + hw * 0.5, top + hh * 0.4),
                          (cx + half, drop), (cx - half, drop)], fill=HAIR)
        return
    if view == "front":
        if length == "short":
            draw.rectangle(neck, fill=SKIN)
        if length != "short":  # hair behind the head, visible at the sides down to the shoulders
            drop = body.thorax_y + (0.08 * ph if length == "long" else -0.01 * ph)
            draw.polygon([(cx - hw * 0.56, top + hh * 0.3), (cx + hw * 0.56, top + hh * 0.3),
                          (cx + hw * 0.6, drop), (cx - hw * 0.6, drop)], fill=HAIR)
        draw.rectangle(neck, fill=SKIN)
        draw.ellipse(hair_box, fill=HAIR)
        draw.ellipse([cx - hw * 0.44, top + hh * 0.28, cx + hw * 0.44, top + hh], fill=SKIN)
        return
    # side view: hair over the top and back of the head, face towards the walking direction
    if length != "short":
        drop = body.thorax_y + (0.16 * ph if length == "long" else 0.0)
        back = cx - f * hw * 0.5
        draw.polygon([(back, top + hh * 0.3), (cx - f * hw * 0.05, top + hh * 0.4),
                      (back + f * hw * 0.2, drop), (back - f * hw * 0.15, drop)], fill=HAIR)
    draw.rectangle(neck, fill=SKIN)
    draw.ellipse(hair_box, fill=HAIR)
    fx = cx + f * hw * 0.16
    draw.ellipse([fx - hw * 0.38, top + hh * 0.3, fx + hw * 0.38, top + hh], fill=SKIN)


def _draw_hat(draw, body: _Body) -> None:
    ph, cx, top, hh, hw = body.ph, body.head_cx, body.head_top, body.head_h, body.head_w
    draw.chord([cx - hw * 0.58, top - 0.015 * ph, cx + hw * 0.58, top + hh * 0.75], 180, 360, fill=HAT)
    brim_y = top + hh * 0.33
    if body.facing:
        x0, x1 = sorted((cx, cx + body.facing * hw * 0.95))
        draw.rectangle([x0, brim_y - 0.008 * ph, x1, brim_y + 0.008 * ph], fill=HAT)
    else:
        draw.rectangle([cx - hw * 0.6, brim_y - 0.007 * ph, cx + hw * 0.6, brim_y + 0.008 * ph], fill=HAT)


def _draw_logo(draw, body: _Body, traits: IdentityTraits) -> None:
    ph = body.ph
    s = traits.logo_size * ph
    x, y = body.cx, body.thorax_y + 0.1 * ph
    if traits.logo_shape == "circle":
        draw.ellipse([x - s / 2, y - s / 2, x + s / 2, y + s / 2], fill=LOGO)
    elif traits.logo_shape == "square":
        draw.rectangle([x - s / 2, y - s / 2, x + s / 2, y + s / 2], fill=LOGO)
    elif traits.logo_shape == "triangle":
        draw.polygon([(x, y - s * 0.6), (x + s * 0.6, y + s * 0.45), (x - s * 0.6, y + s * 0.45)], fill=LOGO)
    else:  # a wide bar (text-like print)
        draw.rectangle([x - s * 0.9, y - s * 0.22, x + s * 0.9, y + s * 0.22], fill=LOGO)


def draw_part_labels(traits: IdentityTraits, pose: PoseParams, height: int, width: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Draw the person as a uint8 (H, W) part-label map; returns ``(labels, joints_xy[16, 2])``."""
    body = _body(traits, pose, height)
    j = body.joints
    ph, cx, f = body.ph, body.cx, body.facing
    view = pose.view
    img = Image.new("L", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    legs = {"r": (j[2], j[1], j[0]), "l": (j[3], j[4], j[5])}
    arms = {"r": (j[12], j[11], j[10]), "l": (j[13], j[14], j[15])}
    # In a side view the person's right side faces the camera when walking right (and left when left).
    near = "r" if f > 0 else "l"
    far_side = "l" if near == "r" else "r"
    split_y = body.thorax_y + traits.top_length * (body.pelvis_y - body.thorax_y)
    hip_bottom = body.pelvis_y + 0.05 * ph
    pack_w, pack_h = 0.55 * body.shoulder_w * traits.backpack_size, 0.27 * ph * traits.backpack_size
    bag_w, bag_h = 0.09 * ph, 0.11 * ph
    bag_lat = (body.right_sign if traits.bag_side > 0 else -body.right_sign)
    bag_x = cx + bag_lat * (body.hip_w * 0.55 + bag_w * 0.35)
    bag_top = body.pelvis_y - 0.05 * ph

    if f:  # far limbs first, shaded
        _draw_leg(draw, body, traits, *legs[far_side], far=FAR)
        _draw_arm(draw, body, traits, *arms[far_side], far=FAR)
        if traits.has_backpack:  # behind the torso, on the back side
            x_back = cx - f * body.depth * 0.45
            x0, x1 = sorted((x_back + f * 0.01 * ph, x_back - f * 0.11 * ph * traits.backpack_size))
            draw.rounded_rectangle([x0, body.thorax_y + 0.01 * ph, x1, body.thorax_y + pack_h],
                                   radius=0.02 * ph, fill=BACKPACK)
        if traits.has_bag and traits.bag_side != (1 if near == "r" else -1):
            draw.rectangle([cx - f * 0.03 * ph - bag_w / 2, bag_top, cx - f * 0.03 * ph + bag_w / 2,
                            bag_top + bag_h], fill=BAG)
        _draw_leg(draw, body, traits, *legs[near], far=0)
    else:
        for side in ("r", "l"):
            _draw_leg(draw, body, traits, *legs[side], far=0)
    # hips/waist in the bottom garment, then skirt, then the top over it
    waist_y = min(split_y, body.pelvis_y) - 0.01 * ph
    lower_edge = _torso_polygon(body, hip_bottom)[-2:]  # [(right x, y), (left x, y)] at the hip line
    upper_edge = _torso_polygon(body, waist_y, 0.98)[-2:]
    draw.polygon(lower_edge + upper_edge[::-1], fill=BOTTOM)
    if traits.bottom_kind == "skirt":
        hem = body.pelvis_y + traits.bottom_length * traits.leg * ph
        spread = abs(j[0][0] - j[5][0]) * 0.35 + 0.04 * ph * traits.bottom_length
        half_top = (0.55 if f else 0.54) * body.hip_w
        draw.polygon([(cx - half_top, body.pelvis_y - 0.03 * ph), (cx + half_top, body.pelvis_y - 0.03 * ph),
                      (cx + half_top + spread, hem), (cx - half_top - spread, hem)], fill=BOTTOM)
    draw.polygon(_torso_polygon(body, split_y), fill=TOP)
    if not f:
        if traits.has_backpack:
            if view == "back":
                draw.rounded_rectangle([cx - pack_w / 2, body.thorax_y + 0.025 * ph, cx + pack_w / 2,
                                        body.thorax_y + 0.025 * ph + pack_h], radius=0.025 * ph, fill=BACKPACK)
            else:  # straps over the shoulders
                sw = 0.02 * ph
                for s in (-1, 1):
                    x = cx + s * body.shoulder_w * 0.28
                    draw.line([(x, body.thorax_y - 0.01 * ph), (x + s * 0.005 * ph, body.thorax_y + 0.2 * ph)],
                              fill=STRAP, width=max(1, int(round(sw))))
        if traits.has_bag:  # strap across the body from the opposite shoulder, bag at the hip
            x_sh = cx - bag_lat * body.shoulder_w * 0.3
            draw.line([(x_sh, body.thorax_y), (bag_x, bag_top)], fill=STRAP, width=max(1, int(round(0.016 * ph))))
        if view == "front":
            if traits.top_pattern == "logo":
                _draw_logo(draw, body, traits)
        for side in ("r", "l"):
            _draw_arm(draw, body, traits, *arms[side], far=0)
        if traits.has_bag:
            draw.rounded_rectangle([bag_x - bag_w / 2, bag_top, bag_x + bag_w / 2, bag_top + bag_h],
                                   radius=0.01 * ph, fill=BAG)
    else:
        if traits.has_bag and traits.bag_side == (1 if near == "r" else -1):
            draw.line([(cx + f * 0.02 * ph, body.thorax_y), (cx - f * 0.01 * ph, bag_top)], fill=STRAP,
                      width=max(1, int(round(0.016 * ph))))
            draw.rectangle([cx - f * 0.01 * ph - bag_w / 2, bag_top, cx - f * 0.01 * ph + bag_w / 2,
                            bag_top + bag_h], fill=BAG)
        _draw_arm(draw, body, traits, *arms[near], far=0)
    _draw_head(draw, body, traits, view)
    if traits.has_hat:
        _draw_hat(draw, body)
    labels = np.array(img, dtype=np.uint8)
    if traits.top_pattern in ("horizontal-stripes", "vertical-stripes", "checks"):
        _apply_pattern(labels, traits, body)
    if pose.occluder is not None:
        x0, y0, x1, y1 = pose.occluder
        labels[int(max(y0, 0)) : int(min(y1, height)), int(max(x0, 0)) : int(min(x1, width))] = OCCLUDER
    return labels, j.astype(np.float32)


def _apply_pattern(labels: np.ndarray, traits: IdentityTraits, body: _Body) -> None:
    """Stripes or checks on the top garment (vectorised over the label map, in place)."""
    top = (labels == TOP) | (labels == TOP + FAR)
    if not top.any():
        return
    half = max(traits.pattern_period * body.ph / 2, 1.0)
    ys = ((np.arange(labels.shape[0]) - body.thorax_y) / half + traits.pattern_phase * 2).astype(np.int64) % 2
    xs = ((np.arange(labels.shape[1]) - body.cx) / (half * 1.2) + 100.5).astype(np.int64) % 2
    if traits.top_pattern == "horizontal-stripes":
        band = np.broadcast_to(ys[:, None] == 1, labels.shape)
    elif traits.top_pattern == "vertical-stripes":
        band = np.broadcast_to(xs[None, :] == 1, labels.shape)
    else:
        band = (ys[:, None] ^ xs[None, :]) == 1
    labels[top & band] += PATTERN - TOP


def joint_visibility(joints_xy: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 for a joint inside the frame and not covered by the occluder, else 0 (float32, shape (16,))."""
    h, w = labels.shape
    x, y = joints_xy[:, 0], joints_xy[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    xi = np.clip(np.round(x).astype(np.int64), 0, w - 1)
    yi = np.clip(np.round(y).astype(np.int64), 0, h - 1)
    return (inside & (labels[yi, xi] != OCCLUDER)).astype(np.float32)


def _visible_lut(traits: IdentityTraits, occluder_colour: np.ndarray) -> np.ndarray:
    lut = np.zeros((N_LABELS, 3), dtype=np.float32)
    lut[SKIN] = traits.skin_colour
    lut[HAIR] = traits.hair_colour
    lut[TOP] = traits.top_colour
    lut[PATTERN] = traits.pattern_colour
    lut[BOTTOM] = traits.bottom_colour
    lut[SHOE] = traits.shoe_colour
    lut[BAG] = traits.bag_colour
    lut[BACKPACK] = traits.backpack_colour
    lut[HAT] = traits.hat_colour
    lut[LOGO] = traits.pattern_colour
    lut[STRAP] = traits.backpack_colour if traits.has_backpack else traits.bag_colour
    lut[OCCLUDER] = occluder_colour
    lut[FAR : FAR + 16] = lut[:16] * 0.7
    return lut


def _infrared_lut(traits: IdentityTraits, occluder_heat: float) -> np.ndarray:
    lut = np.zeros(N_LABELS, dtype=np.float32)
    lut[SKIN] = traits.skin_heat
    lut[HAIR] = traits.hair_heat
    lut[TOP] = traits.top_heat
    lut[PATTERN] = traits.pattern_heat
    lut[BOTTOM] = traits.bottom_heat
    lut[SHOE] = traits.shoe_heat
    lut[BAG] = traits.bag_heat
    lut[BACKPACK] = traits.backpack_heat
    lut[HAT] = traits.hat_heat
    lut[LOGO] = traits.pattern_heat
    lut[STRAP] = traits.backpack_heat if traits.has_backpack else traits.bag_heat
    lut[OCCLUDER] = occluder_heat
    lut[FAR : FAR + 16] = lut[:16] * 0.92
    return lut


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


_GAMMA_TABLES: dict[float, np.ndarray] = {}


def _gamma_table(gamma: float) -> np.ndarray:
    """256-entry uint8 gamma table (cached)."""
    if gamma not in _GAMMA_TABLES:
        x = np.arange(256, dtype=np.float64) / 255.0
        _GAMMA_TABLES[gamma] = (x**gamma * 255.0 + 0.5).astype(np.uint8)
    return _GAMMA_TABLES[gamma]


def _colourise_visible(labels: np.ndarray, traits: IdentityTraits, body_cx: float, half_width: float,
                       camera: CameraSpec, scene: SceneTemplate, rng: np.random.Generator) -> np.ndarray:
    h, w = labels.shape
    background = scene.window(rng, h, w)
    occ_colour = np.clip(np.array([0.45, 0.42, 0.38]) * rng.uniform(0.6, 1.3, 3), 0, 1)
    exposure = camera.brightness * rng.uniform(0.88, 1.12)
    gains = np.asarray(camera.gains) * rng.uniform(0.96, 1.04, 3) * exposure
    texture = scene.noise_window(rng, h, w)[..., 0]
    noise = scene.noise_window(rng, h, w)
    # cylinder-like shading across the body, light from above, fabric texture
    xs = np.arange(w, dtype=np.float32)
    across = 1.0 - 0.25 * np.clip(((xs - body_cx) / max(half_width, 1.0)) ** 2, 0.0, 1.0)
    down = 1.06 - 0.12 * np.arange(h, dtype=np.float32) / h
    shade = across[None, :] * down[:, None] + texture * np.float32(0.025)
    rgb = np.take(_visible_lut(traits, occ_colour), labels, axis=0)
    rgb *= shade[..., None]
    frame = background.copy()
    np.copyto(frame, rgb, where=(labels != BACKGROUND)[..., None])
    # exposure, white balance and contrast are one affine map; gamma is a table lookup
    frame *= (gains * camera.contrast * 255.0).astype(np.float32)
    frame += noise * np.float32(camera.noise * _noise_scale(h) * 255.0) + np.float32(127.5 * (1.0 - camera.contrast))
    img8 = np.clip(frame, 0.0, 255.0).astype(np.uint8)
    if camera.gamma != 1.0:
        img8 = np.take(_gamma_table(camera.gamma), img8)
    img = Image.fromarray(img8, "RGB").filter(ImageFilter.BoxBlur(radius=max(0.3, h * 0.0018)))
    return np.asarray(img)


def _colourise_infrared(labels: np.ndarray, traits: IdentityTraits, camera: CameraSpec, scene: SceneTemplate,
                        rng: np.random.Generator) -> np.ndarray:
    h, w = labels.shape
    background = scene.window(rng, h, w)
    occ_heat = float(np.clip(camera.background_heat + rng.uniform(-0.1, 0.05), 0.0, 1.0))
    heat = np.take(_infrared_lut(traits, occ_heat) * np.float32(camera.person_gain), labels)
    heat *= (1.04 - 0.08 * np.arange(h, dtype=np.float32) / h)[:, None]  # upper body slightly warmer
    level = background.copy()
    np.copyto(level, heat, where=labels != BACKGROUND)
    img = Image.fromarray(_to_uint8(level), "L")
    img = img.filter(ImageFilter.GaussianBlur(radius=max(0.5, camera.blur * h * rng.uniform(0.8, 1.25))))
    level = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)
    mean = float(level.mean())
    contrast = camera.contrast * rng.uniform(0.9, 1.1)
    gain = camera.brightness * rng.uniform(0.9, 1.1)
    offset = rng.uniform(-0.04, 0.04)
    level = level * np.float32(contrast * gain) + np.float32((mean - mean * contrast) * gain + offset)
    noise = scene.noise_window(rng, h, w)
    sigma = camera.noise * _noise_scale(h)
    level = level * _vignette(h, w) + noise[..., 0] * np.float32(sigma)
    level += noise[:, :1, 1] * np.float32(sigma * 0.4)  # row (fixed-pattern) noise
    return _to_uint8(level)


def _noise_scale(h: int) -> float:
    """Sensor noise is specified for 288-pixel-high frames; smaller frames are downscaled captures,
    whose averaging lowers the noise."""
    return float(np.clip(h / 288.0, 0.4, 1.0))


_VIGNETTES: dict[tuple[int, int], np.ndarray] = {}


def _vignette(h: int, w: int) -> np.ndarray:
    key = (h, w)
    if key not in _VIGNETTES:
        yy = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
        xx = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
        _VIGNETTES[key] = (1.0 - 0.35 * (xx**2 + yy**2)).astype(np.float32)
    return _VIGNETTES[key]


def render_identity_image(
    traits: IdentityTraits,
    camera: CameraSpec,
    rng: np.random.Generator,
    height: int,
    width: int,
    scene: SceneTemplate | None = None,
    pose: PoseParams | None = None,
    seed: int = 0,
) -> RenderedImage:
    """Render one image of ``traits`` seen by ``camera``.

    ``rng`` drives everything per image (pose when ``pose`` is not given, exposure, noise); ``scene``
    is the camera's background template (drawn from ``seed`` when not given). Visible cameras give
    (H, W, 3) colour pixels, infrared ones (H, W) heat levels.
    """
    if scene is None:
        scene = make_scene_template(camera, seed, height, width)
    if pose is None:
        pose = sample_pose(rng, camera, height, width)
    labels, joints_xy = draw_part_labels(traits, pose, height, width)
    if camera.is_infrared:
        pixels = _colourise_infrared(labels, traits, camera, scene, rng)
    else:
        ph = height * traits.stature * pose.scale
        half = (0.3 if pose.view in ("left", "right") else 0.6) * traits.shoulder * ph
        pixels = _colourise_visible(labels, traits, pose.center_x, half, camera, scene, rng)
    joints = np.concatenate([joints_xy, joint_visibility(joints_xy, labels)[:, None]], axis=1)
    return RenderedImage(pixels=pixels, joints=joints.astype(np.float32), labels=labels)
