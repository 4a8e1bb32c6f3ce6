"""Trusted rows: a small clean-labelled set and what a recipe uses it for (`trusted.*`).

- `prepare_bundle` carves the test split out of the validation split first (when the data has
  none), so nothing fitted on trusted rows ever sees the reported rows; then it picks the
  trusted labels and, with `trusted.select`, makes them the validation labels that pick the
  epoch.
- `fit_decision` / `apply_decision` (plain arrays): the decision rule fitted on the trusted
  rows' probabilities: a prior shift to the trusted class prior (Saerens et al. 2002), or a
  logistic recalibration of the log-probabilities (a learnt full-matrix generalisation of it,
  in the spirit of gold-loss correction, Hendrycks et al. 2018). Both are one affine map of
  the floored log-probabilities (`transition.log_probs`), so an export bakes either into the
  network as one layer.
- `write_transition_report`: the estimated noise-transition matrix (and the true one when the
  training split carries true labels) as CSV and heat-map PNG in the run folder.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import numpy as np

DECISION_FILE = "decision.json"
RULES_FILE = "decision_rules.json"  # the rule fitted for each objective, and on which rows


@dataclasses.dataclass
class TrustedRows:
    """The validation rows with trusted labels. index: (M,) rows of bundle.val; labels: (M,)
    their trusted labels; noisy: (M,) their given (possibly noisy) labels. train_index: rows
    of bundle.train that are trusted rows moved into training (`trusted.train_fraction`);
    they are not among `index`."""

    index: np.ndarray
    labels: np.ndarray
    noisy: np.ndarray
    train_index: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0, np.int64))
    # rows of the validation split as the data gave it (after a test carve-out) that `index`
    # points at; None = the same as `index`
    origin: np.ndarray | None = None


def move_trusted_to_train(train, val, rows: TrustedRows, *, fraction: float, weight: float,
                          seed: int):
    """(train, val, rows): a stratified, seeded `fraction` of the trusted rows leaves `val`
    and joins the end of `train` with its trusted label and row weight `weight`. Their
    true_labels there are -1: they are never scored as training rows (detection, pseudo-label
    accuracy). The rows left in `val` keep everything fitted on trusted rows out of sample."""
    from ferkeras.data.table import stratified_holdout

    stay, move = stratified_holdout(rows.labels, fraction=fraction, seed=seed)
    moved = val.subset(rows.index[move])
    moved.labels = rows.labels[move].astype(np.int32)
    moved.true_labels = np.full(len(moved), -1, np.int32)
    moved.soft_labels = None
    moved.weights = np.full(len(moved), weight, np.float32)
    keep = np.ones(len(val), bool)
    keep[rows.index[move]] = False
    new_pos = np.cumsum(keep) - 1  # old val row -> its row in the kept val
    origin = rows.index if rows.origin is None else rows.origin
    out = TrustedRows(index=new_pos[rows.index[stay]], labels=rows.labels[stay],
                      noisy=rows.noisy[stay],
                      train_index=np.arange(len(train), len(train) + len(moved)),
                      origin=origin[stay])
    return train.concat(moved), val.subset(keep), out


def prepare_bundle(bundle, cfg, *, seed: int):
    """(bundle, TrustedRows or None, notes) for the recipe's `trusted` section `cfg`."""
    from ferkeras.data.table import stratified_holdout

    notes = []
    train, val, test = bundle.train, bundle.val, bundle.test
    if cfg.test_fraction > 0:
        if test is not None and len(test):
            notes.append(f"trusted.test_fraction={cfg.test_fraction} ignored: the data has a "
                         "test split.")
        else:
            keep, hold = stratified_holdout(val.labels, fraction=cfg.test_fraction, seed=seed)
            test, val = val.subset(hold), val.subset(keep)
            if cfg.source == "val_true_labels" and test.true_labels is not None:
                scored = test.true_labels >= 0
                test = test.subset(scored)
                test.labels = test.true_labels.copy()
                notes.append(f"trusted: test = {len(test)} rows held out of validation "
                             f"(test_fraction={cfg.test_fraction}, seed={seed}), scored "
                             "against their true labels.")
            else:
                notes.append(f"trusted: test = {len(test)} rows held out of validation "
                             f"(test_fraction={cfg.test_fraction}, seed={seed}).")
    rows = None
    carved = None  # test_labels: validation positions of the rows carved out of test
    if cfg.source == "test_labels":
        if test is None or not len(test):
            raise ValueError("trusted.source='test_labels' needs a test split with clean "
                             "labels (AffectNet's hand-annotated validation set, RAF-DB's "
                             f"test set). Received: source {bundle.source!r} without one.")
        if not 0.0 < cfg.fraction < 1.0:
            raise ValueError("trusted.source='test_labels' needs trusted.fraction in (0, 1), "
                             f"the share of the test split to carve out. Received: "
                             f"trusted.fraction={cfg.fraction}")
        keep, hold = stratified_holdout(test.labels, fraction=cfg.fraction, seed=seed)
        carved = np.arange(len(val), len(val) + len(hold))
        val, test = val.concat(test.subset(hold)), test.subset(keep)
        notes.append(f"trusted: {len(hold)} test rows (fraction {cfg.fraction}, stratified, "
                     f"seed {seed}) moved into validation as trusted rows; the reported test "
                     f"is the other {len(keep)}.")
    if cfg.source != "none":
        if cfg.source == "val_true_labels":
            if val.true_labels is None or not (val.true_labels >= 0).any():
                raise ValueError("trusted.source='val_true_labels' needs true labels on the "
                                 "validation split (e.g. data.ferplus_path for fer2013). "
                                 f"Received: source {bundle.source!r} without them.")
            labels = val.true_labels
        else:
            labels = val.labels
        index = carved if carved is not None else np.flatnonzero(labels >= 0)
        rows = TrustedRows(index=index, labels=labels[index].astype(np.int64),
                           noisy=val.labels[index].astype(np.int64))
        notes.append(f"trusted: {len(index)} validation rows with trusted labels "
                     f"({cfg.source}).")
        if cfg.train_fraction > 0:
            train, val, rows = move_trusted_to_train(
                train, val, rows, fraction=cfg.train_fraction, weight=cfg.train_weight,
                seed=seed)
            notes.append(f"trusted: {len(rows.train_index)} trusted rows (fraction "
                         f"{cfg.train_fraction}, stratified, seed {seed}) join the training "
                         f"set with weight {cfg.train_weight}; {len(rows.index)} stay in "
                         "validation for everything fitted on trusted rows.")
        if cfg.select:
            val = val.subset(rows.index)
            val.labels = rows.labels.astype(np.int32)
            rows = TrustedRows(index=np.arange(len(rows.index)), labels=rows.labels,
                               noisy=rows.noisy, train_index=rows.train_index,
                               origin=rows.index if rows.origin is None else rows.origin)
            notes.append("trusted: the best epoch is picked on the trusted labels.")
    elif cfg.select or cfg.decision != "argmax":
        raise ValueError("trusted.select / trusted.decision need trusted rows. Received: "
                         f"trusted.source='none', select={cfg.select}, "
                         f"decision={cfg.decision!r}")
    out = dataclasses.replace(bundle, train=train, val=val, test=test,
                              notes=list(bundle.notes) + notes)
    return out, rows, notes


