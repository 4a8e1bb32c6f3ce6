"""Supervised trainer: a `keras.Model` wrapping a network, with a Keras 3 `train_step`.

`fit` takes NumPy arrays `(x, y)` or a batched `tf.data.Dataset` of `(x, y)`, numbered into
`(image, label, sample_index)` by `ferkeras.trainers.inputs`; a dataset that already yields
`(x, y, sample_index)` is used as given (the recipe path does this). The per-example loss is
one of the long-tail losses in `ferkeras.losses`, averaged over the *global* batch with
`tf.nn.compute_average_loss`, so gradients summed across replicas equal the single-device
gradient. `evaluate` reports the loss and accuracy; `predict` returns probabilities.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.noise import soft_targets as S
from ferkeras.registry import list_losses
from ferkeras.trainers.inputs import training_set

SUPERVISED_LOSSES = tuple(list_losses())  # the one table: ferkeras.registry.LOSSES


def _loss_object(loss, tau, label_smoothing):
    """A `ferkeras.losses` Loss from a name (with the legacy tau / label_smoothing) or a Loss."""
    if isinstance(loss, str):
        if loss not in SUPERVISED_LOSSES:
            raise ValueError(f"Unknown loss. Valid: {SUPERVISED_LOSSES}. Received: loss={loss!r}")
        kwargs = {"label_smoothing": float(label_smoothing or 0.0)}
        if loss == "logit_adjusted":
            kwargs["tau"] = 1.0 if tau is None else float(tau)
        return L.LOSSES[loss](**kwargs)
    return L.get_loss(loss)


@keras.saving.register_keras_serializable(package="ferkeras")
class SupervisedTrainer(keras.Model):
    """Trains `network` (pixels -> logits) with a long-tail-aware supervised loss.

    Args:
      network: functional `keras.Model` returning logits (B, K).
      num_classes: K.
      loss: a `ferkeras.losses` Loss (`CrossEntropy`, `LogitAdjusted(tau=...)`,
        `BalancedSoftmax`, `ClassBalanced(beta=...)`) or its name: 'ce', 'logit_adjusted',
        'balanced_softmax', 'class_balanced'.
      tau, label_smoothing: with a loss *name* only (the recipe path).
      ema_decay: > 0 keeps an EMA copy of the network (`ema_network`) for evaluation/export.
      seed: seeds the shuffling (and, in the cycle, the augmentation) of `fit`'s input.
      elr_lambda, elr_beta: > 0 adds early-learning regularisation (ELR, Liu et al., NeurIPS
        2020; `ferkeras.noise.soft_targets`): lambda * log(1 - <p_i, t_i>) per example, t_i a
        running average (momentum elr_beta) of sample i's predictions, kept in the
        non-trainable (N, K) table `elr_targets`, indexed by sample_index.
      num_samples: N for the ELR table; None sizes it at the first `fit`.
      distill_alpha, distill_temperature: > 0 trains on the target (1 - alpha) * label +
        alpha * softmax(ema_logits / T): self-distillation from the EMA network (needs
        ema_decay > 0).
    The class prior (`log_prior`) and class weights (`class_weights`) are variables, so a
    callback can re-estimate them during `fit` (the cycle does, from the clean set). They are
    set from the loss's `class_counts` if it has them, else from the labels of the first `fit`.
    """

    def __init__(self, network, *, num_classes, loss="ce", tau=None, label_smoothing=None,
                 ema_decay=0.0, seed=0, soft_targets=None, elr_lambda=0.0, elr_beta=0.7,
                 distill_alpha=0.0, distill_temperature=1.0, num_samples=None,
                 row_weights=None, **kwargs):
        super().__init__(**kwargs)
        if not elr_lambda >= 0.0:
            raise ValueError(f"elr_lambda must be >= 0. Received: elr_lambda={elr_lambda}")
        if not 0.0 <= elr_beta < 1.0:
            raise ValueError(f"elr_beta must be in [0, 1). Received: elr_beta={elr_beta}")
        if not 0.0 <= distill_alpha <= 1.0:
            raise ValueError(
                f"distill_alpha must be in [0, 1]. Received: distill_alpha={distill_alpha}")
        if not distill_temperature > 0.0:
            raise ValueError("distill_temperature must be > 0. Received: "
                             f"distill_temperature={distill_temperature}")
        if distill_alpha > 0 and not ema_decay > 0:
            raise ValueError("distill_alpha > 0 distils from the EMA network: set ema_decay > 0. "
                             f"Received: distill_alpha={distill_alpha}, ema_decay={ema_decay}")
        self.elr_lambda = float(elr_lambda)
        self.elr_beta = float(elr_beta)
        self.distill_alpha = float(distill_alpha)
        self.distill_temperature = float(distill_temperature)
        self.loss_object = _loss_object(loss, tau, label_smoothing)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1). Received: ema_decay={ema_decay}")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(
                f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
        self.network = network
        self.num_classes = int(num_classes)
        self.loss_name = self.loss_object.kind
        self.tau = float(getattr(self.loss_object, "tau", 1.0))
        self.label_smoothing = self.loss_object.label_smoothing
        self.cb_beta = float(getattr(self.loss_object, "beta", 0.999))
        self.ema_decay = float(ema_decay)
        self.seed = int(seed)
        self.log_prior = self.add_weight(
            shape=(self.num_classes,), initializer="zeros", trainable=False, name="log_prior"
        )
        self.class_weights = self.add_weight(
            shape=(self.num_classes,), initializer="ones", trainable=False, name="class_weights"
        )
        # (N, K) per-sample target distributions (FERPlus votes, data.label_mode probability),
        # looked up by sample index in train_step; None trains on the int labels.
        self.soft_targets = None
        if soft_targets is not None:
            table = np.asarray(soft_targets, dtype="float32")
            if table.ndim != 2 or table.shape[1] != self.num_classes:
                raise ValueError(f"soft_targets must be (N, {self.num_classes}). Received: "
                                 f"shape={table.shape}")
            self.soft_targets = self.add_weight(
                shape=table.shape, initializer=keras.initializers.Constant(table),
                trainable=False, name="soft_targets")
        # (N,) per-row loss weights (trusted rows that joined the training set), looked up by
        # sample index; None weighs every row 1. An int sizes a table of ones (from_config).
        self.row_weights = None
        if row_weights is not None:
            table = (np.ones(int(row_weights), "float32") if np.ndim(row_weights) == 0
                     else np.asarray(row_weights, dtype="float32"))
            if table.ndim != 1 or (table < 0).any():
                raise ValueError("row_weights must be (N,) and >= 0. Received: shape "
                                 f"{table.shape}")
            self.row_weights = self.add_weight(
                shape=table.shape, initializer=keras.initializers.Constant(table),
                trainable=False, name="row_weights")
        self.prior_is_set = False
        if self.loss_object.class_counts is not None:
            self.set_class_prior(self.loss_object.class_counts, beta=self.cb_beta)
        self.ema_network = None
        if self.ema_decay > 0:
            self.ema_network = keras.models.clone_model(network)
            # Assigned, never trained: keeps `trainable_variables` (and the optimizer) to the
            # network's own, as the optimizer is built on in `build_state` and on load.
            self.ema_network.trainable = False
            self.ema_updates = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="ema_updates",
                dtype="float32",
            )
        self.elr_targets = None
        if self.elr_lambda > 0 and num_samples is not None:
            self._create_elr_targets(int(num_samples))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.training_set = None
        self._fits = 0

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "num_classes": self.num_classes,
            "loss": keras.saving.serialize_keras_object(self.loss_object),
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            **self._soft_target_config(),
        }

    def _soft_target_config(self):
        config = {"elr_lambda": self.elr_lambda, "elr_beta": self.elr_beta,
                  "distill_alpha": self.distill_alpha,
                  "distill_temperature": self.distill_temperature}
        if self.elr_targets is not None:
            config["num_samples"] = int(self.elr_targets.shape[0])
        if self.row_weights is not None:
            config["row_weights"] = int(self.row_weights.shape[0])
        return config

    def weigh_rows(self, per_example, index):
        """(B,) per-example losses times the rows' `row_weights` (unchanged without them)."""
        if self.row_weights is None:
            return per_example
        return per_example * tf.gather(self.row_weights, index)

    def _create_elr_targets(self, n):
        """The (N, K) ELR target table, zeros as in the paper's code. MEAN-aggregated: each
        replica assigns old + R * (its rows' change), which averages to old + every
        replica's change (sample indices are distinct within a global batch)."""
        self.elr_targets = self.add_weight(
            shape=(n, self.num_classes), initializer="zeros", trainable=False,
            name="elr_targets", aggregation="mean")

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # deserialising consumes the nested dicts
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)

    def get_build_config(self):
        return {"input_shape": list(self.network.input_shape[1:])} if self.built else None

    def build_from_config(self, config):
        if config:
            self._build_variables(tuple(config["input_shape"]))

    # ------------------------------------------------------------------ fit
    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """`keras.Model.compile`; the loss belongs to the trainer (it reads the class prior
        and split tables), so it is given to the constructor, not here."""
        if loss is not None:
            raise ValueError("Pass the loss to the trainer's constructor (loss=...), not to "
                             f"compile. Received: loss={loss!r}")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-compile on `.keras` load (Keras skips models that override `compile`)."""
        config = keras.saving.deserialize_keras_object(config)
        super().compile(**config)
        if self.built:
            self.optimizer.build(self.network.trainable_variables)

    def fit(self, x=None, y=None, *, batch_size=None, epochs=1, shuffle=True, **kwargs):
        """`keras.Model.fit` on arrays `(x, y)` or a batched dataset of `(x, y)`.

        Images are float pixels in [0, 255] (the ferkeras networks rescale inside), labels
        int class ids (N,). A dataset yielding `(x, y, sample_index)` is used as given.
        Fitting the same trainer again continues from its current weights.
        """
        if self.optimizer is None:
            raise ValueError("Call compile(optimizer=...) before fit. Received: no optimizer")
        data = training_set(x, y, batch_size=batch_size)
        self._before_fit(data)
        self.training_set = data
        stream = data.stream(shuffle=shuffle, seed=self.seed * 1009 + self._fits,
                             **self._stream_options())
        self._fits += 1
        return super().fit(stream, epochs=epochs, shuffle=False, **kwargs)

    def _stream_options(self) -> dict:
        return {}

    def _before_fit(self, data) -> None:
        """Build every variable outside `tf.function` and set the prior from the labels."""
        if data.known_labels is not None or not self.prior_is_set:
            labels = data.labels
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes}). Received "
                                 f"min={labels.min()}, max={labels.max()}")
        if self.elr_lambda > 0 and self.elr_targets is None:
            self._create_elr_targets(len(data))
        if not self.prior_is_set:
            self.set_class_prior(np.bincount(data.labels, minlength=self.num_classes),
                                 beta=self.cb_beta)
        if not self.built or not self.optimizer.built:
            self.build_state(data.image_shape)

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
        self._build_variables(input_shape)
        self.reset_ema()
        self.optimizer.build(self.network.trainable_variables)

    def _build_variables(self, input_shape):
        self.network.build((None, *input_shape))
        if self.ema_network is not None:
            self.ema_network.build((None, *input_shape))
        self.built = True

    def reset_ema(self):
        if self.ema_network is not None:
            for ema, w in zip(self.ema_network.weights, self.network.weights, strict=True):
                ema.assign(w)
            self.ema_updates.assign(0.0)

    def set_class_prior(self, class_counts, *, beta: float = 0.999, smoothing: float = 1.0):
        """Set `log_prior` and class-balanced `class_weights` from (K,) class counts."""
        counts = np.asarray(class_counts, dtype=np.float64)
        self.prior_is_set = True
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
        images, labels, index = data
        targets = labels if self.soft_targets is None else tf.gather(self.soft_targets, index)
        if self.distill_alpha > 0:
            teacher = S.teacher_probabilities(self.ema_network(images, training=False),
                                              temperature=self.distill_temperature)
            targets = S.distillation_targets(targets, teacher, alpha=self.distill_alpha,
                                             num_classes=self.num_classes)
        with tf.GradientTape() as tape:
            logits = self.network(images, training=True)
            per_example = self.supervised_per_example(targets, logits)
            if self.elr_lambda > 0:
                per_example = per_example + self.elr_lambda * self._elr_term(logits, index)
            per_example = self.weigh_rows(per_example, index)
            loss = tf.nn.compute_average_loss(per_example) + self._regularization()
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    def _elr_term(self, logits, index):
        """(B,) ELR penalty of the batch; updates the batch's rows of `elr_targets` first
        (the paper's order: the penalty uses the updated targets)."""
        probs = S.clip_probs(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1))
        old = tf.gather(self.elr_targets, index)
        new = S.elr_update_targets(old, probs, beta=self.elr_beta)
        table = self.elr_targets
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        delta = tf.scatter_nd(tf.cast(index, tf.int32)[:, None], new - old,
                              tf.shape(table.value))
        table.assign(table + float(replicas) * delta)
        return S.elr_penalty(probs, new)

    def test_step(self, data):
        images, labels = data[0], data[1]
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        logits = self.eval_network(images, training=False)
        per_example = self.supervised_per_example(labels, logits)
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(labels, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return tf.nn.softmax(self.eval_network(images, training=False), axis=-1)
