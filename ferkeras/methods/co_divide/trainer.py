"""CoDivideTrainer: DivideMix's two networks in one step (Li, Socher & Hoi, ICLR 2020).

Networks A (`network`) and B (`network_b`) share the stream of `CycleTrainer`:
`((weak, strong), label, sample_index)`. Each has its own split tables, written by the
`CoDivideSplit` callback from the *other* network's losses (`ferkeras.methods.co_divide.core`):
`labelled_mask` / `clean_prob` for A, `labelled_mask_b` / `clean_prob_b` for B. The
pipeline builds strong views where `view_mask` (labelled for both) is 0.

For network n (the other network o):

- labelled for n: the co-refined target `co_refine(label, p_n(weak), w)`, w its clean
  probability from o's losses, sharpened with `temperature`, trained on the weak view
  with the trainer's supervised loss (soft targets);
- unlabelled for n: the co-guessed target `co_guess(p_n(weak), p_o(weak))`, trained on the
  strong view with soft cross-entropy, weight `lambda_u`.

Targets are stop-gradient. Both networks are updated in the same step (one optimizer over
both variable lists; each loss term depends on one network only, so this equals two
optimizers with the same schedule). Warm-up (no view pairs): both networks on the
supervised loss. Prediction, evaluation and the checkpoints use `eval_network`, the mean of
both networks' logits (`ferkeras.methods.co_divide.core.ensemble_network`).

With `mixup_alpha` > 0 the step is the paper's MixMatch instead (`_mixmatch_step`): both
sets and their targets mixed with a Beta(alpha, alpha) weight, L_x + lambda_u * L_u
(squared error) + a prior penalty.

Deviations from the paper, kept in line with the rest of ferkeras's cycle: the networks are
updated together instead of in alternate epochs; by default (`mixup_alpha` 0) the
unlabelled term is FixMatch-style (weak view guesses, strong view learns, soft
cross-entropy) instead of MixMatch; the views per sample are one weak (+ one strong for
unlabelled rows), not two augmentations; the MixMatch penalty pulls toward the estimated
clean prior, not a uniform one (long-tailed classes); lambda_u has no ramp-up; no EMA copy
(train.ema_decay must be 0).
Every loss is averaged over the global batch, and no table is written in the step, so 2
replicas match 1 (tests/test_codivide.py).
"""

from __future__ import annotations

import copy
import weakref

import keras
import numpy as np
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.methods.co_divide import core as C
from ferkeras.trainers.cycle import CycleTrainer

_ENSEMBLES = weakref.WeakKeyDictionary()  # trainer -> its ensemble (not a tracked attribute)


