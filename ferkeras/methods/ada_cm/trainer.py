"""AdaCMTrainer: the cycle's SSL step with Ada-CM margins and its contrastive term.

Li et al., "Towards Semi-Supervised Deep Facial Expression Recognition with An Adaptive
Confidence Margin", CVPR 2022 (`cycle.method: ada_cm`). Like `CycleTrainer`, one
stream covers the whole training set and `labelled_mask` routes each sample; the
unlabelled step differs:

- confidence = max of the mean of two weak views' probabilities; the second weak view is a
  weak augmentation of the stream's weak view, drawn in the step (seeded by sample index and
  step), since the stream carries one weak and one strong view;
- subset I (confidence >= the margin of its pseudo-class): cross-entropy of the strong view
  on the pseudo-label, weight `lambda_u`;
- subset II (the rest): NT-Xent between the penultimate features (the input of layer
  "head_dropout") of the two weak views, weight `contrastive_weight`. No unlabelled sample
  is thrown away.

Margins (`ferkeras.methods.ada_cm.core`) are per-class `tf.Variable`s: each step adds the
confidences of
the correctly predicted labelled samples of the global batch to per-class sums; at the end
of each epoch the margins become max(floor, 0.97 / (1 + e^-t) * mean) and the sums reset.
They start at the floor (`min_threshold`, 0.8 in the authors' code).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.data import augment as aug
from ferkeras.methods.ada_cm import core as A
from ferkeras.trainers import pseudo_labels as P
from ferkeras.trainers.cycle import CycleTrainer

FEATURE_LAYER = "head_dropout"  # its input is the penultimate feature vector


class _Unt:
    """Holds an object out of Keras' attribute tracking (the feature model shares the
    network's variables; tracking it would list them twice)."""

    def __init__(self, value):
        self.value = value


