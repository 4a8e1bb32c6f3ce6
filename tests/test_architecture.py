"""The noise cycle's shape: one owner, one schedule, one split, one run reader, and the
defects the review found (each test here fails on the code before the fix)."""

import ast
import dataclasses
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


# ----------------------------------------------------------------------------- structure
def test_training_talks_to_the_cycle_through_one_interface():
    loop = (ROOT / "ferkeras" / "training" / "loop.py").read_text()
    assert "hasattr" not in loop
    # the method is looked up in one table: no name tests, no probes, no flags
    assert "getattr(recipe" not in loop and "cycle.method ==" not in loop
    from ferkeras.callbacks.noise_split import NoiseSplit
    from ferkeras.training import CycleControl, NoCycle

    for cls in (NoiseSplit, NoCycle):
        for name in ("begin_phase", "state_dict", "load_state_dict", "summary"):
            assert callable(getattr(cls, name)), (cls, name)
    assert NoCycle.labelled_mask is None and "labelled_mask" in CycleControl.__annotations__
    assert not hasattr(NoiseSplit, "is_split_epoch")  # the schedule is plan_phases alone
    assert not hasattr(NoiseSplit, "strong_mask")  # one mask: the trainer's labelled_mask


# The drivers that run a training (training/loop, training/audit: the audit's warm-up records
# margins with a callback) may import callbacks; passes and readers may not.
@pytest.mark.parametrize("module", ["training/evaluate_run", "training/passes",
                                    "noise/selection", "training/runs", "training/schedule",
                                    "training/reports", "deploy/export"])
def test_model_passes_and_run_readers_do_not_reach_into_callbacks(module):
    imported = _imports(ROOT / "ferkeras" / f"{module}.py")
    assert not [m for m in imported if m.startswith("ferkeras.callbacks")], imported


def test_lower_layers_never_import_training():
    for path in [*(ROOT / "ferkeras" / "callbacks").glob("*.py"),
                 *(ROOT / "ferkeras" / "trainers").glob("*.py"),
                 *(ROOT / "ferkeras" / "data").glob("*.py"),
                 *(ROOT / "ferkeras" / "noise").glob("*.py"),
                 *(ROOT / "ferkeras" / "methods").rglob("*.py")] + [
            ROOT / "ferkeras" / "training" / f"{m}.py"
            for m in ("passes", "schedule", "runs", "reports", "recipe")]:
        bad = {m for m in _imports(path) if m in ("ferkeras.training", "ferkeras.training.loop",
                                                  "ferkeras.cli", "ferkeras.training.audit")}
        assert not bad, (path, bad)


def test_plan_phases_marks_where_splits_happen():
    from ferkeras.training.recipe import recipe_from_dict
    from ferkeras.training.schedule import plan_phases, split_epochs

    recipe = recipe_from_dict({"cycle": {"enabled": True, "warmup_epochs": 2, "cycles": 2,
                                         "epochs_per_cycle": 3}})
    phases = plan_phases(recipe)
    assert [(p.start, p.end, p.views, p.split) for p in phases] == [
        (0, 2, False, False), (2, 5, True, True), (5, 8, True, True)]
    every = dataclasses.replace(recipe, cycle=dataclasses.replace(recipe.cycle,
                                                                  resplit_every_epoch=True))
    assert split_epochs(plan_phases(every)) == frozenset(range(2, 8))
    plain = recipe_from_dict({"train": {"epochs": 4}})
    assert split_epochs(plan_phases(plain)) == frozenset()


# ----------------------------------------------------------------------------- fixtures
def _split(n=24, k=3, size=12, seed=0, true=True):
    from ferkeras.data.table import Split

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    images = rng.integers(0, 256, (n, size, size, 1), np.uint8)
    truth = np.where(rng.random(n) < 0.7, labels, (labels + 1) % k) if true else None
    return Split(labels=labels, images=images, true_labels=truth)


def _data_cfg(**kw):
    from ferkeras.training.recipe import DataConfig

    return DataConfig(image_size=12, channels=1, **kw)


# ----------------------------------------------------------------------------- defects
def test_noise_split_state_dict_writes_nothing(tmp_path):
    from ferkeras.callbacks.noise_split import NoiseSplit

    split = _split()
    cb = NoiseSplit(trainer=None, train_split=split, data_cfg=_data_cfg(), run_dir=tmp_path,
                    class_names=["a", "b", "c"])
    cb.history = [np.ones(len(split), np.float32)]
    before = sorted(p for p in tmp_path.rglob("*"))
    state = cb.state_dict()
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert state["history_file"] == "selector_history.npz"


