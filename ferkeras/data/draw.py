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
        face_w=u(0.6, 0.72, n), face_h=u(0.78, 0.9, n), face_y=u(-0.04, 0.04, n),
        eye_sep=u(0.21, 0.27, n), eye_y=u(-0.16, -0.08, n), eye_w=u(0.1, 0.13, n),
        eye_h=u(0.055, 0.075, n), gaze=u(-0.03, 0.03, n), brow_gap=u(0.12, 0.16, n),
        brow_t=u(0.022, 0.036, n), nose_y=u(0.1, 0.17, n), mouth_y=u(0.36, 0.44, n),
        mouth_w=u(0.2, 0.26, n), lip_t=u(0.018, 0.028, n), hairline=u(-0.8, -0.45, n),
        smirk_side=rng.choice(np.array([-1.0, 1.0]), n),
        skin=u(0.4, 0.85, n), hair=u(0.03, 0.6, n), iris=u(0.05, 0.35, n), clothes=u(0, 1, n),
        background=u(0.05, 0.95, n), clutter_amp=u(0.0, 0.35, n),
        angle=np.clip(rng.normal(0.0, 0.14, n), -0.35, 0.35), scale=u(0.92, 1.12, n),
        shift_x=u(-0.08, 0.08, n), shift_y=u(-0.08, 0.08, n), yaw=u(-1.0, 1.0, n),
        light_x=u(-0.35, 0.35, n), light_y=u(-0.3, 0.3, n), blur=u(0.0, 1.0, n) ** 2,
        noise=u(0.0, 0.05, n),
        occluder=rng.choice(3, n, p=[0.7, 0.15, 0.15]).astype(np.float32),
        occ_x=u(-0.55, 0.55, n), occ_y=u(-0.55, 0.55, n), occ_angle=u(0, np.pi, n),
        occ_w=u(0.06, 0.16, n), occ_len=u(0.25, 0.8, n), occ_tone=u(0.0, 1.0, n),
    )
    p = {k: np.asarray(v, np.float32) for k, v in p.items()}
    p["clutter"] = rng.uniform(-1.0, 1.0, (n, _LOWRES, _LOWRES)).astype(np.float32)
    return p


