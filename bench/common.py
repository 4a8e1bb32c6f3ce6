"""Helpers shared by the benchmarks: machine state, timing summaries, provenance, result files.

Standard library only at import time (numpy is imported inside the functions that need it),
so a benchmark can also import this module from a separate interpreter, such as the `fer`
package's own virtual environment in `bench/inference.py`.

Provenance and staleness (every benchmark uses these):
- `write_results(name, data, markdown, settings)` writes `results/<name>.{json,md}` with
  `provenance(settings)` merged in: `commit` (sha + dirty flag), `command`, `settings`,
  `settings_hash`, `code_version`, `machine` (load average, date) and `date`.
- `rebuild_report(name, data, markdown)` is for `--report-only`: it rewrites the files from an
  earlier run's JSON and keeps that run's provenance; today's command and settings go under
  `report_rebuilt`, never over the run's own.
- `save_cached(path, data, settings)` / `load_cached(path, settings)` guard a run's cached
  results (`<run>.done.json`, fold probabilities): they are reused only when the settings
  hash and the code version both match; otherwise `load_cached` returns None (redo) or, with
  `on_stale="refuse"`, raises `StaleResultError` naming what changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# FERKERAS_BENCH_RESULTS / FERKERAS_BENCH_WORK move results and working files elsewhere: the
# smoke test (tests/test_bench_smoke.py) points both at a temporary folder, so a smoke run
# can never overwrite a committed result.
RESULTS = pathlib.Path(os.environ.get("FERKERAS_BENCH_RESULTS") or ROOT / "bench" / "results")
WORK = pathlib.Path(os.environ.get("FERKERAS_BENCH_WORK") or ROOT / "bench" / ".work")


def machine_state() -> dict:
    """Load average (1, 5, 15 min), CPU count and interpreter, to record next to each figure.

    Other jobs share this machine: a load average above the core count means every timing
    here is slower than on an idle machine.
    """
    load = os.getloadavg()
    return {
        "loadavg_1_5_15": [round(v, 2) for v in load],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def package_versions(names) -> dict:
    """{name: version or None} from the installed distributions of this interpreter."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of an empty sequence")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def summarize_ms(seconds) -> dict:
    """p50, p95, mean, min, max in milliseconds and the count, from durations in seconds."""
    ms = [s * 1e3 for s in seconds]
    return {
        "p50": round(percentile(ms, 50), 4),
        "p95": round(percentile(ms, 95), 4),
        "mean": round(statistics.fmean(ms), 4),
        "min": round(min(ms), 4),
        "max": round(max(ms), 4),
        "n": len(ms),
    }


def time_each(fn, items, *, warmup: int, repeats: int, offset: int = 0,
              cpu: list | None = None) -> list[float]:
    """Durations (s) of `fn(item)` for `repeats` calls cycling over `items`, after `warmup`.

    offset: index of the first timed item, so that successive blocks go on cycling.
    cpu: if given, the process CPU time (s, all threads) of each timed call is appended:
      less sensitive than wall time to other jobs on the machine.
    """
    items = list(items)
    if not items:
        raise ValueError("time_each needs at least one item")
    for i in range(warmup):
        fn(items[(offset + i) % len(items)])
    clock, cpu_clock = time.perf_counter, time.process_time
    out = []
    for i in range(repeats):
        item = items[(offset + i) % len(items)]
        cpu_start, start = cpu_clock(), clock()
        fn(item)
        out.append(clock() - start)
        if cpu is not None:
            cpu.append(cpu_clock() - cpu_start)
    return out


def time_block(fn, *, warmup: int, repeats: int) -> list[float]:
    """Durations (s) of `repeats` calls of `fn()` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def patch_results(name: str, key: str, value: dict) -> bool:
    """Set `key` of an existing results file `<RESULTS>/<name>.json` to `value` (atomic
    rewrite; other keys kept): a report that feeds another's targets. False when the file
    does not exist."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    data[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return True


def write_results(name: str, data: dict, markdown: str, settings: dict | None = None, *,
                  results: pathlib.Path = RESULTS, code_files=()):
    """Write `results/<name>.json` and `results/<name>.md` for a run made now; return both
    paths.

    `settings` (every option that changes a figure) defaults to `data["settings"]`; one of the
    two is required. The JSON gets `provenance(settings)` (commit, command, settings, settings
    hash, code version, machine load, date); keys `data` already has for these are replaced.
    The markdown gets a provenance line at its end. For `--report-only`, which must not stamp
    today's settings on an older run, use `rebuild_report`.
    """
    if settings is None:
        settings = data.get("settings")
    if settings is None:
        raise ValueError(f"write_results({name!r}): pass the run's settings (a dict). "
                         "Received: settings=None")
    out = {**data, **provenance(settings, code_files=code_files)}
    if "machine" in data:  # the benchmark's own record (e.g. load at start and end) wins
        out["machine"] = data["machine"]
    return _write_pair(results, name, out, markdown)


