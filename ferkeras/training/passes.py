"""Model passes over a dataset: probabilities, per-sample losses, split digests.

Plain functions on a network and a `make_dataset` stream of `(image, label, index)`; no
callbacks, no run folders. Training, the noise split, `evaluate`, `audit` and the benchmarks
all use these.
"""

from __future__ import annotations

import hashlib
import weakref

import numpy as np

_COMPILED = weakref.WeakKeyDictionary()  # network -> its compiled float32 softmax pass


def _compiled_softmax(network):
    """`softmax(network(x, training=False))` in float32, as one `tf.function` per network.

    Calling a Keras model eagerly per batch pays Python and op-dispatch overhead on every
    layer; one traced function is several times faster for the small networks
    (bench/results/training_speed.md). Variables are captured by reference, so loading new
    weights into the same network needs no retrace.
    """
    import tensorflow as tf

    fn = _COMPILED.get(network)
    if fn is None:
        ref = weakref.ref(network)  # the cached function must not keep its network alive
        fn = tf.function(lambda x: tf.nn.softmax(tf.cast(ref()(x, training=False),
                                                         tf.float32), axis=-1),
                         reduce_retracing=True)
        _COMPILED[network] = fn
    return fn


def predict_probs(network, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, K) float32, index (N,)) of `network` (inference mode) over a dataset, in
    order."""
    softmax = _compiled_softmax(network)
    probs, index = [], []
    for images, _, idx in dataset:
        probs.append(softmax(images).numpy())
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


def per_sample_features(network, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
    """(features (N, D), probs (N, K), kernel (D, K), bias (K,)) of `network`, by sample index.

    features: the input of the network's `logits` layer (its penultimate features, inference
    mode), float32; kernel and bias: that layer's weights. `dataset` must cover every sample
    once, as `(image, label, index)` batches. Used by the H2E selector (`ferkeras.noise.h2e`).
    """
    import keras
    import tensorflow as tf

    layer = network.get_layer("logits")
    model = keras.Model(network.inputs, [layer.input, network.outputs[0]])

    @tf.function(reduce_retracing=True)
    def _pass(x):
        feats, logits = model(x, training=False)
        return tf.cast(feats, tf.float32), tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    feats, probs, index = [], [], []
    for images, _, idx in dataset:
        f, p = _pass(images)
        feats.append(f.numpy())
        probs.append(p.numpy())
        index.append(np.asarray(idx))
    order = np.argsort(np.concatenate(index))
    kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights()[:2])
    return np.concatenate(feats)[order], np.concatenate(probs)[order], kernel, bias
