"""tf.data pipelines from a host-side `Split`.

Every dataset yields `(image, label, sample_index)`:
  image: float32 (S, S, C) in [0, 255] (or a `(weak, strong)` pair in view mode),
  label: int32, the given label; sample_index: int32, the row of the Split.
Images in memory are sliced; image files are decoded in parallel, cropped to their face
box, resized and converted to the recipe's channels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ferkeras.data import augment as aug


def to_model_input(image, *, size: int, channels: int):
    """Cast to float32 in [0, 255], convert grey <-> RGB and resize to (size, size)."""
    image = tf.cast(image, tf.float32)
    have = image.shape[-1]
    if have == 4:
        image = image[..., :3]
        have = 3
    if have is None:
        raise ValueError("to_model_input needs a static channel count.")
    if have == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif have == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    if image.shape[0] != size or image.shape[1] != size:
        image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((size, size, channels))
    return image


def warp_image(image, warp):
    """The aligned crop of an (H, W, C) image: warp (9,) = [side, 8 projective-transform
    values] (`ferkeras.data.alignment.landmark_warps`), bilinear, edge pixels repeated, as
    `alignment.warp_affine` samples it. Returns (side, side, C) float32."""
    side = tf.cast(warp[0], tf.int32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=tf.cast(warp[1:], tf.float32)[None],
        output_shape=tf.stack([side, side]), fill_value=0.0, interpolation="BILINEAR",
        fill_mode="NEAREST")
    return out[0]


def decode_file(path, box, warp=None, *, size: int, channels: int):
    """Read an image file, crop `box` (x, y, w, h; negative w means no box), or warp it to
    its aligned crop where `warp` (9,) is given and its side is positive; resize."""
    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    if warp is None:
        image = _crop(image, box)
    else:
        image = tf.cond(warp[0] > 0, lambda: warp_image(image, warp),
                        lambda: tf.cast(_crop(image, box), tf.float32))
    return to_model_input(image, size=size, channels=channels)


def _crop(image, box):
    h = tf.shape(image)[0]
    w = tf.shape(image)[1]
    x0 = tf.clip_by_value(box[0], 0, w - 1)
    y0 = tf.clip_by_value(box[1], 0, h - 1)
    bw = tf.where(box[2] > 0, tf.minimum(box[2], w - x0), w - x0)
    bh = tf.where(box[3] > 0, tf.minimum(box[3], h - y0), h - y0)
    x0 = tf.where(box[2] > 0, x0, 0)
    y0 = tf.where(box[3] > 0, y0, 0)
    return tf.image.crop_to_bounding_box(image, y0, x0, bh, bw)


def _source_dataset(split, data_cfg, *, shuffle_seed=None):
    """(image, label, index) before batching, decoded and in model shape.

    shuffle_seed: if given, the rows are shuffled *before* decoding, so the shuffle buffer
    holds N (path, box, label, index) rows or uint8 slices, not N decoded float images
    (43 GB for AffectNet's 287k faces at 112 px RGB), and the first batch does not wait for
    every file of the split to be decoded.
    """
    size, channels = data_cfg.image_size, data_cfg.channels
    index = np.arange(len(split), dtype=np.int32)
    labels = split.labels.astype(np.int32)

    def _shuffled(ds):
        if shuffle_seed is None:
            return ds
        return ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)

    if split.images is not None:
        ds = _shuffled(tf.data.Dataset.from_tensor_slices((split.images, labels, index)))
        return ds.map(
            lambda im, y, i: (to_model_input(im, size=size, channels=channels), y, i),
            num_parallel_calls=tf.data.AUTOTUNE,
        ), True
    boxes = split.boxes if split.boxes is not None else np.full((len(split), 4), -1, np.int32)
    # (path, box[, warp]) decode the image; aligned-crop warps only where the split has them
    files = (split.paths.astype(str), boxes.astype(np.int32))
    if split.warps is not None:
        files += (split.warps.astype(np.float32),)
    ds = _shuffled(tf.data.Dataset.from_tensor_slices((*files, labels, index)))
    return ds.map(
        lambda *row: (decode_file(*row[:-2], size=size, channels=channels), *row[-2:]),
        num_parallel_calls=tf.data.AUTOTUNE,
    ), False


def _cached(ds, cache: str):
    if cache == "memory":
        return ds.cache()
    return ds.cache(cache) if cache else ds


def cached_source(split, data_cfg):
    """The decoded, un-augmented `(image, label, index)` rows of `split`, cached as
    `data_cfg.cache` says, for `make_dataset(source=...)`."""
    ds, _ = _source_dataset(split, data_cfg)
    return _cached(ds, data_cfg.cache)


def make_dataset(
    split,
    data_cfg,
    *,
    batch_size: int,
    shuffle: bool = False,
    augment: str = "none",
    views: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    cache: str = "",
    labelled_mask=None,
    source=None,
    threadpool_size: int = 0,
    deterministic: bool = True,
):
    """A batched `tf.data.Dataset` over `split`.

    augment: 'none', 'weak' or 'strong' for the single view. views=True yields
    `((weak, strong), label, index)`, the FixMatch view pair of the same sample.
    cache: '' (no cache), 'memory', or a file path: caches decoded, un-augmented images.
    labelled_mask: optional (N,) float `tf.Variable` read at iteration time (the trainer's
    split table); in view mode the strong view (RandAugment + cutout, the costly part) is
    computed only where it is < 0.5, i.e. for the samples the current split made unlabelled.
    Elsewhere the strong slot holds the weak view, which the cycle trainer never reads.
    source: optional `cached_source(split, data_cfg)` to build on instead of decoding anew
    (`cache` is then ignored): datasets built on one source share its cache, so a run's
    epochs decode each image once.
    threadpool_size: > 0 gives the pipeline a private thread pool of that many threads (0:
    the process-wide pool shared with the training ops).
    deterministic: False lets parallel maps yield out of order (a different sample order per
    run, so off by default: runs stay reproducible).
    """
    if threadpool_size < 0:
        raise ValueError("threadpool_size must be >= 0. "
                         f"Received: threadpool_size={threadpool_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    # Without a cache, shuffle the cheap rows before decoding; a cache holds decoded images,
    # so there the shuffle has to follow it.
    early = shuffle and not cache and source is None
    if source is not None:
        ds = source
    else:
        ds, _ = _source_dataset(split, data_cfg, shuffle_seed=seed if early else None)
        ds = _cached(ds, cache)
    if shuffle and not early:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    if views or augment != "none":
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        if views:
            def _views(elem, s):
                image, label, index = elem
                s_weak, s_strong = tf.unstack(tf.random.experimental.stateless_split(s, 2))
                weak = aug.weak_augment(image, s_weak)
                if labelled_mask is None:
                    strong = aug.strong_augment(image, s_strong)
                else:
                    strong = tf.cond(tf.gather(labelled_mask, index) < 0.5,
                                     lambda: aug.strong_augment(image, s_strong),
                                     lambda: weak)
                return (weak, strong), label, index

            ds = ds.map(_views, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(
                lambda elem, s: (aug.augment(elem[0], s, mode=augment), elem[1], elem[2]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = bool(deterministic)
    if threadpool_size:
        options.threading.private_threadpool_size = int(threadpool_size)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def collect_images(split, data_cfg, *, limit: int | None = None, batch_size: int = 256):
    """(N, S, S, C) float32 model-ready images of the first `limit` rows, in order."""
    sub = split if limit is None or limit >= len(split) else split.subset(np.arange(limit))
    out = [b[0].numpy() for b in make_dataset(sub, data_cfg, batch_size=batch_size)]
    return np.concatenate(out, axis=0) if out else np.zeros((0,), np.float32)
