"""Recipe loading: every bad input names the key and what was received."""

import pathlib

import pytest

from ferkeras.recipe import (
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
        ({"cycle": {"co_divide": True}}, "is not implemented yet. Received: True"),
    ],
)
def test_bad_values_name_key_and_value(values, message):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


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