def render_faces(params: dict, *, size: int, start: int, stop: int, seed: int) -> np.ndarray:
    """Render samples [start, stop) of `params` as (stop - start, size, size) uint8 images."""
    from scipy import ndimage

    q = {k: v[start:stop] for k, v in params.items()}
    b = stop - start
    col = (lambda name: q[name][:, None, None])  # noqa: E731
    grid = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x, y = grid[None, None, :], grid[None, :, None]
    # Image -> face coordinates: undo shift, rotation and scale.
    cos, sin, inv = np.cos(col("angle")), np.sin(col("angle")), 1.0 / col("scale")
    xs, ys = x - col("shift_x"), y - col("shift_y")
    u = (cos * xs + sin * ys) * inv
    v = (cos * ys - sin * xs) * inv - col("face_y")
    ipx = size * col("scale") / 2.0  # face units -> pixels

    def cov(d):  # coverage of a pixel from its signed distance (inside > 0), in place
        d *= ipx
        d += 0.5
        return np.clip(d, 0.0, 1.0, out=d)

    def paint(img, mask, tone):
        img += mask * (tone - img)

    def ellipse(uu, vv, a, bb):  # signed distance (inside > 0), first order
        ia, ib = 1.0 / (a * a), 1.0 / (bb * bb)
        gu, gv = uu * ia, vv * ib
        f = 1.0 - (uu * gu + vv * gv)
        return f / (2.0 * np.sqrt(gu * gu + gv * gv) + 1e-3)

    # Background: flat tone + low-frequency clutter.
    zoom = size / _LOWRES
    clutter = ndimage.zoom(q["clutter"], (1, zoom, zoom), order=1, grid_mode=True, mode="nearest")
    img = col("background") + col("clutter_amp") * clutter[:, :size, :size]
    skin, hair = col("skin"), col("hair")
    fw, fh = col("face_w"), col("face_h")
    # Hair behind the head, neck, face with a darker rim.
    paint(img, cov(ellipse(u, v + 0.07, fw * 1.1, fh * 1.04)), hair)
    neck = np.minimum(0.42 * fw - np.abs(u), v - 0.4)
    paint(img, cov(neck), skin * 0.8)
    paint(img, cov(ellipse(u, v - 1.45, 1.1, 0.55)), col("clothes"))
    fd = ellipse(u, v, fw, fh)
    fringe = np.minimum(fd, col("hairline") + 0.12 * u * u - v)
    rim = (u / fw) ** 2 + (v / fh) ** 2
    paint(img, cov(fd), skin * (1.0 - 0.18 * np.minimum(rim, 1.0)))
    paint(img, cov(fringe), hair)
    # Features live in a yaw-shifted, mirrored frame: au is the distance from the midline.
    shift = 0.12 * col("yaw")
    au = np.abs(u - shift)
    # Brows: a bar from the inner to the outer end, tilted by slant, lifted by raise.
    raise_, slant = col("brow_raise"), col("brow_slant")
    x_in = np.maximum(0.09 + 0.025 * slant, 0.05)
    x_out = col("eye_sep") + col("eye_w") + 0.04
    t = (au - x_in) / (x_out - x_in)
    arch = 0.02 + 0.025 * np.maximum(raise_, 0.0)
    base = col("eye_y") - col("brow_gap") - 0.08 * raise_
    yb = base - 0.075 * slant * (1.0 - t) - arch * 4.0 * t * (1.0 - t)
    along = np.minimum(t, 1.0 - t) * (x_out - x_in)
    dist = col("brow_t") - np.abs(v - yb) / np.sqrt(1.0 + (0.075 * slant / (x_out - x_in)) ** 2)
    paint(img, cov(np.minimum(dist, along)), np.minimum(hair, skin * 0.35))
    # Eyes: dark outline, white, iris clipped to the white.
    ew, eh = col("eye_w"), col("eye_h") * col("eye_open")
    eu, ev = au - col("eye_sep"), v - col("eye_y")
    paint(img, cov(ellipse(eu, ev, ew + 0.02, eh + 0.02)), skin * 0.25)
    white = cov(ellipse(eu, ev, ew, eh))
    paint(img, white, np.minimum(skin + 0.3, 0.97))
    gu = eu - col("gaze") * np.sign(u - shift)
    iris = cov(0.05 - np.sqrt(gu * gu + ev * ev))
    paint(img, iris * white, col("iris"))
    # Nose: shadow line, nostrils, wrinkle lines across the bridge.
    nu = u - 1.4 * shift
    ny = col("nose_y")
    paint(img, cov(np.minimum(0.012 - np.abs(nu - 0.03), np.minimum(v + 0.03, ny - v))),
          skin * 0.75)
    nostril = ellipse(np.abs(nu) - 0.045, v - ny - 0.02, 0.03, 0.018)
    paint(img, cov(nostril), skin * 0.4)
    wr = col("nose_wrinkle")
    # Two slanted lines on each side of the bridge ("bunny lines").
    band = np.abs(np.abs(v - col("eye_y") - 0.08 - 0.6 * np.abs(nu)) - 0.025)
    wrinkle = cov(np.minimum(0.011 - band, np.minimum(np.abs(nu) - 0.025, 0.1 - np.abs(nu))))
    paint(img, wrinkle * np.minimum(wr, 1.0), skin * 0.55)
    # Mouth: centre curve, lips around the opening, dark inside, teeth at the top.
    mw = col("mouth_w") * col("mouth_width")
    s = (u - shift) / mw
    s2 = np.minimum(s * s, 1.0)
    yc = col("mouth_y") + 0.09 * col("mouth_curve") * (0.5 - s2)
    yc -= 0.1 * col("smirk") * np.maximum(s * col("smirk_side"), 0.0) ** 2
    h = 0.14 * col("mouth_open") * np.sqrt(1.0 - s2)
    top, bottom = yc - (0.5 + 0.7 * col("nose_wrinkle")) * h, yc + h  # wrinkle lifts the lip
    lip_t = col("lip_t")
    ends = (1.0 - np.abs(s)) * mw
    lips = cov(np.minimum(np.minimum(v - top + lip_t, bottom + lip_t - v), ends + lip_t))
    paint(img, lips, skin * 0.5)
    inside = cov(np.minimum(np.minimum(v - top, bottom - v), ends))
    paint(img, inside, 0.06 + 0.0 * skin)
    teeth = cov(top + 0.8 * col("teeth") * h - v)
    paint(img, inside * teeth, 0.9 + 0.0 * skin)
    _draw_occluders(img, q, x, y, size)
    # Lighting gradient, blur, sensor noise.
    img *= 1.0 + col("light_x") * x + col("light_y") * y
    blurred = ndimage.gaussian_filter(img, sigma=(0, 0.9 * size / 48, 0.9 * size / 48))
    img += col("blur") * (blurred - img)
    img += col("noise") * _noise(seed, start, stop, size)
    img *= 255.0
    img += 0.5
    return np.clip(img, 0, 255).astype(np.uint8).reshape(b, size, size)


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
            a, b = c["occ_len"] * 0.5, c["occ_w"] + 0.1
            d = (1.0 - (along / a) ** 2 - (across / b) ** 2) * (0.5 * b)
        mask = np.clip(d * (size / 2.0) + 0.5, 0.0, 1.0)
        sub = img[idx]
        sub += mask * (c["occ_tone"] - sub)
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