# ----------------------------------------------------------------------------- decision rules
OBJECTIVES = ("accuracy", "balanced", "constrained")
TAIL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the grid of `choose_tail_weight`


def fit_decision(kind: str, probs, labels, *, train_prior, seed: int = 0,
                 objective: str = "accuracy", folds: int = 5) -> dict:
    """Fit a decision rule on trusted rows. probs: (M, K) softmax; labels: (M,) trusted labels;
    train_prior: (K,) the label distribution the model was trained on. objective:
    - 'accuracy': every trusted row counts once;
    - 'balanced': balanced accuracy: the prior shift targets the uniform prior; the
      recalibration weighs rows by the inverse frequency of their class;
    - 'constrained': the most accurate rule whose balanced accuracy does not fall below the
      model's own argmax: the tail weight alpha (rows weighted by frequency^-alpha; the
      prior shift's target prior^(1 - alpha)) is chosen on the trusted rows by `folds`-fold
      cross-validation (`choose_tail_weight`); tail_weight None: no rule beat the argmax.
    Returns {"kind", "objective", "tail_weight", "W": (K, K), "b": (K,)} with
    z' = log_softmax(z) @ W + b."""
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown decision objective. Valid: {OBJECTIVES}. Received: "
                         f"objective={objective!r}")
    extra = {}
    if objective == "constrained" and kind != "argmax":
        alpha, table = choose_tail_weight(kind, probs, labels, train_prior=train_prior,
                                          seed=seed, folds=folds)
        extra["tail_weight_cv"] = table
    else:
        alpha = 1.0 if objective == "balanced" else 0.0
    if alpha is None:  # 'constrained' kept the model's own argmax
        k = np.asarray(probs).shape[1]
        W, b = np.eye(k), np.zeros(k)
    else:
        W, b = _fit_rule(kind, probs, labels, train_prior=train_prior, seed=seed, alpha=alpha)
    return {"kind": kind, "objective": objective, "tail_weight": alpha,
            "W": np.asarray(W).tolist(), "b": np.asarray(b).tolist(), **extra}


