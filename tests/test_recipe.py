"""Recipe loading: every bad input names the key and what was received."""

import pathlib

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
        ({"cycle": {"co_divide": True}}, "needs the noise cycle: set cycle.enabled=true"),
        ({"cycle": {"enabled": True, "co_divide": True}, "train": {"ema_decay": 0.9}},
         "set train.ema_decay=0. Received: train.ema_decay=0.9"),
        ({"cycle": {"co_divide_export": "c"}}, "'cycle.co_divide_export' must be one of"),
        ({"cycle": {"enabled": True, "co_divide": True, "threshold_mode": "ada_cm"}},
         "does not combine with cycle.threshold_mode=ada_cm. Received: cycle.co_divide=true"),
    ],
)
def test_bad_values_name_key_and_value(values, message):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cycle_methods_need_the_cycle_and_exclude_each_other():
    from ferkeras.training.recipe import CYCLE_METHODS

    def values_for(setting):
        key, value = setting.split("=")
        return key.split(".")[1], {"true": True}.get(value, value)

    settings = list(CYCLE_METHODS)
    for i, first in enumerate(settings):
        k1, v1 = values_for(first)
        assert recipe_from_dict({"cycle": {"enabled": True, k1: v1}})  # alone: accepted
        with pytest.raises(RecipeError, match=f"'cycle.{k1}' .*needs the noise cycle"):
            recipe_from_dict({"cycle": {k1: v1}})
        for second in settings[i + 1:]:
            k2, v2 = values_for(second)
            with pytest.raises(RecipeError, match=f"'cycle.{k1}' .*does not combine with "
                                                  f"{second}"):
                recipe_from_dict({"cycle": {"enabled": True, k1: v1, k2: v2}})


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
    from ferkeras import labels, models, registry
    from ferkeras.data import sources
    from ferkeras.noise import selection

    monkeypatch.setitem(sources._SOURCES, "mysource", ("x:y", "fer2013"))
    monkeypatch.setitem(labels.CLASS_SETS, "myset", ("happy", "sad"))
    monkeypatch.setitem(models._REGISTRY, "mynet", "test backbone")
    monkeypatch.setitem(registry.LOSSES, "myloss", "test loss")
    monkeypatch.setitem(selection.SELECTORS, "mysel", lambda *a, **k: None)
    recipe = recipe_from_dict({
        "data": {"source": "mysource", "root": "/x", "class_set": "myset"},
        "model": {"backbone": "mynet"}, "train": {"loss": "myloss"},
        "cycle": {"selector": "mysel"}})
    assert (recipe.data.source, recipe.data.class_set, recipe.model.backbone,
            recipe.train.loss, recipe.cycle.selector) == (
        "mysource", "myset", "mynet", "myloss", "mysel")
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
