"""NoiseSplit: the owner of the noise cycle's split.

At each split epoch of the schedule (`ferkeras.training.schedule.plan_phases`): per-sample losses of
the current model (eval network, inference mode, un-augmented images, `ferkeras.training.passes`) ->
`selection.split_training_set` -> the trainer's `tf.Variable` tables (`labelled_mask`,
`clean_prob`, `target_prior`) and its class prior, re-estimated from the samples judged
clean. The trainer's `labelled_mask` is the one mask: the input pipeline reads it too, to
build strong views only for unlabelled samples. Each split writes a report folder.

Training drives it through `begin_phase`; in a plain `fit` it splits from `on_epoch_begin`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import keras
import numpy as np

from ferkeras.io import atomic_path
from ferkeras.methods import split_selector
from ferkeras.noise import selection
from ferkeras.training.passes import mask_digest, per_sample_losses

HISTORY_FILE = "selector_history.npz"


class NoiseSplit(keras.callbacks.Callback):
    """Runs the class-aware split at the schedule's split epochs.

    Args:
      trainer: a `CycleTrainer` (or any trainer with `eval_network`, `set_split`,
        `set_class_prior` and `labelled_mask`).
      train_split: the training `Split` (labels, optional true_labels).
      data_cfg: the recipe's `DataConfig` (default: `DataConfig()`).
      cycle_cfg: the recipe's `CycleConfig` (default: `CycleConfig(enabled=True)`).
      class_names: K names (default: "0".."K-1" from the labels).
      split_epochs: 0-based epochs whose start runs a split (default: those of
        `plan_cycle_phases(cycle_cfg)`).
      run_dir: where reports and the loss history go; None writes nothing.
      seed: GMM seed (plus the epoch).
      write: False on non-chief workers.
      echo: one-line progress output.
      cb_beta: the class-balanced beta for the re-estimated class prior.
      strategy: multi-worker runs broadcast the chief's split to every worker.
      dataset: the loss pass's dataset (default: `make_dataset(train_split, data_cfg)`).
      trusted: with cycle.selector trusted, the trusted rows (`ferkeras.noise.trusted.TrustedRows`)
        and the validation `Split` they index: `(rows, val_split)`.
    """

    def __init__(self, *, trainer, train_split, data_cfg=None, cycle_cfg=None, class_names=None,
                 split_epochs=None, run_dir=None, seed=0, write=True, echo=print, cb_beta=0.999,
                 strategy=None, dataset=None, trusted=None):
        super().__init__()
        from ferkeras.data.pipeline import make_dataset
        from ferkeras.training.recipe import CycleConfig, DataConfig
        from ferkeras.training.schedule import plan_cycle_phases
        from ferkeras.training.schedule import split_epochs as _split_epochs

        self.trainer = trainer
        self.split = train_split
        self.labels = np.asarray(train_split.labels)
        self.true = train_split.true_labels
        self.data_cfg = data_cfg if data_cfg is not None else DataConfig()
        self.cfg = cycle_cfg if cycle_cfg is not None else CycleConfig(enabled=True)
        if class_names is None:
            class_names = [str(i) for i in range(int(self.labels.max()) + 1)]
        self.class_names = tuple(class_names)
        if split_epochs is None:
            split_epochs = _split_epochs(plan_cycle_phases(self.cfg, epochs=1))
        self.split_epochs = frozenset(int(e) for e in split_epochs)
        self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
        self.seed = int(seed)
        self.write = bool(write) and self.run_dir is not None
        self.echo = echo
        self.warnings: list[str] = []
        self.cb_beta = cb_beta
        self.strategy = strategy
        # The loss pass: every sample once, un-augmented, `(image, label, index)` batches.
        self.dataset = (dataset if dataset is not None
                        else make_dataset(train_split, self.data_cfg, batch_size=512))
        self.trusted = None
        if trusted is not None:
            rows, val = trusted
            forced = np.zeros(len(self.labels), bool)
            forced[np.asarray(rows.train_index, np.int64)] = True
            self.trusted = {"labels": rows.labels, "given": rows.noisy, "forced": forced,
                            "dataset": make_dataset(val.subset(rows.index), self.data_cfg,
                                                    batch_size=512)}
        elif self.cfg.selector == "trusted":
            raise ValueError("cycle.selector 'trusted' needs the trusted rows. Received: "
                             "trusted=None")
        # per split: detection ROC-AUC on rows with known truth, and the trusted rows' own
        # out-of-fold AUC (selector trusted); the virtuous circle shows as a rising list
        self.auc_by_split: list = []
        self.trusted_auc_by_split: list = []
        self.history: list[np.ndarray] = []
        self.split_seconds = 0.0
        self.splits_done = 0
        self.last_scores: dict | None = None
        self.last_split_epoch = -1
        # noisy_mode relabel: the last split's (N,) relabels (-1 = none) and their counts
        self.relabel_table = None
        self.last_relabel = None

    @classmethod
    def from_recipe(cls, recipe, *, trainer, bundle, run_dir, write, strategy, echo,
                    trusted_rows=None):
        from ferkeras.training.schedule import plan_phases, split_epochs

        trusted = None
        if recipe.cycle.selector == "trusted":
            trusted = (trusted_rows, bundle.val)
        return cls(trainer=trainer, train_split=bundle.train, data_cfg=recipe.data,
                   cycle_cfg=recipe.cycle, class_names=bundle.class_names,
                   split_epochs=split_epochs(plan_phases(recipe)), run_dir=run_dir,
                   seed=recipe.seed, write=write, echo=echo, cb_beta=recipe.train.cb_beta,
                   strategy=strategy, trusted=trusted)

    # ------------------------------------------------------------------ the cycle's interface
    @property
    def labelled_mask(self):
        """The trainer's (N,) labelled-mask variable: the one mask trainer and pipeline read."""
        return self.trainer.labelled_mask

    def begin_phase(self, phase, first_epoch: int) -> None:
        """Split now when `phase` starts with a split at `first_epoch` (not on a resume into
        the middle of a phase, which continues with the restored split)."""
        if phase.split and first_epoch == phase.start and first_epoch != self.last_split_epoch:
            self.run_split(first_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.split_epochs and epoch != self.last_split_epoch:
            self.run_split(epoch)

    def _crest(self, result, probs, epoch: int):
        """CReST (`ferkeras.methods.crest.core`): this split is generation g = the cycle's index;
        the
        unlabelled rows predicted as class l join the labelled set with that pseudo-label at
        rate mu_l (from the labelled class counts), and the trainer gets CReST+'s alignment
        temperature (1 at the first cycle, cycle.crest.t_min at the last)."""
        from ferkeras.methods.crest import core as crest

        c, k = self.cfg, len(self.class_names)
        rates = crest.crest_sampling_rates(np.maximum(result.clean_counts, 0),
                                           alpha=c.crest.alpha)
        pseudo, conf = probs.argmax(axis=1), probs.max(axis=1)
        picked = crest.crest_select(pseudo, conf, rates, candidates=~result.labelled,
                                    rng=np.random.default_rng([self.seed, epoch]))
        table = np.where(picked, pseudo, -1).astype(np.float64)
        if self.strategy is not None:  # the chief's picks on every worker
            from ferkeras.training.strategy import broadcast_from_chief

            (table,) = broadcast_from_chief(self.strategy, [table])
            picked = table >= 0
        generations = max(c.cycles - 1, 1)
        g = min(max((epoch - c.warmup_epochs) // c.epochs_per_cycle, 0), generations)
        t = crest.progressive_alignment_temperature(g, generations, t_min=c.crest.t_min)
        self.trainer.set_crest(table, temperature=t)
        added = np.bincount(pseudo[picked], minlength=k)
        msg = (f"CReST generation {g}: added {int(picked.sum())} pseudo-labelled rows "
               f"(per class {added.tolist()}), alignment temperature {t:.3f}")
        if self.true is not None and (picked & (self.true >= 0)).any():
            known = picked & (self.true >= 0)
            msg += f", {int((pseudo[known] == self.true[known]).sum())}/{int(known.sum())} correct"
        self.echo(msg)
        return dataclasses.replace(result, labelled=result.labelled | picked)

    def _selector_inputs(self, c, probs) -> dict:
        """What a selector needs beyond the losses: H2E (`ferkeras.noise.h2e`) the network's
        penultimate features and its logits layer (the identifier starts from it); PNP
        (`ferkeras.methods.pnp.core`) the trainer's noise-type probabilities; trusted
        (`ferkeras.noise.trusted_split`) the probabilities of the training and trusted rows."""
        if c.selector == "trusted":
            from ferkeras.training.passes import predict_probs

            t = self.trusted
            tprobs, idx = predict_probs(self.trainer.eval_network, t["dataset"])
            ordered = np.zeros_like(tprobs)
            ordered[idx] = tprobs
            return {"trusted_inputs": {
                "train_probs": probs, "trusted_probs": ordered, "trusted_labels": t["labels"],
                "trusted_given": t["given"], "folds": c.trusted_folds,
                "forced_clean": t["forced"]}, "out": {}}
        if split_selector(c) == "pnp":
            return {"type_probs": self.trainer.noise_type_probs(self.dataset)}
        if split_selector(c) != "h2e":
            return {}
        from ferkeras.training.passes import per_sample_features

        features, _, kernel, bias = per_sample_features(self.trainer.eval_network, self.dataset)
        return {"features": features, "init": (kernel, bias), "h2e_rounds": c.h2e.rounds,
                "h2e_penalty": c.h2e.penalty}

    # ------------------------------------------------------------------ the split
    def run_split(self, epoch: int) -> selection.SplitResult:
        self.last_split_epoch = epoch
        t0 = time.time()
        k, c = len(self.class_names), self.cfg
        losses, probs = per_sample_losses(self.trainer.eval_network, self.dataset, self.labels)
        self.history = (self.history + [losses])[-c.loss_window:]
        inputs = self._selector_inputs(c, probs)
        sink = inputs.get("out", {})
        result = selection.split_training_set(
            np.stack(self.history), self.labels, num_classes=k, selector=split_selector(c),
            window=c.loss_window, normalize=c.normalize, pred_probs=probs,
            seed=self.seed + epoch, p_clean=c.p_clean, gmm_scope=c.gmm_scope,
            min_class_samples=c.min_class_samples, keep_ratio=c.keep_ratio, **inputs)
        if "type_probs" in inputs:  # PNP: p(OOD) per sample, for the report
            result.p_ood = np.asarray(inputs["type_probs"][:, 2], np.float64)
        if self.strategy is not None:
            # Every worker computed its own split; all of them use the chief's.
            from ferkeras.training.strategy import broadcast_from_chief

            labelled, clean_prob, prior = broadcast_from_chief(
                self.strategy, [result.labelled, result.clean_prob, result.clean_prior])
            result = dataclasses.replace(
                result, labelled=labelled, clean_prob=clean_prob, clean_prior=prior,
                clean_counts=np.bincount(self.labels[labelled], minlength=k))
        if self.true is not None:
            result.scores = selection.score_split_result(result, self.labels, self.true,
                                                         num_classes=k, p_clean=c.p_clean)
        if c.method == "crest":  # CReST (Wei et al. 2021): rebalanced pseudo-labels join
            result = self._crest(result, probs, epoch)
        found = sink.get("trusted_split")
        self.auc_by_split.append(None if not result.scores else result.scores["auc"])
        if found is not None:
            self.trusted_auc_by_split.append(found.trusted_auc)
        mode = getattr(self.trainer, "noisy_mode", "fixmatch")
        if mode == "relabel":
            self._relabel(result, probs)
        elif mode == "soft":
            self._soft(result, found)
        else:
            self.trainer.set_split(result.labelled, result.clean_prob, result.clean_prior)
        self.trainer.set_class_prior(result.clean_counts, beta=self.cb_beta)
        seconds = time.time() - t0
        self.split_seconds += seconds
        self.splits_done += 1
        if result.scores is not None:
            self.last_scores = result.scores
        if self.write:
            self._write(epoch, result, probs, found)
        labelled = result.labelled
        msg = (f"split at epoch {epoch + 1}: {int(labelled.sum())} clean / "
               f"{int((~labelled).sum())} noisy ({seconds:.1f} s, mask "
               f"{mask_digest(labelled)})")
        if result.scores and result.scores["auc"] is not None:
            msg += f", detection ROC-AUC {result.scores['auc']:.3f}"
        if found is not None and found.trusted_auc is not None:
            msg += f", on the trusted rows (out of fold) {found.trusted_auc:.3f}"
        if self.relabel_table is not None:
            r = self.last_relabel
            msg += f"; relabelled {r['relabelled']} ({r['changed']} changed"
            if "relabel_correct" in r:
                msg += f", {r['relabel_correct']}/{r['relabelled_known']} match the true label"
            msg += f"), {r['dropped']} dropped"
        self.echo(msg)
        self.warnings = selection.split_warnings(
            result.labelled, self.labels, probs, num_classes=k, class_names=self.class_names)
        for warning in self.warnings:
            self.echo(f"warning: {warning}")
        return result

    def _relabel(self, result, probs) -> None:
        """noisy_mode relabel (SELFIE-style, `correction.relabel_flagged`): the confident
        noisy rows take the split model's class and stay in the loss (the trainer's
        `labelled_mask` becomes judged-clean OR relabelled); the others are dropped."""
        from ferkeras.noise.correction import relabel_flagged, relabel_summary

        new_labels, keep, relabelled = relabel_flagged(
            probs, self.labels, result.labelled, threshold=self.trainer.relabel_threshold)
        table = np.where(relabelled, new_labels, -1).astype(np.float64)
        if self.strategy is not None:  # the chief's relabels on every worker
            from ferkeras.training.strategy import broadcast_from_chief

            (table,) = broadcast_from_chief(self.strategy, [table])
            relabelled = table >= 0
            keep = result.labelled | relabelled
            new_labels = np.where(relabelled, table, self.labels).astype(np.int64)
        self.trainer.set_split(keep, result.clean_prob, result.clean_prior, relabels=table)
        self.relabel_table = table
        self.last_relabel = {**relabel_summary(relabelled, new_labels, self.labels, self.true),
                             "dropped": int((~keep).sum()),
                             "threshold": self.trainer.relabel_threshold}

    def _soft(self, result, found) -> None:
        """noisy_mode soft: every row stays in the loss; the rows judged noisy train on
        their corrected target p(y | x, given) (`trusted_split.label_posterior`), the others
        (and the trusted rows in training) on their label one-hot."""
        k = len(self.class_names)
        table = np.asarray(found.posterior, np.float64).copy()
        keep = np.asarray(result.labelled, bool)
        table[keep] = np.eye(k)[self.labels[keep]]
        if self.strategy is not None:  # the chief's targets on every worker
            from ferkeras.training.strategy import broadcast_from_chief

            (table,) = broadcast_from_chief(self.strategy, [table])
        self.trainer.set_split(np.ones(len(self.labels), bool), result.clean_prob,
                               result.clean_prior, soft_targets=table)

    def _write_history(self) -> None:
        with atomic_path(self.run_dir / "checkpoints" / HISTORY_FILE, suffix=".npz") as tmp, \
                open(tmp, "wb") as fh:
            np.savez(fh, history=np.stack(self.history))

    def _write(self, epoch, result, probs, found=None) -> None:
        from ferkeras.io import atomic_write_json
        from ferkeras.training.reports import write_split_report

        self._write_history()
        folder = self.run_dir / "reports" / f"split-e{epoch + 1:03d}"
        write_split_report(folder, split=self.split, data_cfg=self.data_cfg,
                           class_names=self.class_names, result=result, pred_probs=probs,
                           relabels=self.relabel_table)
        if found is not None:
            atomic_write_json(folder / "trusted_split.json", {
                "class_names": list(self.class_names),
                "thresholds": found.thresholds.tolist(),
                "transition": found.transition.tolist(),
                "trusted_auc_out_of_fold": found.trusted_auc,
                "detection": result.scores})

    # ------------------------------------------------------------------ run state
    def state_dict(self) -> dict:
        """The selector state; `history_file` names the loss history that `run_split` wrote
        into `checkpoints/` (RunState snapshots it with the epoch). Writes nothing."""
        state = {"split_seconds": self.split_seconds, "splits_done": self.splits_done,
                 "last_scores": self.last_scores, "history_file": HISTORY_FILE,
                 "auc_by_split": self.auc_by_split,
                 "trusted_auc_by_split": self.trusted_auc_by_split}
        if self.last_relabel is not None:
            state["last_relabel"] = self.last_relabel
        return state

    def load_state_dict(self, state: dict) -> None:
        self.split_seconds = float(state.get("split_seconds", 0.0))
        self.splits_done = int(state.get("splits_done", 0))
        self.last_scores = state.get("last_scores")
        self.last_relabel = state.get("last_relabel")
        self.auc_by_split = list(state.get("auc_by_split", []))
        self.trusted_auc_by_split = list(state.get("trusted_auc_by_split", []))
        if self.run_dir is None:
            return
        path = self.run_dir / "checkpoints" / state.get("history_file", HISTORY_FILE)
        if path.is_file():
            self.history = list(np.load(path, allow_pickle=False)["history"])
            if self.write:  # the live file is the restored history again, not a later one
                self._write_history()

    def summary(self) -> dict:
        out = {"split_seconds": round(self.split_seconds, 2), "splits": self.splits_done}
        if self.last_scores is not None:
            out["noise_detection"] = self.last_scores
        if self.last_relabel is not None:
            out["relabel"] = self.last_relabel
        if any(a is not None for a in self.auc_by_split):
            out["detection_auc_by_split"] = self.auc_by_split
        if self.trusted_auc_by_split:
            out["trusted_auc_by_split"] = self.trusted_auc_by_split
        return out
