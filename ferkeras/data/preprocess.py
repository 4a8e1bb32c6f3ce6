"""Face crop -> model input, the one definition shared with training. NumPy only.

`prepare_face` does what `ferkeras.data.pipeline.to_model_input` does in tf.data: float32
throughout, channels converted first with TensorFlow's grey weights, then resized with
TensorFlow's bilinear + antialias (`tf.image.resize(..., antialias=True)`: a triangle kernel
stretched by the shrink factor), clipped to [0, 255]. Written in NumPy so that predicting
never imports TensorFlow; tests/test_predict.py
(`test_training_and_serving_preprocessing_match`) checks both give the same model inputs.
"""

from __future__ import annotations

import functools

import numpy as np

TF_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def to_grey(image: np.ndarray, *, color: str = "rgb") -> np.ndarray:
    """(H, W) float32 luma of a grey, grey-with-axis, RGB(A) or BGR(A) image (TF weights)."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr'. Received: color={color!r}")
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected an (H, W[, 1|3|4]) image. Received: shape={image.shape}")
    if image.shape[-1] == 1:
        return image[..., 0].astype(np.float32, copy=False)
    weights = TF_GREY_WEIGHTS if color == "rgb" else TF_GREY_WEIGHTS[::-1]
    return image[..., :3].astype(np.float32) @ np.asarray(weights, np.float32)


def convert_channels(image: np.ndarray, *, channels: int, color: str = "rgb") -> np.ndarray:
    """(H, W, channels) float32 image; 3 channels come out RGB whatever `color` the input was."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr'. Received: color={color!r}")
    if channels == 1:
        return to_grey(image, color=color)[..., None]
    if channels != 3:
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    if image.ndim == 2 or image.shape[-1] == 1:
        grey = image.reshape(image.shape[:2]).astype(np.float32, copy=False)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an (H, W[, 1|3|4]) image. Received: shape={image.shape}")
    rgb = image[..., :3]
    return (rgb[..., ::-1] if color == "bgr" else rgb).astype(np.float32)


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 rows of TF's bilinear antialiased resampling weights.

    Mirrors tensorflow/core/kernels/image/scale_and_translate_op.cc (triangle kernel of
    radius 1, widened by the shrink factor when shrinking, half-pixel centres, each row
    normalised to sum to 1).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1. Received: in_size={in_size}, "
                         f"out_size={out_size}")
    inv_scale = np.float32(in_size / out_size)
    kernel_scale = max(float(inv_scale), 1.0)
    weights = np.zeros((out_size, in_size), np.float32)
    for x in range(out_size):
        sample = (x + 0.5) * float(inv_scale)
        start = int(np.ceil(sample - kernel_scale - 0.5))
        end = int(np.floor(sample + kernel_scale - 0.5))
        start, end = min(max(start, 0), in_size - 1), min(max(end, 0), in_size - 1) + 1
        source = np.arange(start, end, dtype=np.float32)
        row = np.maximum(0.0, 1.0 - np.abs((source + 0.5 - sample) / kernel_scale))
        total = row.sum()
        weights[x, start:end] = row / total if total > 0 else row
    return weights


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size[, C]) float32 resize of an (H, W[, C]) image, as `tf.image.resize`
    (bilinear, antialias=True) then clipped to [0, 255]."""
    if size < 1:
        raise ValueError(f"size must be >= 1. Received: size={size}")
    image = np.asarray(image, np.float32)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    rows = resize_weights(int(image.shape[0]), size)
    cols = resize_weights(int(image.shape[1]), size)
    if image.ndim == 2:
        out = rows @ image @ cols.T
    else:  # per channel: two small matmuls each (einsum's batched path was 4x slower)
        out = np.stack([rows @ image[..., c] @ cols.T for c in range(image.shape[-1])],
                       axis=-1)
    return np.clip(out, 0.0, 255.0)


def prepare_face(crop: np.ndarray, *, size: int, channels: int,
                 color: str = "rgb") -> np.ndarray:
    """(size, size, channels) float32 model input from an (h, w[, C]) face crop in [0, 255].

    The same steps as training (`ferkeras.data.pipeline.to_model_input`): channels first,
    then TF's antialiased bilinear resize, then clip.
    """
    converted = convert_channels(np.asarray(crop), channels=channels, color=color)
    return resize(converted, size).reshape(size, size, channels)
