"""Supervised trainer: a `keras.Model` wrapping a network, with a Keras 3 `train_step`.

Data is `(image, label, sample_index)`. The per-example loss is one of the long-tail losses
in `ferkeras.losses`, averaged over the *global* batch with `tf.nn.compute_average_loss`,
so gradients summed across replicas equal the single-device gradient.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.registry import list_losses

SUPERVISED_LOSSES = tuple(list_losses())  # the one table: ferkeras.registry.LOSSES


class SupervisedTrainer(keras.Model):
    """Trains `network` (pixels -> logits) with a long-tail-aware supervised loss.

    Args:
      network: functional `keras.Model` returning logits (B, K).
      num_classes: K.
      loss: 'ce', 'logit_adjusted', 'balanced_softmax' or 'class_balanced'.
      tau: logit-adjustment temperature.
      label_smoothing: for 'ce'.
      ema_decay: > 0 keeps an EMA copy of the network (`ema_network`) for evaluation/export.
    The class prior (`log_prior`) and class weights (`class_weights`) are variables, so a
    callback can re-estimate them during `fit` (the cycle does, from the clean set).
    """

    def __init__(self, network, *, num_classes, loss="ce", tau=1.0, label_smoothing=0.0,
                 ema_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        if loss not in SUPERVISED_LOSSES:
            raise ValueError(f"Unknown loss. Valid: {SUPERVISED_LOSSES}. Received: loss={loss!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1). Received: ema_decay={ema_decay}")
        self.network = network
        self.num_classes = int(num_classes)
        self.loss_name = loss
        self.tau = float(tau)
        self.label_smoothing = float(label_smoothing)
        self.ema_decay = float(ema_decay)
        self.log_prior = self.add_weight(
            shape=(self.num_classes,), initializer="zeros", trainable=False, name="log_prior"
        )
        self.class_weights = self.add_weight(
            shape=(self.num_classes,), initializer="ones", trainable=False, name="class_weights"
        )
        self.ema_network = None
        if self.ema_decay > 0:
            self.ema_network = keras.models.clone_model(network)
            self.ema_updates = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="ema_updates",
                dtype="float32",
            )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # ------------------------------------------------------------------ plumbing
    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    @property
    def eval_network(self):
        """The network used for evaluation and export: the EMA copy when there is one."""
        return self.ema_network if self.ema_network is not None else self.network

    def call(self, images, training=False):
        return self.network(images, training=training)

    def build_state(self, input_shape):
        """Create every variable (network, EMA, optimizer) outside `tf.function`."""
        self.network.build((None, *input_shape))
        if self.ema_network is not None:
            self.ema_network.build((None, *input_shape))
            self.reset_ema()
        self.optimizer.build(self.network.trainable_variables)
        self.built = True

    def reset_ema(self):
        if self.ema_network is not None:
            for ema, w in zip(self.ema_network.weights, self.network.weights, strict=True):
                ema.assign(w)
            self.ema_updates.assign(0.0)

    def set_class_prior(self, class_counts, *, beta: float = 0.999, smoothing: float = 1.0):
        """Set `log_prior` and class-balanced `class_weights` from (K,) class counts."""
        counts = np.asarray(class_counts, dtype=np.float64)
        self.log_prior.assign(L.log_prior_from_counts(counts, smoothing=smoothing))
        self.class_weights.assign(
            L.class_balanced_weights(np.maximum(counts, 1.0), beta=beta).astype("float32")
        )

    # ------------------------------------------------------------------ losses
    def supervised_per_example(self, labels, logits):
        """(B,) per-example supervised loss for int labels (B,) and logits (B, K)."""
        if self.loss_name == "ce":
            return L.cross_entropy(labels, logits, label_smoothing=self.label_smoothing,
                                   num_classes=self.num_classes)
        if self.loss_name == "logit_adjusted":
            return L.logit_adjusted_cross_entropy(labels, logits, log_prior=self.log_prior,
                                                  tau=self.tau)
        if self.loss_name == "balanced_softmax":
            return L.balanced_softmax_cross_entropy(labels, logits, log_prior=self.log_prior)
        return L.class_balanced_cross_entropy(labels, logits, weights=self.class_weights)

    def _regularization(self):
        if self.network.losses:
            return tf.nn.scale_regularization_loss(tf.add_n(self.network.losses))
        return 0.0

    def apply_gradients(self, tape, loss):
        variables = self.network.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply(grads, variables)
        self.update_ema()

    def update_ema(self):
        if self.ema_network is None:
            return
        self.ema_updates.assign_add(1.0)
        n = self.ema_updates
        # Bias-corrected warm-up, as tf.train.ExponentialMovingAverage(num_updates).
        decay = tf.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))
        for ema, w in zip(self.ema_network.weights, self.network.weights, strict=True):
            ema.assign(decay * ema + (1.0 - decay) * tf.cast(w, ema.dtype))

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        images, labels, _ = data
        with tf.GradientTape() as tape:
            logits = self.network(images, training=True)
            per_example = self.supervised_per_example(labels, logits)
            loss = tf.nn.compute_average_loss(per_example) + self._regularization()
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return tf.nn.softmax(self.eval_network(images, training=False), axis=-1)
