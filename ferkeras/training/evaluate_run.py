"""Score a run's weights: the final metrics of training, and `ferkeras evaluate` on any split."""

from __future__ import annotations

import pathlib

from ferkeras import io


def final_metrics(network, bundle, data_cfg, *, checkpoints, class_names, select_metric,
                  best_epoch, batch_size) -> dict:
    """Score the `last` and `best` checkpoints in `checkpoints` on validation and, when the
    bundle has one, test (scored, never selected on). Loads each into `network`."""
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.training.evaluation import score_split
    from ferkeras.training.passes import predict_probs

    splits = {"val": bundle.val, "test": bundle.test}
    datasets = {k: make_dataset(s, data_cfg, batch_size=batch_size) for k, s in splits.items()
                if s is not None and len(s)}
    out = {"class_names": list(class_names), "select_metric": select_metric,
           "best_epoch": best_epoch, "val": {}, "test": None}
    if "test" in datasets:
        out["test"] = {}
    for which in ("last", "best"):
        path = pathlib.Path(checkpoints) / f"{which}.weights.h5"
        if path.is_file():
            network.load_weights(str(path))
        for name, ds in datasets.items():
            probs, index = predict_probs(network, ds)
            out[name][which] = score_split(splits[name], probs, index, class_names=class_names)
    return out


def write_metric_plots(metrics, class_names, run_dir) -> None:
    """confusion_matrix.png and per_class.png of the best weights, on test (else val)."""
    from ferkeras.training.evaluation import plot_confusion_matrix, plot_per_class_recall

    run_dir = pathlib.Path(run_dir)
    split = "test" if metrics.get("test") else "val"
    best = metrics[split]["best"]
    io.atomic_savefig(lambda p: plot_confusion_matrix(
        best["confusion_matrix"], class_names, p,
        title=f"{split} confusion (best epoch {metrics['best_epoch']})"),
        run_dir / "confusion_matrix.png")
    recalls = {f"{split} best": best["per_class_recall"],
               f"{split} last": metrics[split]["last"]["per_class_recall"]}
    io.atomic_savefig(lambda p: plot_per_class_recall(recalls, class_names, p),
                      run_dir / "per_class.png")


def evaluate_run(run_dir, *, split: str = "val", weights: str = "best", overrides=()) -> dict:
    """Metrics of a run's `weights` checkpoint on `split` of its data (`--set` overrides)."""
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.sources import load_bundle
    from ferkeras.training.evaluation import score_split
    from ferkeras.training.passes import predict_probs
    from ferkeras.training.recipe import recipe_from_dict, recipe_to_dict
    from ferkeras.training.runs import RunFolderError, open_run

    try:
        run = open_run(run_dir, weights=weights)
    except RunFolderError as err:
        raise ValueError(str(err)) from None
    recipe = run.recipe
    if overrides:
        recipe = recipe_from_dict(recipe_to_dict(recipe), overrides)
    for key in ("image_size", "channels", "class_set", "class_names"):
        if getattr(recipe.data, key) != getattr(run.recipe.data, key):
            raise ValueError(f"--set data.{key}={getattr(recipe.data, key)!r} does not match "
                             f"the run's {getattr(run.recipe.data, key)!r}; the network was "
                             "trained for that.")
    bundle = load_bundle(recipe.data, seed=recipe.seed)
    if tuple(bundle.class_names) != run.class_names:
        raise ValueError(f"{bundle.source}: class names {list(bundle.class_names)} do not match "
                         f"the run's {list(run.class_names)}.")
    data = getattr(bundle, split)
    if data is None or not len(data):
        raise ValueError(f"{bundle.source} has no {split} split.")
    network = run.build_network()
    probs, index = predict_probs(network, make_dataset(data, recipe.data, batch_size=256))
    return score_split(data, probs, index, class_names=run.class_names)
