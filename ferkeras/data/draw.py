"""Vectorised renderer for the synthetic faces: parameters in, (B, S, S) uint8 images out.

Each expression is a mean point in a small space of facial geometry (`GEOMETRY`); every
sample adds an intensity factor, a pull towards a confusable partner expression and
Gaussian jitter, so neighbouring classes overlap (fear/surprise, disgust/anger,
sad/neutral, contempt/happy). Identity, pose, lighting, blur, sensor noise, occluders and
background clutter vary per image.

Drawing evaluates implicit shapes (ellipses, curves, bars) on a (B, S, S) grid in face
coordinates and anti-aliases them with a one-pixel linear ramp on the signed distance.
Per-sample parameters are drawn up front from one generator and sensor noise comes in
fixed blocks of `NOISE_BLOCK` samples, so the output does not depend on the chunk size.
"""

from __future__ import annotations

import numpy as np

GEOMETRY_FIELDS = (
    "brow_raise",  # + raised brows, - lowered
    "brow_slant",  # + inner ends up (sad, fear), - inner ends down (anger)
    "eye_open",  # 1 relaxed, > 1 wide, < 1 squinting
    "mouth_curve",  # + corners up (smile), - corners down
    "mouth_open",  # 0 closed .. 1 wide open
    "mouth_width",  # 1 relaxed, < 1 rounded, > 1 stretched
    "nose_wrinkle",  # 0 .. 1 wrinkle lines on the nose bridge
    "smirk",  # one-sided raise of a mouth corner
    "teeth",  # share of the mouth opening showing teeth
)

