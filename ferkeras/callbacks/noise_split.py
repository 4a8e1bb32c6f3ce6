"""NoiseSplit: at the start of each cycle, split the training set into clean and noisy.

Per-sample losses of the current model (eval network, inference mode, un-augmented images)
-> `ferkeras.selection` (normalise, GMM or small-loss, threshold) -> the trainer's
`tf.Variable` tables (`labelled_mask`, `clean_prob`, `target_prior`) and its class prior,
re-estimated from the samples judged clean. Each split writes a report folder.
"""

from __future__ import annotations

import pathlib
import time

import keras
import numpy as np

from ferkeras import selection
from ferkeras.io import atomic_path
from ferkeras.passes import mask_digest, per_sample_losses


class NoiseSplit(keras.callbacks.Callback):
    """Runs the class-aware split at cycle starts (and every epoch if asked)."""

    def __init__(self, *, trainer, train_split, data_cfg, cycle_cfg, class_names, first_epoch,
                 epochs_per_cycle, run_dir, seed=0, write=True, echo=print, cb_beta=0.999,
                 strategy=None):
        super().__init__()
        from ferkeras.data.pipeline import make_dataset

        self.trainer = trainer
        self.split = train_split
        self.labels = np.asarray(train_split.labels)
        self.true = train_split.true_labels
        self.cfg = cycle_cfg
        self.class_names = tuple(class_names)
        self.first_epoch = int(first_epoch)
        self.epochs_per_cycle = int(epochs_per_cycle)
        self.run_dir = pathlib.Path(run_dir)
        self.seed = int(seed)
        self.write = write
        self.echo = echo
        self.cb_beta = cb_beta
        self.strategy = strategy  # multi-worker: the chief's split is broadcast to all
        self.dataset = make_dataset(train_split, data_cfg, batch_size=512)
        import tensorflow as tf

        # Host-side copy of the unlabelled mask for the input pipeline, which builds strong
        # views only where it is 1 (a plain variable: tf.data reads it at iteration time).
        self.strong_mask = tf.Variable(np.ones(len(self.labels), np.float32), trainable=False,
                                       name="strong_view_mask")
        self.data_cfg = data_cfg
        self.history: list[np.ndarray] = []
        self.split_seconds = 0.0
        self.splits_done = 0
        self.last_scores: dict | None = None
        self.last_split_epoch = -1

    @classmethod
    def from_recipe(cls, recipe, *, trainer, bundle, run_dir, write, strategy, echo):
        return cls(trainer=trainer, train_split=bundle.train, data_cfg=recipe.data,
                   cycle_cfg=recipe.cycle, class_names=bundle.class_names,
                   first_epoch=recipe.cycle.warmup_epochs,
                   epochs_per_cycle=recipe.cycle.epochs_per_cycle, run_dir=run_dir,
                   seed=recipe.seed, write=write, echo=echo, cb_beta=recipe.train.cb_beta,
                   strategy=strategy)

    # ------------------------------------------------------------------ schedule
    def is_split_epoch(self, epoch: int) -> bool:
        if epoch < self.first_epoch:
            return False
        if self.cfg.resplit_every_epoch:
            return True
        return (epoch - self.first_epoch) % self.epochs_per_cycle == 0

    def prepare_epoch(self, epoch: int) -> None:
        """Run the split due at `epoch`, once (training calls this before building the
        epoch's input stream; `on_epoch_begin` covers plain `fit` use)."""
        if self.is_split_epoch(epoch) and epoch != self.last_split_epoch:
            self.run_split(epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.prepare_epoch(epoch)

    # ------------------------------------------------------------------ the split
    def run_split(self, epoch: int) -> dict:
        self.last_split_epoch = epoch
        t0 = time.time()
        k = len(self.class_names)
        losses, probs = per_sample_losses(self.trainer.eval_network, self.dataset,
                                          self.labels)
        self.history = (self.history + [losses])[-self.cfg.loss_window:]
        avg = selection.average_loss_history(np.stack(self.history), window=self.cfg.loss_window)
        if self.cfg.selector == "gmm":
            clean_prob = selection.clean_probability(
                avg, self.labels, num_classes=k, normalize=self.cfg.normalize,
                gmm_scope=self.cfg.gmm_scope, min_class_samples=self.cfg.min_class_samples,
                seed=self.seed + epoch)
            labelled = selection.split_by_threshold(clean_prob, p_clean=self.cfg.p_clean,
                                                    labels=self.labels, num_classes=k)
        else:
            labelled = selection.small_loss_selection(
                avg, self.labels, num_classes=k, keep_ratio=self.cfg.keep_ratio)
            clean_prob = 1.0 - selection.normalize_losses(avg, self.labels, num_classes=k,
                                                          mode=self.cfg.normalize)
        prior = selection.estimate_clean_prior(self.labels, labelled, num_classes=k,
                                               pred_probs=probs)
        if self.strategy is not None:
            # Every worker computed its own split; all of them use the chief's.
            from ferkeras.strategy import broadcast_from_chief

            labelled, clean_prob, prior = broadcast_from_chief(
                self.strategy, [labelled, clean_prob, prior])
        self.trainer.set_split(labelled, clean_prob, prior)
        self.strong_mask.assign((~labelled).astype(np.float32))
        clean_counts = np.bincount(self.labels[labelled], minlength=k)
        self.trainer.set_class_prior(clean_counts, beta=self.cb_beta)
        seconds = time.time() - t0
        self.split_seconds += seconds
        self.splits_done += 1
        scores = None
        if self.true is not None and (self.true >= 0).any():
            known = self.true >= 0
            scores = selection.score_noise_detection(
                clean_prob[known], (self.true == self.labels)[known], labels=self.labels[known],
                num_classes=k, p_clean=self.cfg.p_clean)
            self.last_scores = scores
        if self.write:
            from ferkeras.reports import write_split_report

            write_split_report(
                self.run_dir / "reports" / f"split-e{epoch + 1:03d}", split=self.split,
                data_cfg=self.data_cfg, class_names=self.class_names, losses=avg,
                normalized=selection.normalize_losses(avg, self.labels, num_classes=k,
                                                      mode=self.cfg.normalize),
                clean_prob=clean_prob, labelled=labelled, pred_probs=probs, scores=scores)
        msg = (f"split at epoch {epoch + 1}: {int(labelled.sum())} clean / "
               f"{int((~labelled).sum())} noisy ({seconds:.1f} s, mask "
               f"{mask_digest(labelled)})")
        if scores:
            msg += f", detection ROC-AUC {scores['auc']:.3f}"
        self.echo(msg)
        return {"labelled": labelled, "clean_prob": clean_prob, "scores": scores}

    def sync_pipeline_mask(self) -> None:
        """Set the pipeline's strong-view mask from the trainer's (restored) split table."""
        if self.splits_done:
            self.strong_mask.assign(1.0 - np.asarray(self.trainer.labelled_mask.numpy(),
                                                     np.float32))

    # ------------------------------------------------------------------ run state
    def state_dict(self) -> dict:
        path = self.run_dir / "checkpoints" / "selector_history.npz"
        if self.write and self.history:
            with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, history=np.stack(self.history))
        return {"split_seconds": self.split_seconds, "splits_done": self.splits_done,
                "last_scores": self.last_scores, "history_file": path.name}

    def load_state_dict(self, state: dict) -> None:
        self.split_seconds = float(state.get("split_seconds", 0.0))
        self.splits_done = int(state.get("splits_done", 0))
        self.last_scores = state.get("last_scores")
        path = self.run_dir / "checkpoints" / state.get("history_file", "selector_history.npz")
        if path.is_file():
            self.history = list(np.load(path, allow_pickle=False)["history"])

    def summary(self) -> dict:
        out = {"split_seconds": round(self.split_seconds, 2), "splits": self.splits_done}
        if self.last_scores is not None:
            out["noise_detection"] = self.last_scores
        return out