def _fit_rule(kind, probs, labels, *, train_prior, seed, alpha):
    """(W, b) of a rule with tail weight alpha in [0, 1] (0: accuracy, 1: balanced)."""
    from ferkeras.noise import transition as tr

    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    labels = np.asarray(labels)
    if kind == "argmax":
        return np.eye(k), np.zeros(k)
    counts = np.bincount(labels, minlength=k) + 0.5
    if kind == "prior":
        target = (counts / counts.sum()) ** (1.0 - alpha)
        return np.eye(k), tr.prior_shift_bias(source_prior=train_prior,
                                              target_prior=target / target.sum())
    if kind == "recalibrate":
        # w_c = count_c^-alpha, scaled so rows weigh 1 on average (alpha 1: sklearn's
        # 'balanced', n / (classes * count_c))
        present = np.unique(labels)
        raw = np.bincount(labels, minlength=k).astype(np.float64)
        scale = len(labels) / float(np.sum(raw[present] ** (1.0 - alpha)))
        weight = (None if alpha == 0 else "balanced" if alpha == 1 else
                  {int(c): float(scale * raw[c] ** -alpha) for c in present})
        return tr.fit_recalibration(probs, labels, seed=seed, class_weight=weight)
    raise ValueError(f"Unknown decision rule. Valid: argmax, prior, recalibrate. "
                     f"Received: kind={kind!r}")


def choose_tail_weight(kind, probs, labels, *, train_prior, seed: int = 0, folds: int = 5,
                       grid=TAIL_WEIGHTS) -> tuple[float | None, list]:
    """The 'constrained' objective's alpha: by `folds`-fold cross-validation on the trusted
    rows (stratified, seeded), the most accurate candidate among those whose balanced
    accuracy is at least the argmax's on the same rows. The candidates are the alphas of
    `grid` and None, the model's own argmax (no rule), which always qualifies: the rule
    never trades cross-validated accuracy or balanced accuracy below the argmax's.
    Returns (alpha or None, [{alpha, accuracy, balanced_accuracy}, ...])."""
    from sklearn.model_selection import StratifiedKFold

    from ferkeras.noise import transition as tr

    p = np.asarray(probs, np.float64)
    y = np.asarray(labels)
    k = p.shape[1]
    strata = np.where(np.bincount(y, minlength=k)[y] >= folds, y, -1)
    pred = {a: np.zeros(len(y), np.int64) for a in grid}
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p, strata):
        for a in grid:
            W, b = _fit_rule(kind, p[fit], y[fit], train_prior=train_prior, seed=seed, alpha=a)
            pred[a][held] = tr.apply_recalibration(p[held], W, b).argmax(1)
    pred[None] = p.argmax(1)

    def bal(x):
        return float(np.mean([(x[y == c] == c).mean() for c in np.unique(y)]))

    floor = bal(pred[None])
    table = [{"alpha": a, "accuracy": float((x == y).mean()), "balanced_accuracy": bal(x)}
             for a, x in pred.items()]
    ok = [r for r in table if r["balanced_accuracy"] >= floor]
    return max(ok, key=lambda r: r["accuracy"])["alpha"], table


