"""Helpers shared by the benchmarks: machine state, timing summaries, result files.

Standard library only at import time (numpy is imported inside the functions that need it),
so a benchmark can also import this module from a separate interpreter, such as the `fer`
package's own virtual environment in `bench/inference.py`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"


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


def write_results(name: str, data: dict, markdown: str, *, results: pathlib.Path = RESULTS):
    """Write `results/<name>.json` and `results/<name>.md`; return both paths."""
    results.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results / f"{name}.json", results / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


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
