"""Synthetic faces: the book's built-in face source, drawn by our own code from 68 landmarks.

No external data: every face is sampled from a parametric model and rendered with OpenCV
primitives, so the book runs anywhere, and the landmarks are exact by construction.

How a face is made
------------------
1. **Parameters.** An identity (face outline, eye/brow/nose/mouth shapes, skin tone and texture,
   hair colour and style, iris colour, beard) and a view (head pose, expression, lighting,
   framing, background, camera finish) are drawn from seeded generators
   (:func:`sample_identity`, :func:`sample_view`).
2. **Landmarks first.** :func:`landmarks_3d` deforms a parametric 68-point template (the dlib /
   iBUG-300W layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) with the shape
   and expression parameters. Points live in *head units*: x to the image right, y down, z
   towards the camera; the jaw is about 2 units wide, the eye corners near ``y = -0.6``, the
   chin near ``y = 1``. Every point has a depth, so a 3-D rotation (yaw, pitch, roll) and an
   orthographic projection give a plausible head pose: the nose moves more than the outline.
3. **Render from the landmarks.** Face fill (the jaw closed over the skull), eyes (sclera, iris,
   pupil and lids from the eye points), brows (tapered bands along the brow points), nose
   (nostrils and wings from the nose points), lips (from the lip polygons), then ears, neck,
   hair, clothes and a defocused background, all in flat colours. Light (a lit head ellipsoid,
   intersected exactly along each camera ray, times soft shadows of eye sockets, nose, lips,
   hair and chin) and a colour tint (white balance, flushed cheeks) are drawn at a quarter of
   the resolution and upsampled; skin mottling, hair strands and sensor grain come from noise
   tiles made once from a fixed seed. A camera blur and grain finish the picture.

Speed: about 4 ms a face at 256 px on one core (``benchmarks/bench_faces.py``): everything is
OpenCV primitives on small arrays, or a few whole-image passes.

Determinism: face ``i`` of :class:`SyntheticFaces` depends only on ``(seed, identity, view)``,
never on the order of access; the same seed gives the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np

from dfattn.data.faces import Face
from dfattn.data.geometry import SUBPIXEL, SUBPIXEL_BITS

__all__ = [
    "HAIR_STYLES",
    "IdentityParams",
    "ViewParams",
    "SyntheticFaces",
    "landmarks_3d",
    "render",
    "render_face",
    "sample_identity",
    "sample_view",
]

HAIR_STYLES = ("short", "long", "bob", "bangs", "side_part", "curly", "buzz", "bald")
_HAIR_STYLE_WEIGHTS = (0.22, 0.16, 0.1, 0.1, 0.12, 0.1, 0.1, 0.1)

# Skin tones (sRGB), lightest to darkest; a face interpolates between neighbours.
_SKIN_TONES = np.array(
    [[246, 214, 192], [236, 192, 162], [224, 174, 138], [204, 150, 110], [180, 126, 88],
     [150, 100, 68], [120, 78, 52], [92, 60, 42], [68, 45, 33]],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [[20, 16, 14], [38, 28, 22], [62, 44, 30], [94, 66, 42], [136, 102, 66], [192, 158, 106],
     [146, 70, 38], [118, 114, 110], [192, 190, 184]],
    dtype=np.float64,
)
_HAIR_WEIGHTS = np.array([0.22, 0.2, 0.16, 0.12, 0.08, 0.07, 0.06, 0.05, 0.04])
_IRIS_COLOURS = np.array(
    [[74, 44, 26], [46, 30, 22], [112, 86, 46], [86, 110, 76], [80, 116, 160], [112, 124, 136]],
    dtype=np.float64,
)
_IRIS_WEIGHTS = np.array([0.34, 0.26, 0.12, 0.09, 0.12, 0.07])
_HAIR_STYLE_CUM, _HAIR_CUM, _IRIS_CUM = (
    np.cumsum(w) for w in (_HAIR_STYLE_WEIGHTS, _HAIR_WEIGHTS, _IRIS_WEIGHTS)
)

_SHIFT, _ONE = SUBPIXEL_BITS, SUBPIXEL  # fixed-point sub-pixel cv2 drawing (geometry's constant)
_AA = cv2.LINE_AA
_KERNEL3 = np.ones((3, 3), np.uint8)
Colour = tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityParams:
    """Who the face is: shape (head units, see the module docstring) and colours (RGB 0-255)."""

    face_width: float = 1.0  # half-width of the jaw at ear level
    face_length: float = 1.0  # y of the chin (point 8)
    jaw_square: float = 2.3  # superellipse exponent of the jaw: 2 round, 3 square
    chin_bump: float = 0.03  # extra drop of the chin
    eye_y: float = -0.6  # y of the eye-corner line
    eye_gap: float = 0.2  # half-distance between the inner eye corners
    eye_width: float = 0.41
    eye_height: float = 0.15  # lid opening at rest
    eye_tilt: float = 0.02  # outer corners raised by this much
    brow_gap: float = 0.3  # brow base above the eye line
    brow_arch: float = 0.1
    brow_thickness: float = 0.08
    nose_tip_y: float = -0.03
    nose_width: float = 0.21  # half-width at the wings (31, 35)
    mouth_y: float = 0.5
    mouth_width: float = 0.42  # half-width, corner to centre
    upper_lip: float = 0.1
    lower_lip: float = 0.14
    cupid: float = 0.025  # depth of the cupid's bow dip at point 51
    asymmetry: tuple[float, ...] = (0.0,) * 5  # brows (2), eyes (2), mouth corner line
    skin: Colour = (224.0, 174.0, 138.0)
    skin_texture: float = 0.025  # relative amplitude of the skin mottling
    redness: float = 0.5  # flush of cheeks and nose, 0..1
    lip_colour: Colour = (184.0, 108.0, 100.0)
    hair: Colour = (38.0, 28.0, 22.0)
    brow_colour: Colour = (38.0, 28.0, 22.0)
    hair_style: str = "short"
    hair_volume: float = 0.12
    hairline: float = -1.7  # y of the hairline at the forehead centre
    hair_part: float = 0.0  # sideways shift of the parting / fringe, -1..1
    iris: Colour = (74.0, 44.0, 26.0)
    beard: float = 0.0  # 0 none .. 1 full
    ear_size: float = 1.0


@dataclass(frozen=True)
class ViewParams:
    """How this picture is taken: pose, expression, light, framing, scene and camera."""

    yaw: float = 0.0  # degrees, + turns the nose to the image right
    pitch: float = 0.0  # degrees, + tilts the face up
    roll: float = 0.0  # degrees, in-plane
    scale: float = 0.64  # frontal jaw width / image width
    shift: tuple[float, float] = (0.0, 0.0)  # landmark-box centre offset, fraction of the image
    smile: float = 0.0  # 0..1
    mouth_open: float = 0.0  # 0..1
    eye_open: float = 1.0  # lid opening factor (0 closed)
    brow_raise: float = 0.0  # head units
    gaze: tuple[float, float] = (0.0, 0.0)  # iris offset, fraction of the eye width
    light_azimuth: float = 20.0  # degrees, + light from the image right
    light_elevation: float = 25.0  # degrees, + light from above
    ambient: float = 0.45
    exposure: float = 1.0
    white_balance: Colour = (1.0, 1.0, 1.0)  # per-channel gains
    background: tuple[Colour, ...] = ((96.0, 108.0, 120.0),) * 4  # corner colours
    clothes: Colour = (60.0, 70.0, 90.0)
    blur: float = 0.6  # camera blur sigma, pixels at 256 px
    grain: float = 2.5  # sensor noise std, grey levels
    scene_seed: int = 0  # background shapes, hair wobble, texture offsets


def _colour(c) -> Colour:
    """An RGB triple as cv2 wants it: a tuple of floats clamped to [0, 255]."""
    r, g, b = np.asarray(c, dtype=np.float64).tolist()
    return (min(max(r, 0.0), 255.0), min(max(g, 0.0), 255.0), min(max(b, 0.0), 255.0))


def _pick(rng: np.random.Generator, cumulative: np.ndarray) -> int:
    """Index drawn with the probabilities whose running sum is ``cumulative``."""
    return min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(cumulative) - 1)


# Uniform ranges of the shape parameters (head units, see IdentityParams).
_SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.93, 1.07), "face_length": (0.95, 1.17), "jaw_square": (1.9, 3.0),
    "chin_bump": (0.0, 0.07), "eye_y": (-0.66, -0.56), "eye_gap": (0.17, 0.23),
    "eye_width": (0.37, 0.46), "eye_height": (0.13, 0.19), "eye_tilt": (-0.03, 0.06),
    "brow_gap": (0.26, 0.36), "brow_arch": (0.04, 0.13), "brow_thickness": (0.06, 0.11),
    "nose_tip_y": (-0.1, 0.04), "nose_width": (0.17, 0.27), "mouth_y": (0.44, 0.56),
    "mouth_width": (0.34, 0.46), "upper_lip": (0.07, 0.12), "lower_lip": (0.1, 0.17),
    "cupid": (0.0, 0.04), "skin_texture": (0.012, 0.03), "redness": (0.0, 1.0),
    "hair_part": (-1.0, 1.0), "ear_size": (0.85, 1.15),
}
# Uniform ranges of the view parameters that need no special treatment (see ViewParams).
_VIEW_RANGES: dict[str, tuple[float, float]] = {
    "scale": (0.6, 0.74), "brow_raise": (-0.04, 0.1), "light_azimuth": (-65.0, 65.0),
    "light_elevation": (-5.0, 50.0), "ambient": (0.2, 0.5), "exposure": (0.85, 1.15),
    "blur": (0.4, 1.0), "grain": (1.5, 4.0),
}
_SHAPE_LO, _SHAPE_SPAN = (np.array(list(_SHAPE_RANGES.values())) @ [[1.0, -1.0], [0.0, 1.0]]).T
_VIEW_LO, _VIEW_SPAN = (np.array(list(_VIEW_RANGES.values())) @ [[1.0, -1.0], [0.0, 1.0]]).T
_POSE_STD = np.array([11.0, 6.0, 7.0])  # yaw, pitch, roll (degrees), clipped at 2.3 std


def _uniform(rng: np.random.Generator, lo: np.ndarray, span: np.ndarray) -> list[float]:
    return (lo + span * rng.random(len(lo))).tolist()


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw the shape and the colours of one synthetic person."""
    shape = dict(zip(_SHAPE_RANGES, _uniform(rng, _SHAPE_LO, _SHAPE_SPAN)))
    (tone, green, blue, bright, lip_shade, lipstick, lip_r, lip_g, lip_b, hair_shade, brow_shade,
     brow_pick, volume, hairline, iris_shade, beard_p, beard) = rng.random(17).tolist()
    tone *= len(_SKIN_TONES) - 1
    lo = min(int(tone), len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[lo + 1] - _SKIN_TONES[lo])
    skin = skin * np.array([1.0, 0.96 + 0.07 * green, 0.94 + 0.11 * blue]) * (0.95 + 0.1 * bright)
    lip = skin * np.array([0.84, 0.62, 0.64]) * (0.82 + 0.16 * lip_shade)
    if lipstick < 0.12:
        lip = 0.45 * lip + 0.55 * np.array([140 + 50 * lip_r, 30 + 30 * lip_g, 45 + 35 * lip_b])
    style = HAIR_STYLES[_pick(rng, _HAIR_STYLE_CUM)]
    hair = _HAIR_COLOURS[_pick(rng, _HAIR_CUM)] * (0.85 + 0.3 * hair_shade)
    if hair.mean() < 150 and style != "bald":
        brow = hair * (0.65 + 0.3 * brow_shade)
    else:  # light, grey or no hair: darker brows
        brow = _HAIR_COLOURS[int(4 * brow_pick)] * (0.8 + 0.4 * brow_shade)
    volume = 0.25 + 0.25 * volume if style == "curly" else 0.05 + 0.13 * volume
    return IdentityParams(
        **shape,
        asymmetry=tuple((0.012 * rng.standard_normal(5)).tolist()),
        skin=_colour(skin),
        lip_colour=_colour(lip),
        hair=_colour(hair),
        brow_colour=_colour(brow),
        hair_style=style,
        hair_volume=volume + 0.08 * (style in ("long", "bob")),
        hairline=-1.32 + 0.12 * hairline if style == "bangs" else -1.85 + 0.35 * hairline,
        iris=_colour(_IRIS_COLOURS[_pick(rng, _IRIS_CUM)] * (0.85 + 0.3 * iris_shade)),
        beard=0.3 + 0.7 * beard if beard_p < 0.15 else 0.0,
    )


