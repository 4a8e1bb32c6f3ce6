"""CoDivideSplit: the noise split of DivideMix's co-divide (`ferkeras.methods.co_divide.core`).

`NoiseSplit` for a `CoDivideTrainer`: at each split epoch it computes both networks'
per-sample losses, fits the selector on each, and installs A's split from B's losses and
B's from A's (`CoDivideTrainer.set_co_split`). It keeps one loss history per network (both
saved with the run state) and writes A's split report to `reports/split-eNNN` and B's to
`reports/net_b/split-eNNN`. The pipeline's strong-view mask is the trainer's `view_mask`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ferkeras.callbacks.noise_split import NoiseSplit
from ferkeras.io import atomic_path
from ferkeras.methods import split_selector
from ferkeras.methods.co_divide.core import co_divide_splits
from ferkeras.noise import selection
from ferkeras.training.passes import mask_digest, per_sample_losses

HISTORY_B_FILE = "selector_history_b.npz"


class CoDivideSplit(NoiseSplit):
    """`NoiseSplit` with co-divide; same arguments (the trainer is a `CoDivideTrainer`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.history_b: list[np.ndarray] = []
        self.last_scores_b: dict | None = None

    @property
    def labelled_mask(self):
        """The trainer's (N,) `view_mask`: 0 where either network needs a strong view."""
        return self.trainer.view_mask

    def _inputs_of(self, c, network) -> dict:
        """`NoiseSplit._selector_inputs` for one network (H2E: its features and logits
        layer); B's go into A's split and A's into B's."""
        if split_selector(c) != "h2e":
            return {}
        from ferkeras.training.passes import per_sample_features

        features, _, kernel, bias = per_sample_features(network, self.dataset)
        return {"features": features, "init": (kernel, bias), "h2e_rounds": c.h2e.rounds,
                "h2e_penalty": c.h2e.penalty}

    def run_split(self, epoch: int):
        self.last_split_epoch = epoch
        t0 = time.time()
        k, c = len(self.class_names), self.cfg
        losses_a, probs_a = per_sample_losses(self.trainer.network, self.dataset, self.labels)
        losses_b, probs_b = per_sample_losses(self.trainer.network_b, self.dataset, self.labels)
        self.history = (self.history + [losses_a])[-c.loss_window:]
        self.history_b = (self.history_b + [losses_b])[-c.loss_window:]
        for_a, for_b = co_divide_splits(
            np.stack(self.history), np.stack(self.history_b), self.labels, num_classes=k,
            pred_probs_a=probs_a, pred_probs_b=probs_b, seed=self.seed + epoch,
            selector=split_selector(c), window=c.loss_window, normalize=c.normalize,
            p_clean=c.p_clean, gmm_scope=c.gmm_scope, min_class_samples=c.min_class_samples,
            keep_ratio=c.keep_ratio, selector_inputs_a=self._inputs_of(c, self.trainer.network),
            selector_inputs_b=self._inputs_of(c, self.trainer.network_b))
        if self.strategy is not None:
            from ferkeras.training.strategy import broadcast_from_chief

            arrays = broadcast_from_chief(self.strategy, [
                for_a.labelled, for_a.clean_prob, for_a.clean_prior,
                for_b.labelled, for_b.clean_prob, for_b.clean_prior])
            for_a, for_b = (dataclasses.replace(
                r, labelled=lab, clean_prob=prob, clean_prior=prior,
                clean_counts=np.bincount(self.labels[lab], minlength=k))
                for r, (lab, prob, prior) in ((for_a, arrays[:3]), (for_b, arrays[3:])))
        if self.true is not None:
            for r in (for_a, for_b):
                r.scores = selection.score_split_result(r, self.labels, self.true,
                                                        num_classes=k, p_clean=c.p_clean)
        self.trainer.set_co_split(for_a.labelled, for_a.clean_prob, for_b.labelled,
                                  for_b.clean_prob,
                                  0.5 * (for_a.clean_prior + for_b.clean_prior))
        self.trainer.set_class_prior(0.5 * (for_a.clean_counts + for_b.clean_counts),
                                     beta=self.cb_beta)
        seconds = time.time() - t0
        self.split_seconds += seconds
        self.splits_done += 1
        if for_a.scores is not None:
            self.last_scores, self.last_scores_b = for_a.scores, for_b.scores
        if self.write:
            self._write(epoch, for_a, probs_b)
            self._write_history_b()
            from ferkeras.training.reports import write_split_report

            write_split_report(self.run_dir / "reports" / "net_b" / f"split-e{epoch + 1:03d}",
                               split=self.split, data_cfg=self.data_cfg,
                               class_names=self.class_names, result=for_b, pred_probs=probs_a)
        parts = []
        for name, r, other in (("A", for_a, "B"), ("B", for_b, "A")):
            part = (f"{name} {int(r.labelled.sum())} clean / {int((~r.labelled).sum())} noisy "
                    f"by {other}'s losses (mask {mask_digest(r.labelled)})")
            if r.scores and r.scores["auc"] is not None:
                part += f", ROC-AUC {r.scores['auc']:.3f}"
            parts.append(part)
        self.echo(f"co-divide split at epoch {epoch + 1} ({seconds:.1f} s): " + "; ".join(parts))
        self.warnings = selection.split_warnings(
            for_a.labelled, self.labels, probs_b, num_classes=k, class_names=self.class_names)
        for warning in self.warnings:
            self.echo(f"warning: {warning}")
        return for_a

    def _write_history_b(self) -> None:
        with atomic_path(self.run_dir / "checkpoints" / HISTORY_B_FILE, suffix=".npz") as tmp, \
                open(tmp, "wb") as fh:
            np.savez(fh, history=np.stack(self.history_b))

    # ------------------------------------------------------------------ run state
    def state_dict(self) -> dict:
        return {**super().state_dict(), "history_b_file": HISTORY_B_FILE,
                "last_scores_b": self.last_scores_b}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.last_scores_b = state.get("last_scores_b")
        if self.run_dir is None:
            return
        path = self.run_dir / "checkpoints" / state.get("history_b_file", HISTORY_B_FILE)
        if path.is_file():
            self.history_b = list(np.load(path, allow_pickle=False)["history"])
            if self.write:
                self._write_history_b()

    def summary(self) -> dict:
        out = super().summary()
        if self.last_scores_b is not None:
            out["noise_detection_b"] = self.last_scores_b
        return out