@keras.saving.register_keras_serializable(package="ferkeras")
class CoDivideTrainer(CycleTrainer):
    """Args (beyond CycleTrainer's):
      network_b: network B, the same architecture as `network` with another initialisation.
      temperature: sharpening temperature T of co-refinement and co-guessing (paper: 0.5).
      mixup_alpha: > 0 trains with the paper's MixMatch (Beta(alpha, alpha) mixup; paper: 4
        on CIFAR-10, 0.5 on Clothing1M); 0 with the FixMatch-style consistency.
    `threshold`, `threshold_mode`, `min_threshold` and `distribution_alignment` are accepted
    (the recipe's cycle keys) and unused.
    """

    def __init__(self, network, *, network_b, num_classes, temperature=0.5, mixup_alpha=0.0,
                 **kwargs):
        if network_b is None or network_b is network:
            raise ValueError("network_b must be a second network (another initialisation of "
                             f"the same backbone). Received: network_b={network_b!r}")
        if kwargs.get("ema_decay", 0.0):
            raise ValueError("CoDivideTrainer keeps no EMA copy; set ema_decay=0. Received: "
                             f"ema_decay={kwargs['ema_decay']}")
        if not 0.0 <= float(mixup_alpha) <= 100.0:
            raise ValueError(
                f"mixup_alpha must be in [0, 100]. Received: mixup_alpha={mixup_alpha}")
        self.temperature = C._check_temperature(temperature)
        self.mixup_alpha = float(mixup_alpha)
        super().__init__(network, num_classes=num_classes, **kwargs)
        self.network_b = network_b
        self.mix_seed = None
        if self.mixup_alpha > 0:  # its state is saved with the run state (RunState)
            self.mix_seed = keras.random.SeedGenerator(self.seed * 7 + 1, name="mix_seed")

    def _create_tables(self, n, true_labels=None):
        super()._create_tables(n, true_labels)
        table = dict(trainable=False, aggregation="only_first_replica")
        self.labelled_mask_b = self.add_weight(shape=(n,), initializer="ones",
                                               name="labelled_mask_b", **table)
        self.clean_prob_b = self.add_weight(shape=(n,), initializer="ones",
                                            name="clean_prob_b", **table)
        # 1 where a sample is labelled for both networks: no strong view needed.
        self.view_mask = self.add_weight(shape=(n,), initializer="ones", name="view_mask",
                                         **table)

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {**super().get_config(),
                "network_b": keras.saving.serialize_keras_object(self.network_b),
                "temperature": self.temperature, "mixup_alpha": self.mixup_alpha}

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)
        config["network_b"] = keras.saving.deserialize_keras_object(config["network_b"])
        return super().from_config(config)

    @classmethod
    def from_recipe(cls, recipe, network, bundle):
        c, t = recipe.cycle, recipe.train
        network_b = C.build_network_b(recipe, input_shape=tuple(network.input_shape[1:]),
                                      num_classes=bundle.num_classes)
        return cls(
            network, network_b=network_b, num_classes=bundle.num_classes,
            num_samples=len(bundle.train), true_labels=bundle.train.true_labels,
            lambda_u=c.lambda_u, temperature=c.co_divide.temperature,
            mixup_alpha=c.co_divide.mixup_alpha, loss=t.loss, tau=t.tau,
            label_smoothing=t.label_smoothing, ema_decay=t.ema_decay, seed=recipe.seed,
        )

    # ------------------------------------------------------------------ plumbing
    @property
    def networks(self):
        return (self.network, self.network_b)

    @property
    def eval_network(self):
        """The ensemble: mean of both networks' logits (evaluation, checkpoints, export)."""
        ensemble = _ENSEMBLES.get(self)
        if ensemble is None:
            ensemble = C.ensemble_network(self.network, self.network_b)
            _ENSEMBLES[self] = ensemble
        return ensemble

    def call(self, images, training=False):
        return 0.5 * (self.network(images, training=training)
                      + self.network_b(images, training=training))

    def _build_variables(self, input_shape):
        super()._build_variables(input_shape)
        self.network_b.build((None, *input_shape))
        self.eval_network  # noqa: B018  the ensemble, built eagerly (not inside a trace)

    @property
    def _train_variables(self):
        return self.network.trainable_variables + self.network_b.trainable_variables

    def build_state(self, input_shape):
        self._build_variables(input_shape)
        self.optimizer.build(self._train_variables)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        keras.Model.compile(self, **config)
        if self.built:
            self.optimizer.build(self._train_variables)

    def _stream_options(self):
        return {"views": True, "labelled_mask": self.view_mask.value}

    def _regularization(self):
        losses = self.network.losses + self.network_b.losses
        if losses:
            return tf.nn.scale_regularization_loss(tf.add_n(losses))
        return 0.0

    def apply_gradients(self, tape, loss):
        variables = self._train_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)

    def set_co_split(self, labelled_a, clean_prob_a, labelled_b, clean_prob_b, clean_prior):
        """Install both networks' splits (host-side arrays; A's from B's losses and B's from
        A's, `ferkeras.methods.co_divide.core.co_divide_splits`)."""
        self.set_split(labelled_a, clean_prob_a, clean_prior)
        lab_b = np.asarray(labelled_b, np.float32)
        self.labelled_mask_b.assign(lab_b)
        self.clean_prob_b.assign(np.asarray(clean_prob_b, np.float32))
        self.view_mask.assign(np.asarray(labelled_a, np.float32) * lab_b)

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        views, labels, index = data
        if not isinstance(views, (tuple, list)):
            return self._warmup_step(views, labels)
        weak, strong = views
        if self.mixup_alpha > 0:
            return self._mixmatch_step(weak, strong, labels, index)
        batch = tf.shape(weak)[0]
        k, temp = self.num_classes, self.temperature
        masks = (tf.gather(self.labelled_mask, index), tf.gather(self.labelled_mask_b, index))
        weights = (tf.gather(self.clean_prob, index), tf.gather(self.clean_prob_b, index))
        positions = [tf.cast(tf.where(m < 0.5)[:, 0], tf.int32) for m in masks]
        with tf.GradientTape() as tape:
            logits = [net(tf.concat([weak, tf.gather(strong, pos)], axis=0), training=True)
                      for net, pos in zip(self.networks, positions, strict=True)]
            probs_w = [tf.nn.softmax(tf.stop_gradient(z[:batch]), axis=-1) for z in logits]
            per_example, sups, unsups, guesses = [], [], [], []
            for n, o in ((0, 1), (1, 0)):
                refined = C.co_refine(labels, probs_w[n], weights[n], num_classes=k,
                                      temperature=temp)
                sup = self.supervised_per_example(refined, logits[n][:batch]) * masks[n]
                guess = C.co_guess(tf.gather(probs_w[n], positions[n]),
                                   tf.gather(probs_w[o], positions[n]), temperature=temp)
                unsup_u = L.cross_entropy(guess, logits[n][batch:], num_classes=k)
                unsup = tf.scatter_nd(positions[n][:, None], unsup_u, tf.shape(sup))
                per_example.append(sup + self.lambda_u * unsup)
                sups.append(sup)
                unsups.append(unsup_u)
                guesses.append(guess)
            loss = (tf.nn.compute_average_loss(per_example[0])
                    + tf.nn.compute_average_loss(per_example[1]) + self._regularization())
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(per_example[0] + per_example[1])
        mean_logits = 0.5 * (logits[0][:batch] + logits[1][:batch])
        self.accuracy_tracker.update_state(labels, mean_logits, sample_weight=masks[0])
        for n in (0, 1):
            self.sup_tracker.update_state(sups[n], sample_weight=masks[n])
            self.unsup_tracker.update_state(unsups[n])
            self.mask_tracker.update_state(tf.ones_like(unsups[n]))  # no threshold
            self.labelled_tracker.update_state(masks[n])
            truth = tf.gather(self.true_labels, tf.gather(index, positions[n]))
            pseudo = tf.cast(tf.argmax(guesses[n], axis=-1), tf.int32)
            self.pseudo_acc_tracker.update_state(tf.cast(tf.equal(pseudo, truth), tf.float32),
                                                 sample_weight=tf.cast(truth >= 0, tf.float32))
        return {m.name: m.result() for m in self.metrics}

    def _mixmatch_step(self, weak, strong, labels, index):
        """DivideMix's MixMatch step for both networks (`mixup_alpha` > 0).

        Targets come from both networks' predictions on the weak views (training mode, no
        gradient, as the paper's guesses): co-refined for n's labelled rows, co-guessed for
        its unlabelled rows. The rows [weak labelled, weak unlabelled, strong unlabelled]
        and their targets are mixed (`mixmatch_mix`, one Beta draw and permutation per
        network and step) and network n is trained on
        L_x + lambda_u * L_u + prior penalty, L_x and L_u averaged over the labelled and
        unlabelled rows of the global batch (their expected counts: the global batch size times
the split's labelled / unlabelled share, so no collective is issued). The mix and the
        penalty (toward the estimated clean prior `target_prior`; the paper: uniform) are per
        replica, so replicas do not reproduce a single device exactly here.
        """
        k, temp, alpha = self.num_classes, self.temperature, self.mixup_alpha
        replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
        global_batch = tf.cast(tf.shape(weak)[0], tf.float32) * replicas
        tables = (self.labelled_mask, self.labelled_mask_b)
        masks = (tf.gather(self.labelled_mask, index), tf.gather(self.labelled_mask_b, index))
        weights = (tf.gather(self.clean_prob, index), tf.gather(self.clean_prob_b, index))
        probs_w = [tf.nn.softmax(tf.stop_gradient(net(weak, training=True)), axis=-1)
                   for net in self.networks]
        lx_means, lu_means, guesses, unlab = [], [], [], []
        with tf.GradientTape() as tape:
            loss = self._regularization()
            for n, o in ((0, 1), (1, 0)):
                pos_l = tf.cast(tf.where(masks[n] >= 0.5)[:, 0], tf.int32)
                pos_u = tf.cast(tf.where(masks[n] < 0.5)[:, 0], tf.int32)
                px = C.co_refine(tf.gather(labels, pos_l), tf.gather(probs_w[n], pos_l),
                                 tf.gather(weights[n], pos_l), num_classes=k, temperature=temp)
                pu = C.co_guess(tf.gather(probs_w[n], pos_u), tf.gather(probs_w[o], pos_u),
                                temperature=temp)
                n_l, n_u = tf.shape(pos_l)[0], tf.shape(pos_u)[0]
                rows = tf.concat([tf.gather(weak, pos_l), tf.gather(weak, pos_u),
                                  tf.gather(strong, pos_u)], axis=0)
                targets = tf.concat([px, pu, pu], axis=0)
                is_lab = tf.concat([tf.ones([n_l]), tf.zeros([2 * n_u])], axis=0)
                lam = keras.random.beta((), alpha, alpha, seed=self.mix_seed)
                perm = keras.random.shuffle(tf.range(n_l + 2 * n_u), seed=self.mix_seed)
                mixed, mixed_t = C.mixmatch_mix(rows, targets, lam=lam, perm=perm)
                logits = self.networks[n](mixed, training=True)
                _, lu = C.mixmatch_row_losses(logits, mixed_t, is_lab)
                lx = self.supervised_per_example(mixed_t, logits) * is_lab
                # expected row counts of the global batch (from the split's labelled share),
                # the same on every replica: no collective in the step
                share = tf.reduce_mean(tables[n])
                count_l = global_batch * share
                count_u = 2.0 * global_batch * (1.0 - share)
                lx_mean = tf.reduce_sum(lx) / tf.maximum(count_l, 1.0)
                lu_mean = tf.reduce_sum(lu) / tf.maximum(count_u, 1.0)
                penalty = C.prior_penalty(tf.nn.softmax(logits, axis=-1), self.target_prior)
                loss = loss + lx_mean + self.lambda_u * lu_mean + penalty / replicas
                lx_means.append(lx_mean)
                lu_means.append(lu_mean)
                guesses.append(pu)
                unlab.append(pos_u)
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(loss * replicas)
        mean_logits = tf.math.log(tf.maximum(0.5 * (probs_w[0] + probs_w[1]), 1e-12))
        self.accuracy_tracker.update_state(labels, mean_logits, sample_weight=masks[0])
        for n in (0, 1):
            self.sup_tracker.update_state(lx_means[n] * replicas)
            self.unsup_tracker.update_state(lu_means[n] * replicas)
            self.mask_tracker.update_state(tf.ones_like(tf.cast(unlab[n], tf.float32)))
            self.labelled_tracker.update_state(masks[n])
            truth = tf.gather(self.true_labels, tf.gather(index, unlab[n]))
            pseudo = tf.cast(tf.argmax(guesses[n], axis=-1), tf.int32)
            self.pseudo_acc_tracker.update_state(tf.cast(tf.equal(pseudo, truth), tf.float32),
                                                 sample_weight=tf.cast(truth >= 0, tf.float32))
        return {m.name: m.result() for m in self.metrics}

    def _warmup_step(self, images, labels):
        with tf.GradientTape() as tape:
            logits = [net(images, training=True) for net in self.networks]
            per = [self.supervised_per_example(labels, z) for z in logits]
            loss = (tf.nn.compute_average_loss(per[0]) + tf.nn.compute_average_loss(per[1])
                    + self._regularization())
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(per[0] + per[1])
        self.accuracy_tracker.update_state(labels, 0.5 * (logits[0] + logits[1]))
        return {m.name: m.result() for m in self.metrics}