def apply_decision(decision: dict, probs) -> np.ndarray:
    """(N, K) probabilities after the rule: softmax(log_probs(probs) @ W + b)."""
    from ferkeras.noise import transition as tr

    return tr.apply_recalibration(probs, decision["W"], decision["b"])


def read_decision(run_dir) -> dict | None:
    path = pathlib.Path(run_dir) / DECISION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def wrap_network(network, decision: dict | None):
    """`network` (pixels -> logits) followed by the decision rule; unchanged for argmax/None."""
    if decision is None or decision["kind"] == "argmax":
        return network
    import keras

    logits = _decision_layer_class()(decision["W"], decision["b"],
                                     name="decision")(network.output)
    return keras.Model(network.input, logits, name=network.name + "_decided")


@functools.cache
def _decision_layer_class():
    """The Keras layer class, built on first use so this module imports without Keras."""
    import keras

    from ferkeras.noise.transition import LOG_PROB_FLOOR

    @keras.saving.register_keras_serializable(package="ferkeras")
    class DecisionLayer(keras.layers.Layer):
        """z' = max(log_softmax(z), log floor) @ W + b: a trusted decision rule as constant
        weights (`apply_decision`'s features, floor included)."""

        def __init__(self, W, b, **kwargs):
            super().__init__(**kwargs)
            self.W_init = np.asarray(W, dtype="float32")
            self.b_init = np.asarray(b, dtype="float32")

        def build(self, input_shape):
            self.W = self.add_weight(shape=self.W_init.shape, trainable=False, name="W",
                                     initializer=keras.initializers.Constant(self.W_init))
            self.b = self.add_weight(shape=self.b_init.shape, trainable=False, name="b",
                                     initializer=keras.initializers.Constant(self.b_init))

        def call(self, logits):
            z = keras.ops.maximum(
                keras.ops.log_softmax(keras.ops.cast(logits, "float32"), axis=-1),
                float(np.log(LOG_PROB_FLOOR)))
            return keras.ops.matmul(z, self.W) + self.b

        def get_config(self):
            return {**super().get_config(), "W": self.W_init.tolist(), "b": self.b_init.tolist()}

    return DecisionLayer