def sample_view(rng: np.random.Generator) -> ViewParams:
    """Draw the pose, expression, lighting, framing, scene and camera of one picture."""
    plain = dict(zip(_VIEW_RANGES, _uniform(rng, _VIEW_LO, _VIEW_SPAN)))
    (smile, smile_p, mouth_open, open_p, eye_open, blink_p, grey, saturation, shift_x, shift_y,
     gaze_x, gaze_y) = rng.random(12).tolist()
    yaw, pitch, roll = (_POSE_STD * np.clip(rng.standard_normal(3), -2.3, 2.3)).tolist()
    smile = 0.2 + 0.8 * smile if smile_p < 0.5 else 0.0
    mouth_open = (0.1 + 0.9 * mouth_open) ** 1.5 if open_p < 0.35 else 0.0
    eye_open = 0.8 + 0.35 * eye_open if blink_p < 0.95 else 0.1 + 0.4 * eye_open
    grey = 60.0 + 140.0 * grey  # scene colours: a grey pulled a little towards a random hue
    base = grey + (0.1 + 0.45 * saturation) * (20.0 + 215.0 * rng.random(3) - grey)
    corners = base * (0.7 + 0.5 * rng.random((4, 1))) + 18.0 * rng.standard_normal((4, 3))
    return ViewParams(
        **plain,
        yaw=yaw, pitch=pitch, roll=roll,
        shift=(0.06 * shift_x - 0.03, 0.06 * shift_y - 0.03),
        smile=smile,
        mouth_open=mouth_open,
        eye_open=eye_open * (1.0 - 0.25 * smile),  # smiling narrows the eyes
        gaze=(0.24 * gaze_x - 0.12, 0.1 * gaze_y - 0.05),
        white_balance=_colour(1.0 + 0.04 * np.clip(rng.standard_normal(3), -3.0, 3.0)),
        background=tuple(_colour(c) for c in corners),
        clothes=_colour(15.0 + 215.0 * rng.random(3)),
        scene_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------------------------
# The parametric 68-point template
# --------------------------------------------------------------------------------------------


def _arc_resample(curve: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along a densely sampled polyline ``(K, D)``."""
    seg = np.sqrt((np.diff(curve[:, :2], axis=0) ** 2).sum(1))
    s = np.concatenate([[0.0], np.cumsum(seg)])
    pos = np.interp(np.linspace(0.0, s[-1], n), s, np.arange(len(curve)))  # fractional indices
    i = np.minimum(pos.astype(int), len(curve) - 2)
    frac = (pos - i)[:, None]
    return curve[i] * (1.0 - frac) + curve[i + 1] * frac


_JAW_T = np.linspace(0.0, math.pi, 49)
_CHIN_BUMP = np.exp(-(((_JAW_T - math.pi / 2) / 0.3) ** 2))
_BROW_F = np.linspace(0.0, 1.0, 5)


def _jaw(p: IdentityParams, v: ViewParams) -> np.ndarray:
    """Jaw 0-16: the lower half of a superellipse from ear to ear, resampled by arc length."""
    c, s = np.cos(_JAW_T), np.abs(np.sin(_JAW_T))
    e = 2.0 / p.jaw_square
    y_ear = p.eye_y - 0.04
    chin = p.face_length + 0.16 * v.mouth_open  # the jaw drops when the mouth opens
    x = -p.face_width * np.sign(c) * np.abs(c) ** e
    y = y_ear + (chin - y_ear) * s**e + p.chin_bump * _CHIN_BUMP
    z = -0.05 + 0.5 * s**1.5  # ear ends on the silhouette, chin forward
    return _arc_resample(np.stack([x, y, z], axis=1), 17)


_EYE_F = np.array([1.0, 0.68, 0.32, 0.0, 0.32, 0.68])  # 0 inner corner .. 1 outer corner
_EYE_UP = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
_EYE_LO = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
_EYE_Z = np.array([0.08, 0.22, 0.25, 0.22, 0.22, 0.16])


def _eye(p: IdentityParams, v: ViewParams, side: int, skew: float) -> np.ndarray:
    """Six eye points (``side`` -1: image-left eye 36-41, +1: image-right eye 42-47).

    iBUG order: 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid; the other
    eye mirrors it (42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower lid).
    """
    f = _EYE_F
    h = p.eye_height * v.eye_open
    x = side * (p.eye_gap + f * p.eye_width)
    line = p.eye_y + skew - f * p.eye_tilt
    # lid offsets from the corner line: the upper lid peaks nearer the inner corner, the lower
    # lid nearer the outer one
    upper = 0.58 * h * (1.0 - (2.0 * f - 0.9) ** 2)
    lower = 0.42 * h * (1.0 - (2.0 * f - 1.05) ** 2)
    y = line - _EYE_UP * upper + _EYE_LO * lower
    pts = np.stack([x, y, _EYE_Z], axis=1)
    return pts if side < 0 else pts[[3, 2, 1, 0, 5, 4]]


def _brow(p: IdentityParams, v: ViewParams, side: int, skew: float) -> np.ndarray:
    """Five brow points: 17-21 run outer to inner (image left), 22-26 inner to outer."""
    f = _BROW_F[::-1] if side < 0 else _BROW_F  # 0 inner .. 1 outer
    inner = p.eye_gap + 0.02
    outer = p.eye_gap + p.eye_width + 0.2
    x = side * (inner + f * (outer - inner))
    y = p.eye_y - p.brow_gap + skew - p.brow_arch * np.sin(math.pi * f**0.9)
    y = y + 0.08 * f**2 + 0.07 * (1.0 - f) ** 1.5  # the tail and the head sit lower
    y = y - v.brow_raise * (1.2 - 0.5 * f)
    return np.stack([x, y, 0.36 - 0.3 * f], axis=1)


def _nose(p: IdentityParams) -> np.ndarray:
    """Nose 27-35: the bridge from between the eyes down to the tip, then the base wing to wing."""
    bridge_y = np.linspace(p.eye_y - 0.01, p.nose_tip_y, 4)
    base_y = p.nose_tip_y + 0.17
    w = p.nose_width
    return np.array(
        [[0.0, bridge_y[0], 0.38], [0.0, bridge_y[1], 0.5], [0.0, bridge_y[2], 0.62],
         [0.0, bridge_y[3], 0.76],
         [-w, base_y - 0.06, 0.42], [-0.5 * w, base_y - 0.01, 0.5], [0.0, base_y, 0.55],
         [0.5 * w, base_y - 0.01, 0.5], [w, base_y - 0.06, 0.42]]
    )


# normalised abscissae of the mouth points 48-67 (corner -1 .. 1 corner)
_MOUTH_XI = np.array(
    [-1, -0.62, -0.28, 0, 0.28, 0.62, 1.0,  # 48-54 upper outer, left to right
     0.62, 0.28, 0, -0.28, -0.62,  # 55-59 lower outer, right to left
     -0.8, -0.36, 0, 0.36, 0.8,  # 60-64 upper inner
     0.36, 0, -0.36]  # 65-67 lower inner
)
# which lip profile each mouth point lies on: 0 upper outer, 1 lower outer, 2 upper inner,
# 3 lower inner, 4 the lip line (inner corners)
_MOUTH_ROLE = np.array([0] * 7 + [1] * 5 + [4] + [2] * 3 + [4] + [3] * 3)


def _mouth(p: IdentityParams, v: ViewParams, skew: float) -> np.ndarray:
    """Mouth 48-67 from lip profiles over the normalised abscissa ``xi`` in [-1, 1].

    The lip line bends up at the corners with a smile; opening moves the lower lip (and the
    jaw, in :func:`_jaw`) down and lifts the upper lip a little.
    """
    xi = _MOUTH_XI
    mw = p.mouth_width * (1.0 + 0.12 * v.smile)
    corner = p.mouth_y - 0.1 * v.smile + skew
    opening = 0.32 * v.mouth_open
    line = p.mouth_y + (corner - p.mouth_y) * xi**2
    bulge = np.clip(1.0 - xi**2, 0.0, None) ** 0.6
    upper_inner = line - 0.15 * opening * bulge
    lower_inner = line + opening * bulge
    upper_outer = upper_inner - p.upper_lip * bulge + p.cupid * np.exp(-((xi / 0.2) ** 2))
    lower_outer = lower_inner + p.lower_lip * bulge
    y = np.choose(_MOUTH_ROLE, [upper_outer, lower_outer, upper_inner, lower_inner, line])
    return np.stack([xi * mw, y, 0.34 + 0.16 * (1 - xi**2)], axis=1)


def landmarks_3d(identity: IdentityParams, view: ViewParams | None = None) -> np.ndarray:
    """The 68 iBUG points in head units, ``(68, 3)`` ``(x, y, z)``, before pose and framing."""
    v = view or ViewParams()
    a = identity.asymmetry
    return np.concatenate(
        [
            _jaw(identity, v),  # 0-16
            _brow(identity, v, -1, a[0]),  # 17-21
            _brow(identity, v, +1, a[1]),  # 22-26
            _nose(identity),  # 27-35
            _eye(identity, v, -1, a[2]),  # 36-41
            _eye(identity, v, +1, a[3]),  # 42-47
            _mouth(identity, v, a[4]),  # 48-67
        ]
    )


# --------------------------------------------------------------------------------------------
# Pose and framing
# --------------------------------------------------------------------------------------------


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``R = Rz(roll) Ry(yaw) Rx(pitch)`` from degrees (x right, y down, z towards the camera)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class _Camera:
    """Head units to pixels: rotate, project orthographically, scale, translate."""

    rotation: np.ndarray  # (3, 3)
    scale: float  # pixels per head unit
    offset: np.ndarray  # (2,) pixels

    def project(self, pts: np.ndarray) -> np.ndarray:
        return (pts @ self.rotation.T)[..., :2] * self.scale + self.offset


def _frame(lm3: np.ndarray, p: IdentityParams, v: ViewParams, size: int) -> _Camera:
    """Frame like a face detector's crop: jaw width ``v.scale`` of the image, landmark box
    centred a little below the middle; the scale shrinks until all landmarks are 3 % inside."""
    rot = _rotation(v.yaw, v.pitch, v.roll)
    xy = (lm3 @ rot.T)[:, :2]
    centre = 0.5 * (xy.min(0) + xy.max(0))
    target = np.array([0.5 + v.shift[0], 0.58 + v.shift[1]]) * size
    scale = v.scale * size / (2.0 * p.face_width)
    lo, hi = 0.03 * size, 0.97 * size - 1
    for _ in range(30):
        px = (xy - centre) * scale + target
        if px.min() >= lo and px.max() <= hi:
            break
        scale *= 0.96
    return _Camera(rot, scale, target - centre * scale)


# --------------------------------------------------------------------------------------------
# Drawing helpers and noise tiles
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _spline_matrix(k: int, n: int) -> np.ndarray:
    """``((k - 1) n + 1, k)`` matrix taking ``k`` control points to their open Catmull-Rom
    spline, ``n`` samples per segment (end tangents from reflected end points)."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    basis = 0.5 * np.hstack([-t**3 + 2 * t**2 - t, 3 * t**3 - 5 * t**2 + 2,
                             -3 * t**3 + 4 * t**2 + t, t**3 - t**2])  # (n, 4)
    extend = np.zeros((k + 2, k))  # control points with a reflected point at each end
    extend[1:-1] = np.eye(k)
    extend[0, :2] = (2.0, -1.0)
    extend[-1, -2:] = (-1.0, 2.0)
    out = np.zeros(((k - 1) * n + 1, k + 2))
    for s in range(k - 1):
        out[s * n : (s + 1) * n, s : s + 4] = basis
    out[-1, k] = 1.0
    return out @ extend


