"""Run state for exact resume: everything needed to continue after a kill.

At each epoch end the chief writes `checkpoints/state-eNNNN.weights.h5` (the whole trainer:
network, EMA copy, optimizer state, class prior, split tables), snapshots of the files its
extra-state objects name (the selector's loss history), and then `state.json` naming them,
each atomically; older state files are removed only after `state.json` points at the new
ones. So a kill at any moment leaves a consistent, loadable state.

`state.json` also holds what `save_weights` leaves out: the states of the Keras
`SeedGenerator`s (dropout masks), the epoch, validation history and best epoch, the extra
state (`NoiseSplit.state_dict()`) and, per epoch, a digest of the split in force
(`split_digests`), which `restore` checks against the tables it loads.

Keras's `BackupAndRestore` keeps only weights and an epoch counter and deletes its backup
when `fit` ends; a cycle run spans several `fit` calls and needs the split and selector
state too, hence this callback.

Multi-worker: only the chief reads and writes the state; after restoring, every variable is
broadcast from the chief (`ferkeras.training.strategy.sync_trainer_from_chief`), so the other
workers
need no access to the run folder.
"""

from __future__ import annotations

import pathlib
import re
import shutil

import keras
import numpy as np

from ferkeras.io import atomic_path, atomic_save_weights, atomic_write_json
from ferkeras.training.runs import STATE_FILE, RunFolderError

SEED_STATE_SUFFIX = "seed_generator_state"


def split_digest(trainer) -> str | None:
    """Digest of the trainer's current split (labelled mask), or None without a split."""
    from ferkeras.training.passes import mask_digest

    mask = getattr(trainer, "labelled_mask", None)
    if mask is None:
        return None
    mask = keras.ops.convert_to_numpy(mask) > 0.5
    mask_b = getattr(trainer, "labelled_mask_b", None)  # co-divide: both networks' splits
    if mask_b is not None:
        mask = np.concatenate([mask, keras.ops.convert_to_numpy(mask_b) > 0.5])
    return mask_digest(mask)


def _unnumbered(path: str) -> str:
    """A variable path without Keras's per-process name counters (`seed_generator_3` ->
    `seed_generator`): a run resumed in a process that built other models first names the
    same layers with other numbers."""
    return re.sub(r"_\d+(?=/|$)", "", path)


def seed_variables(trainer) -> list:
    """The state variables of every Keras SeedGenerator in the trainer (dropout RNGs), in
    the trainer's variable order. `save_weights` does not store them, so without these a
    resumed run would draw the dropout masks of epoch 1 again."""
    return [v for v in trainer.variables if v.path.endswith(SEED_STATE_SUFFIX)]


def seed_states(trainer) -> list[list]:
    """[[variable path, state values], ...] for `seed_variables(trainer)`."""
    return [[v.path, [int(x) for x in np.ravel(keras.ops.convert_to_numpy(v))]]
            for v in seed_variables(trainer)]


class RunState(keras.callbacks.Callback):
    """Writes the run state at each epoch end (when `write`) and restores it.

    Args:
      run_dir: the run folder; state goes to `run_dir/checkpoints`.
      checkpoint: the `ValidationCheckpoint`, whose history and best epoch are saved.
      write: False on non-chief workers (they write nothing).
      extra_state: objects with `state_dict()` / `load_state_dict()`; a value whose key ends
        in `_file` names a file in `checkpoints/`, snapshotted with the epoch.
      strategy: the run's strategy; multi-worker runs broadcast the restored state.
    """

    def __init__(self, *, run_dir, checkpoint, write=True, extra_state=None, strategy=None):
        super().__init__()
        self.dir = pathlib.Path(run_dir) / "checkpoints"
        self.checkpoint = checkpoint
        self.write = write
        self.extra_state = extra_state or []
        self.strategy = strategy
        self.split_digests: dict[str, str] = {}

    def on_epoch_end(self, epoch, logs=None):
        digest = split_digest(self.model)
        if digest is not None:
            self.split_digests[str(epoch + 1)] = digest
        if not self.write:
            return
        done = epoch + 1
        name = f"state-e{done:04d}.weights.h5"
        atomic_save_weights(self.model, self.dir / name)
        extra = {type(o).__name__: self._snapshot(o.state_dict(), done)
                 for o in self.extra_state}
        state = {
            "epochs_done": done,
            "weights": name,
            "best": self.checkpoint.best,
            "history": self.checkpoint.history,
            "extra": extra,
            "seed_states": seed_states(self.model),
            "split_digests": self.split_digests,
        }
        atomic_write_json(self.dir / STATE_FILE, state)
        keep = {name} | {v for o in extra.values() for k, v in o.items() if k.endswith("_file")}
        for old in self.dir.glob("*-e[0-9][0-9][0-9][0-9].*"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def _snapshot(self, state: dict, epoch: int) -> dict:
        """Copy the files an extra state names to epoch-stamped names, atomically."""
        state = dict(state)
        for key, value in state.items():
            src = self.dir / str(value)
            if key.endswith("_file") and src.is_file():
                stamped = f"{src.stem}-e{epoch:04d}{src.suffix}"
                with atomic_path(self.dir / stamped, suffix=src.suffix) as tmp:
                    shutil.copyfile(src, tmp)
                state[key] = stamped
        return state

    def restore(self, trainer, state) -> int:
        """Load a saved state into `trainer`; returns the first epoch still to run.

        `state` is None to start from scratch (and on non-chief workers, which receive the
        chief's variables instead).
        """
        epoch = 0
        if state:
            epoch = self._restore_local(trainer, state)
        if self.strategy is not None:
            from ferkeras.training.strategy import sync_trainer_from_chief

            epoch = sync_trainer_from_chief(self.strategy, trainer, epoch)
        return epoch

    def _restore_local(self, trainer, state) -> int:
        epoch = int(state["epochs_done"])
        trainer.load_weights(str(self.dir / state["weights"]))
        self._restore_seeds(trainer, state.get("seed_states"))
        self.checkpoint.best = dict(state["best"])
        self.checkpoint.history = list(state["history"])
        for obj in self.extra_state:
            saved = state.get("extra", {}).get(type(obj).__name__)
            if saved is not None:
                obj.load_state_dict(saved)
        self.split_digests = dict(state.get("split_digests", {}))
        expected = self.split_digests.get(str(epoch))
        if expected is not None and split_digest(trainer) != expected:
            raise RunFolderError(
                f"{self.dir / state['weights']}: the split tables it holds do not match the "
                f"split recorded for epoch {epoch} in {STATE_FILE}; the state is inconsistent."
            )
        return epoch

    def _restore_seeds(self, trainer, saved) -> None:
        if saved is None:  # a state written before RNG states were saved
            return
        variables = seed_variables(trainer)
        if [_unnumbered(path) for path, _ in saved] != [_unnumbered(v.path) for v in variables]:
            raise RunFolderError(
                f"{self.dir / STATE_FILE}: its RNG states do not match this model's dropout "
                "layers; was the recipe changed since the run started?")
        for v, (_, value) in zip(variables, saved, strict=True):
            v.assign(np.asarray(value).reshape(v.shape).astype(v.dtype))
