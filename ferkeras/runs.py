"""Run folders: creation rules (never clobber silently), the resume state, discovery."""

from __future__ import annotations

import json
import pathlib
import shutil

STATE_FILE = "state.json"
RUN_INFO_FILE = "run_info.json"


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked (exists, not resumable, not writable)."""


def is_fresh(run_dir) -> bool:
    """True when `run_dir` does not exist or is empty (a run may be created there)."""
    run_dir = pathlib.Path(run_dir)
    return not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir()))


def prepare_run_dir(run_dir, *, resume: bool, overwrite: bool,
                    recipe_hash: str | None = None) -> dict | None:
    """Create or reopen a run folder. Returns the saved state when resuming, else None.

    An existing non-empty folder needs `resume` or `overwrite`; it is never clobbered silently.
    With `recipe_hash`, resuming a run started from a different recipe is refused.
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
        _check_same_recipe(run_dir, recipe_hash)
        remove_stale_temporaries(run_dir)
        return state
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file; pass --run-dir for a folder.")
    if not is_fresh(run_dir):
        if not overwrite:
            raise RunFolderError(
                f"run folder {run_dir} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or --run-dir for a new one."
            )
        try:
            shutil.rmtree(run_dir)
        except OSError as err:
            raise RunFolderError(f"cannot replace run folder {run_dir}: {err.strerror}") from None
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(f"cannot write to run folder {run_dir}: {err.strerror}") from None
    return None


def _check_same_recipe(run_dir: pathlib.Path, recipe_hash: str | None) -> None:
    info = pathlib.Path(run_dir) / RUN_INFO_FILE
    if recipe_hash is None or not info.is_file():
        return
    saved = json.loads(info.read_text()).get("recipe_hash")
    if saved and saved != recipe_hash:
        raise RunFolderError(
            f"{run_dir} was started from another recipe (hash {saved}, now {recipe_hash}); "
            "resume with the saved recipe (omit RECIPE and --set) or use --overwrite."
        )


def remove_stale_temporaries(run_dir) -> int:
    """Delete the temporary files of atomic writes cut short by a kill (`.NAME.*.tmp*`,
    see `ferkeras.io.atomic_path`). Returns how many were removed."""
    removed = 0
    for path in pathlib.Path(run_dir).rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def read_state(run_dir) -> dict | None:
    """The saved run state (`checkpoints/state.json`), or None if there is none."""
    path = pathlib.Path(run_dir) / "checkpoints" / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path}: not valid JSON ({err}); the run state is damaged.") from None


def discard_unstarted(run_dir) -> bool:
    """Remove `run_dir` if it holds no saved epoch (a run that failed before its first
    checkpoint). Returns True if it was removed."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir() or (run_dir / "checkpoints" / STATE_FILE).is_file():
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


def latest_run(root="runs", *, prefix: str = "") -> pathlib.Path | None:
    """The most recently finished run (has metrics.json) under `root` whose name starts with
    `prefix`."""
    root = pathlib.Path(root)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir()
            if p.name.startswith(prefix) and (p / "metrics.json").is_file()]
    return max(done, key=lambda p: (p / "metrics.json").stat().st_mtime) if done else None
