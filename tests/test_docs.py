"""docs/api.md cannot rot: every ```python block runs, in order, in one namespace, on the tiny
data the guide itself builds (in a temporary folder); every ```yaml block is a valid recipe
fragment."""

import pathlib
import re

import pytest
import yaml

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _blocks(lang):
    text = DOC.read_text()
    out = []
    for match in re.finditer(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M):
        line = text[:match.start()].count("\n") + 2
        out.append((line, match.group(1)))
    return out


def test_the_guide_has_examples():
    assert len(_blocks("python")) >= 8


@pytest.mark.slow  # about 100 s on the shared 2-core machine under load: ~10 small fits
def test_every_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_api"}
    for line, code in _blocks("python"):
        try:
            exec(compile(code, f"{DOC.name}:{line}", "exec"), namespace)
        except Exception as err:  # name the block that broke
            pytest.fail(f"docs/api.md example at line {line} failed: {type(err).__name__}: "
                        f"{err}")
    # what the guide says it produced
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["split-e002"]
    assert (tmp_path / "cycle.keras").is_file()
    assert namespace["data"].class_names[5] == "sad"
    assert namespace["pred_probs"].shape == (112, 7)


def test_every_yaml_example_is_a_valid_recipe_fragment(tmp_path):
    from ferkeras.training.recipe import recipe_from_dict

    blocks = _blocks("yaml")
    assert blocks
    for _, text in blocks:
        values = yaml.safe_load(text)
        values["data"]["root"] = str(tmp_path)
        recipe = recipe_from_dict(values)
        assert recipe.data.class_names
