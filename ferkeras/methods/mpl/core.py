"""Meta Pseudo Labels (Pham et al., "Meta Pseudo Labels", CVPR 2021): the array core.

A teacher T labels the unlabelled rows, a student S learns from those labels, and the
teacher learns from how the student then does on the *labelled* rows (the feedback). With
hard pseudo-labels `y_hat = argmax T(x_u)`, the paper's first-order approximation of the
teacher's meta gradient is

    h = lr_S * < grad_S' CE_l(S'),  grad_S CE(y_hat, S(x_u)) >       (S' = the updated student)
    teacher loss += h * CE(y_hat, T(x_u))

(its eq. 12; the second-order terms are dropped). h is, to first order, the drop of the
student's labelled loss caused by its step on the pseudo-labels,
CE_l(S) - CE_l(S - lr_S * grad_u) ~ h: positive when the pseudo-labels helped the student
on labelled data (the teacher then makes `y_hat` more likely), negative when they hurt it
(the teacher makes `y_hat` less likely).

Functions written with `keras.ops`, for use inside `train_step` (`MPLTrainer`) and on
NumPy arrays alike:

    y_hat = hard_pseudo_labels(teacher_logits_u)                       # (U,) int32
    h = feedback_signal(grads_labelled_new, grads_pseudo_old, student_learning_rate=lr)
    loss_t = feedback_teacher_loss(teacher_logits_u, y_hat, feedback=h)  # (U,)

`labelled_loss_drop(loss_before, loss_after)` is the finite-difference quantity h
approximates (what the tests check h against).

Sign note: the authors' released code computes `new - old` where this module (and the
paper's derivation) has `old - new`; the discrepancy is discussed in the kekmodel/MPL-pytorch
reimplementation (issue 6). This module follows the derivation: a pseudo-label that lowers the
student's labelled loss is reinforced.
"""

from __future__ import annotations

from keras import ops

from ferkeras import losses as L


def hard_pseudo_labels(teacher_logits):
    """The teacher's hard pseudo-labels.

    Args:
        teacher_logits: (U, K) teacher logits on the unlabelled rows' (strong) views.

    Returns:
        (U,) int32 argmax class ids.
    """
    logits = ops.convert_to_tensor(teacher_logits)
    if len(logits.shape) != 2:
        raise ValueError(f"`teacher_logits` must have shape (U, K). Received shape: "
                         f"{logits.shape}")
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


def feedback_signal(grads_labelled, grads_pseudo, *, student_learning_rate):
    """MPL's first-order feedback h = lr_S * <grad of the labelled loss, grad of the
    pseudo-label loss>, summed over all parameter tensors.

    Args:
        grads_labelled: list of arrays, the gradient of the student's labelled loss (mean
            over labelled rows) at the *updated* student S', one per trainable variable.
        grads_pseudo: list of arrays of the same shapes, the gradient of the student's
            pseudo-label term at the student *before* the update.
        student_learning_rate: lr_S, float or scalar tensor (> 0 in practice).

    Returns:
        Scalar float32 h. Positive: the pseudo-label step lowers the labelled loss (to first
        order), negative: it raises it. Missing gradients (None) count as zeros.
    """
    if len(grads_labelled) != len(grads_pseudo):
        raise ValueError(f"grads_labelled and grads_pseudo must have one entry per variable. "
                         f"Received: {len(grads_labelled)} and {len(grads_pseudo)} entries")
    total = ops.convert_to_tensor(0.0, "float32")
    for a, b in zip(grads_labelled, grads_pseudo, strict=True):
        if a is None or b is None:
            continue
        a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"Gradient shapes differ: {a.shape} vs {b.shape}")
        total = total + ops.sum(a * b)
    return ops.cast(student_learning_rate, "float32") * total


def labelled_loss_drop(loss_before, loss_after):
    """CE_l(S) - CE_l(S'): what h estimates to first order (scalar or array, float32).
    Positive when the student's labelled loss went down."""
    return ops.cast(loss_before, "float32") - ops.cast(loss_after, "float32")


def feedback_teacher_loss(teacher_logits, pseudo_labels, *, feedback):
    """The teacher's MPL term per unlabelled row: h * CE(y_hat, T(x_u)).

    Args:
        teacher_logits: (U, K) teacher logits (with gradient) on the rows that were labelled.
        pseudo_labels: (U,) int, the hard labels the student was trained on.
        feedback: scalar h (`feedback_signal`); treated as a constant (no gradient).

    Returns:
        (U,) float32. Minimising it raises the probability of `y_hat` when h > 0 and lowers
        it when h < 0; h = 0 leaves the teacher to its other losses.
    """
    ce = L.cross_entropy(pseudo_labels, teacher_logits)
    return ops.stop_gradient(ops.cast(feedback, "float32")) * ce
