"""Soft-target methods against label noise, as plain array functions (`keras.ops`).

- **ELR**, early-learning regularisation (Liu, Niles-Weed, Razavian, Fernandez-Granda,
  "Early-Learning Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020).
  Each training sample i keeps a target t_i, a running average of the network's (detached)
  predictions: `elr_update_targets`. The loss adds lambda * log(1 - <p_i, t_i>)
  (`elr_penalty`), whose gradient pulls p_i toward t_i. Early in training the predictions
  are mostly right even on mislabelled samples, so the targets hold the early (correct)
  answer and keep the network from memorising the wrong label later.
- **Self-distillation from an EMA teacher** (Tarvainen & Valpola, "Mean teachers are better
  role models", NeurIPS 2017, for the teacher; Hinton, Vinyals & Dean, "Distilling the
  Knowledge in a Neural Network", 2015, for the temperature-softened target; used against
  label noise as in Kim et al., "Self-Knowledge Distillation with Progressive Refinement of
  Targets", ICCV 2021): the target is the given label mixed with the teacher's softened
  prediction, `distillation_targets`.

The functions run eagerly on NumPy arrays and inside a traced `train_step` alike; the
trainer (`ferkeras.trainers.supervised`) only wires them in.
"""

from __future__ import annotations

from keras import ops

# The clamp of the paper's code (ELR, `elr_loss`): p in [1e-4, 1 - 1e-4].
ELR_CLIP = 1e-4


def clip_probs(probs, *, eps: float = ELR_CLIP):
    """(B, K) probabilities clamped to [eps, 1 - eps], float32 (ELR's clamp)."""
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5). Received: eps={eps!r}")
    return ops.clip(ops.cast(probs, "float32"), eps, 1.0 - eps)


def elr_update_targets(targets, probs, *, beta: float):
    """One ELR target update for a batch: t <- beta * t + (1 - beta) * p / sum(p).

    Args:
      targets: (B, K) the batch's current targets (zeros before their first update, as in the
        paper's code).
      probs: (B, K) predicted probabilities (clamped; treated as constants: no gradient flows
        into the targets).
      beta: momentum of the running average, in [0, 1) (paper: 0.7 on CIFAR-10, 0.9 on
        CIFAR-100).
    Returns:
      (B, K) float32 new targets.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1). Received: beta={beta!r}")
    probs = ops.stop_gradient(ops.cast(probs, "float32"))
    normalised = probs / ops.sum(probs, axis=-1, keepdims=True)
    return beta * ops.cast(targets, "float32") + (1.0 - beta) * normalised


def elr_penalty(probs, targets):
    """(B,) ELR regulariser log(1 - <p_i, t_i>); minimising it raises <p_i, t_i>.

    Args:
      probs: (B, K) predicted probabilities, clamped to [1e-4, 1 - 1e-4] (`clip_probs`),
        which keeps <p, t> < 1 for targets on the simplex; the gradient flows through them.
      targets: (B, K) ELR targets (`elr_update_targets`), constants.
    Returns:
      (B,) float32 per-example penalty (<= 0); the loss adds lambda times its mean.
    """
    probs = ops.cast(probs, "float32")
    inner = ops.sum(probs * ops.stop_gradient(ops.cast(targets, "float32")), axis=-1)
    return ops.log(1.0 - inner)


def distillation_targets(labels, teacher_probs, *, alpha: float, num_classes: int):
    """(B, K) targets (1 - alpha) * onehot(label) + alpha * teacher_probs.

    Args:
      labels: (B,) int class ids, or (B, K) soft targets (e.g. FERPlus votes) mixed as given.
      teacher_probs: (B, K) the teacher's probabilities, e.g. softmax(teacher_logits / T)
        (`teacher_probabilities`); no gradient flows into them.
      alpha: weight of the teacher, in [0, 1]; 0 gives the labels back.
      num_classes: K.
    Returns:
      (B, K) float32 targets; rows sum to 1 when the teacher's and the labels' rows do.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha!r}")
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 1:
        given = ops.one_hot(ops.cast(labels, "int32"), int(num_classes), dtype="float32")
    else:
        given = ops.cast(labels, "float32")
    teacher = ops.stop_gradient(ops.cast(teacher_probs, "float32"))
    return (1.0 - alpha) * given + alpha * teacher


def teacher_probabilities(teacher_logits, *, temperature: float = 1.0):
    """(B, K) softmax(teacher_logits / temperature), float32, without gradient."""
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
    logits = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
    return ops.softmax(logits / temperature, axis=-1)
