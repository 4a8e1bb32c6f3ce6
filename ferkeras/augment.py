"""Weak and strong augmentation for single images, as TensorFlow ops usable in `tf.data`.

Images are float32 in [0, 255], shape (H, W, C). Randomness comes from an explicit
stateless seed (shape (2,) int), so a pipeline is reproducible given its seed.

- weak:   random horizontal flip + random translation up to 12.5% (reflect padding);
          the FixMatch weak view.
- strong: weak + `keras.layers.RandAugment` (2 ops, magnitude factor 0.5) + cutout of a
          random square half the image side, filled with grey; the FixMatch strong view.
"""

from __future__ import annotations

import tensorflow as tf

_RAND_AUGMENT = None


def _rand_augment():
    global _RAND_AUGMENT
    if _RAND_AUGMENT is None:
        import keras

        _RAND_AUGMENT = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
    return _RAND_AUGMENT


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


def strong_augment(image, seed):
    """Weak view, then RandAugment and cutout: the FixMatch strong view."""
    s_weak, s_cut = _split_seed(seed, 2)
    image = weak_augment(image, s_weak)
    channels = image.shape[-1]
    if channels == 1:
        # RandAugment's colour ops expect RGB; apply on a 3-channel copy and take one back.
        rgb = tf.image.grayscale_to_rgb(image)
        image = tf.reduce_mean(_rand_augment()(rgb), axis=-1, keepdims=True)
    else:
        image = _rand_augment()(image)
    image = tf.clip_by_value(image, 0.0, 255.0)
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