# ----------------------------------------------------------------------------- after training
def finish_run(run_dir, recipe, bundle, rows: TrustedRows | None, *, class_names,
               batch_size: int = 512) -> dict:
    """Fit the recipe's decision rule on the trusted rows with the best weights, write
    decision.json and the transition report, and score validation and test under the rule.
    Returns the `decision` block for metrics.json ({} without trusted rows)."""
    if rows is None:
        return {}
    from ferkeras import io
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.training.evaluation import classification_metrics
    from ferkeras.training.passes import predict_probs
    from ferkeras.training.runs import open_run

    run_dir = pathlib.Path(run_dir)
    net = open_run(run_dir).build_network()

    def probs_of(split):
        p, idx = predict_probs(net, make_dataset(split, recipe.data, batch_size=batch_size))
        out = np.zeros_like(p)
        out[idx] = p
        return out

    k = len(class_names)
    train_prior = bundle.train.class_counts(k) / max(len(bundle.train), 1)
    val_probs = probs_of(bundle.val)
    fitted = {obj: fit_decision(recipe.trusted.decision, val_probs[rows.index], rows.labels,
                                train_prior=train_prior, seed=recipe.seed, objective=obj)
              for obj in OBJECTIVES}
    decision = fitted[recipe.trusted.decision_objective]
    decision.update({"class_names": list(class_names), "fitted_on": len(rows.index),
                     "source": recipe.trusted.source})
    io.atomic_write_json(run_dir / DECISION_FILE, decision)
    origin = rows.index if rows.origin is None else rows.origin
    io.atomic_write_json(run_dir / RULES_FILE, {
        **fitted, "baked": decision["objective"],
        "trusted_val_rows": np.asarray(origin).tolist(),
        "trusted_val_rows_note": "rows of the validation split (after any test carve-out, "
                                 "before trusted rows moved into training) the rules were "
                                 "fitted on"})
    block = {"rule": decision["kind"], "objective": decision["objective"],
             "fitted_on_trusted_rows": len(rows.index)}
    # argmax, the baked rule under its own name, and the rule fitted for each objective
    rules = {"argmax": None}
    if decision["kind"] != "argmax":
        rules[decision["kind"]] = decision
        rules.update({f"{decision['kind']}@{obj}": d for obj, d in fitted.items()})

    def scored(labels, probs):
        return {name: classification_metrics(
            labels, probs if d is None else apply_decision(d, probs), class_names=class_names)
            for name, d in rules.items()}

    block["val_trusted"] = scored(rows.labels, val_probs[rows.index])
    block["val_trusted_note"] = "in-sample for the rules: fitted on these rows"
    if bundle.test is not None and len(bundle.test):
        block["test"] = scored(bundle.test.labels, probs_of(bundle.test))
        block["baked"] = f"{decision['kind']}@{decision['objective']}"
    write_transition_report(run_dir, noisy=rows.noisy, trusted=rows.labels,
                            probs=val_probs[rows.index], train=bundle.train,
                            class_names=class_names)
    return block


def write_transition_report(run_dir, *, noisy, trusted, probs, train, class_names) -> dict:
    """transition.csv / transition.png: T estimated on the trusted rows (counts of trusted vs
    given labels when they differ somewhere, else GLC's estimate from the model's
    probabilities), beside the true T of the training split when it carries true labels."""
    from ferkeras import io
    from ferkeras.noise import transition as tr

    k = len(class_names)
    if (np.asarray(noisy) != np.asarray(trusted)).any():
        est = tr.estimate_transition_counts(noisy, trusted, num_classes=k)
        how = "counts on trusted rows (trusted label -> given label)"
    else:
        est = tr.estimate_transition_trusted(probs, trusted, num_classes=k)
        how = "GLC: mean predicted probabilities of the trusted rows of each class"
    mats = {f"estimated ({how})": est}
    if train.true_labels is not None and (train.true_labels >= 0).any():
        mats["true (training split: true label -> given label)"] = \
            tr.estimate_transition_counts(train.labels, train.true_labels, num_classes=k,
                                          smoothing=0.0)
    lines = ["matrix,clean_label," + ",".join(class_names)]
    for name, T in mats.items():
        tag = name.split(" ")[0]
        lines += [f"{tag},{class_names[i]}," + ",".join(f"{v:.4f}" for v in T[i])
                  for i in range(k)]
    io.atomic_write_text(pathlib.Path(run_dir) / "transition.csv", "\n".join(lines) + "\n")
    io.atomic_savefig(lambda p: _plot(mats, class_names, p),
                      pathlib.Path(run_dir) / "transition.png")
    return {n: T.tolist() for n, T in mats.items()}


def _plot(mats: dict, class_names, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    fig, axes = plt.subplots(1, len(mats), figsize=(0.9 * k * len(mats) + 1, 0.9 * k + 1),
                             squeeze=False)
    for ax, (name, T) in zip(axes[0], mats.items(), strict=True):
        ax.imshow(T, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{T[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if T[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), class_names, rotation=45, ha="right")
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("given label")
        ax.set_ylabel("clean label")
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