def smooth_curve(points: np.ndarray, n: int = 5) -> np.ndarray:
    """Open Catmull-Rom spline through ``points`` ``(K, 2)`` with ``n`` samples per segment."""
    return _spline_matrix(len(points), n) @ points


def _fx(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to cv2's fixed-point ``int32`` polygon."""
    return (np.asarray(pts) * _ONE + 0.5).astype(np.int32).reshape(-1, 1, 2)


def _fill(img: np.ndarray, pts: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_fx(pts)], colour, _AA, _SHIFT)


def _stroke(img: np.ndarray, pts: np.ndarray, colour, thickness: float) -> None:
    cv2.polylines(img, [_fx(pts)], False, colour, max(1, int(thickness + 0.5)), _AA, _SHIFT)


def _ellipse(img: np.ndarray, centre, axes, angle: float, colour) -> None:
    c = (int(centre[0] * _ONE + 0.5), int(centre[1] * _ONE + 0.5))
    a = (max(1, int(axes[0] * _ONE + 0.5)), max(1, int(axes[1] * _ONE + 0.5)))
    cv2.ellipse(img, c, a, angle, 0, 360, colour, -1, _AA, _SHIFT)


def _mul(colour, k: float) -> Colour:
    return _colour(np.asarray(colour) * k)


