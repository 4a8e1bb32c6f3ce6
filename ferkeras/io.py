"""Atomic file writes: write to a temporary name in the same folder, then rename.

A kill at any moment leaves either the previous good file or the new complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path, *, suffix=""):
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        yield pathlib.Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        # Name the file the user knows, not the hidden temporary one.
        raise OSError(err.errno, f"{err.strerror or err} while writing", str(path)) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def atomic_save_weights(model, path) -> None:
    """`model.save_weights` (needs a `.weights.h5` name) through a temporary file."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp))


def atomic_savefig(save_fn, path) -> None:
    """Call `save_fn(tmp_path)` (e.g. a plotting function) and rename onto `path`."""
    with atomic_path(path, suffix=pathlib.Path(path).suffix) as tmp:
        save_fn(tmp)


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def append_epoch_npz(path, epoch: int, *, axis: int, **arrays) -> dict:
    """Add one epoch's `arrays` to the `.npz` at `path` (created if missing) and return its
    new contents: `epochs` (E,) and each array stacked along `axis` (0: (E, ...), 1:
    (N, E)), one slice per epoch. An epoch already there, or a later one, is dropped first,
    so a resumed run rewrites what it redoes. Written atomically; arrays keep their dtype.
    A file whose arrays do not match the new ones in the other dimensions is refused
    (ValueError naming it)."""
    path = pathlib.Path(path)
    got = {}
    if path.is_file():
        with np.load(path) as z:
            got = {k: z[k] for k in z.files}
    epochs = got.get("epochs", np.zeros(0, np.int64))
    keep = epochs < epoch
    out = {"epochs": np.append(epochs[keep], epoch).astype(np.int64)}
    for name, value in arrays.items():
        new = np.expand_dims(np.asarray(value), axis)
        if name not in got:
            out[name] = new
            continue
        old = np.take(got[name], np.flatnonzero(keep), axis=axis)
        if np.delete(old.shape, axis).tolist() != np.delete(new.shape, axis).tolist():
            raise ValueError(f"{path}: {name} has shape {got[name].shape}, this epoch's "
                             f"{np.asarray(value).shape}; use a new run folder.")
        out[name] = np.concatenate([old, new.astype(old.dtype)], axis=axis)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **out)
    return out
