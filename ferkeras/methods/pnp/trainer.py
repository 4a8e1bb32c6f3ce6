"""PNPTrainer: the cycle's step with PNP's noise-type head (Sun et al., CVPR 2022).

`cycle.method: pnp`. A small head on the network's penultimate features (the input of layer
"logits", the backbone shared with the classifier: the paper's shared-backbone form) predicts
for each sample p(clean), p(ID noise), p(OOD noise). After warm-up every step trains every
sample on the three type losses weighted by these probabilities (`ferkeras.methods.pnp.core.
per_example_loss`): clean -> the given label, ID -> the relabelled target (the sharpened
mean of the model's predictions and the label), OOD -> a flattened target (weight
`ood_weight`; 0 drops it), plus the head's auxiliary loss and a view-consistency term.
The routing comes from the head at each step, not from the split: every sample needs its
strong view, so the mask the input pipeline reads (`labelled_mask`) stays all zeros. The split
(`NoiseSplit`, selector `pnp`) runs the head over the training set, reports p(OOD) per sample
(samples.csv `p_ood`) and fills `clean_prob` with p(clean). Warm-up epochs train the classifier
alone on the given labels, as the authors' warm-up does (the head starts after it).

The head and the network share one optimizer (the head's variables are added to it); no
per-sample table beyond CycleTrainer's, so MirroredStrategy needs nothing more.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ferkeras.data import augment as aug
from ferkeras.methods.pnp import core as PNP
from ferkeras.trainers.cycle import CycleTrainer

FEATURE_LAYER = "logits"  # its input is the penultimate feature vector


class _Unt:
    """Holds an object out of Keras' attribute tracking (the feature model shares the
    network's variables; tracking it would list them twice)."""

    def __init__(self, value):
        self.value = value


