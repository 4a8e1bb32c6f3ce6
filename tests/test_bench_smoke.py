"""Benchmarks cannot rot, and cannot publish stale or unattributed numbers.

- Every `bench/*.py` script (a file with a `__main__` block) runs in its `--smoke` mode as a
  subprocess, with `FERKERAS_BENCH_RESULTS` / `FERKERAS_BENCH_WORK` pointing into tmp_path;
  it must exit 0,
  write a result JSON carrying its provenance there, and leave `bench/results/` untouched.
  Contract for a benchmark's smoke mode: seconds to a minute or two, no real data
  (`../shared/data`), every step of the full run exercised.
- Every committed `bench/results/*.json` records `commit`, `command` and `settings`.
- `bench/common.py`'s staleness guard and `--report-only` rebuild, in-process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
# Every runnable benchmark (shared modules such as common.py have no __main__ block).
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if '__name__ == "__main__"' in p.read_text())
PROVENANCE = ("commit", "command", "settings")


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(folder: pathlib.Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*")) if p.is_file()}


def _env(tmp_path) -> dict:
    from tiny_recipe import cli_env

    return cli_env(tmp_path, FERKERAS_BENCH_RESULTS=str(tmp_path / "results"),
                   FERKERAS_BENCH_WORK=str(tmp_path / "work"), OMP_NUM_THREADS="2")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_smoke_mode_runs_and_records_provenance(script, tmp_path):
    env = _env(tmp_path)
    usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert usage.returncode == 0, usage.stderr
    assert "--smoke" in usage.stdout, f"bench/{script.name} has no --smoke mode"
    before = _digests(BENCH / "results")
    run = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True,
                         text=True, env=env, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _digests(BENCH / "results") == before, "a smoke run wrote into bench/results"
    written = sorted((tmp_path / "results").glob("*.json")) + sorted(
        (tmp_path / "work").rglob("results/*.json"))
    assert written, f"bench/{script.name} --smoke wrote no result JSON under {tmp_path}"
    for path in written:
        data = json.loads(path.read_text())
        missing = [k for k in PROVENANCE if not data.get(k)]
        assert not missing, f"{path.name} lacks {missing}"
        assert data["commit"]["sha"], path.name


@pytest.mark.parametrize("path", sorted((BENCH / "results").glob("*.json")),
                         ids=lambda p: p.name)
def test_committed_results_record_commit_command_and_settings(path):
    data = json.loads(path.read_text())
    missing = [k for k in PROVENANCE if k not in data]
    assert not missing, f"bench/results/{path.name} lacks {missing}"
    assert data["command"] and data["settings"], path.name


# ----------------------------------------------------------------------------- common.py
def test_provenance_names_commit_command_settings_load_and_date():
    common = _common()
    prov = common.provenance({"epochs": 6, "width": 16})
    assert set(prov) == set(common.PROVENANCE_KEYS)
    assert len(prov["commit"]["sha"]) == 40 and isinstance(prov["commit"]["dirty"], bool)
    assert prov["settings_hash"] == common.settings_hash({"width": 16, "epochs": 6})
    assert prov["settings_hash"] != common.settings_hash({"epochs": 4, "width": 16})
    assert len(prov["machine"]["loadavg_1_5_15"]) == 3
    assert prov["date"][:4].isdigit() and prov["code_version"].startswith("0.")
    with pytest.raises(ValueError, match="Received: settings=None"):
        common.write_results("x", {}, "# x", None)


def test_cached_result_is_reused_only_with_the_same_settings_and_code(tmp_path):
    common = _common()
    done = tmp_path / "cycle.done.json"
    six = {"epochs": 6, "width": 16}
    common.save_cached(done, {"accuracy": 0.6}, six)
    assert common.load_cached(done, six) == {"accuracy": 0.6}
    # A 4-epoch probe's result is never taken for a 6-epoch run: refused with the reason ...
    common.save_cached(done, {"accuracy": 0.5}, {"epochs": 4, "width": 16})
    with pytest.raises(common.StaleResultError, match="epochs: 4 -> 6"):
        common.load_cached(done, six, on_stale="refuse")
    # ... or set aside so the run is redone.
    said = []
    assert common.load_cached(done, six, echo=said.append) is None
    assert not done.exists() and (tmp_path / "cycle.done.json.stale").is_file()
    assert "redoing the run" in said[0]
    # Other code: a changed file the result depends on makes it stale too.
    script = tmp_path / "bench_script.py"
    script.write_text("A = 1\n")
    common.save_cached(done, {"accuracy": 0.6}, six, code_files=[script])
    assert common.load_cached(done, six, code_files=[script]) is not None
    script.write_text("A = 2\n")
    with pytest.raises(common.StaleResultError, match="code version"):
        common.load_cached(done, six, code_files=[script], on_stale="refuse")
    # A done file from before stamps existed is stale.
    (tmp_path / "old.done.json").write_text('{"accuracy": 0.7}')
    assert common.load_cached(tmp_path / "old.done.json", six, echo=said.append) is None


def test_cached_arrays_carry_a_stamp(tmp_path):
    import numpy as np

    common = _common()
    path = tmp_path / "cleanlab_f0.probs.npy"
    common.save_cached_array(path, np.eye(3), {"folds": 2})
    np.testing.assert_array_equal(common.load_cached_array(path, {"folds": 2}), np.eye(3))
    assert common.load_cached_array(path, {"folds": 3}, echo=lambda _: None) is None
    assert not path.exists() and (tmp_path / "cleanlab_f0.probs.npy.stale").is_file()
    np.save(tmp_path / "unstamped.npy", np.ones(2))  # written before stamps: never reused
    assert common.load_cached_array(tmp_path / "unstamped.npy", {"folds": 2},
                                    echo=lambda _: None) is None


def test_report_only_keeps_the_runs_own_settings_and_command(tmp_path):
    common = _common()
    common.write_results("b", {"value": 1}, "# B", {"epochs": 4}, results=tmp_path)
    run = json.loads((tmp_path / "b.json").read_text())
    common.rebuild_report("b", dict(run), "# B again", results=tmp_path)
    rebuilt = json.loads((tmp_path / "b.json").read_text())
    for key in common.PROVENANCE_KEYS:
        assert rebuilt[key] == run[key], key
    assert rebuilt["settings"] == {"epochs": 4}
    assert rebuilt["report_rebuilt"]["date"]
    md = (tmp_path / "b.md").read_text()
    assert md.startswith("# B again") and f"settings hash {run['settings_hash']}" in md
    # An old file without provenance is not stamped with today's: the keys say so.
    common.rebuild_report("old", {"command": "python bench/x.py"}, "# old", results=tmp_path)
    old = json.loads((tmp_path / "old.json").read_text())
    assert old["settings"] is None and old["commit"] is None
    assert "settings" in old["report_rebuilt"]["keys_not_recorded_by_the_run"]
