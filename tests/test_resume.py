"""Resume exactly: kill -9 a cycle run mid-run, `--resume` it, and get the uninterrupted run.

The recipe averages each sample's loss over the last 2 splits (`loss_window` 2, as the FER2013
and RAF-DB recipes do), so a split made after the resume depends on the restored selector
history: a lost or stale history gives another mask and another loss column.

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
    TINY_RECIPE,
    cli_env,
    read_history,
    read_metrics,
    report_mask,
    train_command,
    write_recipe,
)

from ferkeras.cli import cli

RECIPE = {**TINY_RECIPE, "cycle": {**TINY_RECIPE["cycle"], "loss_window": 2}}
TOTAL_EPOCHS = 5  # 1 warm-up epoch + 2 cycles of 2 epochs
SPLIT_EPOCHS = (2, 4)  # 1-based epochs that start with a split (reports/split-eNNN)
KILL_AFTER = 2  # epochs done when the kill comes: the warm-up and the first cycle epoch
TIMEOUT = 240


def split_in_force(epoch: int) -> int:
    """The 1-based epoch whose split is in force during 1-based `epoch`."""
    return max(e for e in SPLIT_EPOCHS if e <= epoch)


def _report_losses(run_dir, epoch: int) -> list[str]:
    """The `loss` column (window-averaged losses) of reports/split-eNNN/samples.csv, as text."""
    import csv

    path = run_dir / "reports" / f"split-e{epoch:03d}" / "samples.csv"
    with open(path, newline="") as fh:
        return [row["loss"] for row in csv.DictReader(fh)]


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
@pytest.mark.parametrize("kill_after", [
    pytest.param(1, id="at-cycle-boundary"),  # resumes at epoch 2: the first split runs then
    pytest.param(KILL_AFTER, id="mid-cycle"),  # resumes with the restored split and history
])
def test_kill_then_resume_equals_uninterrupted(tmp_path, kill_after):
    from ferkeras.training.passes import mask_digest

    recipe = write_recipe(tmp_path / "tiny.yaml", RECIPE)
    env = cli_env(tmp_path)
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    run = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The uninterrupted run and the run to kill, side by side.
    whole = subprocess.Popen(train_command(recipe, "--run-dir", whole_dir, "-q", exact=True),
                             **run)
    victim = subprocess.Popen(train_command(recipe, "--run-dir", killed_dir, "-q", exact=True),
                              **run)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when, args=(victim, killed_dir, kill_after, killed))
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
    assert kill_after <= done < TOTAL_EPOCHS, "the kill must come mid-run"
    if kill_after == 1:
        assert done + 1 in SPLIT_EPOCHS, f"killed after {done} epochs: not at a cycle boundary"
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
    # The split in force in the first resumed epoch is the one due then: the killed run's
    # own (restored) when the kill came mid-cycle, a new one at a cycle boundary. Every
    # epoch's split equals the uninterrupted run's.
    digests = _state(killed_dir)["split_digests"]
    for epoch in range(SPLIT_EPOCHS[0], TOTAL_EPOCHS + 1):
        assert digests[str(epoch)] == mask_digest(report_mask(killed_dir,
                                                              split_in_force(epoch))), epoch
    assert digests == _state(whole_dir)["split_digests"]
    for epoch in SPLIT_EPOCHS:
        assert (report_mask(killed_dir, epoch) == report_mask(whole_dir, epoch)).all(), epoch
        # window-averaged losses: the second split's depend on the restored history
        assert _report_losses(killed_dir, epoch) == _report_losses(whole_dir, epoch), epoch
    if done < SPLIT_EPOCHS[-1]:  # the last split was made after the resume
        import numpy as np

        history = np.load(killed_dir / "checkpoints" / _state(killed_dir)["extra"][
            "NoiseSplit"]["history_file"])["history"]
        assert history.shape[0] == 2  # both splits' losses, the first one restored
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
    from ferkeras.training.runs import RunFolderError, prepare_run_dir

    with pytest.raises(RunFolderError, match="exclude each other"):
        prepare_run_dir(tmp_path / "run", resume=True, overwrite=True)


def test_unstarted_run_folder_is_discarded_but_a_started_one_is_kept(tmp_path):
    from ferkeras.training.runs import discard_unstarted, prepare_run_dir, remove_stale_temporaries

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
    from ferkeras.training.runs import RunFolderError, read_state

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text('{"epochs_done": ')
    with pytest.raises(RunFolderError, match="run state is damaged"):
        read_state(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):  # about 30 s: the tests using it are marked slow
    """A finished 2-epoch cycle run (1 warm-up epoch, 1 cycle of 1 epoch), trained in-process."""
    import keras

    keras.utils.clear_session()  # layer names as in a fresh process (see _tampered_copy)
    tmp = tmp_path_factory.mktemp("finished")
    recipe = {**TINY_RECIPE, "cycle": {**TINY_RECIPE["cycle"], "cycles": 1,
                                       "epochs_per_cycle": 1}}
    path = write_recipe(tmp / "tiny.yaml", recipe)
    run_dir = tmp / "run"
    result = CliRunner().invoke(cli, ["train", str(path), "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    return path, run_dir


def _tampered_copy(run_dir, dest, edit):
    import shutil

    import keras

    # Keras numbers auto-named layers per process: a model built again in this process gets
    # other variable paths (seed_generator_1, ...) than the saved run's. A fresh session
    # numbers them as the `ferkeras train --resume` process would.
    keras.utils.clear_session()
    shutil.copytree(run_dir, dest)
    state = _state(dest)
    edit(state)
    (dest / "checkpoints" / "state.json").write_text(json.dumps(state))
    return dest


@pytest.mark.slow
def test_resume_refuses_split_tables_that_do_not_match_the_recorded_split(finished_run,
                                                                         tmp_path):
    recipe, run_dir = finished_run
    done = _state(run_dir)["epochs_done"]
    assert str(done) in _state(run_dir)["split_digests"]

    def edit(state):
        state["split_digests"][str(done)] = "0" * 12

    copy = _tampered_copy(run_dir, tmp_path / "run", edit)
    result = CliRunner().invoke(cli, ["train", str(recipe), "--resume", str(copy), "-q"])
    assert result.exit_code != 0
    assert f"do not match the split recorded for epoch {done}" in result.output
    assert "the state is inconsistent" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_resume_refuses_rng_states_of_other_dropout_layers(finished_run, tmp_path):
    recipe, run_dir = finished_run
    assert _state(run_dir)["seed_states"], "the tiny recipe has dropout: RNG states are saved"

    def edit(state):
        state["seed_states"][0][0] = "some_other_layer/seed_generator_state"

    copy = _tampered_copy(run_dir, tmp_path / "run", edit)
    result = CliRunner().invoke(cli, ["train", str(recipe), "--resume", str(copy), "-q"])
    assert result.exit_code != 0
    assert "its RNG states do not match this model's dropout layers" in result.output
    assert "Traceback" not in result.output