def test_cache_is_filled_once_per_phase(monkeypatch):
    """With data.cache=memory, a 3-epoch phase decodes each image once (it was once per
    epoch: every epoch built its own cache)."""
    import tensorflow as tf

    from ferkeras.data import pipeline
    from ferkeras.training import epoch_stream

    calls = []
    original = pipeline.to_model_input

    def counting(image, **kwargs):
        tick = tf.py_function(lambda: calls.append(1) or 0, [], tf.int32)
        with tf.control_dependencies([tick]):
            return original(tf.identity(image), **kwargs)

    monkeypatch.setattr(pipeline, "to_model_input", counting)
    split = _split(n=16)
    stream = epoch_stream(split, _data_cfg(cache="memory"), batch_size=4, seed=0, start=0,
                          end=3, steps_per_epoch=4, augment="none", views=False)
    batches = list(stream)
    assert len(batches) == 12
    assert len(calls) == 16, f"{len(calls)} decodes for 16 images over 3 epochs"


def test_suspects_sheet_shows_true_labels_when_known(monkeypatch, tmp_path):
    from ferkeras.data import sheet
    from ferkeras.training.reports import write_suspects_sheet

    seen = {}

    def capture(images, labels, class_names, out_png, **kwargs):
        seen["captions"] = kwargs["captions"]
        pathlib.Path(out_png).write_bytes(b"")

    monkeypatch.setattr(sheet, "write_contact_sheet", capture)
    split = _split(n=9)
    split.true_labels[:] = -1
    split.true_labels[0] = 2  # given 0, truly 2
    rng = np.random.default_rng(0)
    write_suspects_sheet(tmp_path / "s.png", split=split, data_cfg=_data_cfg(),
                         class_names=["a", "b", "c"], clean_prob=rng.random(9),
                         losses=rng.random(9), preds=np.zeros(9, int), limit=9)
    captions = seen["captions"]
    assert any(c.endswith("/ true: c") and c.startswith("given: a") for c in captions)
    assert sum("true:" in c for c in captions) == 1  # unknown truth: no true label shown


def test_loss_histogram_plots_the_gmm_that_split(monkeypatch, tmp_path):
    from ferkeras.noise import selection
    from ferkeras.training import reports

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    losses = np.concatenate([rng.normal(0.2, 0.05, 150), rng.normal(0.8, 0.05, 50)])
    result = selection.split_training_set(losses, labels, num_classes=2, gmm_scope="per_class",
                                          min_class_samples=10, seed=1)
    seen = []
    original = selection.gmm_density
    monkeypatch.setattr(selection, "gmm_density",
                        lambda gmm, grid, lab: seen.append(gmm) or original(gmm, grid, lab))
    reports.plot_loss_histogram(result, labels, tmp_path / "h.png")
    assert seen == [result.gmm] and (tmp_path / "h.png").stat().st_size > 0


def test_comparison_is_never_reported_on_the_selection_split():
    from ferkeras.training import compare_runs

    block = {"accuracy": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.3}
    with_test = {"val": {"best": block}, "test": {"best": block}, "wall_seconds": 1.0}
    no_test = {"val": {"best": block}, "test": None, "wall_seconds": 1.0}
    assert compare_runs(with_test, with_test)["split"] == "test"
    missing = compare_runs(no_test, no_test)
    assert missing["split"] is None and "no test split" in missing["note"]
    assert "ce" not in missing and "cycle" not in missing


# ----------------------------------------------------------------------------- run folders
def test_open_run_checks_channels_and_class_names(tmp_path):
    import json

    from ferkeras.training.recipe import recipe_from_dict, recipe_to_yaml
    from ferkeras.training.runs import RunFolderError, open_run

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.weights.h5").write_bytes(b"")
    recipe = recipe_from_dict({"data": {"image_size": 16, "channels": 1}})
    (run / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    names = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
    info = {"class_names": names, "image_size": 16, "channels": 1}
    (run / "run_info.json").write_text(json.dumps(info))
    opened = open_run(run)
    assert opened.class_names == tuple(names) and opened.input_shape == (16, 16, 1)
    assert opened.metrics is None
    with pytest.raises(RunFolderError, match="missing"):
        open_run(run, finished=True)
    (run / "run_info.json").write_text(json.dumps({**info, "channels": 3}))
    with pytest.raises(RunFolderError, match="channels=3 does not match .*data.channels=1"):
        open_run(run)
    (run / "run_info.json").write_text(json.dumps({**info, "class_names": names[::-1]}))
    with pytest.raises(RunFolderError, match="do not match the recipe's class set"):
        open_run(run)
    (run / "run_info.json").write_text(json.dumps(info))
    (run / "metrics.json").write_text(json.dumps({"class_names": names[:7]}))
    with pytest.raises(RunFolderError, match="differ between run_info.json"):
        open_run(run)


@pytest.mark.slow  # two tiny training runs
def test_train_takes_a_bundle_and_reports_no_comparison_without_test(tmp_path):
    """`train_with_baseline` on a given bundle (no load_bundle) without a test split: the
    cycle runs from the schedule, and the comparison says loudly it has no split to use."""
    from ferkeras.data.table import DatasetBundle
    from ferkeras.labels import get_class_names
    from ferkeras.training import train_with_baseline
    from ferkeras.training.recipe import recipe_from_dict

    names = get_class_names("affectnet7")
    rng = np.random.default_rng(0)

    def split(n, seed):
        from ferkeras.data.table import Split

        labels = np.arange(n) % len(names)
        images = np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), np.uint8)
        noisy = (labels + 1) % len(names)
        return Split(labels=np.where(rng.random(n) < 0.7, labels, noisy), images=images,
                     true_labels=labels)

    bundle = DatasetBundle(class_names=names, train=split(56, 1), val=split(14, 2), test=None,
                           source="test", notes=[])
    recipe = recipe_from_dict({
        "data": {"class_set": "affectnet7", "image_size": 16},
        "model": {"width": 4}, "train": {"batch_size": 14},
        "cycle": {"enabled": True, "warmup_epochs": 1, "cycles": 1, "epochs_per_cycle": 1,
                  "min_class_samples": 4, "compare_ce": True}})
    lines = []
    metrics = train_with_baseline(recipe, run_dir=tmp_path / "run", bundle=bundle,
                                  strategy="default", verbose=0, echo=lines.append)
    assert metrics["splits"] == 1 and metrics["comparison"]["split"] is None
    assert any(line.startswith("WARNING: no test split") for line in lines)
    report = tmp_path / "run" / "reports" / "split-e002"
    assert (report / "loss_histogram.png").is_file() and (report / "detection.json").is_file()
    assert (tmp_path / "run" / "ce_baseline" / "metrics.json").is_file()


