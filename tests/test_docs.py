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


# ----------------------------------------------------------------------------- README
README = DOC.parents[1] / "README.md"
ROOT = DOC.parents[1]


def _readme_blocks(lang):
    """The README's fenced blocks of language `lang` ('' for plain fences), in order."""
    blocks, current, fence = [], None, None
    for line in README.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                fence, current = line[3:].strip(), []
            else:
                if fence == lang:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first = _readme_blocks("bash")[0]
    assert first.startswith("make train") and "make test" in first
    # a newcomer's questions, in the order they ask them
    order = ["## Predict on a photo", "## Train on your own folder", "## Python API",
             "## Results", "## Layout"]
    assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)


def _anchors(path):
    text = path.read_text()
    return set(re.findall(r'<a id="([^"]+)"></a>', text))


def test_readme_and_docs_links_resolve():
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.name}: broken link {target}"
            if anchor:
                assert anchor in _anchors(dest), f"{doc.name}: no anchor #{anchor} in {path}"


def test_readme_commands_exist():
    from click.testing import CliRunner

    from ferkeras.cli import cli

    listed = CliRunner().invoke(cli, ["--help"]).output
    for block in _readme_blocks("bash"):
        for cmd in re.findall(r"^(?:\.venv/bin/)?ferkeras (\w[\w-]*)", block, flags=re.M):
            assert f"  {cmd} " in listed, cmd


def test_readme_python_names_are_public():
    import ferkeras as fk

    code = "\n".join(_readme_blocks("python"))
    for name in set(re.findall(r"\bfk\.(\w+)", code)):
        assert name in fk.__all__, name


def test_readme_layout_map_matches_the_package():
    block = next(b for b in _readme_blocks("") if b.startswith("ferkeras/"))
    listed = set(re.findall(r"^  (\w+)/", block, flags=re.M))
    folders = {p.parent.name for p in (ROOT / "ferkeras").glob("*/__init__.py")}
    assert listed == folders, (listed ^ folders)
    assert len(block.strip().splitlines()) <= 16


def test_results_docs_name_files_that_exist():
    """Each figure sits next to its command and its source file: the files named exist."""
    for doc in ("results.md", "methods.md"):
        text = (ROOT / "docs" / doc).read_text()
        for path in set(re.findall(r"\b(bench/[\w/.-]+\.(?:py|md|json|png))", text)):
            if "{" in path:
                continue
            assert (ROOT / path).is_file(), f"docs/{doc} names {path}"


def test_methods_doc_lists_every_method():
    from ferkeras.methods import METHODS

    text = (ROOT / "docs" / "methods.md").read_text()
    for name in METHODS:
        assert f"| `{name}`" in text, name


@pytest.mark.slow  # about 20 s: the README's "train on your own folder" path, shrunk
def test_readme_train_on_your_folder_runs(tmp_path, monkeypatch):
    import shlex

    from click.testing import CliRunner

    from ferkeras.cli import cli

    monkeypatch.chdir(ROOT)
    block = next(b for b in _readme_blocks("bash") if "data synth" in b)
    lines = block.replace("\\\n", " ").splitlines()
    runner = CliRunner()
    for line in lines[:2]:  # data synth, then train: on tmp_path, smoke-sized
        line = line.split("#")[0].replace("/tmp/faces", str(tmp_path / "faces"))
        line = line.replace("runs/mine", str(tmp_path / "run")).replace("--n 2000", "--n 96")
        args = shlex.split(line)[1:]
        if args[0] == "data":
            args += ["--n-val", "16", "--n-test", "16"]
        else:
            args += ["--smoke", "-q"]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output[-2000:])
    assert (tmp_path / "run" / "metrics.json").is_file()
