"""Run state for exact resume: everything needed to continue after a kill.

At each epoch end the chief writes `checkpoints/state-eNNNN.weights.h5` (the whole trainer:
network, EMA copy, optimizer state, class prior, split tables) and then `state.json`
naming it, each atomically; older state files are removed only after `state.json` points
at the new one. So a kill at any moment leaves a consistent, loadable state.

Keras's `BackupAndRestore` keeps only weights and an epoch counter and deletes its backup
when `fit` ends; a cycle run spans several `fit` calls and needs the split and selector
state too, hence this callback.
"""

from __future__ import annotations

import pathlib

import keras

from ferkeras.io import atomic_save_weights, atomic_write_json
from ferkeras.runs import STATE_FILE


class RunState(keras.callbacks.Callback):
    def __init__(self, *, run_dir, checkpoint, write=True, extra_state=None):
        super().__init__()
        self.dir = pathlib.Path(run_dir) / "checkpoints"
        self.checkpoint = checkpoint
        self.write = write
        self.extra_state = extra_state or []  # objects with state_dict()/load_state_dict()

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        name = f"state-e{epoch + 1:04d}.weights.h5"
        atomic_save_weights(self.model, self.dir / name)
        state = {
            "epochs_done": epoch + 1,
            "weights": name,
            "best": self.checkpoint.best,
            "history": self.checkpoint.history,
            "extra": {type(o).__name__: o.state_dict() for o in self.extra_state},
        }
        atomic_write_json(self.dir / STATE_FILE, state)
        for old in self.dir.glob("state-e*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def restore(self, trainer, state) -> int:
        """Load a saved state into `trainer`; returns the first epoch still to run."""
        if not state:
            return 0
        trainer.load_weights(str(self.dir / state["weights"]))
        self.checkpoint.best = dict(state["best"])
        self.checkpoint.history = list(state["history"])
        for obj in self.extra_state:
            saved = state.get("extra", {}).get(type(obj).__name__)
            if saved is not None:
                obj.load_state_dict(saved)
        return int(state["epochs_done"])
