"""Recipe loading: every bad input names the key and what was received."""

import pathlib
import warnings

import pytest

from ferkeras.training.recipe import (
    Recipe,
    RecipeError,
    describe_fields,
    load_recipe,
    recipe_from_dict,
    recipe_to_yaml,
)

RECIPES = sorted(pathlib.Path(__file__).parents[1].joinpath("recipes").glob("*.yaml"))


def test_defaults_build():
    recipe = recipe_from_dict({})
    assert isinstance(recipe, Recipe)
    assert recipe.data.source == "synthetic"
    assert recipe.train.epochs == 10


def test_every_field_has_a_docstring():
    rows = describe_fields()
    assert len(rows) > 40
    assert all(doc for _, doc, _ in rows), [k for k, doc, _ in rows if not doc]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "Unknown recipe key 'trian'. Did you mean 'train'?"),
        ({"train": {"epoch": 3}}, "Unknown recipe key 'train.epoch'. Did you mean 'epochs'?"),
        ({"train": {"epochs": "three"}}, "'train.epochs' must be int. Received: 'three'"),
        ({"train": {"epochs": -1}}, "'train.epochs' must be >= 1. Received: -1"),
        ({"train": {"epochs": 2.5}}, "'train.epochs' must be int. Received: 2.5"),
        ({"train": {"learning_rate": "fast"}}, "'train.learning_rate' must be float"),
        ({"cycle": {"p_clean": 1.5}}, "'cycle.p_clean' must be <= 1.0. Received: 1.5"),
        ({"data": {"source": "affectnett"}}, "Did you mean 'affectnet'?"),
        ({"data": {"source": "fer2013"}}, "'data.root' is required for source 'fer2013'"),
        ({"model": {"backbone": "resnet19"}}, "Did you mean 'resnet18'?"),
        ({"cycle": {"enabled": "yes"}}, "'cycle.enabled' must be bool. Received: 'yes'"),
        ({"data": 3}, "'data' must be a mapping. Received: 3"),
        ({"cycle": {"method": "co_divide"}}, "needs the noise cycle: set cycle.enabled=true"),
        ({"cycle": {"method": "dividemix"}}, "'cycle.method' must be one of"),
        ({"cycle": {"enabled": True, "method": "co_divide"}, "train": {"ema_decay": 0.9}},
         "set train.ema_decay=0. Received: train.ema_decay=0.9"),
        ({"cycle": {"co_divide": {"export": "c"}}}, "'cycle.co_divide.export' must be one of"),
        ({"cycle": {"enabled": True, "method": "pnp", "selector": "h2e"}},
         "'cycle.selector' cannot be set with cycle.method pnp"),
        ({"cycle": {"enabled": True, "pnp": {"eta": 0.2}}},
         "'cycle.pnp.eta' is read only with cycle.method pnp. Received: cycle.pnp.eta=0.2"),
        ({"cycle": {"h2e": {"rounds": 3}}}, "'cycle.h2e.rounds' is read only with "
                                            "cycle.selector h2e"),
        # old spellings that name two methods
        ({"cycle": {"enabled": True, "co_divide": True, "threshold_mode": "ada_cm"}},
         "name different methods; write one cycle.method (ada_cm, co_divide)"),
        ({"cycle": {"enabled": True, "method": "mpl", "crest": True}},
         "name different methods; write one cycle.method (crest, mpl)"),
    ],
)
def test_bad_values_name_key_and_value(values, message):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_method_needs_the_cycle_and_has_its_trainer_and_section():
    from ferkeras.methods import METHODS, list_methods

    assert list_methods()[0] == "fixmatch"
    # `soft` needs the trusted split: its own rule, checked by the method's row
    needs = {"soft": {"cycle": {"selector": "trusted"}, "trusted": {"source": "val_labels"}}}
    with pytest.raises(RecipeError, match="set cycle.selector=trusted"):
        recipe_from_dict({"cycle": {"enabled": True, "method": "soft"}})
    for name, method in METHODS.items():
        extra = needs.get(name, {})
        recipe = recipe_from_dict({"cycle": {"enabled": True, "method": name,
                                             **extra.get("cycle", {})},
                                   "trusted": extra.get("trusted", {})})
        assert recipe.cycle.method == name
        if method.config is not None:  # its section, with its defaults
            assert getattr(recipe.cycle, name) == method.config()
        if name != "fixmatch":
            with pytest.raises(RecipeError, match=f"cycle.method={name!r}, cycle.enabled=false"):
                recipe_from_dict({"cycle": {"method": name}})
        assert callable(method.trainer_class().from_recipe)
        assert callable(method.split_class().from_recipe)


