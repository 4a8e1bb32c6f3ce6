"""Weak and strong augmentation for single images, as TensorFlow ops usable in `tf.data`.

Images are float32 in [0, 255], shape (H, W, C). Randomness comes from an explicit
stateless seed (shape (2,) int), so a pipeline is reproducible given its seed.

- weak:   random horizontal flip + random translation up to 12.5% (reflect padding);
          the FixMatch weak view.
- strong: weak + RandAugment (2 ops drawn from 12, random magnitude up to `magnitude`) +
          cutout of a random square half the image side, filled with grey; the FixMatch
          strong view.

RandAugment is implemented here with `tf.switch_case`, so only the two drawn ops run.
`keras.layers.RandAugment` (Keras 3.15) computes every candidate op for each slot and keeps
one with `where`: about 19 ms per 112-px image on this CPU instead of ~1-2 ms
(bench/results/input_pipeline.md), which made it the bottleneck of FixMatch epochs.
"""

from __future__ import annotations

import tensorflow as tf


def _split_seed(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def weak_augment(image, seed, *, translate=0.125):
    """Flip left-right with p=0.5, then translate by up to `translate` of the side."""
    s_flip, s_crop = _split_seed(seed, 2)
    image = tf.image.stateless_random_flip_left_right(image, seed=s_flip)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    pad_h = tf.cast(tf.math.ceil(tf.cast(h, tf.float32) * translate), tf.int32)
    pad_w = tf.cast(tf.math.ceil(tf.cast(w, tf.float32) * translate), tf.int32)
    padded = tf.pad(image, [[pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="REFLECT")
    return tf.image.stateless_random_crop(padded, size=shape, seed=s_crop)


def cutout(image, seed, *, size_fraction=0.5, fill=127.5):
    """Replace a random square of side `size_fraction` × min(H, W) with `fill`."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * size_fraction, tf.int32)
    cy = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=h, dtype=tf.int32)
    cx = tf.random.stateless_uniform(
        [], seed=seed + tf.constant([1, 0], seed.dtype), minval=0, maxval=w, dtype=tf.int32
    )
    y0, y1 = tf.maximum(cy - side // 2, 0), tf.minimum(cy + side // 2, h)
    x0, x1 = tf.maximum(cx - side // 2, 0), tf.minimum(cx + side // 2, w)
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return tf.where(inside[:, :, None], tf.cast(fill, image.dtype), image)


def _affine(image, transform):
    """Apply a (8,) projective transform (output -> input mapping), reflect padding."""
    shape = tf.shape(image)[:2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(transform, tf.float32)[None],
        output_shape=shape, interpolation="BILINEAR", fill_mode="REFLECT",
        fill_value=0.0)
    return out[0]


def _rotate(image, m):
    angle = m * 30.0 * 3.14159265 / 180.0
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return _affine(image, [cos, -sin, cx - cos * cx + sin * cy,
                           sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])


def _shear(image, m, axis):
    t = [1.0, m * 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0 else \
        [1.0, 0.0, 0.0, m * 0.3, 1.0, 0.0, 0.0, 0.0]
    return _affine(image, t)


def _translate(image, m, axis):
    side = tf.cast(tf.shape(image)[1 - axis], tf.float32)
    d = m * 0.3 * side
    t = [1.0, 0.0, d, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0 else \
        [1.0, 0.0, 0.0, 0.0, 1.0, d, 0.0, 0.0]
    return _affine(image, t)


def _blend(a, b, factor):
    return tf.clip_by_value(b + factor * (a - b), 0.0, 255.0)


def _autocontrast(image):
    lo = tf.reduce_min(image, axis=(0, 1), keepdims=True)
    hi = tf.reduce_max(image, axis=(0, 1), keepdims=True)
    return tf.where(hi > lo, (image - lo) * 255.0 / tf.maximum(hi - lo, 1e-3), image)


def _sharpness(image, m):
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    c = image.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, c, 1])
    blurred = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0]
    return _blend(image, blurred, 1.0 + m * 0.9 * tf.sign(m))


def rand_augment(image, seed, *, num_ops: int = 2, magnitude: float = 0.5):
    """RandAugment (Cubuk et al. 2020) on one float image in [0, 255]: `num_ops` ops drawn
    uniformly from 12, each with a random signed magnitude in [-magnitude, magnitude]."""
    mean = tf.reduce_mean(image)
    branches = [
        lambda im, m: im,                                         # identity
        lambda im, m: _autocontrast(im),
        lambda im, m: _rotate(im, m),
        lambda im, m: _shear(im, m, 0),
        lambda im, m: _shear(im, m, 1),
        lambda im, m: _translate(im, m, 0),
        lambda im, m: _translate(im, m, 1),
        lambda im, m: _blend(im, tf.zeros_like(im), 1.0 + 0.9 * m),   # brightness
        lambda im, m: _blend(im, tf.fill(tf.shape(im), mean), 1.0 + 0.9 * m),  # contrast
        lambda im, m: _sharpness(im, m),
        lambda im, m: tf.where(im < 255.0 * (1.0 - tf.abs(m)), im, 255.0 - im),  # solarize
        lambda im, m: tf.floor(im / 2.0 ** tf.round(1.0 + 3.0 * tf.abs(m))) *
        2.0 ** tf.round(1.0 + 3.0 * tf.abs(m)),                   # posterize
    ]
    for s in _split_seed(seed, num_ops):
        s_op, s_mag = _split_seed(s, 2)
        op = tf.random.stateless_uniform([], s_op, 0, len(branches), dtype=tf.int32)
        m = tf.random.stateless_uniform([], s_mag, -magnitude, magnitude)
        fns = [lambda fn=fn, im=image, mm=m: fn(im, mm) for fn in branches]
        image = tf.ensure_shape(tf.switch_case(op, fns), image.shape)
        image = tf.clip_by_value(image, 0.0, 255.0)
    return image


def strong_augment(image, seed):
    """Weak view, then RandAugment and cutout: the FixMatch strong view."""
    s_weak, s_ra, s_cut = _split_seed(seed, 3)
    image = weak_augment(image, s_weak)
    image = rand_augment(image, s_ra)
    return cutout(image, s_cut)


def augment(image, seed, *, mode: str):
    """Dispatch on mode: 'none', 'weak' or 'strong'."""
    if mode == "none":
        return image
    if mode == "weak":
        return weak_augment(image, seed)
    if mode == "strong":
        return strong_augment(image, seed)
    raise ValueError(f"Unknown augmentation mode. Received: mode={mode!r}")
