"""`ferkeras data stats`: class counts, imbalance and noisy-vs-true agreement of a dataset.

    ferkeras data stats recipes/fer2013.yaml
    ferkeras data stats --source fer2013 --root fer2013.csv.gz --ferplus fer2013new.csv
    ferkeras data stats fer2013 --root fer2013.csv.gz            # source as the argument

Loads the data exactly as training would (`load_bundle`), so the same checks run. No
TensorFlow at import time; only source `tfds` imports it.
"""

from __future__ import annotations

import click


def _resolve_recipe(source_or_recipe, options: dict, overrides):
    """The Recipe to load: from a YAML file or a source name, plus options and overrides."""
    import pathlib

    from ferkeras.data.sources import DEFAULT_CLASS_SETS, list_sources
    from ferkeras.training.recipe import load_recipe, recipe_from_dict, recipe_to_dict

    given = {k: v for k, v in options.items() if v is not None}
    if source_or_recipe and pathlib.Path(source_or_recipe).is_file():
        values = recipe_to_dict(load_recipe(source_or_recipe))
    elif source_or_recipe in list_sources():
        if given.get("source", source_or_recipe) != source_or_recipe:
            raise click.UsageError(
                f"source given twice: {source_or_recipe!r} and --source {given['source']!r}."
            )
        given["source"] = source_or_recipe
        values = {"data": {}}
    elif source_or_recipe:
        raise click.UsageError(
            f"{source_or_recipe!r} is neither a recipe file nor a source "
            f"({', '.join(list_sources())})."
        )
    elif "source" in given:
        values = {"data": {}}
    else:
        raise click.UsageError("give a RECIPE file, a SOURCE, or --source NAME --root PATH.")
    if not values["data"].get("class_set") and "class_set" not in given:
        given["class_set"] = DEFAULT_CLASS_SETS.get(given.get("source"), "affectnet8")
    values["data"].update(given)
    return recipe_from_dict(values, overrides)


@click.command("stats")
@click.argument("source_or_recipe", required=False, metavar="[SOURCE_OR_RECIPE]")
@click.option("--source", help="Data source (fer2013, ferplus, affectnet, rafdb, folder, tfds).")
@click.option("--root", help="data.root: dataset folder or file.")
@click.option("--ferplus", "ferplus_path", help="fer2013new.csv (data.ferplus_path).")
@click.option("--class-set", help="affectnet8, affectnet7, fer2013 or rafdb [per source].")
@click.option("--label-mode", help="FERPlus label mode: majority, plurality or probability.")
@click.option("--noisy-labels", help="RAF-DB noisy label file (data.noisy_labels).")
@click.option("--tfds-name", help="source tfds: dataset name.")
@click.option("--tfds-data-dir", help="source tfds: data_dir.")
@click.option("--seed", type=int, default=None, help="Seed for carved splits [recipe's seed].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. --set data.val_fraction=0.2 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats(source_or_recipe, seed, overrides, as_json, **options):
    """Print class counts per split, the imbalance ratio and label agreement.

    SOURCE_OR_RECIPE is a recipe YAML or a source name; options override its data section.
    """
    import json

    from ferkeras.data.sources import load_bundle
    from ferkeras.data.stats import bundle_stats, format_stats

    try:
        recipe = _resolve_recipe(source_or_recipe, options, overrides)
        bundle = load_bundle(recipe.data, seed=recipe.seed if seed is None else seed)
    except ValueError as err:  # RecipeError is a ValueError
        raise click.ClickException(str(err)) from None
    result = bundle_stats(bundle)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=_to_json))
    else:
        click.echo(format_stats(result))


def _to_json(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        return [None if isinstance(v, float) and v != v else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    stats()