# Every old (flat) key -> its new spelling; both load into the same recipe.
OLD_AND_NEW = [
    ({"selector": "pnp", "pnp_eta": 0.3, "pnp_label_smoothing": 0.5, "pnp_temperature": 0.2,
      "pnp_ood_weight": 0.5, "pnp_aux_weight": 2.0, "pnp_consistency_weight": 0.5},
     {"method": "pnp", "pnp": {"eta": 0.3, "label_smoothing": 0.5, "temperature": 0.2,
                               "ood_weight": 0.5, "aux_weight": 2.0,
                               "consistency_weight": 0.5}}),
    ({"co_divide": True, "co_divide_temperature": 0.3, "co_divide_mixup_alpha": 4.0,
      "co_divide_export": "a"},
     {"method": "co_divide", "co_divide": {"temperature": 0.3, "mixup_alpha": 4.0,
                                           "export": "a"}}),
    ({"crest": True, "crest_alpha": 0.5, "crest_t_min": 0.25},
     {"method": "crest", "crest": {"alpha": 0.5, "t_min": 0.25}}),
    ({"mpl": True, "mpl_teacher_lr_scale": 2.0},
     {"method": "mpl", "mpl": {"teacher_lr_scale": 2.0}}),
    ({"threshold_mode": "ada_cm", "ada_cm_contrastive_weight": 0.2, "ada_cm_temperature": 0.1},
     {"method": "ada_cm", "ada_cm": {"contrastive_weight": 0.2, "temperature": 0.1}}),
    ({"noisy_mode": "relabel", "relabel_threshold": 0.8},
     {"method": "relabel", "relabel": {"threshold": 0.8}}),
    ({"noisy_mode": "soft", "selector": "trusted"}, {"method": "soft", "selector": "trusted"}),
    ({"selector": "h2e", "h2e_rounds": 3, "h2e_penalty": 2.0},
     {"selector": "h2e", "h2e": {"rounds": 3, "penalty": 2.0}}),
    ({"noisy_mode": "fixmatch", "co_divide": False, "crest": False, "mpl": False}, {}),
]