def test_resume_matches_dropout_rng_states_whatever_keras_numbered_them(tmp_path):
    """A run resumed in a process that built other models first gets other auto-numbered
    seed-generator paths (`seed_generator_7`); its saved RNG states still load."""
    import keras

    from ferkeras.callbacks.state import RunState, seed_states, seed_variables
    from ferkeras.training.runs import RunFolderError

    def model():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dropout(0.5, seed=1)(inputs))

    first = model()
    saved = seed_states(first)
    saved[0][1] = [7, 9]
    model()  # bumps Keras's name counters
    second = model()
    assert [p for p, _ in saved] != [v.path for v in seed_variables(second)]
    state = RunState(run_dir=tmp_path, checkpoint=None, write=False)
    state._restore_seeds(second, saved)
    assert np.ravel(seed_variables(second)[0].numpy()).tolist() == [7, 9]
    saved[0][0] = "some_other_layer/seed_generator_state"
    with pytest.raises(RunFolderError, match="RNG states do not match"):
        state._restore_seeds(second, saved)


def test_train_appends_the_callers_callbacks_after_its_own(tmp_path):
    """`train(callbacks=...)`: each extra callback runs at every epoch end, after the
    validation checkpoint (it sees that epoch's val_accuracy), with the trainer as its model."""
    import keras

    from ferkeras.data.table import DatasetBundle, Split
    from ferkeras.labels import get_class_names
    from ferkeras.training import train
    from ferkeras.training.recipe import recipe_from_dict

    names = get_class_names("affectnet7")

    def split(n, seed):
        labels = np.arange(n) % len(names)
        images = np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 1), np.uint8)
        return Split(labels=labels, images=images)

    class Record(keras.callbacks.Callback):
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append((epoch, "val_accuracy" in (logs or {}),
                              hasattr(self.model, "eval_network")))

    bundle = DatasetBundle(class_names=names, train=split(28, 1), val=split(14, 2), test=None,
                           source="test", notes=[])
    recipe = recipe_from_dict({"data": {"class_set": "affectnet7", "image_size": 16},
                               "model": {"width": 4}, "train": {"batch_size": 14, "epochs": 2}})
    train(recipe, bundle, run_dir=tmp_path / "run", strategy="default", verbose=0,
          echo=lambda *_: None, callbacks=(Record(),))
    assert Record.seen == [(0, True, True), (1, True, True)]


def test_no_import_cycles_and_a_small_package_root():
    """tools/import_graph.py: no cycle, at import time or through lazy imports; at most a
    dozen modules at the package root, the rest in folders by concern."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_graph",
                                                  ROOT / "tools" / "import_graph.py")
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    for top in (True, False):
        assert graph.find_cycles(graph.graph(top_level=top)) == [], top
    folders = graph.modules_per_folder()
    assert len(folders["ferkeras"]) <= 12, folders["ferkeras"]
    for folder in ("training", "noise", "deploy", "methods", "models", "data", "trainers"):
        assert f"ferkeras/{folder}" in folders
    # a method's core, trainer and config live together
    for name in ("co_divide", "pnp", "crest", "ada_cm", "mpl"):
        assert {"__init__.py", "core.py", "trainer.py"} <= set(folders[f"ferkeras/methods/{name}"])