# Mean geometry per expression, in GEOMETRY_FIELDS order.
GEOMETRY = {
    "neutral": (0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
    "happy": (0.1, 0.0, 0.7, 1.0, 0.35, 1.2, 0.1, 0.0, 0.8),
    "sad": (-0.1, 0.9, 0.8, -0.7, 0.0, 0.9, 0.0, 0.0, 0.0),
    "surprise": (1.0, 0.2, 1.5, 0.0, 1.0, 0.7, 0.0, 0.0, 0.1),
    "fear": (0.7, 0.8, 1.4, -0.4, 0.5, 1.15, 0.0, 0.0, 0.4),
    "disgust": (-0.4, -0.4, 0.6, -0.6, 0.35, 1.0, 1.0, 0.0, 0.7),
    "anger": (-0.7, -1.0, 0.85, -0.3, 0.0, 0.85, 0.2, 0.0, 0.0),
    "contempt": (0.0, 0.0, 0.9, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0),
}
# Per-sample Gaussian jitter (std) of each geometry field.
JITTER = np.array([0.25, 0.3, 0.15, 0.3, 0.15, 0.1, 0.2, 0.25, 0.2], np.float32)
# Each expression is pulled by a random share towards its partner.
PARTNER = {
    "neutral": "sad",
    "happy": "contempt",
    "sad": "neutral",
    "surprise": "fear",
    "fear": "surprise",
    "disgust": "anger",
    "anger": "disgust",
    "contempt": "happy",
}
NOISE_BLOCK = 250
_LOWRES = 4  # side of the low-resolution background clutter grid


def sample_face_params(labels: np.ndarray, class_names, *, seed: int) -> dict:
    """Draw every per-sample parameter of `labels` (N,) faces: a dict of (N,) float32 arrays.

    Geometry fields follow GEOMETRY_FIELDS; the rest are identity, pose, colours, lighting,
    blur, noise and occluder settings, plus `clutter`: (N, 4, 4) background grid.
    """
    labels = np.asarray(labels)
    unknown = [c for c in class_names if c not in GEOMETRY]
    if unknown:
        raise ValueError(f"No face geometry for class(es) {unknown}. Known: {sorted(GEOMETRY)}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must be class ids in [0, {len(class_names)}). "
            f"Received: min={labels.min()}, max={labels.max()}"
        )
    rng = np.random.default_rng([seed, 0])
    n = len(labels)
    means = np.array([GEOMETRY[c] for c in class_names], np.float32)
    names = tuple(class_names)
    partner = np.array(
        [names.index(PARTNER[c]) if PARTNER[c] in names else i for i, c in enumerate(names)]
    )
    neutral = np.array(GEOMETRY["neutral"], np.float32)
    strength = rng.uniform(0.6, 1.25, (n, 1))
    pull = 0.6 * rng.beta(1.0, 3.0, (n, 1))
    mean = (1 - pull) * means[labels] + pull * means[partner[labels]]
    geo = neutral + strength * (mean - neutral) + JITTER * rng.standard_normal((n, len(JITTER)))
    lo = np.array([-1.5, -1.5, 0.35, -1.5, 0.0, 0.6, 0.0, 0.0, 0.0])
    hi = np.array([1.5, 1.5, 1.8, 1.5, 1.3, 1.4, 1.2, 1.4, 1.0])
    geo = np.clip(geo, lo, hi)
    p = {name: geo[:, i] for i, name in enumerate(GEOMETRY_FIELDS)}
    u = rng.uniform
    p.update(
        face_w=u(0.6, 0.72, n),
        face_h=u(0.78, 0.9, n),
        face_y=u(-0.04, 0.04, n),
        eye_sep=u(0.21, 0.27, n),
        eye_y=u(-0.16, -0.08, n),
        eye_w=u(0.1, 0.13, n),
        eye_h=u(0.055, 0.075, n),
        gaze=u(-0.03, 0.03, n),
        brow_gap=u(0.12, 0.16, n),
        brow_t=u(0.022, 0.036, n),
        nose_y=u(0.1, 0.17, n),
        mouth_y=u(0.36, 0.44, n),
        mouth_w=u(0.2, 0.26, n),
        lip_t=u(0.018, 0.028, n),
        hairline=u(-0.8, -0.45, n),
        smirk_side=rng.choice(np.array([-1.0, 1.0]), n),
        skin=u(0.4, 0.85, n),
        hair=u(0.03, 0.6, n),
        iris=u(0.05, 0.35, n),
        clothes=u(0, 1, n),
        background=u(0.05, 0.95, n),
        clutter_amp=u(0.0, 0.35, n),
        angle=np.clip(rng.normal(0.0, 0.14, n), -0.35, 0.35),
        scale=u(0.92, 1.12, n),
        shift_x=u(-0.08, 0.08, n),
        shift_y=u(-0.08, 0.08, n),
        yaw=u(-1.0, 1.0, n),
        light_x=u(-0.35, 0.35, n),
        light_y=u(-0.3, 0.3, n),
        blur=u(0.0, 1.0, n) ** 2,
        noise=u(0.0, 0.05, n),
        occluder=rng.choice(3, n, p=[0.7, 0.15, 0.15]).astype(np.float32),
        occ_x=u(-0.55, 0.55, n),
        occ_y=u(-0.55, 0.55, n),
        occ_angle=u(0, np.pi, n),
        occ_w=u(0.06, 0.16, n),
        occ_len=u(0.25, 0.8, n),
        occ_tone=u(0.0, 1.0, n),
    )
    p = {k: np.asarray(v, np.float32) for k, v in p.items()}
    p["clutter"] = rng.uniform(-1.0, 1.0, (n, _LOWRES, _LOWRES)).astype(np.float32)
    return p


def render_faces(params: dict, *, size: int, start: int, stop: int, seed: int) -> np.ndarray:
    """Render samples [start, stop) of `params` as (stop - start, size, size) uint8 images."""
    q = {k: v[start:stop] for k, v in params.items()}
    c = _Canvas(q, size)
    img = _background(c, q, size)
    _draw_head(c, img)
    _draw_eyes_and_brows(c, img)
    _draw_nose(c, img)
    _draw_mouth(c, img)
    _draw_occluders(img, q, c.x, c.y, size)
    # Lighting gradient, blur (blended per sample), sensor noise, quantisation.
    img *= 1.0 + c("light_x") * c.x + c("light_y") * c.y
    kernel = _blur_matrix(size, 0.9 * size / 48)
    blurred = np.matmul(np.matmul(kernel, img), kernel.T)
    blurred -= img
    blurred *= c("blur")
    img += blurred
    noise = _noise(seed, start, stop, size)
    noise *= c("noise")
    img += noise
    img *= 255.0
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


class _Canvas:
    """Face coordinates u, v (B, S, S) of one chunk; calling it gives a (B, 1, 1) column."""

    def __init__(self, q: dict, size: int):
        self.q = q
        grid = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - 1.0
        self.x, self.y = grid[None, None, :], grid[None, :, None]
        # Image -> face coordinates: undo shift, rotation and scale.
        cos, sin, inv = np.cos(self("angle")), np.sin(self("angle")), 1.0 / self("scale")
        xs, ys = self.x - self("shift_x"), self.y - self("shift_y")
        self.u = (cos * xs + sin * ys) * inv
        self.v = (cos * ys - sin * xs) * inv - self("face_y")
        self.ipx = size * self("scale") / 2.0  # face units -> pixels
        # Features live in a yaw-shifted frame; au is the distance from the feature midline.
        self.shift = 0.12 * self("yaw")
        self.mu = self.u - self.shift
        self.au = np.abs(self.mu)

    def __call__(self, name: str) -> np.ndarray:
        return self.q[name][:, None, None]

    def cov(self, d: np.ndarray) -> np.ndarray:
        """Pixel coverage from a signed distance in face units (inside > 0); reuses `d`."""
        d *= self.ipx
        d += 0.5
        return np.clip(d, 0.0, 1.0, out=d)


def _paint(img, mask, tone) -> None:
    """Composite `tone` over `img` with coverage `mask`, in place."""
    mask *= tone - img
    img += mask


def _ellipse(uu, vv, a, b):
    """First-order signed distance to an axis-aligned ellipse (inside > 0), thin ones too."""
    gu, gv = uu * (1.0 / (a * a)), vv * (1.0 / (b * b))
    f = 1.0 - uu * gu - vv * gv
    g = np.sqrt(gu * gu + gv * gv)
    g *= 2.0
    g += 1e-3
    f /= g
    return f


def _round(uu, vv, a, b):
    """Cheap signed distance to a roundish ellipse (aspect up to ~2), exact for circles."""
    f = uu * (1.0 / a)
    f *= f
    t = vv * (1.0 / b)
    t *= t
    f += t
    f -= 1.0
    f *= -a * b / (a + b)
    return f


def _background(c: _Canvas, q: dict, size: int) -> np.ndarray:
    """(B, S, S) float32: flat tone plus bilinearly upsampled low-frequency clutter."""
    interp = _interp_matrix(size, _LOWRES)
    clutter = np.matmul(np.matmul(interp, q["clutter"]), interp.T)
    clutter *= c("clutter_amp")
    clutter += c("background")
    return clutter


def _draw_head(c: _Canvas, img) -> None:
    """Hair behind the head, neck, shoulders, face with a darker rim, hair fringe."""
    u, v, skin, hair = c.u, c.v, c("skin"), c("hair")
    fw, fh = c("face_w"), c("face_h")
    _paint(img, c.cov(_round(u, v + 0.07, fw * 1.1, fh * 1.04)), hair)
    _paint(img, c.cov(np.minimum(0.42 * fw - np.abs(u), v - 0.4)), skin * 0.8)
    _paint(img, c.cov(_round(u, v - 1.45, 1.1, 0.55)), c("clothes"))
    face = _round(u, v, fw, fh)
    fringe = np.minimum(face, c("hairline") + 0.12 * u * u - v)
    shade = np.maximum(face, 0.0)  # (1 - rim^2) * fw fh / (fw + fh): darker towards the rim
    shade *= 0.18 * (fw + fh) / (fw * fh)
    shade += 1.0 - 0.18
    shade *= skin
    _paint(img, c.cov(face), shade)
    _paint(img, c.cov(fringe), hair)


def _draw_eyes_and_brows(c: _Canvas, img) -> None:
    """Brows (bar tilted by slant, lifted by raise), eyes (outline, white, iris)."""
    v, au, skin = c.v, c.au, c("skin")
    raise_, slant = c("brow_raise"), c("brow_slant")
    x_in = np.maximum(0.09 + 0.025 * slant, 0.05)
    span = c("eye_sep") + c("eye_w") + 0.04 - x_in
    t = (au - x_in) * (1.0 / span)
    t1 = 1.0 - t
    arch = 0.02 + 0.025 * np.maximum(raise_, 0.0)
    yb = c("eye_y") - c("brow_gap") - 0.08 * raise_ - 0.075 * slant * t1 - 4.0 * arch * t * t1
    along = np.minimum(t, t1) * span
    dist = np.abs(v - yb)
    dist *= -1.0 / np.sqrt(1.0 + (0.075 * slant / span) ** 2)
    dist += c("brow_t")
    _paint(img, c.cov(np.minimum(dist, along, out=dist)), np.minimum(c("hair"), skin * 0.35))
    ew, eh = c("eye_w"), c("eye_h") * c("eye_open")
    eu, ev = au - c("eye_sep"), v - c("eye_y")
    _paint(img, c.cov(_ellipse(eu, ev, ew + 0.02, eh + 0.02)), skin * 0.25)
    white = c.cov(_ellipse(eu, ev, ew, eh))
    gu = eu - c("gaze") * np.sign(c.mu)
    iris = c.cov(0.05 - np.sqrt(gu * gu + ev * ev))
    iris *= white
    _paint(img, white, np.minimum(skin + 0.3, 0.97))
    _paint(img, iris, c("iris"))


def _draw_nose(c: _Canvas, img) -> None:
    """Shadow line, nostrils, and wrinkle lines beside the bridge ("bunny lines")."""
    v, skin = c.v, c("skin")
    nu = c.u - 1.4 * c.shift
    anu = np.abs(nu)
    ny = c("nose_y")
    line = np.minimum(0.012 - np.abs(nu - 0.03), np.minimum(v + 0.03, ny - v))
    _paint(img, c.cov(line), skin * 0.75)
    _paint(img, c.cov(_round(anu - 0.045, v - ny - 0.02, 0.03, 0.018)), skin * 0.4)
    band = np.abs(np.abs(v - c("eye_y") - 0.08 - 0.6 * anu) - 0.025)
    wrinkle = c.cov(np.minimum(0.011 - band, np.minimum(anu - 0.025, 0.1 - anu)))
    wrinkle *= np.minimum(c("nose_wrinkle"), 1.0)
    _paint(img, wrinkle, skin * 0.55)


def _draw_mouth(c: _Canvas, img) -> None:
    """Centre curve (smile, frown, one-sided smirk), lips, dark opening, teeth at its top."""
    v = c.v
    mw = c("mouth_w") * c("mouth_width")
    s = c.mu * (1.0 / mw)
    s2 = np.minimum(s * s, 1.0)
    yc = c("mouth_y") + 0.09 * c("mouth_curve") * (0.5 - s2)
    yc -= 0.1 * c("smirk") * np.maximum(s * c("smirk_side"), 0.0) ** 2
    h = np.sqrt(1.0 - s2)
    h *= 0.14 * c("mouth_open")
    top = yc - (0.5 + 0.7 * c("nose_wrinkle")) * h  # a wrinkled nose lifts the upper lip
    bottom = yc + h
    ends = (1.0 - np.abs(s)) * mw
    inside = np.minimum(np.minimum(v - top, bottom - v), ends)
    lips = c.cov(inside + c("lip_t"))
    _paint(img, lips, c("skin") * 0.5)
    teeth = c.cov(top + 0.8 * c("teeth") * h - v)
    inside = c.cov(inside)
    teeth *= inside
    _paint(img, inside, np.float32(0.06))
    _paint(img, teeth, np.float32(0.9))


def _interp_matrix(size: int, low: int) -> np.ndarray:
    """(size, low) float32 bilinear upsampling weights, pixel centres aligned, edges clamped."""
    pos = np.clip((np.arange(size) + 0.5) * low / size - 0.5, 0, low - 1)
    lo = np.minimum(np.floor(pos).astype(int), low - 2)
    w = np.zeros((size, low), np.float32)
    w[np.arange(size), lo] = 1.0 - (pos - lo)
    w[np.arange(size), lo + 1] = pos - lo
    return w


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) float32 Gaussian blur along one axis, edges clamped (nearest)."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    k = np.zeros((size, size))
    for offset, weight in zip(range(-radius, radius + 1), taps, strict=True):
        cols = np.clip(np.arange(size) + offset, 0, size - 1)
        np.add.at(k, (np.arange(size), cols), weight)
    return k.astype(np.float32)