def rebuild_report(name: str, data: dict, markdown: str, *,
                   results: pathlib.Path = RESULTS):
    """Rewrite `results/<name>.{json,md}` from an earlier run's `data` (`--report-only`).

    The run's own `commit`, `command`, `settings`, `settings_hash`, `code_version`, `machine`
    and `date` are kept as they are; this invocation is recorded under `report_rebuilt`
    (command, commit, date). A key the old file never had is written as `None` with a note,
    never filled with today's values.
    """
    out = dict(data)
    missing = [k for k in PROVENANCE_KEYS if k not in out]
    for key in missing:
        out[key] = None
    out["report_rebuilt"] = {"command": command_line(), "commit": git_commit(),
                             "date": _now(), "keys_not_recorded_by_the_run": missing}
    if "commit" in missing:  # a hint, not the run's commit: when the results were committed
        out["report_rebuilt"]["results_last_committed_in"] = _last_commit_of(
            pathlib.Path(results) / f"{name}.json")
    return _write_pair(results, name, out, markdown)


def _last_commit_of(path: pathlib.Path) -> str | None:
    try:
        log = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--",
                              str(path)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return log.stdout.strip() or None if log.returncode == 0 else None


def _write_pair(results, name, data, markdown):
    results = pathlib.Path(results)
    results.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results / f"{name}.json", results / f"{name}.md"
    _atomic_write(json_path, json.dumps(data, indent=2, default=_jsonable) + "\n")
    _atomic_write(md_path, markdown.rstrip() + "\n\n" + provenance_line(data) + "\n")
    return json_path, md_path


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- provenance
PROVENANCE_KEYS = ("commit", "command", "settings", "settings_hash", "code_version",
                   "machine", "date")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def git_commit(root: pathlib.Path = ROOT) -> dict:
    """{"sha": HEAD's full sha or None, "dirty": uncommitted changes to tracked files}."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    if head.returncode != 0:
        return {"sha": None, "dirty": None}
    return {"sha": head.stdout.strip(),
            "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def settings_hash(settings: dict) -> str:
    """12 hex digits of sha256 over the settings as sorted JSON: equal hash, equal settings."""
    text = json.dumps(settings, sort_keys=True, default=_jsonable_or_str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def code_version(extra_files=(), *, root: pathlib.Path = ROOT) -> str:
    """Version of the code a figure depends on: `ferkeras.__version__` + 12 hex digits of
    sha256 over every `ferkeras/**/*.py` and `extra_files` (path and contents), whether or not
    they are committed. Any edit to the library changes it."""
    root = pathlib.Path(root)
    files = sorted((root / "ferkeras").rglob("*.py"))
    files += sorted(pathlib.Path(f).resolve() for f in extra_files)
    digest = hashlib.sha256()
    for f in files:
        rel = f.relative_to(root) if f.is_relative_to(root) else f
        digest.update(str(rel).encode() + b"\0" + f.read_bytes() + b"\0")
    version = "unknown"
    init = root / "ferkeras" / "__init__.py"
    if init.is_file():
        for line in init.read_text().splitlines():
            if line.startswith("__version__"):
                version = line.split("=", 1)[1].strip().strip("\"'")
    return f"{version}+{digest.hexdigest()[:12]}"


def provenance(settings: dict, *, code_files=(), command: str | None = None) -> dict:
    """What every result records: commit (sha + dirty flag), the command line, the settings
    and their hash, the code version, the machine state (load average, cores, date), date."""
    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict. Received: settings={settings!r}")
    return {"commit": git_commit(), "command": command or command_line(),
            "settings": settings, "settings_hash": settings_hash(settings),
            "code_version": code_version(code_files), "machine": machine_state(),
            "date": _now()}


def provenance_line(data: dict) -> str:
    """One markdown line naming a result's commit, command, settings hash, load and date."""
    commit = data.get("commit") or {}
    sha = commit.get("sha") if isinstance(commit, dict) else commit
    sha = (sha or "not recorded")[:12]
    if isinstance(commit, dict) and commit.get("dirty"):
        sha += " (with uncommitted changes)"
    machine = data.get("machine") or {}
    start = machine.get("start") or {}
    load = machine.get("loadavg_1_5_15") or start.get("loadavg_1_5_15")
    date = data.get("date") or machine.get("time") or start.get("time")
    line = (f"Provenance: commit {sha}; command `{data.get('command') or 'not recorded'}`; "
            f"settings hash {data.get('settings_hash') or 'not recorded'}; code "
            f"{data.get('code_version') or 'not recorded'}; load average "
            f"{load if load else 'not recorded'}; date {date or 'not recorded'}.")
    rebuilt = data.get("report_rebuilt")
    if rebuilt:
        line += f" Report text rebuilt {rebuilt['date']} by `{rebuilt['command']}`."
    return line


