"""DivideMix co-divide as plain array functions (Li, Socher & Hoi, "DivideMix: Learning with
Noisy Labels as Semi-supervised Learning", ICLR 2020).

Two networks A and B (same backbone, different seeds) are trained side by side:

- **Co-divide** (`co_divide_splits`, `co_divide_masks`): at each split, each network's
  per-sample losses are fitted with the selector of `ferkeras.noise.selection` (the GMM);
  *network A's labelled set comes from B's losses and B's from A's*, so the errors one
  network has memorised are not confirmed by its own split (the point of the method).
- **Label co-refinement** (`co_refine`), for a labelled sample i of the network being
  trained: y_i <- sharpen(w_i * onehot(label_i) + (1 - w_i) * p_i, T), with p_i that
  network's mean prediction over the sample's views and w_i the clean probability the
  *other* network's losses gave it.
- **Co-guessing** (`co_guess`), for an unlabelled sample: the sharpened mean of BOTH
  networks' predictions over the sample's views.
- **MixMatch** (`mixmatch_mix`, `mixmatch_row_losses`, `prior_penalty`), optional in
  ferkeras (`cycle.co_divide.mixup_alpha` > 0): labelled and unlabelled rows with their
  targets are mixed with a Beta(alpha, alpha) weight, then L_x (soft cross-entropy) +
  lambda_u * L_u (squared error) + the prior penalty.
- **Prediction** uses both networks: `ensemble_network` averages their logits (the paper
  sums them; the argmax is the same, and the mean keeps the softmax's scale).

The Keras-free functions (`co_divide_*`) run on NumPy arrays; `sharpen`, `co_refine` and
`co_guess` are written with `keras.ops` and run eagerly on NumPy arrays and inside the traced
`train_step` of `ferkeras.methods.co_divide.trainer.CoDivideTrainer` alike.
"""

from __future__ import annotations

from keras import ops

from ferkeras.noise import selection

EXPORT_CHOICES = ("ensemble", "a", "b")
SEED_OFFSET_B = 7919  # network B's initialiser seed: recipe.seed + this


# ----------------------------------------------------------------------------- co-divide
def co_divide_splits(loss_history_a, loss_history_b, labels, *, num_classes: int,
                     pred_probs_a=None, pred_probs_b=None, true_labels=None, seed: int = 0,
                     selector_inputs_a=None, selector_inputs_b=None,
                     **split_options) -> tuple[selection.SplitResult, selection.SplitResult]:
    """The two splits of co-divide: (split for A from B's losses, split for B from A's).

    Args:
      loss_history_a, loss_history_b: (T, N) or (N,) per-sample losses of networks A and B,
        oldest evaluation first.
      labels: (N,) int given labels in [0, K).
      num_classes: K.
      pred_probs_a, pred_probs_b: optional (N, K) probabilities of A and B; each split's
        clean prior (`selection.estimate_clean_prior`) uses the probabilities of the network
        whose losses made it.
      true_labels: optional (N,) int true labels (-1 unknown): adds detection `scores`.
      seed: GMM random state (the same for both fits).
      selector_inputs_a, selector_inputs_b: optional dicts of what the selector needs beyond
        the losses, computed from network A / B (H2E's `features` and `init`); like the
        losses, B's go into A's split and A's into B's.
      **split_options: `selection.split_training_set`'s options (selector, window, normalize,
        p_clean, gmm_scope, min_class_samples, keep_ratio).
    Returns:
      (split_for_a, split_for_b), two `selection.SplitResult`: split_for_a is
      `split_training_set(loss_history_b, ...)`, split_for_b the same on A's losses.
    """
    common = dict(num_classes=num_classes, true_labels=true_labels, seed=seed, **split_options)
    for_a = selection.split_training_set(loss_history_b, labels, pred_probs=pred_probs_b,
                                         **common, **(selector_inputs_b or {}))
    for_b = selection.split_training_set(loss_history_a, labels, pred_probs=pred_probs_a,
                                         **common, **(selector_inputs_a or {}))
    return for_a, for_b