def _draw_occluders(img, q, x, y, size) -> None:
    """Paint a bar (occluder 1) or a blob (occluder 2) over the samples that have one."""
    for kind in (1, 2):
        idx = np.flatnonzero(q["occluder"] == kind)
        if idx.size == 0:
            continue
        c = {k: q[k][idx][:, None, None] for k in q if k.startswith("occ_")}
        dx, dy = x - c["occ_x"], y - c["occ_y"]
        ca, sa = np.cos(c["occ_angle"]), np.sin(c["occ_angle"])
        along, across = ca * dx + sa * dy, ca * dy - sa * dx
        if kind == 1:
            d = np.minimum(c["occ_w"] - np.abs(across), c["occ_len"] - np.abs(along))
        else:
            d = _round(along, across, c["occ_len"] * 0.5, c["occ_w"] + 0.1)
        mask = np.clip(d * (size / 2.0) + 0.5, 0.0, 1.0)
        sub = img[idx]
        _paint(sub, mask, c["occ_tone"])
        img[idx] = sub


def _noise(seed: int, start: int, stop: int, size: int) -> np.ndarray:
    """(stop - start, size, size) float32 N(0, 1) sensor noise, fixed per block of samples."""
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    blocks = [
        np.random.default_rng([seed, 1, k]).standard_normal(
            (NOISE_BLOCK, size, size), dtype=np.float32
        )
        for k in range(first, last + 1)
    ]
    offset = start - first * NOISE_BLOCK
    return np.concatenate(blocks)[offset : offset + stop - start]
