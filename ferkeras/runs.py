"""Run folders: creation rules (never clobber silently), the resume state, discovery."""

from __future__ import annotations

import json
import pathlib
import shutil

STATE_FILE = "state.json"


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked (exists, not resumable, not writable)."""


def prepare_run_dir(run_dir, *, resume: bool, overwrite: bool) -> dict | None:
    """Create or reopen a run folder. Returns the saved state when resuming, else None.

    An existing non-empty folder needs `resume` or `overwrite`; it is never clobbered silently.
    """
    run_dir = pathlib.Path(run_dir)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other.")
    if resume:
        state = read_state(run_dir)
        if state is None:
            raise RunFolderError(
                f"{run_dir}: nothing to resume (no checkpoints/{STATE_FILE}); start it without "
                "--resume."
            )
        return state
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunFolderError(
                f"run folder {run_dir} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or --run-dir for a new one."
            )
        shutil.rmtree(run_dir)
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(f"cannot write to run folder {run_dir}: {err.strerror}") from None
    return None


def read_state(run_dir) -> dict | None:
    path = pathlib.Path(run_dir) / "checkpoints" / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def latest_run(root="runs", *, prefix: str = "") -> pathlib.Path | None:
    """The most recently finished run (has metrics.json) under `root` whose name starts with
    `prefix`."""
    root = pathlib.Path(root)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.name.startswith(prefix) and (p / "metrics.json").is_file()]
    return max(done, key=lambda p: (p / "metrics.json").stat().st_mtime) if done else None
