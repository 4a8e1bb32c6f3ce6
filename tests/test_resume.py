"""Resume exactly: kill -9 a cycle run mid-cycle, `--resume` it, and get the uninterrupted run.

The subprocess runs go through `tests/tiny_recipe.py` (the CLI with a stateless strong view,
see its docstring), so two runs of one recipe are bit-identical on CPU; the resumed run must
then equal the uninterrupted one exactly. Tolerance: 1e-6 relative on history.csv and
metrics.json numbers (measured difference: 0), only to absorb float text round-trips.
The fast tests at the end cover the run-folder rules in-process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner
from tiny_recipe import (
    cli_env,
    read_history,
    read_metrics,
    report_mask,
    train_command,
    write_recipe,
)

from ferkeras.cli import cli

TOTAL_EPOCHS = 5  # TINY_RECIPE: 1 warm-up epoch + 2 cycles of 2 epochs
KILL_AFTER = 2  # epochs done when the kill comes: the warm-up and the first cycle epoch
TIMEOUT = 240


def _state(run_dir):
    path = run_dir / "checkpoints" / "state.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _kill_when(proc, run_dir, epochs_done, killed):
    """SIGKILL `proc` as soon as its state.json shows `epochs_done` epochs."""
    deadline = time.time() + TIMEOUT
    while proc.poll() is None and time.time() < deadline:
        state = _state(run_dir)
        if state and state["epochs_done"] >= epochs_done:
            proc.send_signal(signal.SIGKILL)
            killed.append(state["epochs_done"])
            return
        time.sleep(0.02)


def _assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            if "seconds" not in key:
                _assert_close(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_kill_mid_cycle_then_resume_equals_uninterrupted(tmp_path):
    from ferkeras.passes import mask_digest

    recipe = write_recipe(tmp_path / "tiny.yaml")
    env = cli_env(tmp_path)
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    run = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The uninterrupted run and the run to kill, side by side.
    whole = subprocess.Popen(train_command(recipe, "--run-dir", whole_dir, "-q", exact=True),
                             **run)
    victim = subprocess.Popen(train_command(recipe, "--run-dir", killed_dir, "-q", exact=True),
                              **run)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when, args=(victim, killed_dir, KILL_AFTER, killed))
    killer.start()
    try:
        whole_out, _ = whole.communicate(timeout=TIMEOUT)
        killer.join(TIMEOUT)
        victim_out, _ = victim.communicate(timeout=TIMEOUT)
    finally:
        for proc in (whole, victim):
            if proc.poll() is None:
                proc.kill()
    assert whole.returncode == 0, whole_out
    assert killed and victim.returncode == -signal.SIGKILL, victim_out
    done = _state(killed_dir)["epochs_done"]
    assert KILL_AFTER <= done < TOTAL_EPOCHS, "the kill must come mid-run"
    killed_rows = read_history(killed_dir)
    assert [r["epoch"] for r in killed_rows] == list(range(1, done + 1))
    assert not (killed_dir / "metrics.json").exists()

    result = subprocess.run(train_command("--resume", killed_dir, "-q", exact=True), env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resume: continuing {killed_dir} at epoch {done + 1}/{TOTAL_EPOCHS}" in result.stdout

    # Same number of epochs, and the epochs before the kill are the killed run's own rows.
    rows, whole_rows = read_history(killed_dir), read_history(whole_dir)
    assert [r["epoch"] for r in rows] == list(range(1, TOTAL_EPOCHS + 1))
    assert rows[:done] == killed_rows
    _assert_close(rows, whole_rows)
    # The split in force when training resumed is the one the killed run made and wrote
    # (reports/split-e002), and every split equals the uninterrupted run's.
    digests = _state(killed_dir)["split_digests"]
    assert digests[str(done + 1)] == mask_digest(report_mask(killed_dir, 2))
    assert digests == _state(whole_dir)["split_digests"]
    assert (report_mask(killed_dir, 4) == report_mask(whole_dir, 4)).all()
    # Final metrics: exact (see the module docstring for the tolerance).
    _assert_close(read_metrics(killed_dir)["val"], read_metrics(whole_dir)["val"])
    _assert_close(read_metrics(killed_dir)["test"], read_metrics(whole_dir)["test"])
    assert not list(killed_dir.rglob(".*.tmp*")), "temporaries of cut-short writes remain"
    assert sorted(p.name for p in (killed_dir / "checkpoints").glob("*-e[0-9]*")) == [
        f"selector_history-e{TOTAL_EPOCHS:04d}.npz", f"state-e{TOTAL_EPOCHS:04d}.weights.h5"]

    # Re-running the original command never clobbers the finished run.
    before = (killed_dir / "metrics.json").read_bytes()
    again = CliRunner().invoke(cli, ["train", str(recipe), "--run-dir", str(killed_dir), "-q"])
    assert again.exit_code != 0
    assert "pass --resume to continue it, --overwrite to replace it" in again.output
    assert (killed_dir / "metrics.json").read_bytes() == before
    # ... nor resumes it with another recipe.
    other = CliRunner().invoke(cli, ["train", str(recipe), "--resume", str(killed_dir), "-q",
                                     "--set", "train.learning_rate=0.01"])
    assert other.exit_code != 0
    assert "was started from another recipe" in other.output
    assert (killed_dir / "metrics.json").read_bytes() == before


# ----------------------------------------------------------------------------- fast
def test_resume_needs_a_saved_state(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    result = CliRunner().invoke(cli, ["train", str(recipe), "--resume", str(tmp_path / "nope"),
                                      "-q"])
    assert result.exit_code != 0
    assert "nothing to resume" in result.output
    assert not (tmp_path / "nope").exists()


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    from ferkeras.runs import RunFolderError, prepare_run_dir

    with pytest.raises(RunFolderError, match="exclude each other"):
        prepare_run_dir(tmp_path / "run", resume=True, overwrite=True)


def test_unstarted_run_folder_is_discarded_but_a_started_one_is_kept(tmp_path):
    from ferkeras.runs import discard_unstarted, prepare_run_dir, remove_stale_temporaries

    fresh = tmp_path / "fresh"
    assert prepare_run_dir(fresh, resume=False, overwrite=False) is None
    (fresh / "recipe.yaml").write_text("name: x\n")
    assert discard_unstarted(fresh) and not fresh.exists()

    started = tmp_path / "started"
    prepare_run_dir(started, resume=False, overwrite=False)
    (started / "checkpoints" / "state.json").write_text('{"epochs_done": 1}')
    (started / "checkpoints" / ".last.weights.h5.abc.tmp.weights.h5").write_bytes(b"half")
    assert not discard_unstarted(started) and started.is_dir()
    assert prepare_run_dir(started, resume=True, overwrite=False) == {"epochs_done": 1}
    assert not list(started.rglob(".*.tmp*"))  # resume removed the cut-short temporary
    assert remove_stale_temporaries(started) == 0


def test_damaged_state_is_a_clear_error(tmp_path):
    from ferkeras.runs import RunFolderError, read_state

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text('{"epochs_done": ')
    with pytest.raises(RunFolderError, match="run state is damaged"):
        read_state(tmp_path)
