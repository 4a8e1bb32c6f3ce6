"""ForwardCorrection: trust-free forward loss correction during training (Patrini et al.,
CVPR 2017, "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach").

Train plainly for `warmup_epochs`; at the end of that epoch run the training set through the
model once (eval network, inference mode, un-augmented, `ferkeras.training.passes`), estimate T with
the anchor-point rule (`ferkeras.noise.transition.estimate_transition_anchors`), install it in the
trainer (`ForwardCorrectedTrainer.set_transition`: tf.Variables, so the run state saves it)
and write forward_transition.csv / forward_transition.png into the run folder, beside the
true T of the training split when it carries true labels. From the next epoch on the loss
is forward-corrected. A resumed run whose saved state has T on does nothing again.

It must come before `RunState` in the callback list, so the epoch's saved state holds T.
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np

CSV_FILE = "forward_transition.csv"
PNG_FILE = "forward_transition.png"
# Above this condition number the estimated T is reported as nearly singular (a warning
# only: T is used as estimated, as in the paper).
MAX_CONDITION = 100.0


class ForwardCorrection(keras.callbacks.Callback):
    """Args:
      trainer: a `ForwardCorrectedTrainer`.
      train_split: the training `Split` (labels, optional true_labels).
      data_cfg: the recipe's `DataConfig`.
      warmup_epochs: epochs of plain training; T is estimated at the end of epoch
        `warmup_epochs` (1-based).
      quantile: the anchor rule's quantile (Patrini's robust 97th percentile).
      class_names: K names.
      run_dir: where the matrix files go; None writes nothing.
      write: False on non-chief workers.
      strategy: multi-worker runs use the chief's estimate on every worker.
      echo: one-line progress output.
      dataset: the pass's dataset (default: `make_dataset(train_split, data_cfg)`).
      trusted: for gold loss correction (Hendrycks et al. 2018), `(rows, val_split)`: T is
        then estimated on the trusted rows (`transition.estimate_transition_trusted`), not
        with the anchor rule on the training set.
    """

    def __init__(self, *, trainer, train_split, data_cfg, warmup_epochs, quantile=0.97,
                 class_names=None, run_dir=None, write=True, strategy=None, echo=print,
                 dataset=None, trusted=None):
        super().__init__()
        if int(warmup_epochs) < 1:
            raise ValueError(f"warmup_epochs must be >= 1. Received: warmup_epochs="
                             f"{warmup_epochs}")
        from ferkeras.data.pipeline import make_dataset

        self.trainer = trainer
        self.split = train_split
        self.warmup_epochs = int(warmup_epochs)
        self.quantile = float(quantile)
        k = trainer.num_classes
        self.class_names = tuple(class_names or [str(i) for i in range(k)])
        self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
        self.write = bool(write) and self.run_dir is not None
        self.strategy = strategy
        self.echo = echo
        self.dataset = (dataset if dataset is not None
                        else make_dataset(train_split, data_cfg, batch_size=512))
        self.estimated_at = None
        self.estimator = "anchors"
        if trusted is not None:
            rows, val = trusted
            self.estimator = "gold"
            self.trusted_labels = np.asarray(rows.labels)
            self.trusted_dataset = make_dataset(val.subset(rows.index), data_cfg,
                                                batch_size=512)

    @classmethod
    def from_recipe(cls, recipe, *, trainer, bundle, run_dir, write, strategy, echo,
                    trusted_rows=None):
        t = recipe.train
        trusted = None
        if t.forward_correction == "gold":
            if trusted_rows is None:
                raise ValueError("train.forward_correction 'gold' needs the trusted rows. "
                                 "Received: trusted_rows=None")
            trusted = (trusted_rows, bundle.val)
        return cls(trainer=trainer, train_split=bundle.train, data_cfg=recipe.data,
                   warmup_epochs=t.forward_warmup_epochs, quantile=t.forward_quantile,
                   class_names=bundle.class_names, run_dir=run_dir, write=write,
                   strategy=strategy, echo=echo, trusted=trusted)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.warmup_epochs and not self.trainer.forward_is_on:
            self.estimate(epoch)

    def estimate(self, epoch: int) -> np.ndarray:
        """Estimate T from the current model on the training set and install it."""
        from ferkeras.noise.transition import (
            estimate_transition_anchors,
            estimate_transition_trusted,
        )
        from ferkeras.training.passes import predict_probs

        if self.estimator == "gold":
            probs, index = predict_probs(self.trainer.eval_network, self.trusted_dataset)
            T = estimate_transition_trusted(probs[np.argsort(index)], self.trusted_labels,
                                            num_classes=self.trainer.num_classes)
        else:
            probs, index = predict_probs(self.trainer.eval_network, self.dataset)
            T = estimate_transition_anchors(probs[np.argsort(index)], quantile=self.quantile)
        if self.strategy is not None:
            from ferkeras.training.strategy import broadcast_from_chief

            (T,) = broadcast_from_chief(self.strategy, [T])
        self.trainer.set_transition(T)
        self.estimated_at = epoch + 1
        if self.write:
            self._write(T)
        diag = ", ".join(f"{v:.2f}" for v in np.diag(T))
        self.echo(f"forward correction: T estimated after epoch {epoch + 1} ({self.estimator}, "
                  f"diagonal {diag}); the loss is corrected from epoch {epoch + 2}")
        cond = float(np.linalg.cond(T))
        if not cond < MAX_CONDITION:
            self.echo(f"warning: the estimated T is nearly singular (condition number "
                      f"{cond:.3g}): the corrected loss hardly depends on the prediction. The "
                      "warm-up model is probably too weak; train longer before estimating "
                      "(train.forward_warmup_epochs).")
        return T

    def _write(self, T) -> None:
        from ferkeras import io
        from ferkeras.noise.transition import estimate_transition_counts
        from ferkeras.noise.trusted import _plot

        k = len(self.class_names)
        how = ("gold: trusted rows, Hendrycks et al. 2018" if self.estimator == "gold" else
               "anchor points, Patrini et al. 2017")
        mats = {f"estimated ({how})": T}
        truth = self.split.true_labels
        if truth is not None and (np.asarray(truth) >= 0).any():
            mats["true (training split: true label -> given label)"] = \
                estimate_transition_counts(self.split.labels, truth, num_classes=k,
                                           smoothing=0.0)
        lines = ["matrix,clean_label," + ",".join(self.class_names)]
        for name, M in mats.items():
            tag = name.split(" ")[0]
            lines += [f"{tag},{self.class_names[i]}," + ",".join(f"{v:.4f}" for v in M[i])
                      for i in range(k)]
        io.atomic_write_text(self.run_dir / CSV_FILE, "\n".join(lines) + "\n")
        io.atomic_savefig(lambda p: _plot(mats, self.class_names, p), self.run_dir / PNG_FILE)

    def summary(self) -> dict:
        """The `forward_correction` block of metrics.json (read from the trainer, so it holds
        after a resume too)."""
        on = self.trainer.forward_is_on
        T = keras.ops.convert_to_numpy(self.trainer.transition)
        return {"forward_correction": {
            "estimator": self.estimator, "warmup_epochs": self.warmup_epochs, "on": on,
            "transition": np.round(T, 4).tolist() if on else None,
            "condition_number": round(float(np.linalg.cond(T)), 3) if on else None}}


def method_callbacks(recipe, *, trainer, bundle, run_dir, write, strategy, echo,
                     trusted_rows=None) -> list:
    """The callbacks of the recipe's training-time methods (forward correction), to run
    before `RunState` at each epoch end."""
    if recipe.train.forward_correction == "none":
        return []
    return [ForwardCorrection.from_recipe(recipe, trainer=trainer, bundle=bundle,
                                          run_dir=run_dir, write=write, strategy=strategy,
                                          echo=echo, trusted_rows=trusted_rows)]
