"""CycleTrainer: supervised loss on the clean set, FixMatch on the noisy set, in one step.

The data stream covers the whole training set: `((weak, strong), label, sample_index)`.
`labelled_mask`, a per-sample table written by the `NoiseSplit` callback, routes each sample:

- labelled (judged clean): the long-tail supervised loss on its weak view;
- unlabelled (judged noisy): its given label is ignored. The weak view gives a pseudo-label
  (stop-gradient, distribution alignment toward the clean prior, a fixed or class-adaptive
  threshold) and the strong view is trained on it with weight `lambda_u`.

Weak views of all samples and strong views of the unlabelled ones go through the network in
one concatenated forward pass, so BatchNorm sees every view. The per-example losses are
averaged over the global batch (`tf.nn.compute_average_loss`). FlexMatch state and the
model's running prior are updated from the *global* batch (all-gathered across replicas), so
every replica holds identical tables. Without view pairs (warm-up) the step is supervised.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.trainers import pseudo_labels as P
from ferkeras.trainers.supervised import SupervisedTrainer


@keras.saving.register_keras_serializable(package="ferkeras")
class CycleTrainer(SupervisedTrainer):
    """Args (beyond SupervisedTrainer's):
      num_samples: N, the training-set size (tables are indexed by sample_index).
      true_labels: optional (N,) int, -1 unknown; only used for the pseudo-label accuracy metric.
      lambda_u, threshold, threshold_mode ('fixed' | 'adaptive'), distribution_alignment.
      noisy_mode: 'fixmatch' (the rows judged noisy train through FixMatch) or 'relabel'
        (SELFIE-style, `ferkeras.noise.correction.relabel_flagged`: the split relabels the
        confident ones, which rejoin the supervised loss through `labelled_mask` with the
        labels of the per-sample `relabels` table (-1 = keep the given label); the other
        noisy rows leave the loss; no FixMatch term).
      relabel_threshold: with noisy_mode 'relabel', the confidence a flagged row needs.
      noisy_mode 'soft': every row trains on a per-sample target distribution, the (N, K)
        table `soft_relabels` the split writes (`ferkeras.noise.trusted_split.label_posterior` for
        the rows judged noisy, the given label one-hot for the others); no FixMatch term.
    """

    def __init__(self, network, *, num_classes, num_samples=None, true_labels=None,
                 lambda_u=1.0, threshold=0.95, threshold_mode="adaptive", min_threshold=0.0,
                 distribution_alignment=True, noisy_mode="fixmatch", relabel_threshold=0.9,
                 **kwargs):
        super().__init__(network, num_classes=num_classes, **kwargs)
        if noisy_mode not in ("fixmatch", "relabel", "soft"):
            raise ValueError(f"noisy_mode must be fixmatch, relabel or soft. "
                             f"Received: noisy_mode={noisy_mode!r}")
        if not 0.0 < relabel_threshold <= 1.0:
            raise ValueError(f"relabel_threshold must be in (0, 1]. "
                             f"Received: relabel_threshold={relabel_threshold}")
        self.noisy_mode = noisy_mode
        self.relabel_threshold = float(relabel_threshold)
        if threshold_mode not in ("fixed", "adaptive"):
            raise ValueError(f"threshold_mode must be fixed or adaptive. "
                             f"Received: threshold_mode={threshold_mode!r}")
        self.lambda_u = float(lambda_u)
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.min_threshold = float(min_threshold)
        self.distribution_alignment = bool(distribution_alignment)
        self.sup_tracker = keras.metrics.Mean(name="sup_loss")
        self.unsup_tracker = keras.metrics.Mean(name="unsup_loss")
        self.mask_tracker = keras.metrics.Mean(name="mask_rate")
        self.labelled_tracker = keras.metrics.Mean(name="labelled_share")
        self.pseudo_acc_tracker = keras.metrics.Mean(name="pseudo_acc")
        self.num_samples = None
        if num_samples is not None:  # else the first `fit` sizes the tables
            self._create_tables(int(num_samples), true_labels)

    def _create_tables(self, n, true_labels=None):
        """Per-sample tables (indexed by sample_index) and the priors, for N = n samples."""
        self.num_samples = n
        k = self.num_classes
        table = dict(trainable=False, aggregation="only_first_replica")
        self.labelled_mask = self.add_weight(shape=(n,), initializer="ones",
                                             name="labelled_mask", **table)
        self.clean_prob = self.add_weight(shape=(n,), initializer="ones", name="clean_prob",
                                          **table)
        # float32 so replicas can combine their updates (MEAN aggregation); values -1..K-1.
        self.selected_labels = self.add_weight(
            shape=(n,), initializer=keras.initializers.Constant(-1.0), name="selected_labels",
            trainable=False, aggregation="mean")
        uniform = keras.initializers.Constant(1.0 / k)
        self.model_prior = self.add_weight(shape=(k,), initializer=uniform, name="model_prior",
                                           trainable=False, aggregation="mean")
        self.target_prior = self.add_weight(shape=(k,), initializer=uniform,
                                            name="target_prior", **table)
        truth = np.full(n, -1, np.int32) if true_labels is None else np.asarray(true_labels)
        self.true_labels = self.add_weight(
            shape=(n,), initializer=keras.initializers.Constant(truth.astype(np.int32)),
            dtype="int32", name="true_labels", **table)
        self.soft_relabels = None
        if self.noisy_mode == "soft":  # one-hot given labels until the first split
            self.soft_relabels = self.add_weight(
                shape=(n, k), initializer="zeros", name="soft_relabels", **table)
        self.relabels = None
        if self.noisy_mode == "relabel":  # only then: fixmatch runs keep their saved layout
            # float32 like selected_labels; values -1..K-1, written from the host only.
            self.relabels = self.add_weight(
                shape=(n,), initializer=keras.initializers.Constant(-1.0), name="relabels",
                **table)

    def get_config(self):
        return {**super().get_config(), "num_samples": self.num_samples,
                "lambda_u": self.lambda_u, "threshold": self.threshold,
                "threshold_mode": self.threshold_mode, "min_threshold": self.min_threshold,
                "distribution_alignment": self.distribution_alignment,
                **({"noisy_mode": self.noisy_mode, "relabel_threshold": self.relabel_threshold}
                   if self.noisy_mode != "fixmatch" else {})}

    def _before_fit(self, data):
        if self.num_samples is None:
            self._create_tables(len(data))
        # Only when the size is known without a pass: `len` of a dataset that carries its
        # own sample indices reads the whole stream (every epoch of the phase, decoded and
        # augmented) before the first step, and a capped stream (steps_per_epoch) is not a
        # full pass at all.
        elif data.known_labels is not None and len(data) != self.num_samples:
            raise ValueError(
                f"This CycleTrainer's split tables hold {self.num_samples} samples; fit it on "
                f"that training set (or build a new trainer). Received: {len(data)} samples")
        super()._before_fit(data)

    def _stream_options(self):
        return {"views": True, "labelled_mask": self.labelled_mask.value}

    @classmethod
    def recipe_kwargs(cls, recipe, bundle) -> dict:
        """The constructor arguments the recipe's cycle and train sections give; subclasses
        that need more extend this dict rather than repeat it."""
        c, t = recipe.cycle, recipe.train
        return dict(
            num_classes=bundle.num_classes, num_samples=len(bundle.train),
            true_labels=bundle.train.true_labels, lambda_u=c.lambda_u, threshold=c.threshold,
            threshold_mode=c.threshold_mode, min_threshold=c.min_threshold,
            distribution_alignment=c.distribution_alignment,
            noisy_mode=c.method if c.method in ("relabel", "soft") else "fixmatch",
            relabel_threshold=c.relabel.threshold, row_weights=bundle.train.weights,
            loss=t.loss, tau=t.tau, label_smoothing=t.label_smoothing, ema_decay=t.ema_decay,
        )

    @classmethod
    def from_recipe(cls, recipe, network, bundle):
        return cls(network, **cls.recipe_kwargs(recipe, bundle))

    @property
    def metrics(self):
        return [*super().metrics, self.sup_tracker, self.unsup_tracker, self.mask_tracker,
                self.labelled_tracker, self.pseudo_acc_tracker]

    def set_split(self, labelled_mask, clean_prob, clean_prior, relabels=None,
                  soft_targets=None):
        """Install a new split (host-side arrays) and reset the FlexMatch state of the pool.

        relabels: with noisy_mode 'relabel', (N,) new labels (-1 = none) of the rows that
        `labelled_mask` keeps in the supervised loss.
        soft_targets: with noisy_mode 'soft', (N, K) the target distribution of every row."""
        if self.soft_relabels is not None:
            if soft_targets is None:
                raise ValueError("noisy_mode='soft' needs soft_targets (N, K) at each split. "
                                 "Received: soft_targets=None")
            self.soft_relabels.assign(np.asarray(soft_targets, np.float32))
        elif soft_targets is not None:
            raise ValueError("soft_targets need noisy_mode='soft'. Received: noisy_mode="
                             f"{self.noisy_mode!r}")
        if self.relabels is not None:
            table = (np.full(self.num_samples, -1.0) if relabels is None
                     else np.asarray(relabels, np.float64))
            self.relabels.assign(table.astype(np.float32))
        elif relabels is not None:
            raise ValueError("relabels need noisy_mode='relabel'. Received: noisy_mode="
                             f"{self.noisy_mode!r}")
        self.labelled_mask.assign(np.asarray(labelled_mask, np.float32))
        self.clean_prob.assign(np.asarray(clean_prob, np.float32))
        self.target_prior.assign(np.asarray(clean_prior, np.float32))
        self.selected_labels.assign(np.full(self.num_samples, -1.0, np.float32))

    # ------------------------------------------------------------------ the SSL step
    def train_step(self, data):
        views, labels, index = data
        if not isinstance(views, (tuple, list)):
            return super().train_step(data)
        weak, strong = views
        if self.noisy_mode == "relabel":
            return self._relabel_step(weak, labels, index)
        if self.noisy_mode == "soft":
            return self._soft_step(weak, labels, index)
        batch = tf.shape(weak)[0]
        is_lab = tf.gather(self.labelled_mask, index)
        unlab_pos = tf.cast(tf.where(is_lab < 0.5)[:, 0], tf.int32)
        strong_u = tf.gather(strong, unlab_pos)
        with tf.GradientTape() as tape:
            logits = self.network(tf.concat([weak, strong_u], axis=0), training=True)
            logits_w, logits_s = logits[:batch], logits[batch:]
            sup = self.weigh_rows(self.supervised_per_example(labels, logits_w) * is_lab, index)
            pseudo, mask = self._pseudo_labels(tf.stop_gradient(logits_w), index, is_lab,
                                               unlab_pos)
            unsup_u = L.cross_entropy(pseudo, logits_s, num_classes=self.num_classes) * mask
            unsup = tf.scatter_nd(unlab_pos[:, None], unsup_u, tf.shape(sup))
            per_example = sup + self.lambda_u * unsup
            loss = tf.nn.compute_average_loss(per_example) + self._regularization()
        self.apply_gradients(tape, loss)
        self._track(labels, logits_w, per_example, sup, is_lab, unsup_u, mask, pseudo,
                    tf.gather(index, unlab_pos))
        return {m.name: m.result() for m in self.metrics}

    def _relabel_step(self, weak, labels, index):
        """Supervised loss on the rows `labelled_mask` keeps (judged clean, or relabelled),
        relabelled rows with their new label; no unsupervised term."""
        new = tf.gather(self.relabels, index)
        labels = tf.where(new >= 0.0, tf.cast(tf.round(new), labels.dtype), labels)
        return self._masked_supervised_step(weak, labels, labels, index)

    def _soft_step(self, weak, labels, index):
        """Every row `labelled_mask` keeps trains on its row of `soft_relabels` (before the
        first split, rows of zeros: the given label one-hot instead)."""
        table = tf.gather(self.soft_relabels, index)
        onehot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=table.dtype)
        unset = tf.cast(tf.reduce_sum(table, axis=-1, keepdims=True) <= 0.0, table.dtype)
        targets = unset * onehot + (1.0 - unset) * table
        return self._masked_supervised_step(weak, targets, labels, index)

    def _masked_supervised_step(self, weak, targets, labels, index):
        """The relabel and soft steps: the supervised loss on `targets` (int labels or (B, K)
        distributions) for the rows `labelled_mask` keeps, weighted per row; no
        unsupervised term. `labels` (the given ones) only feed the accuracy metric."""
        is_lab = tf.gather(self.labelled_mask, index)
        with tf.GradientTape() as tape:
            logits = self.network(weak, training=True)
            sup = self.weigh_rows(self.supervised_per_example(targets, logits) * is_lab, index)
            loss = tf.nn.compute_average_loss(sup) + self._regularization()
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(sup)
        self.accuracy_tracker.update_state(labels, logits, sample_weight=is_lab)
        self.sup_tracker.update_state(sup, sample_weight=is_lab)
        self.labelled_tracker.update_state(is_lab)
        return {m.name: m.result() for m in self.metrics}

    def _pseudo_labels(self, logits_w, index, is_lab, unlab_pos):
        """Pseudo-labels and masks for the unlabelled samples of this replica's batch."""
        probs = tf.nn.softmax(logits_w, axis=-1)
        self._update_global_state(probs, index, 1.0 - is_lab)
        probs_u = tf.gather(probs, unlab_pos)
        if self.distribution_alignment:
            probs_u = P.align_distribution(probs_u, target_prior=self.target_prior,
                                           model_prior=self.model_prior)
        if self.threshold_mode == "fixed":
            return P.fixed_threshold_mask(probs_u, threshold=self.threshold)
        pool = 1.0 - self.labelled_mask
        effect, unused = P.count_learning_effect(tf.cast(self.selected_labels, tf.int32),
                                                 num_classes=self.num_classes, pool_mask=pool)
        thresholds = P.class_adaptive_thresholds(effect, threshold=self.threshold,
                                                 num_unused=unused)
        thresholds = tf.maximum(thresholds, self.min_threshold)
        return P.adaptive_threshold_mask(probs_u, thresholds=thresholds)

    def _update_global_state(self, probs, index, unlab):
        """Update the model prior and FlexMatch's selected labels.

        Under a strategy both are MEAN-aggregated variables; `selected_labels` gets each
        replica's scattered delta scaled by the replica count (sample indices are distinct
        within a global batch), so every replica ends with the same tables. No
        explicit collective is issued here: TF syncs these through the same path as
        BatchNorm's moving statistics, which keeps collective order identical on replicas.
        """
        self.model_prior.assign(P.update_model_prior(self.model_prior, probs, momentum=0.999,
                                                     mask=unlab))
        if self.threshold_mode == "adaptive":
            old = self.selected_labels
            new = P.update_selected_labels(tf.cast(old, tf.int32), index, probs,
                                           threshold=self.threshold, mask=unlab)
            # MEAN over replicas of (old + R * delta_r) = old + sum_r delta_r, where delta_r
            # is non-zero only at replica r's (distinct) sample indices. (Keras turns
            # assign_add into assign(value + delta), so SUM aggregation would double `old`.)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            delta = tf.cast(new, tf.float32) - old
            self.selected_labels.assign(old + float(replicas) * delta)

    def _track(self, labels, logits_w, per_example, sup, is_lab, unsup_u, mask, pseudo,
               unlab_index):
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(labels, logits_w, sample_weight=is_lab)
        self.sup_tracker.update_state(sup, sample_weight=is_lab)
        self.unsup_tracker.update_state(unsup_u)
        self.mask_tracker.update_state(mask)
        self.labelled_tracker.update_state(is_lab)
        truth = tf.gather(self.true_labels, unlab_index)
        known = tf.cast(truth >= 0, tf.float32) * mask
        self.pseudo_acc_tracker.update_state(
            tf.cast(tf.equal(pseudo, truth), tf.float32), sample_weight=known)