@pytest.mark.parametrize(("old", "new"), OLD_AND_NEW)
def test_old_keys_load_as_their_new_spelling(old, new):
    from ferkeras.training.old_keys import OPTIONS

    trusted = {"source": "val_labels"}  # for the trusted selector; read by nothing else here
    with pytest.warns(FutureWarning, match="old recipe keys read in their new spelling"):
        from_old = recipe_from_dict({"cycle": {"enabled": True, **old}, "trusted": trusted})
    assert from_old == recipe_from_dict({"cycle": {"enabled": True, **new}, "trusted": trusted})
    # and as --set overrides
    with pytest.warns(FutureWarning):
        assert from_old == recipe_from_dict({"cycle": {"enabled": True}, "trusted": trusted}, [
            f"cycle.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in old.items()])
    assert all(f"{k}" in OPTIONS or k in ("selector", "co_divide", "crest", "mpl",
                                          "threshold_mode", "noisy_mode") for k in old)


def test_every_old_option_key_is_covered():
    from ferkeras.training.old_keys import METHOD_FLAGS, OPTIONS

    covered = {k for old, _ in OLD_AND_NEW for k in old}
    assert set(OPTIONS) | set(METHOD_FLAGS) <= covered


def test_overrides_parse_yaml_values():
    recipe = recipe_from_dict({}, ["train.epochs=3", "data.root=/x", "cycle.enabled=true",
                                   "train.learning_rate=1e-3"])
    assert recipe.train.epochs == 3
    assert recipe.data.root == "/x"
    assert recipe.cycle.enabled is True
    assert recipe.train.learning_rate == pytest.approx(1e-3)


def test_override_errors_are_clear():
    with pytest.raises(RecipeError, match="--set expects key=value"):
        recipe_from_dict({}, ["train.epochs"])
    with pytest.raises(RecipeError, match="Unknown recipe key 'train.epohs'"):
        recipe_from_dict({}, ["train.epohs=3"])


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="Recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  bach_size: 3\n")
    with pytest.raises(RecipeError, match=r"unknown.yaml: Unknown recipe key 'train.bach_size'"):
        load_recipe(unknown)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = recipe_from_dict({"train": {"epochs": 4}, "cycle": {"enabled": True}})
    path = tmp_path / "r.yaml"
    path.write_text(recipe_to_yaml(recipe))
    assert load_recipe(path) == recipe


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_load_and_say_how_to_run(path):
    text = path.read_text()
    assert text.startswith("#"), "recipes start with the command that runs them"
    assert "ferkeras train" in text.split("\n\n")[0]
    assert "untime" in text.split("\n\n")[0], "header gives the expected runtime"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # an old key would warn: new keys only
        load_recipe(path, ["data.root=/somewhere"] if "root:" not in text else [])


def test_yaml_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  learning_rate: 1e-3\n  weight_decay: 5e-4\n")
    recipe = load_recipe(path)
    assert recipe.train.learning_rate == pytest.approx(1e-3)
    with pytest.raises(RecipeError, match="'train.learning_rate' must be float"):
        recipe_from_dict({"train": {"learning_rate": "1e-3x"}})


# ----------------------------------------------------------------------------- name tables
def test_allowed_names_come_from_the_one_table_of_each_kind(monkeypatch):
    """A name added to a registry is a valid recipe value at once: no second list."""
    from ferkeras import labels, methods, registry
    from ferkeras.data import sources
    from ferkeras.models import backbones
    from ferkeras.noise import selection

    monkeypatch.setitem(sources._SOURCES, "mysource", ("x:y", "fer2013"))
    monkeypatch.setitem(labels.CLASS_SETS, "myset", ("happy", "sad"))
    monkeypatch.setitem(backbones._REGISTRY, "mynet", "test backbone")
    monkeypatch.setitem(methods.METHODS, "mymethod", methods.Method(
        "mymethod", "test method", "nobody", "ferkeras.trainers.cycle:CycleTrainer"))
    monkeypatch.setitem(registry.LOSSES, "myloss", "test loss")
    monkeypatch.setitem(selection.SELECTORS, "mysel", lambda *a, **k: None)
    recipe = recipe_from_dict({
        "data": {"source": "mysource", "root": "/x", "class_set": "myset"},
        "model": {"backbone": "mynet"}, "train": {"loss": "myloss"},
        "cycle": {"selector": "mysel", "enabled": True, "method": "mymethod"}})
    assert (recipe.data.source, recipe.data.class_set, recipe.model.backbone,
            recipe.train.loss, recipe.cycle.selector, recipe.cycle.method) == (
        "mysource", "myset", "mynet", "myloss", "mysel", "mymethod")
    with pytest.raises(RecipeError, match="'train.loss' must be one of .*Received: 'hinge'"):
        recipe_from_dict({"train": {"loss": "hinge"}})


def test_loss_table_is_the_trainers_table():
    pytest.importorskip("tensorflow")
    from ferkeras import registry
    from ferkeras.trainers.supervised import SUPERVISED_LOSSES

    assert list(SUPERVISED_LOSSES) == registry.list_losses()


def test_cycle_mu_was_removed_with_a_reason():
    with pytest.raises(RecipeError, match="cycle.mu was removed: the unlabelled share equals "
                                          "the noisy share.*Received: cycle.mu=2"):
        recipe_from_dict({"cycle": {"mu": 2}})


# ----------------------------------------------------------------------------- smoke runs
def _write(path, values):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def test_smoke_shrinks_only_what_the_source_has(tmp_path):
    from ferkeras.training.recipe import SyntheticConfig

    real = load_recipe(_write(tmp_path / "r.yaml", {"data": {"source": "fer2013",
                                                             "root": "/x.csv"}}), smoke=True)
    assert real.data.synthetic == SyntheticConfig()  # a real source has no synthetic faces
    assert (real.train.epochs, real.train.steps_per_epoch, real.train.batch_size) == (1, 2, 32)
    syn = load_recipe(_write(tmp_path / "s.yaml", {}), smoke=True)
    assert syn.data.synthetic.n_train == 256 and syn.cycle.cycles == 1
    # --set wins over the shrink
    kept = load_recipe(tmp_path / "s.yaml", ["train.epochs=2"], smoke=True)
    assert kept.train.epochs == 2 and kept.train.steps_per_epoch == 2


def test_smoke_type_checks_the_keys_it_overrides(tmp_path):
    """A wrong type in a key the shrink replaces is still an error, also through the CLI."""
    from click.testing import CliRunner

    from ferkeras.cli import cli

    path = _write(tmp_path / "bad.yaml", {"train": {"epochs": "three"}})
    with pytest.raises(RecipeError, match="'train.epochs' must be int. Received: 'three'"):
        load_recipe(path, smoke=True)
    result = CliRunner().invoke(cli, ["train", str(path), "--smoke", "--run-dir",
                                      str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "'train.epochs' must be int. Received: 'three'" in result.output
    assert not (tmp_path / "run").exists()


def test_a_run_started_with_old_keys_resumes_under_the_new_spelling(tmp_path):
    """A run folder from before `cycle.method`: its recipe.yaml has the flat keys and its
    run_info the hash of that shape; the same recipe in the new spelling resumes it, another
    recipe is still refused."""
    import json

    import yaml

    from ferkeras.training.old_keys import OPTIONS
    from ferkeras.training.recipe import recipe_hash, recipe_to_dict
    from ferkeras.training.runs import RunFolderError, _check_same_recipe

    new = recipe_from_dict({"cycle": {"enabled": True, "method": "crest",
                                      "crest": {"alpha": 0.5}}})
    old = recipe_to_dict(new)
    cycle = old["cycle"]
    for key, (section, option) in OPTIONS.items():  # the flat spelling, as a0dbcba saved it
        if isinstance(cycle.get(section), dict):
            cycle[key] = cycle[section][option]
    for section in {s for s, _ in OPTIONS.values()}:
        cycle.pop(section, None)
    cycle.pop("method")
    cycle.update(crest=True, co_divide=False, mpl=False, noisy_mode="fixmatch")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(old))
    (tmp_path / "run_info.json").write_text(json.dumps({"recipe_hash": "0123456789ab"}))
    _check_same_recipe(tmp_path, recipe_hash(new))  # the same recipe: resumes
    other = recipe_from_dict({"cycle": {"enabled": True, "method": "crest"}})
    with pytest.raises(RunFolderError, match="started from another recipe"):
        _check_same_recipe(tmp_path, recipe_hash(other))
