"""Run folders: creation rules (never clobber silently), the resume state, discovery, and
`open_run`, the one reader of a finished or running run folder."""

from __future__ import annotations

import dataclasses
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
    if saved and saved != recipe_hash and _saved_recipe_hash(run_dir) != recipe_hash:
        raise RunFolderError(
            f"{run_dir} was started from another recipe (hash {saved}, now {recipe_hash}); "
            "resume with the saved recipe (omit RECIPE and --set) or use --overwrite."
        )


def _saved_recipe_hash(run_dir) -> str | None:
    """The hash of the run's recipe.yaml as today's loader reads it: a run started before a
    change of the recipe's shape (e.g. the flat cycle keys before `cycle.method`, read in
    their new spelling by `old_keys`) is the same recipe and resumes. None if unreadable."""
    import warnings

    from ferkeras.training.recipe import RecipeError, load_recipe, recipe_hash

    path = pathlib.Path(run_dir) / "recipe.yaml"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return recipe_hash(load_recipe(path))
    except (RecipeError, OSError):
        return None


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


# ----------------------------------------------------------------------------- reading a run
@dataclasses.dataclass
class Run:
    """A run folder as `open_run` read and checked it.

    Attributes: dir, recipe (the resolved `Recipe`), info (run_info.json), metrics
    (metrics.json, or None when the run has not finished), weights ('best' or 'last'),
    weights_path, class_names, image_size, channels.
    """

    dir: pathlib.Path
    recipe: object
    info: dict
    metrics: dict | None
    weights: str
    weights_path: pathlib.Path
    class_names: tuple
    image_size: int
    channels: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def build_network(self, *, load_weights: bool = True):
        """The run's Keras network, with its `weights` checkpoint loaded (imports Keras).

        A co-divide run (`cycle.method: co_divide`, DivideMix) gives the ensemble of its two
        networks, or one of them by `cycle.co_divide.export`
        (`ferkeras.methods.co_divide.core.build_run_network`).
        """
        from ferkeras.methods.co_divide.core import build_run_network

        return build_run_network(self.recipe, input_shape=self.input_shape,
                                 num_classes=len(self.class_names),
                                 weights=self.weights_path if load_weights else None)


def open_run(run_dir, *, weights: str = "best", finished: bool = False) -> Run:
    """Read and check a run folder: recipe, run info, metrics and checkpoint path.

    Checks that the files exist (metrics.json only when `finished`), that channels are 1 or
    3 and agree with the recipe, and that the class names agree between run_info.json, the
    recipe's class set and metrics.json. Raises `RunFolderError` naming the folder and the
    mismatch.
    """
    from ferkeras.labels import class_names_for
    from ferkeras.training.recipe import RecipeError, load_recipe

    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last'. Received: weights={weights!r}")
    run = pathlib.Path(run_dir)
    if not run.is_dir():
        raise RunFolderError(f"{run}: no such run folder")
    names = ["recipe.yaml", RUN_INFO_FILE] + (["metrics.json"] if finished else [])
    files = {name: run / name for name in names}
    files["weights"] = run / "checkpoints" / f"{weights}.weights.h5"
    missing = [str(p.relative_to(run)) for p in files.values() if not p.is_file()]
    if missing:
        what = "a finished training run" if finished else "a ferkeras run folder"
        raise RunFolderError(f"{run}: not {what}, missing {missing}")
    info = _read_json_object(files[RUN_INFO_FILE])
    metrics_path = run / "metrics.json"
    metrics = _read_json_object(metrics_path) if metrics_path.is_file() else None
    for key in ("class_names", "image_size", "channels"):
        if key not in info:
            raise RunFolderError(f"{files[RUN_INFO_FILE]}: missing key {key!r}")
    if info["channels"] not in (1, 3):
        raise RunFolderError(f"{files[RUN_INFO_FILE]}: channels must be 1 or 3. "
                             f"Received: {info['channels']!r}")
    try:
        recipe = load_recipe(files["recipe.yaml"])
    except RecipeError as err:
        raise RunFolderError(str(err)) from None
    class_names = tuple(info["class_names"])
    if metrics is not None and "class_names" in metrics and \
            tuple(metrics["class_names"]) != class_names:
        raise RunFolderError(f"{run}: class_names differ between run_info.json "
                             f"{list(class_names)} and metrics.json {metrics['class_names']}")
    expected = tuple(class_names_for(recipe.data))
    if expected != class_names:
        raise RunFolderError(f"{run}: run_info.json class_names {list(class_names)} do not match "
                             f"the recipe's class set {recipe.data.class_set} {list(expected)}")
    for key in ("channels", "image_size"):
        if int(info[key]) != int(getattr(recipe.data, key)):
            raise RunFolderError(f"{run}: run_info.json {key}={info[key]!r} does not match the "
                                 f"recipe's data.{key}={getattr(recipe.data, key)!r}")
    return Run(dir=run, recipe=recipe, info=info, metrics=metrics, weights=weights,
               weights_path=files["weights"], class_names=class_names,
               image_size=int(info["image_size"]), channels=int(info["channels"]))


def _read_json_object(path: pathlib.Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: expected a JSON object. "
                             f"Received: {type(value).__name__}")
    return value