class MarginUpdate(keras.callbacks.Callback):
    """Turns the epoch's per-class statistics into the next epoch's margins."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        self.trainer.update_margins(epoch + 1)


@keras.saving.register_keras_serializable(package="ferkeras")
class AdaCMTrainer(CycleTrainer):
    """Args (beyond CycleTrainer's; `threshold_mode` is 'ada_cm'):
      min_threshold: the margins' floor and start value (0.8 in the authors' code).
      contrastive_weight: weight of the contrastive term (0.1 in the authors' code).
      contrastive_temperature: NT-Xent temperature (0.07 in the authors' code).
      margin_scale: ceiling of the margin schedule scale / (1 + e^-t) (0.97).
    """

    def __init__(self, network, *, num_classes, threshold_mode="ada_cm", min_threshold=0.8,
                 contrastive_weight=0.1, contrastive_temperature=0.07,
                 margin_scale=A.PAPER_SCALE, **kwargs):
        if threshold_mode != "ada_cm":
            raise ValueError(f"AdaCMTrainer's threshold_mode is 'ada_cm'. "
                             f"Received: threshold_mode={threshold_mode!r}")
        if not contrastive_weight >= 0:
            raise ValueError(f"contrastive_weight must be >= 0. "
                             f"Received: contrastive_weight={contrastive_weight!r}")
        if not contrastive_temperature > 0:
            raise ValueError(f"contrastive_temperature must be > 0. "
                             f"Received: contrastive_temperature={contrastive_temperature!r}")
        if not 0 < margin_scale <= 1:
            raise ValueError(f"margin_scale must be in (0, 1]. "
                             f"Received: margin_scale={margin_scale!r}")
        super().__init__(network, num_classes=num_classes, threshold_mode="fixed",
                         min_threshold=min_threshold, **kwargs)
        self.threshold_mode = "ada_cm"
        self.contrastive_weight = float(contrastive_weight)
        self.contrastive_temperature = float(contrastive_temperature)
        self.margin_scale = float(margin_scale)
        k = self.num_classes
        self.margins = self.add_weight(
            shape=(k,), initializer=keras.initializers.Constant(self.min_threshold),
            name="ada_cm_margins", trainable=False, aggregation="only_first_replica")
        # MEAN-aggregated, updated as old + R * replica_delta (see _update_global_state).
        self.margin_sums = self.add_weight(shape=(k,), initializer="zeros",
                                           name="ada_cm_margin_sums", trainable=False,
                                           aggregation="mean")
        self.margin_counts = self.add_weight(shape=(k,), initializer="zeros",
                                             name="ada_cm_margin_counts", trainable=False,
                                             aggregation="mean")
        self.contrastive_tracker = keras.metrics.Mean(name="contrastive_loss")
        self.subset2_tracker = keras.metrics.Mean(name="low_confidence_share")
        self._features = _Unt(keras.Model(
            network.inputs, [network.get_layer(FEATURE_LAYER).input, network.outputs[0]]))

    def get_config(self):
        return {**super().get_config(), "contrastive_weight": self.contrastive_weight,
                "contrastive_temperature": self.contrastive_temperature,
                "margin_scale": self.margin_scale}

    @classmethod
    def recipe_kwargs(cls, recipe, bundle) -> dict:
        c = recipe.cycle
        return {**super().recipe_kwargs(recipe, bundle),
                "threshold_mode": "ada_cm", "contrastive_weight": c.ada_cm.contrastive_weight,
                "contrastive_temperature": c.ada_cm.temperature}

    @property
    def metrics(self):
        return [*super().metrics, self.contrastive_tracker, self.subset2_tracker]

    def fit(self, x=None, y=None, **kwargs):
        # First in the list: the margins are updated before RunState saves the epoch.
        callbacks = [MarginUpdate(self), *(kwargs.pop("callbacks", None) or [])]
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def update_margins(self, epoch: int) -> np.ndarray:
        """Margins from the statistics gathered since the last call (host side, once an
        epoch); `epoch` is the 1-based epoch just finished. Resets the statistics."""
        margins = A.margins_from_statistics(
            np.asarray(self.margin_sums.numpy()), np.asarray(self.margin_counts.numpy()),
            epoch=epoch, scale=self.margin_scale, floor=self.min_threshold)
        margins = np.asarray(keras.ops.convert_to_numpy(margins), np.float32)
        self.margins.assign(margins)
        self.margin_sums.assign(np.zeros(self.num_classes, np.float32))
        self.margin_counts.assign(np.zeros(self.num_classes, np.float32))
        return margins

    # ------------------------------------------------------------------ the SSL step
    def second_weak_view(self, images, index):
        """A further weak augmentation of each (weak-view) image, seeded by its sample index
        and the optimizer step (stateless, identical on every replica)."""
        step = tf.cast(self.optimizer.iterations, tf.int32)
        index = tf.cast(index, tf.int32)
        seeds = tf.stack([index, tf.fill(tf.shape(index), step * 7919 + self.seed)], axis=1)
        return tf.map_fn(lambda a: aug.weak_augment(a[0], a[1]), (images, seeds),
                         fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))

    def train_step(self, data):
        views, labels, index = data
        if not isinstance(views, (tuple, list)):
            return super().train_step(data)
        weak, strong = views
        batch = tf.shape(weak)[0]
        is_lab = tf.gather(self.labelled_mask, index)
        unlab_pos = tf.cast(tf.where(is_lab < 0.5)[:, 0], tf.int32)
        n_u = tf.shape(unlab_pos)[0]
        weak2_u = self.second_weak_view(tf.gather(weak, unlab_pos), tf.gather(index, unlab_pos))
        strong_u = tf.gather(strong, unlab_pos)
        with tf.GradientTape() as tape:
            feats, logits = self._features.value(
                tf.concat([weak, weak2_u, strong_u], axis=0), training=True)
            feats = tf.cast(feats, tf.float32)
            logits_w = logits[:batch]
            logits_w2, logits_s = logits[batch:batch + n_u], logits[batch + n_u:]
            sup = self.supervised_per_example(labels, logits_w) * is_lab
            probs = tf.nn.softmax(tf.stop_gradient(logits_w), axis=-1)
            self._update_global_state(probs, index, 1.0 - is_lab)
            self._accumulate_margins(probs, labels, is_lab)
            probs_u = 0.5 * (tf.gather(probs, unlab_pos) +
                             tf.nn.softmax(tf.stop_gradient(logits_w2), axis=-1))
            if self.distribution_alignment:
                probs_u = P.align_distribution(probs_u, target_prior=self.target_prior,
                                               model_prior=self.model_prior)
            pseudo, _, mask = A.margin_mask(probs_u, margins=self.margins)
            unsup_u = L.cross_entropy(pseudo, logits_s, num_classes=self.num_classes) * mask
            contrast_u = A.contrastive_loss(
                tf.gather(feats[:batch], unlab_pos), feats[batch:batch + n_u],
                temperature=self.contrastive_temperature, mask=1.0 - mask)
            unsup = tf.scatter_nd(unlab_pos[:, None],
                                  self.lambda_u * unsup_u + self.contrastive_weight * contrast_u,
                                  tf.shape(sup))
            per_example = sup + unsup
            loss = tf.nn.compute_average_loss(per_example) + self._regularization()
        self.apply_gradients(tape, loss)
        self._track(labels, logits_w, per_example, sup, is_lab, unsup_u, mask, pseudo,
                    tf.gather(index, unlab_pos))
        self.contrastive_tracker.update_state(contrast_u, sample_weight=1.0 - mask)
        self.subset2_tracker.update_state(1.0 - mask)
        return {m.name: m.result() for m in self.metrics}

    def _accumulate_margins(self, probs, labels, is_lab):
        """Add this replica's correct labelled confidences to the (global) per-class sums."""
        sums, counts = A.margin_statistics(
            tf.reduce_max(probs, axis=-1), labels, tf.argmax(probs, axis=-1),
            num_classes=self.num_classes, mask=is_lab)
        # MEAN over replicas of (old + R * delta_r) = old + sum_r delta_r.
        replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
        self.margin_sums.assign(self.margin_sums + replicas * sums)
        self.margin_counts.assign(self.margin_counts + replicas * counts)