def co_divide_masks(losses_a, losses_b, labels, *, num_classes: int, **split_options):
    """Co-divide's masks and clean probabilities, swapped between the networks.

    Args:
      losses_a, losses_b: (N,) or (T, N) per-sample losses of networks A and B.
      labels: (N,) int given labels; num_classes: K.
      **split_options: as `co_divide_splits`.
    Returns:
      mask_for_a (N,) bool, mask_for_b (N,) bool, clean_prob_for_a (N,) float64,
      clean_prob_for_b (N,) float64: A's labelled set and clean probabilities come from
      B's losses, B's from A's.
    """
    for_a, for_b = co_divide_splits(losses_a, losses_b, labels, num_classes=num_classes,
                                    **split_options)
    return for_a.labelled, for_b.labelled, for_a.clean_prob, for_b.clean_prob


# ----------------------------------------------------------------------------- targets
def _check_temperature(temperature) -> float:
    if not 0.0 < float(temperature) <= 1.0:
        raise ValueError(f"temperature must be in (0, 1]. Received: temperature={temperature!r}")
    return float(temperature)


def _mean_over_views(probs):
    """(B, K) from (B, K) or (V, B, K) probabilities (the mean over the V views)."""
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    if len(probs.shape) == 3:
        return ops.mean(probs, axis=0)
    if len(probs.shape) != 2:
        raise ValueError(f"probs must have shape (B, K) or (V, B, K). Received shape: "
                         f"{probs.shape}")
    return probs


def sharpen(probs, *, temperature: float = 0.5):
    """Temperature sharpening p^(1/T) / sum_k p_k^(1/T) (MixMatch, DivideMix), row-wise.

    Args:
      probs: (B, K) probabilities.
      temperature: T in (0, 1]; 1 leaves `probs` unchanged, T -> 0 tends to one-hot.
    Returns:
      (B, K) float32.
    """
    temperature = _check_temperature(temperature)
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    # in log space: p^(1/T) underflows for small p and T
    logp = ops.log(ops.maximum(probs, 1e-12)) / temperature
    return ops.softmax(logp, axis=-1)


def co_refine(labels, probs, clean_prob, *, num_classes: int, temperature: float = 0.5):
    """DivideMix's label co-refinement of labelled samples.

    Args:
      labels: (B,) int given labels.
      probs: (B, K) or (V, B, K) probabilities of the network being trained on the samples'
        V augmented views (treated as constants: callers pass stopped-gradient values).
      clean_prob: (B,) clean probability w_i of each sample from the *other* network's
        losses.
      num_classes: K.
      temperature: sharpening temperature T (paper: 0.5).
    Returns:
      (B, K) float32 targets sharpen(w * onehot(labels) + (1 - w) * mean_views(probs), T).
    """
    mean = ops.stop_gradient(_mean_over_views(probs))
    onehot = ops.one_hot(ops.cast(ops.convert_to_tensor(labels), "int32"), num_classes)
    w = ops.cast(ops.convert_to_tensor(clean_prob), "float32")[:, None]
    return sharpen(w * onehot + (1.0 - w) * mean, temperature=temperature)


def co_guess(probs_a, probs_b, *, temperature: float = 0.5):
    """DivideMix's co-guessing for unlabelled samples: sharpen the mean of both networks'
    predictions.

    Args:
      probs_a, probs_b: (B, K) or (V, B, K) probabilities of networks A and B on the
        samples' views (constants: callers pass stopped-gradient values).
      temperature: T (paper: 0.5).
    Returns:
      (B, K) float32 sharpen((mean_views(probs_a) + mean_views(probs_b)) / 2, T).
    """
    mean = 0.5 * (_mean_over_views(probs_a) + _mean_over_views(probs_b))
    return sharpen(ops.stop_gradient(mean), temperature=temperature)


# ----------------------------------------------------------------------------- MixMatch
def mixmatch_mix(inputs, targets, *, lam, perm):
    """MixMatch's mixup as DivideMix uses it: l = max(lam, 1 - lam), then
    x' = l * x + (1 - l) * x[perm] and t' = l * t + (1 - l) * t[perm].

    Args:
      inputs: (M, ...) float rows (images of the labelled rows, then the unlabelled rows).
      targets: (M, K) float targets of those rows.
      lam: scalar draw from Beta(alpha, alpha).
      perm: (M,) int permutation of the rows.
    Returns:
      mixed inputs (M, ...) and mixed targets (M, K), float32. Taking max(lam, 1 - lam)
      keeps each mixed row closer to its own row, so the first rows stay "labelled".
    """
    lam = ops.cast(lam, "float32")
    lam = ops.maximum(lam, 1.0 - lam)
    inputs = ops.cast(ops.convert_to_tensor(inputs), "float32")
    targets = ops.cast(ops.convert_to_tensor(targets), "float32")
    return (lam * inputs + (1.0 - lam) * ops.take(inputs, perm, axis=0),
            lam * targets + (1.0 - lam) * ops.take(targets, perm, axis=0))


