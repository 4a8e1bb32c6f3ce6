"""Recompute a run's metrics on any split (`ferkeras evaluate`)."""

from __future__ import annotations

import json
import pathlib


def load_network(run_dir, *, weights: str = "best"):
    """(recipe, network, class_names) rebuilt from a run folder."""
    from ferkeras.models import build_network
    from ferkeras.recipe import load_recipe

    run_dir = pathlib.Path(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml")
    info_path = run_dir / "run_info.json"
    if not info_path.is_file():
        raise ValueError(f"{run_dir}: not a ferkeras run folder (no run_info.json).")
    info = json.loads(info_path.read_text())
    path = run_dir / "checkpoints" / f"{weights}.weights.h5"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {weights} checkpoint at {path}.")
    shape = (info["image_size"], info["image_size"], info["channels"])
    network = build_network(recipe.model, input_shape=shape,
                            num_classes=len(info["class_names"]), seed=recipe.seed)
    network.load_weights(str(path))
    return recipe, network, tuple(info["class_names"])


def evaluate_run(run_dir, *, split: str = "val", weights: str = "best", overrides=()) -> dict:
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.sources import load_bundle
    from ferkeras.evaluation import score_split
    from ferkeras.passes import predict_probs
    from ferkeras.recipe import recipe_from_dict, recipe_to_dict

    recipe, network, class_names = load_network(run_dir, weights=weights)
    if overrides:
        recipe = recipe_from_dict(recipe_to_dict(recipe), overrides)
    bundle = load_bundle(recipe.data, seed=recipe.seed)
    data = getattr(bundle, split)
    if data is None or not len(data):
        raise ValueError(f"{bundle.source} has no {split} split.")
    probs, index = predict_probs(network, make_dataset(data, recipe.data, batch_size=256))
    return score_split(data, probs, index, class_names=class_names)