def _mix(a, b, t: float) -> Colour:
    return _colour((1.0 - t) * np.asarray(a) + t * np.asarray(b))


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))


@lru_cache(maxsize=4)
def _textures(tile: int) -> dict[str, np.ndarray]:
    """Unit-variance noise tiles, made once per tile size from a fixed seed."""
    rng = np.random.default_rng(20240611)
    pores = cv2.GaussianBlur(rng.standard_normal((tile, tile), dtype=np.float32), (0, 0), 0.8)
    blotch = cv2.resize(rng.standard_normal((tile // 12, tile // 12), dtype=np.float32),
                        (tile, tile), interpolation=cv2.INTER_CUBIC)
    skin = 0.5 * pores / pores.std() + blotch / blotch.std()
    strands = cv2.GaussianBlur(rng.standard_normal((tile, tile), dtype=np.float32), (0, 0),
                               sigmaX=0.7, sigmaY=5.0)
    return {
        "skin": skin / skin.std(),
        "strands": strands / strands.std(),
        "grain": rng.standard_normal((tile, tile, 3), dtype=np.float32),
    }


def _paste_clipped(img: np.ndarray, clip: np.ndarray, draw: Callable[[np.ndarray, np.ndarray], None]
                   ) -> None:
    """Run ``draw(layer, offset)`` on a copy of the box around polygon ``clip`` and copy it back
    only inside the polygon: irises inside the lids, teeth in the mouth. (The mask is binary:
    lid strokes and the camera blur hide its edge.)"""
    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(clip.min(0)).astype(int) - 2, 0)
    x1, y1 = np.ceil(clip.max(0)).astype(int) + 3
    x1, y1 = min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    layer = roi.copy()
    off = np.array([x0, y0], dtype=np.float64)
    draw(layer, off)
    mask = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(mask, [_fx(clip - off)], 1, cv2.LINE_8, _SHIFT)
    np.copyto(roi, layer, where=mask.view(bool)[..., None])


# --------------------------------------------------------------------------------------------
# Geometry of the whole head
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _half_turn(n: int) -> np.ndarray:
    return np.linspace(0.0, math.pi, n)


def _skull(p: IdentityParams, volume: float = 0.0, n: int = 24) -> np.ndarray:
    """Top of the head: a half ellipse from the ear on the image right, over the crown, to the
    other ear."""
    phi = _half_turn(n)
    x = (p.face_width * 1.02 + volume) * np.cos(phi)
    y = p.eye_y - 0.04 - (1.9 + volume) * np.sin(phi)
    return np.stack([x, y, np.full(n, -0.1)], axis=1)


def _hair(p: IdentityParams, rng: np.random.Generator
          ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Hair as head-unit polygons: in front of the head (a band from the hairline over the crown,
    down over the ears for long styles), behind it (falling beside the neck, ragged tips), and
    the outer outline of the crown (where flyaway strands start)."""
    style = p.hair_style
    if style == "bald":
        return None, None, None
    w, cy, vol = p.face_width, p.eye_y - 0.04, p.hair_volume
    outer = _skull(p, vol, 36)
    if style == "curly":
        bumps = rng.integers(9, 15)
        outer[:, :2] *= 1.0 + 0.035 * np.sin(_half_turn(36) * bumps + rng.uniform(0, 6))[:, None]
    hl, part = p.hairline, p.hair_part
    if style == "bangs":
        fringe = [[-0.8 * w, hl + 0.06], [0.25 * part, hl - 0.02], [0.8 * w, hl + 0.06]]
    elif style == "side_part":
        fringe = [[-0.7 * w, hl + 0.15 + 0.1 * part], [0.5 * part, hl - 0.05],
                  [0.7 * w, hl + 0.15 - 0.1 * part]]
    else:
        fringe = [[-0.68 * w, hl + 0.14], [0.0, hl], [0.68 * w, hl + 0.14]]
    long_ = style in ("long", "bob", "curly")
    side_y = cy + (0.75 if long_ else -0.12)
    side_x = w * (1.04 if long_ else 0.97)
    inner = smooth_curve(np.array([[-side_x, side_y], [-0.96 * w, cy - 0.5]] + fringe
                                  + [[0.96 * w, cy - 0.5], [side_x, side_y]]), 4)
    inner = np.hstack([inner, np.full((len(inner), 1), 0.2)])
    if long_:  # the band comes down over the ears
        ends = np.array([[w + vol + 0.12, side_y + 0.05, -0.1],
                         [-w - vol - 0.12, side_y + 0.05, -0.1]])
        front = np.concatenate([ends[:1], outer, ends[1:], inner])
    else:
        front = np.concatenate([outer, inner])
    back = None
    if long_ or (style == "side_part" and rng.random() < 0.4):
        drop = {"long": 1.6 + rng.uniform(0, 1.0), "bob": 1.0, "curly": 1.0}.get(style, 1.3)
        bw = w + vol + 0.15
        x = np.linspace(bw + 0.12, -bw - 0.12, 13)
        tips = cy + drop + 0.2 * (1 - (x / (bw + 0.12)) ** 2) + rng.uniform(-0.07, 0.07, 13)
        bottom = np.stack([x, tips, np.full(13, -0.5)], axis=1)
        back = np.concatenate([_skull(p, vol + 0.04, 16)[::-1], [[-bw, cy, -0.5]], bottom[::-1],
                               [[bw, cy, -0.5]]])
    return front, back, outer


@dataclass
class _Geometry:
    """Everything the renderer draws, in pixels."""

    lm: np.ndarray  # (68, 2)
    cam: _Camera
    face: np.ndarray  # face fill polygon (jaw, then the skull)
    hair_front: np.ndarray | None
    hair_back: np.ndarray | None
    hair_outline: np.ndarray | None  # crown outline, where flyaway strands start
    neck: np.ndarray
    shoulders: np.ndarray
    ears: list[tuple[np.ndarray, np.ndarray]]  # (centre, half-axes)
    irises: np.ndarray  # (2, 2) centres
    size: int


def _geometry(p: IdentityParams, v: ViewParams, size: int, rng: np.random.Generator) -> _Geometry:
    lm3 = landmarks_3d(p, v)
    cam = _frame(lm3, p, v, size)
    proj = cam.project
    w, cy = p.face_width, p.eye_y - 0.04
    front, back, outline = _hair(p, rng)
    neck = np.array([[-0.58 * w, 0.2, -0.3], [-0.66 * w, 3.0, -0.3], [0.66 * w, 3.0, -0.3],
                     [0.58 * w, 0.2, -0.3]])
    a = _half_turn(16)
    shoulders = np.stack([2.8 * np.cos(a), 1.5 - 0.45 * np.sin(a) ** 0.5, np.full(16, -0.6)], 1)
    shoulders = np.concatenate([shoulders, [[-2.8, 4.0, -0.6], [2.8, 4.0, -0.6]]])
    ears = [(proj(np.array([side * (w + 0.02), cy + 0.2, -0.35])),
             np.array([0.13, 0.3]) * p.ear_size * cam.scale) for side in (-1, 1)]
    irises = []
    for eye in (lm3[36:42], lm3[42:48]):
        c = 0.5 * (eye[0] + eye[3])
        ew = abs(eye[3, 0] - eye[0, 0])
        irises.append(c + np.array([v.gaze[0] * ew, v.gaze[1] * ew - 0.012, 0.05]))
    return _Geometry(
        lm=proj(lm3),
        cam=cam,
        face=proj(np.concatenate([lm3[:17], _skull(p)])),
        hair_front=None if front is None else proj(front),
        hair_back=None if back is None else proj(back),
        hair_outline=None if outline is None else proj(outline),
        neck=proj(neck),
        shoulders=proj(shoulders),
        ears=ears,
        irises=proj(np.array(irises)),
        size=size,
    )


# --------------------------------------------------------------------------------------------
# Painting the parts (full resolution, flat colours; light comes later)
# --------------------------------------------------------------------------------------------


_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _background(v: ViewParams, size: int, rng: np.random.Generator) -> np.ndarray:
    """A defocused scene: a four-corner gradient and a few soft shapes, upsampled from 1/8."""
    m = max(8, size // 8)
    low = cv2.resize(np.array(v.background, np.float32).reshape(2, 2, 3), (m, m),
                     interpolation=cv2.INTER_LINEAR)
    mean = low.reshape(-1, 3).sum(0) / (m * m)
    shapes = rng.random((int(rng.integers(0, 6)), 8))
    for r in shapes:  # r: shade, tint (3), centre (2), size (2)
        colour = _colour(mean + 90.0 * (r[0] - 0.5) + 30.0 * (r[1:4] - 0.5))
        c, d = r[4:6] * m, (0.05 + 0.4 * r[6:8]) * m
        if r[1] < 0.5:
            _ellipse(low, c, 0.5 * d, 360.0 * r[2], colour)
        else:
            _fill(low, c + d * _SQUARE, colour)
    low = cv2.GaussianBlur(low, (0, 0), 0.7)
    return cv2.resize(low.astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)


def _paint_eye(img: np.ndarray, eye: np.ndarray, iris_c: np.ndarray, p: IdentityParams,
               skin: Colour, glint: float) -> None:
    """Sclera, iris (limbal ring, pupil, catchlight) clipped to the lids, lid shadow, lid lines."""
    upper = smooth_curve(eye[[0, 1, 2, 3]], 5)
    lower = smooth_curve(eye[[3, 4, 5, 0]], 5)
    poly = np.concatenate([upper, lower[1:-1]])
    width = math.hypot(*(eye[3] - eye[0]))
    r = 0.23 * width
    th = max(1.0, 0.05 * width)
    sclera = _mix((212, 204, 198), skin, 0.3)

    def draw(layer: np.ndarray, off: np.ndarray) -> None:
        _fill(layer, poly - off, sclera)
        c = iris_c - off
        _ellipse(layer, c, (r, r), 0, _mul(p.iris, 0.5))
        _ellipse(layer, c, (0.82 * r, 0.82 * r), 0, p.iris)
        _ellipse(layer, c, (0.36 * r, 0.36 * r), 0, (14, 12, 12))
        _ellipse(layer, c + (glint * r, -0.35 * r), (0.14 * r, 0.14 * r), 0, (236, 236, 236))
        _stroke(layer, upper - off, _mul(sclera, 0.45), 2.2 * th)  # shadow of the upper lid

    _paste_clipped(img, poly, draw)
    opening = abs(eye[4, 1] - eye[2, 1])
    _stroke(img, upper[2:-2] - (0.0, 0.5 * opening + 1.0), _mul(skin, 0.8), 0.6 * th)  # crease
    _stroke(img, upper, (30, 22, 20), 1.3 * th)
    _stroke(img, lower[1:-1], _mul(skin, 0.7), 0.6 * th)


_BROW_TAPER = 1.0 - 0.65 * np.linspace(0.0, 1.0, 17)[:, None]  # thick at the inner end


def _paint_brow(img: np.ndarray, brow: np.ndarray, thickness: float, colour: Colour,
                inner_first: bool) -> None:
    """A band along the five brow points (a little more below them than above), tapering from
    the inner end to the tail."""
    c = smooth_curve(brow, 4)  # (17, 2)
    dx, dy = brow[-1] - brow[0]
    n = np.array([-dy, dx]) / math.hypot(dx, dy)
    n = n if n[1] > 0 else -n  # across the brow, pointing down the face
    th = thickness * (_BROW_TAPER if inner_first else _BROW_TAPER[::-1]) * n
    _fill(img, np.concatenate([c - 0.4 * th, (c + 0.6 * th)[::-1]]), colour)


def _paint_nose(img: np.ndarray, lm: np.ndarray, skin: Colour) -> None:
    """Nostrils beside the columella and creases around the wings."""
    w = math.hypot(*(lm[35] - lm[31]))
    for wing, mid in ((31, 32), (35, 34)):
        c = 0.55 * lm[mid] + 0.45 * lm[wing] - (0, 0.03 * w)
        _ellipse(img, c, (0.16 * w, 0.065 * w), _angle(lm[wing], lm[mid]), _mul(skin, 0.36))
        crease = np.array([lm[wing] - (0, 0.16 * w), lm[wing] + (0.02 * w * (mid - wing), 0),
                           lm[mid] + (0, 0.02 * w)])
        _stroke(img, smooth_curve(crease, 4), _mul(skin, 0.75), 0.035 * w)


def _paint_mouth(img: np.ndarray, lm: np.ndarray, p: IdentityParams, v: ViewParams) -> None:
    """Lips from the outer and inner lip polygons; an open mouth shows a dark inside and teeth."""
    upper_out = smooth_curve(lm[48:55], 4)
    lower_out = smooth_curve(lm[[54, 55, 56, 57, 58, 59, 48]], 4)
    upper_in = smooth_curve(lm[[48, 60, 61, 62, 63, 64, 54]], 4)
    lower_in = smooth_curve(lm[[54, 64, 65, 66, 67, 60, 48]], 4)
    _fill(img, np.concatenate([upper_out, lower_out[1:-1]]), p.lip_colour)
    _fill(img, np.concatenate([upper_out, upper_in[::-1][1:-1]]), _mul(p.lip_colour, 0.8))
    width = math.hypot(*(lm[54] - lm[48]))
    gap = math.hypot(*(lm[66] - lm[62]))
    if gap > 0.04 * width:
        inner = np.concatenate([upper_in, lower_in[1:-1]])
        show_teeth = v.smile > 0.2 or gap > 0.12 * width

        def draw(layer: np.ndarray, off: np.ndarray) -> None:
            _fill(layer, inner - off, (50, 18, 22))
            if show_teeth:
                teeth = np.concatenate([upper_in, upper_in[::-1] + (0, 0.45 * gap)])
                _fill(layer, teeth - off, (212, 204, 188))

        _paste_clipped(img, inner, draw)
    _stroke(img, upper_in, _mul(p.lip_colour, 0.42), 0.018 * width)
    for corner in (lm[48], lm[54]):  # the shadowed corners where the lips meet
        _ellipse(img, corner, (0.035 * width, 0.025 * width), 0, _mul(p.lip_colour, 0.5))


_STRAND_T = np.linspace(0.0, 1.0, 6)[None, :, None]


def _paint_flyaways(img: np.ndarray, outline: np.ndarray, colour: Colour, scale: float,
                    rng: np.random.Generator) -> None:
    """A few thin curved strands leaving the crown outline (breaks its cut-out look)."""
    n = int(rng.integers(6, 18))
    start = outline[rng.integers(2, len(outline) - 2, n)]
    centre = 0.5 * (outline[0] + outline[-1])
    out = start - centre
    out /= np.sqrt((out * out).sum(1, keepdims=True)) + 1e-9
    perp = np.stack([-out[:, 1], out[:, 0]], 1)
    length = (rng.uniform(0.04, 0.16, n) * scale)[:, None, None]
    bend = rng.uniform(-0.8, 0.8, n)[:, None, None]
    t = _STRAND_T
    curves = start[:, None] + length * ((t - 0.3) * out[:, None] + bend * t * t * perp[:, None])
    cv2.polylines(img, list(_fx(curves).reshape(n, -1, 1, 2)), False, colour, 1, _AA, _SHIFT)


def _beard(lm: np.ndarray) -> np.ndarray:
    """Chin, jaw and upper-lip region: along the jaw, then back over the moustache."""
    top = np.array([0.6 * lm[14] + 0.4 * lm[35], 0.5 * (lm[35] + lm[54]), 0.5 * (lm[33] + lm[51]),
                    0.5 * (lm[31] + lm[48]), 0.6 * lm[2] + 0.4 * lm[31]])
    return np.concatenate([lm[2:15], top])


# --------------------------------------------------------------------------------------------
# Light and texture (quarter resolution)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(ys, xs)`` of an ``m x m`` map."""
    ys, xs = np.mgrid[0:m, 0:m].astype(np.float32) + 0.5
    return ys, xs


@lru_cache(maxsize=8)
def _vignette(m: int) -> np.ndarray:
    """Light fall-off towards the corners of an ``m x m`` map (35 % at the far corners)."""
    ys, xs = _grid(m)
    return 1.0 - (0.35 / (m * m)) * ((xs - 0.5 * m) ** 2 + (ys - 0.5 * m) ** 2)


def _head_light(g: _Geometry, p: IdentityParams, v: ViewParams, m: int) -> np.ndarray:
    """Lambert light (with wrap) on a head ellipsoid, intersected exactly along each pixel's ray.

    The camera ray through pixel ``(u, w)`` is ``q(t) = R^T (u, w, t)`` in the head frame. The
    ellipsoid ``sum((q - c)^2 / r^2) = 1`` gives ``a t^2 + 2 b t + c' = 0``; the front root is the
    visible surface and ``R (q - c) / r^2`` its normal in the camera frame. Rays that miss it
    (neck, hair beyond the skull) take the normal of the nearest silhouette point, which keeps
    the light continuous.
    Works on ``(m, m)`` component arrays (contiguous, so numpy is fast).
    """
    ys, xs = _grid(m)
    k = m / g.size
    u = (xs / k - g.cam.offset[0]) / g.cam.scale
    w = (ys / k - g.cam.offset[1]) / g.cam.scale
    rot = g.cam.rotation
    centre = (0.0, p.eye_y + 0.25, -0.3)
    r2 = (p.face_width**2 * 1.08, 1.6**2, 0.9**2)
    q = [u * rot[0, i] + w * rot[1, i] - centre[i] for i in range(3)]  # ray origins
    d = rot[2]  # ray direction
    a = sum(d[i] * d[i] / r2[i] for i in range(3))
    b = sum(q[i] * (d[i] / r2[i]) for i in range(3))
    c = sum(q[i] * q[i] / r2[i] for i in range(3)) - 1.0
    disc = b * b - a * c
    t = (np.sqrt(np.maximum(disc, 0.0)) - b) / a
    grad = [(q[i] + t * d[i]) / r2[i] for i in range(3)]  # head-frame normal (unnormalised)
    n = [rot[j, 0] * grad[0] + rot[j, 1] * grad[1] + rot[j, 2] * grad[2] for j in range(3)]
    inv = 1.0 / (np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]) + 1e-9)
    az, el = math.radians(v.light_azimuth), math.radians(v.light_elevation)
    light = (math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el))
    wrap = 0.3
    cos = (n[0] * light[0] + n[1] * light[1] + n[2] * light[2]) * inv
    diffuse = np.clip((cos + wrap) * (1.0 / (1.0 + wrap)), 0.0, 1.0) * (0.8 + 0.2 * n[2] * inv)
    return v.ambient + (1.0 - v.ambient) * 1.3 * diffuse