def mixmatch_row_losses(logits, targets, is_labelled):
    """DivideMix's per-row losses on mixed rows: soft cross-entropy on the labelled rows
    (L_x) and the mean squared error between probabilities and targets over the K classes
    on the unlabelled rows (L_u).

    Args:
      logits: (M, K) float; targets: (M, K) mixed targets; is_labelled: (M,) 0/1.
    Returns:
      (lx (M,), lu (M,)) float32, zero on the rows of the other kind.
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    lab = ops.cast(is_labelled, "float32")
    lx = -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1) * lab
    lu = ops.mean(ops.square(ops.softmax(logits, axis=-1) - targets), axis=-1) * (1.0 - lab)
    return lx, lu


def prior_penalty(probs, prior):
    """DivideMix's regulariser sum_k prior_k * log(prior_k / mean_i probs_ik): keeps the
    mean prediction near `prior` (the paper: uniform on balanced CIFAR).

    Args:
      probs: (M, K) probabilities; prior: (K,) class prior.
    Returns:
      scalar float32 (0 when the mean prediction equals the prior).
    """
    prior = ops.cast(prior, "float32")
    mean = ops.mean(ops.cast(probs, "float32"), axis=0)
    return ops.sum(prior * (ops.log(ops.maximum(prior, 1e-12))
                            - ops.log(ops.maximum(mean, 1e-12))))


# ----------------------------------------------------------------------------- networks
def ensemble_network(network_a, network_b, *, name: str = "co_divide_ensemble"):
    """A functional `keras.Model`: pixels -> the mean of both networks' logits (B, K).

    The sub-models are named `net_a` and `net_b` and share their layers (and weights) with
    `network_a` and `network_b`; a `.weights.h5` file of the ensemble holds both networks.
    """
    import keras

    for net in (network_a, network_b):
        if not hasattr(net, "_run_through_graph"):  # keras's Functional models only
            raise ValueError("ensemble_network needs functional keras.Models (as "
                             f"ferkeras.models.build_network returns). Received: {net!r}")
    a = keras.Model(network_a.input, network_a.output, name="net_a")
    b = keras.Model(network_b.input, network_b.output, name="net_b")
    image = keras.Input(shape=tuple(network_a.input_shape[1:]), name="image")
    logits = keras.layers.Average(name="mean_logits", dtype="float32")([a(image), b(image)])
    return keras.Model(image, logits, name=name)


def build_network_b(recipe, *, input_shape, num_classes: int):
    """Network B of a co-divide recipe: the recipe's backbone, seeded recipe.seed + 7919."""
    from ferkeras.models import build_network

    return build_network(recipe.model, input_shape=input_shape, num_classes=num_classes,
                         seed=recipe.seed + SEED_OFFSET_B)


def build_run_network(recipe, *, input_shape, num_classes: int, weights=None):
    """The network a finished run is scored and exported with.

    Without `cycle.method: co_divide`: the recipe's network. With it: the ensemble of both networks
    (the run's checkpoints hold it), or one of them when `cycle.co_divide.export` is 'a' or
    'b'. `weights`: a checkpoint to load first (None: none).
    """
    from ferkeras.models import build_network

    net = build_network(recipe.model, input_shape=input_shape, num_classes=num_classes,
                        seed=recipe.seed)
    if recipe.cycle.method != "co_divide":
        if weights is not None:
            net.load_weights(str(weights))
        return net
    ensemble = ensemble_network(net, build_network_b(recipe, input_shape=input_shape,
                                                     num_classes=num_classes))
    if weights is not None:
        ensemble.load_weights(str(weights))
    choice = recipe.cycle.co_divide.export
    if choice not in EXPORT_CHOICES:
        raise ValueError(f"co_divide_export must be one of {EXPORT_CHOICES}. Received: "
                         f"co_divide_export={choice!r}")
    return ensemble if choice == "ensemble" else ensemble.get_layer(f"net_{choice}")

