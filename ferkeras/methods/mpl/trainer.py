"""MPLTrainer: the noise cycle with Meta Pseudo Labels (Pham et al., CVPR 2021) in place of
FixMatch on the unlabelled (judged-noisy) rows. Reduced, first-order form.

Two networks, each with its own weights and optimizer:
- the student S (`network`): what is evaluated, selected and exported (`eval_network`, or
  its EMA copy with `ema_decay`), and what the noise split scores. As in the cycle, it
  trains on the clean rows' labels (weak views); on the unlabelled rows it trains on the
  teacher's hard pseudo-labels y_hat = argmax T(strong view), on the strong views, with
  weight `lambda_u`, without a confidence threshold (as in the paper).
- the teacher T (`teacher`): its own supervised loss on the clean rows, FixMatch consistency
  on the unlabelled rows (pseudo-label from T's weak view kept above `threshold`, trained on
  T's strong view, weight `lambda_u`), and the MPL feedback term h * CE(y_hat, T(strong))
  (`ferkeras.methods.mpl.core`), with
      h = lr_S * <grad CE_l(S_new), grad (student's pseudo-label term)(S_old)>,
  the paper's first-order approximation of the labelled loss drop that the student's step
  on the pseudo-labels causes. CE_l is the student's supervised loss averaged over the
  global batch's clean rows, at the updated student, computed in a second training-mode
  pass over the clean rows' weak views (BatchNorm moving statistics of that pass are
  restored, so only the main pass moves them).

One step: teacher forward -> y_hat -> student forward, update (sup + lambda_u * pseudo) ->
student's labelled gradient after the update -> h -> teacher update. Gradients for h are
summed over replicas (an all-reduce), so h is the global value on every replica; the losses
are averaged over the global batch (`tf.nn.compute_average_loss`, or the global count of
clean / unlabelled rows), so 2 replicas match 1.

The teacher starts as a copy of the student when the first split is installed
(`set_split`; a flag variable records it, so a resumed run does not copy again): the
cycle's warm-up trains the student only. The teacher's learning rate follows the student's
schedule times `teacher_lr_scale`. Teacher weights, optimizer state and the flag are
trainer variables, so they are saved with the run state and survive resume.

Deviations from the paper, all deliberate: (1) first-order h only, with lr_S the student's
current learning rate even when the student optimizer is AdamW (the paper's derivation
assumes an SGD step), and no moving-average baseline on h; (2) the student also trains on
the clean rows' labels in the same step (the cycle), instead of pseudo-labels only followed
by a separate fine-tuning on labelled data; h isolates the pseudo-label part of its
gradient; (3) the teacher's consistency loss is FixMatch's (hard label, fixed threshold),
not UDA's soft, temperature-sharpened KL; (4) the teacher starts from the warmed-up student,
not from scratch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ferkeras import losses as L
from ferkeras.methods.mpl import core as M
from ferkeras.trainers import pseudo_labels as P
from ferkeras.trainers.cycle import CycleTrainer


class _FollowStudent:
    """The teacher's learning rate: `scale` times the student optimizer's current one."""

    def __init__(self, student_optimizer, scale):
        self.student_optimizer = student_optimizer
        self.scale = float(scale)

    def __call__(self):
        return self.scale * self.student_optimizer.learning_rate


@keras.saving.register_keras_serializable(package="ferkeras")
class MPLTrainer(CycleTrainer):
    """Args (beyond CycleTrainer's):
      teacher_lr_scale: the teacher's learning rate as a multiple of the student's (it follows
        the student's schedule); >= 0.
      feedback_scale: multiplies h; 1 is MPL, 0 turns the feedback off (the teacher then
        trains on its own losses only). >= 0.
    The teacher optimizer is the student's optimizer class and settings, made by `compile`.
    """

    def __init__(self, network, *, teacher_lr_scale=1.0, feedback_scale=1.0, **kwargs):
        super().__init__(network, **kwargs)
        if not teacher_lr_scale >= 0.0:
            raise ValueError(f"teacher_lr_scale must be >= 0. Received: "
                             f"teacher_lr_scale={teacher_lr_scale!r}")
        if not feedback_scale >= 0.0:
            raise ValueError(f"feedback_scale must be >= 0. Received: "
                             f"feedback_scale={feedback_scale!r}")
        self.teacher_lr_scale = float(teacher_lr_scale)
        self.feedback_scale = float(feedback_scale)
        self.teacher = keras.models.clone_model(network)
        self.teacher_ready = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                             name="teacher_ready", dtype="float32",
                                             aggregation="only_first_replica")
        self.teacher_optimizer = None
        self.teacher_loss_tracker = keras.metrics.Mean(name="teacher_loss")
        self.feedback_tracker = keras.metrics.Mean(name="mpl_h")
        self.teacher_mask_tracker = keras.metrics.Mean(name="teacher_mask_rate")

    def get_config(self):
        return {**super().get_config(), "teacher_lr_scale": self.teacher_lr_scale,
                "feedback_scale": self.feedback_scale}

    @classmethod
    def recipe_kwargs(cls, recipe, bundle) -> dict:
        return {**super().recipe_kwargs(recipe, bundle),
                "teacher_lr_scale": recipe.cycle.mpl.teacher_lr_scale}

    # ------------------------------------------------------------------ state
    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self._make_teacher_optimizer()

    def compile_from_config(self, config):
        super().compile_from_config(config)
        self._make_teacher_optimizer()
        if self.built:
            self.teacher_optimizer.build(self.teacher.trainable_variables)

    def _make_teacher_optimizer(self):
        config = self.optimizer.get_config()
        config.update(name="teacher_" + config.get("name", "optimizer"),
                      learning_rate=_FollowStudent(self.optimizer, self.teacher_lr_scale))
        self.teacher_optimizer = type(self.optimizer).from_config(config)

    def _build_variables(self, input_shape):
        super()._build_variables(input_shape)
        self.teacher.build((None, *input_shape))

    def build_state(self, input_shape):
        super().build_state(input_shape)
        self.copy_student_to_teacher()
        self.teacher_optimizer.build(self.teacher.trainable_variables)

    def copy_student_to_teacher(self):
        for t, s in zip(self.teacher.weights, self.network.weights, strict=True):
            t.assign(s)

    def set_split(self, labelled_mask, clean_prob, clean_prior, **kwargs):
        """CycleTrainer.set_split; the first split also starts the teacher from the student."""
        super().set_split(labelled_mask, clean_prob, clean_prior, **kwargs)
        if float(keras.ops.convert_to_numpy(self.teacher_ready)) < 0.5:
            self.copy_student_to_teacher()
            self.teacher_ready.assign(1.0)

    @property
    def metrics(self):
        return [*super().metrics, self.teacher_loss_tracker, self.feedback_tracker,
                self.teacher_mask_tracker]

    # ------------------------------------------------------------------ the MPL step
    def train_step(self, data):
        views, labels, index = data
        if not isinstance(views, (tuple, list)):
            return super().train_step(data)  # warm-up: supervised, student only
        weak, strong = views
        batch = tf.shape(weak)[0]
        is_lab = tf.gather(self.labelled_mask, index)
        unlab_pos = tf.cast(tf.where(is_lab < 0.5)[:, 0], tf.int32)
        lab_pos = tf.cast(tf.where(is_lab >= 0.5)[:, 0], tf.int32)
        strong_u = tf.gather(strong, unlab_pos)
        ctx = tf.distribute.get_replica_context()
        n_lab, n_unlab = tf.unstack(ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack(
            [tf.reduce_sum(is_lab), tf.reduce_sum(1.0 - is_lab)])))
        n_lab, n_unlab = tf.maximum(n_lab, 1.0), tf.maximum(n_unlab, 1.0)
        both = tf.concat([weak, strong_u], axis=0)

        # 1. Teacher forward; its losses except the feedback term.
        with tf.GradientTape() as t_tape:
            t_logits = self.teacher(both, training=True)
            t_w, t_s = t_logits[:batch], t_logits[batch:]
            pseudo = M.hard_pseudo_labels(tf.stop_gradient(t_s))
            t_sup = self.supervised_per_example(labels, t_w) * is_lab
            t_pl, t_mask = P.fixed_threshold_mask(
                tf.nn.softmax(tf.stop_gradient(tf.gather(t_w, unlab_pos)), axis=-1),
                threshold=self.threshold)
            t_cons_u = L.cross_entropy(t_pl, t_s, num_classes=self.num_classes) * t_mask
            t_cons = tf.scatter_nd(unlab_pos[:, None], t_cons_u, tf.shape(t_sup))
            t_base = tf.nn.compute_average_loss(t_sup + self.lambda_u * t_cons)
            t_base += self._regularization(self.teacher)
            # CE(y_hat, T(strong)) over the global unlabelled rows; h multiplies it below.
            t_mpl = tf.reduce_sum(L.cross_entropy(pseudo, t_s, num_classes=self.num_classes))
            t_mpl = t_mpl / n_unlab
            with t_tape.stop_recording():
                h, logs = self._student_step(weak, labels, is_lab, unlab_pos, lab_pos, strong_u,
                                             pseudo, n_lab, batch)
            t_loss = t_base + self.feedback_scale * h * t_mpl
        t_vars = self.teacher.trainable_variables
        self.teacher_optimizer.apply(t_tape.gradient(t_loss, t_vars), t_vars)

        logits_w, per_example, sup, unsup_u = logs
        self._track(labels, logits_w, per_example, sup, is_lab, unsup_u,
                    tf.ones_like(unsup_u), pseudo, tf.gather(index, unlab_pos))
        self.teacher_loss_tracker.update_state(t_sup + self.lambda_u * t_cons)
        self.feedback_tracker.update_state(h)
        self.teacher_mask_tracker.update_state(t_mask)
        return {m.name: m.result() for m in self.metrics}

    def _student_step(self, weak, labels, is_lab, unlab_pos, lab_pos, strong_u, pseudo,
                      n_lab, batch):
        """Update the student; return h and what the cycle's metrics log."""
        s_vars = self.network.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            logits = self.network(tf.concat([weak, strong_u], axis=0), training=True)
            logits_w, logits_s = logits[:batch], logits[batch:]
            sup = self.supervised_per_example(labels, logits_w) * is_lab
            unsup_u = L.cross_entropy(pseudo, logits_s, num_classes=self.num_classes)
            unsup = tf.scatter_nd(unlab_pos[:, None], unsup_u, tf.shape(sup))
            per_example = sup + self.lambda_u * unsup
            loss = tf.nn.compute_average_loss(per_example) + self._regularization()
            pseudo_term = tf.nn.compute_average_loss(self.lambda_u * unsup)
        grads = tape.gradient(loss, s_vars)
        g_pseudo = tape.gradient(pseudo_term, s_vars)
        del tape
        lr = tf.cast(self.optimizer.learning_rate, tf.float32)  # before the step counts
        self.optimizer.apply(grads, s_vars)
        self.update_ema()

        # The updated student's labelled-loss gradient (BatchNorm statistics restored).
        moving = self._moving_statistics()
        saved = [tf.identity(v) for v in moving]
        with tf.GradientTape() as tape:
            logits_l = self.network(tf.gather(weak, lab_pos), training=True)
            labelled = self.supervised_per_example(tf.gather(labels, lab_pos), logits_l)
            labelled = tf.reduce_sum(labelled) / n_lab
        g_labelled = tape.gradient(labelled, s_vars)
        for v, value in zip(moving, saved, strict=True):
            v.assign(value)
        ctx = tf.distribute.get_replica_context()
        pairs = [(a, b) for a, b in zip(g_labelled, g_pseudo, strict=True)
                 if a is not None and b is not None]
        if pairs:
            summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                    [t for pair in pairs for t in pair])
            h = M.feedback_signal(summed[0::2], summed[1::2], student_learning_rate=lr)
        else:
            h = tf.constant(0.0)
        return h, (logits_w, per_example, sup, unsup_u)

    def _moving_statistics(self):
        out = []
        for layer in self.network._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                out += [layer.moving_mean, layer.moving_variance]
        return out

    def _regularization(self, network=None):
        network = self.network if network is None else network
        if network.losses:
            return tf.nn.scale_regularization_loss(tf.add_n(network.losses))
        return 0.0
