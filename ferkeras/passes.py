"""Model passes over a dataset: probabilities, per-sample losses, split digests.

Plain functions on a network and a `make_dataset` stream of `(image, label, index)`; no
callbacks, no run folders. Training, the noise split, `evaluate`, `audit` and the benchmarks
all use these.
"""

from __future__ import annotations

import hashlib

import numpy as np


def predict_probs(network, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, K), index (N,)) of `network` (inference mode) over a dataset, in order."""
    import keras

    probs, index = [], []
    for images, _, idx in dataset:
        probs.append(keras.ops.convert_to_numpy(
            keras.ops.softmax(network(images, training=False), axis=-1)))
        index.append(np.asarray(idx))
    return np.concatenate(probs), np.concatenate(index)


def per_sample_losses(network, dataset, labels) -> tuple[np.ndarray, np.ndarray]:
    """(losses (N,) float32, pred_probs (N, K)) of `network`, ordered by sample index.

    `dataset` must cover every sample of `labels` (N,) exactly once; the loss is the
    cross-entropy of the given label.
    """
    labels = np.asarray(labels)
    probs, index = predict_probs(network, dataset)
    order = np.argsort(index)
    probs, index = probs[order], index[order]
    if len(index) != len(labels) or not np.array_equal(index, np.arange(len(labels))):
        raise RuntimeError("per-sample loss pass did not cover every training sample once.")
    losses = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))
    return losses.astype(np.float32), probs


def mask_digest(labelled) -> str:
    """Short digest of a boolean (N,) split mask: equal digests, equal splits."""
    bits = np.packbits(np.asarray(labelled, dtype=bool))
    return hashlib.sha1(bits.tobytes()).hexdigest()[:12]