# ----------------------------------------------------------------------------- cached runs
class StaleResultError(RuntimeError):
    """A cached result was made with other settings or other code than this run's."""


def save_cached(path, data: dict, settings: dict, *, code_files=()) -> pathlib.Path:
    """Write a run's cached result (JSON) stamped with its settings, their hash and the code
    version, atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {**data, "cache_stamp": {"settings": settings,
                                       "settings_hash": settings_hash(settings),
                                       "code_version": code_version(code_files),
                                       "date": _now()}}
    _atomic_write(path, json.dumps(stamped, indent=2, default=_jsonable) + "\n")
    return path


def cache_mismatch(stamp: dict | None, settings: dict, *, code_files=()) -> str | None:
    """Why a cache stamp does not fit this run (a sentence), or None when it does."""
    if not stamp:
        return "it records no settings hash or code version (written before they were kept)"
    reasons = []
    if stamp.get("settings_hash") != settings_hash(settings):
        old = stamp.get("settings") or {}
        diff = [f"{k}: {old.get(k, '<unset>')!r} -> {settings.get(k, '<unset>')!r}"
                for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        reasons.append("its settings differ (" + ("; ".join(diff) or "hash only") + ")")
    now = code_version(code_files)
    if stamp.get("code_version") != now:
        reasons.append(f"its code version {stamp.get('code_version')} is not this code's {now}")
    return " and ".join(reasons) or None


def load_cached(path, settings: dict, *, code_files=(), on_stale: str = "redo",
                echo=print) -> dict | None:
    """A cached result, only if it was made with these settings and this code.

    Returns the cached dict (without its stamp), or None when there is none or it is stale
    (`on_stale="redo"`: the stale file is renamed `<name>.stale` and the caller redoes the
    run). With `on_stale="refuse"`, a stale file raises `StaleResultError` naming what changed.
    """
    if on_stale not in ("redo", "refuse"):
        raise ValueError(f"on_stale must be 'redo' or 'refuse'. Received: on_stale={on_stale!r}")
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    why = cache_mismatch(data.pop("cache_stamp", None), settings, code_files=code_files)
    if why is None:
        return data
    message = f"{path}: cached result not reused: {why}."
    if on_stale == "refuse":
        raise StaleResultError(message + " Delete it (and the run folder next to it) to redo "
                               "the run, or rerun with the settings it was made with.")
    path.replace(path.with_name(path.name + ".stale"))
    echo(message + f" Moved to {path.name}.stale; redoing the run.")
    return None


def save_cached_array(path, array, settings: dict, *, code_files=()) -> pathlib.Path:
    """Save a cached numpy array (fold probabilities) as `path` (.npy) with a stamp beside
    it, `<path>.stamp.json`; `load_cached_array` reads it back only if the stamp fits."""
    import numpy as np

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.asarray(array))
    os.replace(tmp, path)
    save_cached(_stamp_path(path), {"file": path.name}, settings, code_files=code_files)
    return path


def load_cached_array(path, settings: dict, *, code_files=(), on_stale: str = "redo",
                      echo=print):
    """The cached array at `path`, or None if missing or stale (see `load_cached`). A stale
    array (or one without a stamp) is renamed `<name>.stale` with its stamp."""
    import numpy as np

    path = pathlib.Path(path)
    if not path.is_file():
        return None
    stamp_path = _stamp_path(path)
    if not stamp_path.is_file():
        stamp_path.write_text("{}\n")  # no stamp: stale, like a done file without one
    if load_cached(stamp_path, settings, code_files=code_files, on_stale=on_stale,
                   echo=echo) is None:
        path.replace(path.with_name(path.name + ".stale"))
        return None
    return np.load(path)


def _stamp_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".stamp.json")


def _jsonable_or_str(value):
    try:
        return _jsonable(value)
    except TypeError:
        return str(value)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def command_line() -> str:
    """The command that ran this benchmark, relative to the repository root when possible."""
    exe, script = pathlib.Path(sys.executable), pathlib.Path(sys.argv[0]).resolve()
    if exe.is_relative_to(ROOT):
        exe = exe.relative_to(ROOT)
    if script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    return " ".join([str(exe), str(script), *sys.argv[1:]])


def fmt(value, digits: int = 2) -> str:
    """A number for a markdown table; '—' for None."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
