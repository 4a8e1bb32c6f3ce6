"""Atomic file writes: write to a temporary name in the same folder, then rename.

A kill at any moment leaves either the previous good file or the new complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile


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