def _light_and_tint(g: _Geometry, p: IdentityParams, v: ViewParams, m: int) -> np.ndarray:
    """The low-resolution ``(m, m, 3)`` float32 gain that multiplies the flat colours: head
    light times soft shadows, highlights, vignette and exposure, times a per-channel tint
    (white balance, flushed cheeks and nose, darker under-eyes, stubble). Soft by construction:
    it is upsampled."""
    k = m / g.size
    lm = g.lm * k
    s = g.cam.scale * k
    person = np.zeros((m, m), np.uint8)
    for poly in (g.neck, g.face, g.hair_front, g.hair_back):
        if poly is not None:
            _fill(person, poly * k, 255)
    # grown by a pixel, so that the soft edge of the light falls on the background
    person = cv2.dilate(person, _KERNEL3).astype(np.float32) * (1.0 / 255.0)
    # soft shadows (< 1) and highlights (> 1) that multiply the head light
    occ = np.ones((m, m), np.float32)
    jaw = lm[2:15]
    _fill(occ, np.concatenate([jaw, jaw[::-1] + (0, 0.3 * s)]), 0.62)  # under the chin
    _fill(occ, g.face * k, 1.0)
    if g.hair_front is not None:
        _fill(occ, g.hair_front * k + (0, 0.06 * s), 0.78)  # hair over the forehead
    for eye, brow in ((lm[36:42], lm[17:22]), (lm[42:48], lm[22:27])):
        ew = math.hypot(*(eye[3] - eye[0]))
        c = eye.mean(0) * 0.65 + brow.mean(0) * 0.35
        _ellipse(occ, c, (0.72 * ew, 0.42 * ew), _angle(eye[0], eye[3]), 0.74)  # eye sockets
    nw = math.hypot(*(lm[35] - lm[31]))
    away = -1.0 if v.light_azimuth > 0 else 1.0  # the nose shades the side away from the light
    bridge = lm[27:31]
    _fill(occ, np.concatenate([bridge, bridge[::-1] + (away * 0.4 * nw, 0)]),
          0.92 - 0.22 * min(1.0, abs(v.light_azimuth) / 40.0))
    _ellipse(occ, lm[33] + (0, 0.1 * nw), (0.55 * nw, 0.12 * nw), 0, 0.7)  # under the nose
    _ellipse(occ, lm[57] + (0, 0.14 * nw), (0.45 * nw, 0.12 * nw), 0, 0.8)  # under the lip
    for jaw_pt, corner in ((3, 48), (13, 54)):  # below the cheekbones
        _ellipse(occ, 0.55 * lm[jaw_pt] + 0.45 * lm[corner], (0.35 * nw, 0.6 * nw), 0, 0.93)
    if v.smile > 0.3:  # nasolabial folds
        for wing, corner in ((31, 48), (35, 54)):
            out = math.copysign(0.2 * nw, lm[wing, 0] - lm[33, 0])
            _stroke(occ, np.array([lm[wing] + (out, -0.1 * nw), lm[corner] + (0.5 * out, 0)]),
                    0.82, 1)
    _ellipse(occ, lm[30], (0.16 * nw, 0.12 * nw), 0, 1.14)  # nose tip
    _ellipse(occ, 0.5 * (lm[21] + lm[22]) - (0, 0.7 * nw), (0.6 * nw, 0.35 * nw), 0, 1.07)
    _ellipse(occ, lm[57] - (0, 0.1 * nw), (0.3 * nw, 0.05 * nw), 0, 1.12)  # lower lip
    if g.hair_outline is not None:  # sheen on the crown
        _stroke(occ, 0.9 * g.hair_outline * k + 0.1 * g.hair_outline.mean(0) * k, 1.35,
                max(1.0, 0.12 * s))
    if p.beard > 0:  # a beard darkens and roughens the skin, with soft edges
        _fill(occ, _beard(lm), 1.0 - 0.5 * p.beard)
        _fill(occ, np.concatenate([lm[48:55], lm[[54, 55, 56, 57, 58, 59, 48]]]), 1.0)
    occ = cv2.GaussianBlur(occ, (0, 0), max(0.6, m / 64))
    # the camera exposes for the face: darker skin gets more exposure, as auto-exposure would
    luma = 0.3 * p.skin[0] + 0.59 * p.skin[1] + 0.11 * p.skin[2]
    exposure = v.exposure * min(1.5, max(0.95, (150.0 / luma) ** 0.4))
    light = (1.0 + person * (_head_light(g, p, v, m) * occ - 1.0)) * (_vignette(m) * exposure)
    light = cv2.GaussianBlur(light.astype(np.float32), (3, 3), 0.7)
    wb = np.array(v.white_balance)
    tint = np.empty((m, m, 3), np.float32)
    tint[:] = wb
    flush = _colour(wb * (1.0 + p.redness * np.array([0.07, -0.05, -0.04])))
    for jaw_pt, wing in ((3, 31), (13, 35)):
        cheek = 0.45 * lm[jaw_pt] + 0.55 * lm[wing] - (0, 0.2 * nw)
        _ellipse(tint, cheek, (0.5 * nw, 0.4 * nw), 0, flush)
    _ellipse(tint, lm[30] + (0, 0.1 * nw), (0.3 * nw, 0.25 * nw), 0, flush)
    for eye in (lm[36:42], lm[42:48]):
        ew = math.hypot(*(eye[3] - eye[0]))
        _ellipse(tint, eye.mean(0) + (0, 0.3 * ew), (0.45 * ew, 0.15 * ew),
                 _angle(eye[0], eye[3]), _colour(wb * np.array([0.95, 0.93, 0.96])))
    if p.beard > 0:
        _fill(tint, _beard(lm), _colour(wb * (1.0 - p.beard * np.array([0.12, 0.1, 0.06]))))
        _fill(tint, np.concatenate([lm[48:55], lm[[54, 55, 56, 57, 58, 59, 48]]]), _colour(wb))
    tint = cv2.GaussianBlur(tint, (0, 0), max(0.6, m / 48))
    return cv2.multiply(tint, cv2.cvtColor(light, cv2.COLOR_GRAY2RGB))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def render(identity: IdentityParams, view: ViewParams, size: int = 256
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render one face: ``(image (size, size, 3) uint8 RGB, landmarks (68, 2) float32 pixels)``.

    Back to front: background, hair behind the head, clothes, neck, ears, face, brows, eyes,
    nose, mouth, hair in front; then the low-resolution light and tint, skin and hair texture,
    camera blur and grain.
    """
    if size < 32:
        raise ValueError(f"synthetic faces need size >= 32, got {size}")
    p, v = identity, view
    rng = np.random.default_rng(v.scene_seed)
    g = _geometry(p, v, size, rng)
    lm, skin = g.lm, p.skin
    img = _background(v, size, rng)
    hair = np.zeros((size, size), np.uint8)  # where hair strands show
    if g.hair_back is not None:
        _fill(img, g.hair_back, p.hair)
        _fill(hair, g.hair_back, 255)
    _fill(img, g.shoulders, v.clothes)
    _fill(hair, g.shoulders, 0)
    _fill(img, g.neck, _mul(skin, 0.9))
    for c, ax in g.ears:
        _ellipse(img, c, ax, v.roll, _mul(skin, 0.94))
        _ellipse(img, c + (0, 0.05 * ax[1]), 0.55 * ax, v.roll, _mul(skin, 0.72))
    _fill(img, g.face, skin)
    _fill(hair, g.face, 0)
    _fill(hair, g.neck, 0)
    brow_colour = _mix(skin, p.brow_colour, 0.8)
    _paint_brow(img, lm[17:22], p.brow_thickness * g.cam.scale, brow_colour, inner_first=False)
    _paint_brow(img, lm[22:27], p.brow_thickness * g.cam.scale, brow_colour, inner_first=True)
    glint = 0.35 * math.sin(math.radians(v.light_azimuth))  # catchlight towards the light
    _paint_eye(img, lm[36:42], g.irises[0], p, skin, glint)
    _paint_eye(img, lm[42:48], g.irises[1], p, skin, glint)
    _paint_nose(img, lm, skin)
    _paint_mouth(img, lm, p, v)
    if g.hair_front is not None:
        _fill(img, g.hair_front, p.hair if p.hair_style != "buzz" else _mix(skin, p.hair, 0.6))
        _fill(hair, g.hair_front, 255)
    if g.hair_outline is not None:
        _paint_flyaways(img, g.hair_outline, _mul(p.hair, 1.15), g.cam.scale, rng)

    # finish: flat colours x low-res gain x (1 + texture), camera blur, sensor grain
    m = min(96, max(16, size // 4))
    gain = cv2.resize(_light_and_tint(g, p, v, m), (size, size), interpolation=cv2.INTER_LINEAR)
    tiles = _textures(max(512, 1 << (2 * size - 1).bit_length()))
    t = tiles["skin"].shape[0] - size
    (ox, oy), (qx, qy) = rng.integers(0, t, (2, 2)).tolist()
    a = np.s_[oy : oy + size, ox : ox + size]
    b = np.s_[qy : qy + size, qx : qx + size]
    texture = cv2.multiply(hair, tiles["strands"][b], scale=0.25 / 255.0, dtype=cv2.CV_32F)
    texture = cv2.scaleAdd(tiles["skin"][a], p.skin_texture, texture + 1.0)
    gain = cv2.multiply(gain, cv2.cvtColor(texture, cv2.COLOR_GRAY2RGB))
    out = cv2.multiply(img, gain, dtype=cv2.CV_32F)
    sigma = v.blur * size / 256.0
    if sigma > 0.3:
        ksize = 2 * math.ceil(2.5 * sigma) + 1
        out = cv2.GaussianBlur(out, (ksize, ksize), sigma)
    image = cv2.addWeighted(out, 1.0, tiles["grain"][b], v.grain, 0.0, dtype=cv2.CV_8U)
    return image, lm.astype(np.float32)


def render_face(rng_or_seed: np.random.Generator | int, size: int = 256, identity: int = 0,
                name: str | None = None) -> Face:
    """Draw a person and a view from ``rng_or_seed`` and render them as a :class:`Face`.

    The sampled parameters are kept in ``face.meta`` (``"identity_params"``, ``"view_params"``).
    """
    rng = np.random.default_rng(rng_or_seed)
    p = sample_identity(rng)
    v = sample_view(rng)
    image, lm = render(p, v, size)
    return Face(image, lm, identity, name or f"synthetic/{identity}",
                meta={"identity_params": asdict(p), "view_params": asdict(v)})


class SyntheticFaces:
    """A :class:`~dfattn.data.faces.FaceSource` of ``n`` synthetic faces.

    Face ``i`` shows identity ``first_identity + i // views`` in view ``i % views``. The person
    depends only on ``(seed, identity)`` and the picture only on ``(seed, identity, view)``, so
    faces can be read in any order, by any worker, and come out byte-identical. For disjoint
    train / val / test people give each split its own ``first_identity`` range (a different
    ``seed`` also gives different people, but then identity numbers may repeat).

    Args:
        n: number of faces.
        size: square image side in pixels.
        seed: base seed.
        first_identity: identity number of face 0.
        views: pictures per identity (each with its own pose, expression, light and scene).
    """

    def __init__(self, n: int, size: int = 256, seed: int = 0, first_identity: int = 0,
                 views: int = 1):
        if n < 0 or views < 1 or size < 32:
            raise ValueError(f"need n >= 0, views >= 1, size >= 32; got {n}, {views}, {size}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.first_identity, self.views = int(first_identity), int(views)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"SyntheticFaces(n={self.n}, size={self.size}, seed={self.seed}, "
                f"first_identity={self.first_identity}, views={self.views})")

    def identity_view(self, i: int) -> tuple[int, int]:
        """``(identity, view)`` of face ``i``."""
        if not -self.n <= i < self.n:
            raise IndexError(f"face {i} out of range for {self!r}")
        i %= self.n
        return self.first_identity + i // self.views, i % self.views

    def sample(self, i: int) -> tuple[IdentityParams, ViewParams]:
        """The parameters of face ``i``."""
        identity, view = self.identity_view(i)
        p = sample_identity(np.random.default_rng([self.seed, identity, 0]))
        v = sample_view(np.random.default_rng([self.seed, identity, 1, view]))
        return p, v

    def params(self, i: int) -> dict:
        """Face ``i``'s parameters as one flat dict (identity fields, then view fields)."""
        p, v = self.sample(i)
        return {**asdict(p), **asdict(v)}

    def __getitem__(self, i: int) -> Face:
        identity, view = self.identity_view(i)
        image, lm = render(*self.sample(i), self.size)
        return Face(image, lm, identity, f"synthetic/{self.seed}/{identity}/{view}")