@keras.saving.register_keras_serializable(package="ferkeras")
class PNPTrainer(CycleTrainer):
    """Args (beyond CycleTrainer's; `lambda_u`, thresholds and alignment do not apply):
      label_smoothing_epsilon: smoothing of the given labels in PNP's losses (0.6 in the
        authors' scripts).
      temperature: sharpening / flattening temperature of the ID / OOD targets (0.1).
      eta: weight of view disagreement vs entropy in the OOD pseudo-target (0.5).
      ood_weight: beta, weight of the OOD type's loss; 0 drops OOD samples (1.0).
      aux_weight: gamma, weight of the head's auxiliary loss (1.0).
      consistency_weight: omega, weight of the view consistency (1.0).
    """

    def __init__(self, network, *, num_classes, label_smoothing_epsilon=0.6, temperature=0.1,
                 eta=0.5, ood_weight=1.0, aux_weight=1.0, consistency_weight=1.0, **kwargs):
        checks = {"label_smoothing_epsilon": (label_smoothing_epsilon, 0.0, 0.99),
                  "temperature": (temperature, 1e-3, 1.0), "eta": (eta, 0.0, 1.0),
                  "ood_weight": (ood_weight, 0.0, 100.0), "aux_weight": (aux_weight, 0.0, 100.0),
                  "consistency_weight": (consistency_weight, 0.0, 100.0)}
        for name, (value, lo, hi) in checks.items():
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}]. Received: {name}={value!r}")
        super().__init__(network, num_classes=num_classes, **kwargs)
        self.label_smoothing_epsilon = float(label_smoothing_epsilon)
        self.temperature = float(temperature)
        self.eta = float(eta)
        self.ood_weight = float(ood_weight)
        self.aux_weight = float(aux_weight)
        self.consistency_weight = float(consistency_weight)
        self._features = _Unt(keras.Model(
            network.inputs, [network.get_layer(FEATURE_LAYER).input, network.outputs[0]]))
        self.feature_dim = int(network.get_layer(FEATURE_LAYER).input.shape[-1])
        self.noise_type_head = keras.Sequential(
            [keras.layers.Dense(self.feature_dim, activation="relu", name="pnp_hidden"),
             keras.layers.Dense(len(PNP.TYPES), name="pnp_types", dtype="float32")],
            name="noise_type_head")
        self.aux_tracker = keras.metrics.Mean(name="pnp_aux_loss")
        self.type_trackers = [keras.metrics.Mean(name=f"p_{t}") for t in PNP.TYPES]

    def get_config(self):
        return {**super().get_config(), "label_smoothing_epsilon": self.label_smoothing_epsilon,
                "temperature": self.temperature, "eta": self.eta,
                "ood_weight": self.ood_weight, "aux_weight": self.aux_weight,
                "consistency_weight": self.consistency_weight}

    @classmethod
    def from_recipe(cls, recipe, network, bundle):
        c, t = recipe.cycle, recipe.train
        return cls(
            network, num_classes=bundle.num_classes, num_samples=len(bundle.train),
            true_labels=bundle.train.true_labels, label_smoothing_epsilon=c.pnp.label_smoothing,
            temperature=c.pnp.temperature, eta=c.pnp.eta, ood_weight=c.pnp.ood_weight,
            aux_weight=c.pnp.aux_weight, consistency_weight=c.pnp.consistency_weight,
            loss=t.loss, tau=t.tau, label_smoothing=t.label_smoothing, ema_decay=t.ema_decay,
        )

    @property
    def metrics(self):
        return [*super().metrics, self.aux_tracker, *self.type_trackers]

    # ------------------------------------------------------------------ variables
    def _trained_variables(self):
        return [*self.network.trainable_variables, *self.noise_type_head.trainable_variables]

    def _build_variables(self, input_shape):
        super()._build_variables(input_shape)
        self.noise_type_head.build((None, self.feature_dim))

    def build_state(self, input_shape):
        self._build_variables(input_shape)
        self.reset_ema()
        self.optimizer.build(self._trained_variables())

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        keras.Model.compile(self, **config)
        if self.built:
            self.optimizer.build(self._trained_variables())

    def set_split(self, labelled_mask, clean_prob, clean_prior):
        """Keep the split's clean probabilities; the mask the pipeline reads stays all zeros
        (PNP routes by its head at every step, so every sample gets its strong view)."""
        super().set_split(np.zeros(self.num_samples, np.float32), clean_prob, clean_prior)

    # ------------------------------------------------------------------ passes
    def noise_type_probs(self, dataset) -> np.ndarray:
        """(N, 3) float32 p(clean), p(ID), p(OOD) of every sample of `dataset` (`(image, label,
        index)` batches covering each sample once), inference mode, ordered by index."""
        features, head = self._features.value, self.noise_type_head

        @tf.function(reduce_retracing=True)
        def _pass(x):
            feats, _ = features(x, training=False)
            return tf.nn.softmax(tf.cast(head(feats, training=False), tf.float32), axis=-1)

        probs, index = [], []
        for images, _, idx in dataset:
            probs.append(_pass(images).numpy())
            index.append(np.asarray(idx))
        return np.concatenate(probs)[np.argsort(np.concatenate(index))]

    # ------------------------------------------------------------------ the step
    def second_weak_view(self, images, index):
        """A further weak augmentation of each (weak-view) image, seeded by its sample index
        and the optimizer step (stateless, identical on every replica): the authors' second
        weak view, which the stream (one weak, one strong view) does not carry."""
        step = tf.cast(self.optimizer.iterations, tf.int32)
        index = tf.cast(index, tf.int32)
        seeds = tf.stack([index, tf.fill(tf.shape(index), step * 7919 + self.seed + 17)],
                         axis=1)
        return tf.map_fn(lambda a: aug.weak_augment(a[0], a[1]), (images, seeds),
                         fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))

    def train_step(self, data):
        views, labels, index = data
        if not isinstance(views, (tuple, list)):
            return super().train_step(data)  # warm-up: the classifier on the given labels
        weak, strong = views
        batch = tf.shape(weak)[0]
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        weak2 = self.second_weak_view(weak, index)
        with tf.GradientTape() as tape:
            feats, logits = self._features.value(tf.concat([weak, weak2, strong], axis=0),
                                                 training=True)
            type_logits = self.noise_type_head(feats[:batch], training=True)
            type_probs = tf.nn.softmax(tf.cast(type_logits, tf.float32), axis=-1)
            out = PNP.per_example_loss(
                logits[:batch], logits[batch:2 * batch], logits[2 * batch:], labels, type_probs,
                num_classes=self.num_classes, epsilon=self.label_smoothing_epsilon,
                temperature=self.temperature, eta=self.eta, ood_weight=self.ood_weight,
                aux_weight=self.aux_weight, consistency_weight=self.consistency_weight)
            per_example = out["loss"]
            loss = tf.nn.compute_average_loss(per_example) + self._regularization()
        variables = self._trained_variables()
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.update_ema()
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(labels, logits[:batch], sample_weight=type_probs[:, 0])
        self.sup_tracker.update_state(out["classification"])
        self.aux_tracker.update_state(out["aux"])
        for k, tracker in enumerate(self.type_trackers):
            tracker.update_state(type_probs[:, k])
        relabel = tf.argmax(out["relabel"], axis=-1, output_type=tf.int32)
        truth = tf.gather(self.true_labels, index)
        known = tf.cast(truth >= 0, tf.float32) * type_probs[:, 1]
        self.pseudo_acc_tracker.update_state(tf.cast(tf.equal(relabel, truth), tf.float32),
                                             sample_weight=known)
        return {m.name: m.result() for m in self.metrics}
