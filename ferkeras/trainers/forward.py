"""ForwardCorrectedTrainer: the supervised trainer with forward loss correction (Patrini et
al., CVPR 2017) once a noise transition matrix is installed.

The per-example loss is cross-entropy of the given (noisy) label against
log(softmax(logits) @ T) (`forward_corrected_log_probs`, `ferkeras.noise.correction`, is the
array reference). T (K, K) and its on/off flag are non-trainable variables of the trainer:
a callback (`ferkeras.callbacks.forward.ForwardCorrection`) sets them during `fit`, and the
run state saves and restores them with the weights. Until T is installed (flag off) the loss
is the plain supervised loss. Evaluation and export use the plain network: it models the
clean posterior.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.noise.transition import LOG_PROB_FLOOR, _check_transition
from ferkeras.trainers.supervised import SupervisedTrainer


def forward_corrected_log_probs_tf(logits, transition):
    """(B, K) log(max(softmax(logits) @ T, LOG_PROB_FLOOR)), in log space (logsumexp over the
    clean class), float32. T: (K, K) tensor."""
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    log_t = tf.math.log(tf.maximum(tf.cast(transition, tf.float32), 1e-30))
    out = tf.reduce_logsumexp(log_p[:, :, None] + log_t[None], axis=1)
    return tf.maximum(out, float(np.log(LOG_PROB_FLOOR)))


@keras.saving.register_keras_serializable(package="ferkeras")
class ForwardCorrectedTrainer(SupervisedTrainer):
    """`SupervisedTrainer` with loss 'ce' whose loss becomes forward-corrected once
    `set_transition(T)` is called. Args: as `SupervisedTrainer` (the loss must be 'ce')."""

    def __init__(self, network, *, num_classes, **kwargs):
        super().__init__(network, num_classes=num_classes, **kwargs)
        if self.loss_name != "ce":
            raise ValueError("Forward correction composes with cross-entropy only. "
                             f"Received: loss={self.loss_name!r}")
        k = self.num_classes
        self.transition = self.add_weight(
            shape=(k, k), initializer=keras.initializers.Identity(), trainable=False,
            name="transition")
        self.transition_on = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                             name="transition_on")

    @property
    def forward_is_on(self) -> bool:
        return bool(keras.ops.convert_to_numpy(self.transition_on) > 0.5)

    def set_transition(self, transition) -> None:
        """Install T (K, K), T[i, j] = P(noisy j | clean i): the loss is corrected from the
        next step on."""
        T = _check_transition(transition, self.num_classes)
        self.transition.assign(T.astype(np.float32))
        self.transition_on.assign(1.0)

    def supervised_per_example(self, labels, logits):
        plain = super().supervised_per_example(labels, logits)
        _, targets, _ = L._logits_and_targets(labels, logits, self.num_classes,
                                              self.label_smoothing)
        log_noisy = forward_corrected_log_probs_tf(logits, self.transition)
        corrected = -tf.reduce_sum(tf.cast(targets, tf.float32) * log_noisy, axis=-1)
        return tf.where(self.transition_on > 0.5, corrected, plain)
