"""The `ferkeras` command line. Thin: every command calls the library.

Nothing heavy is imported here: `ferkeras --help` and `ferkeras predict` never load
TensorFlow. Sub-commands living in `ferkeras.commands` are imported on first use.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

_LAZY = {
    "export": "ferkeras.commands.export_cmd:export",
    "predict": "ferkeras.commands.predict_cmd:predict",
    "serve": "ferkeras.serve.command:serve",
    "ship": "ferkeras.commands.ship_model:ship",
}
_LAZY_DATA = {
    "synth": "ferkeras.commands.data_synth:synth",
    "sheet": "ferkeras.commands.data_synth:sheet",
    "stats": "ferkeras.commands.data_stats:stats",
}


class LazyGroup(click.Group):
    """A click group whose listed commands are imported only when looked up."""

    def __init__(self, *args, lazy=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@click.group(cls=LazyGroup, lazy=_LAZY)
@click.version_option(package_name="ferkeras")
def cli():
    """Train facial expression recognition models that survive noisy, long-tailed labels."""


@cli.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. --set train.epochs=3 (repeatable).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder [runs/<name>].")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the run in this folder from its last epoch.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multiworker"]),
              default="auto", show_default=True, help="tf.distribute strategy.")
@click.option("--smoke", is_flag=True,
              help="Shrink the recipe to a seconds-long smoke run (1 epoch, few steps).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress output (else: the bar on a terminal, a line per epoch "
                   "in a pipe or log).")
def train(recipe, overrides, run_dir, resume_dir, overwrite, strategy, smoke, quiet):
    """Train RECIPE (a YAML file); `--resume RUN_DIR` continues a killed run."""
    import pathlib

    from ferkeras.training.recipe import RecipeError, load_recipe

    if resume_dir:
        recipe_path = recipe or str(pathlib.Path(resume_dir) / "recipe.yaml")
        run_dir = run_dir or resume_dir
    elif recipe is None:
        raise click.UsageError("give a RECIPE file, or --resume RUN_DIR.")
    else:
        recipe_path = recipe
    try:
        rec = load_recipe(recipe_path, overrides, smoke=smoke)
    except RecipeError as err:
        raise click.ClickException(str(err)) from None
    run_dir = pathlib.Path(run_dir or pathlib.Path("runs") / rec.name)
    _quiet_tf()
    from ferkeras.callbacks.evaluate import NaNLossError
    from ferkeras.training import train_with_baseline
    from ferkeras.training.runs import RunFolderError

    try:
        metrics = train_with_baseline(rec, run_dir=run_dir, resume=bool(resume_dir),
                               overwrite=overwrite, strategy=strategy,
                               verbose=0 if quiet else "auto", echo=click.echo)
    except (RunFolderError, NaNLossError, ValueError, OSError) as err:
        raise click.ClickException(_one_line(err)) from None
    click.echo(format_summary(metrics, run_dir))


def _one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0] if "\n" in text else text


def format_summary(metrics: dict, run_dir) -> str:
    lines = [f"run folder: {run_dir}"]
    for split in ("val", "test"):
        block = metrics.get(split) or {}
        for which in ("best", "last"):
            m = block.get(which)
            if m:
                lines.append(
                    f"{split:4s} {which:4s}: accuracy {m['accuracy']:.4f}  balanced accuracy "
                    f"{m['balanced_accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  (n={m['n']})")
    lines.append(f"best epoch on validation: {metrics.get('best_epoch')}  "
                 f"wall time: {metrics.get('wall_seconds')} s")
    if "comparison" in metrics and metrics["comparison"].get("split") is None:
        lines.append(f"WARNING: {metrics['comparison'].get('note')}")
    elif "comparison" in metrics:
        c = metrics["comparison"]
        for name in ("ce", "cycle"):
            lines.append(f"{c['split']} {name:5s}: accuracy {c[name]['accuracy']:.4f}  balanced "
                         f"accuracy {c[name]['balanced_accuracy']:.4f}  macro-F1 "
                         f"{c[name]['macro_f1']:.4f}  ({c[name]['wall_seconds']} s)")
    if "noise_detection" in metrics:
        nd = metrics["noise_detection"]
        lines.append(f"noise detection: ROC-AUC {nd.get('auc')}  precision {nd.get('precision')}"
                     f"  recall {nd.get('recall')}")
    return "\n".join(lines)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["val", "test", "train"]), default="val",
              show_default=True)
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Point at other data, e.g. --set data.root=/other (repeatable).")
def evaluate(run_dir, split, weights, overrides):
    """Recompute the metrics of RUN_DIR on any split."""
    _quiet_tf()
    from ferkeras.training.evaluate_run import evaluate_run
    from ferkeras.training.recipe import RecipeError

    try:
        metrics = evaluate_run(run_dir, split=split, weights=weights, overrides=overrides)
    except (RecipeError, ValueError, OSError) as err:
        raise click.ClickException(_one_line(err)) from None
    click.echo(f"{split} ({weights}): accuracy {metrics['accuracy']:.4f}  balanced accuracy "
               f"{metrics['balanced_accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
               f"(n={metrics['n']})")
    for name, r in metrics["per_class_recall"].items():
        click.echo(f"  recall {name:9s} {'-' if r is None else f'{r:.3f}'}")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field (repeatable).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder [runs/<name>-audit].")
@click.option("--score", type=click.Choice(["aum", "loss"]), default="aum", show_default=True,
              help="aum: area under the margin over the warm-up's epochs (flag counts from "
                   "the confident joint); loss: a class-aware GMM split of the losses.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress output (else: the bar on a terminal, a line per epoch "
                   "in a pipe or log).")
def audit(recipe, overrides, run_dir, score, overwrite, quiet):
    """Find likely label errors: warm-up training, then a ranked label_issues.csv."""
    import pathlib

    from ferkeras.training.recipe import RecipeError, load_recipe

    try:
        rec = load_recipe(recipe, overrides)
    except RecipeError as err:
        raise click.ClickException(str(err)) from None
    run_dir = pathlib.Path(run_dir or pathlib.Path("runs") / f"{rec.name}-audit")
    _quiet_tf()
    from ferkeras.training.audit import audit_recipe
    from ferkeras.training.runs import RunFolderError

    try:
        summary = audit_recipe(rec, run_dir=run_dir, overwrite=overwrite, score=score,
                               verbose=0 if quiet else "auto", echo=click.echo)
    except (RunFolderError, ValueError, OSError) as err:
        raise click.ClickException(_one_line(err)) from None
    click.echo(f"flagged {summary['flagged']} of {summary['n']} training labels as likely "
               f"wrong, ranked by {summary['ranked_by']}: {summary['report']}/label_issues.csv")
    for name, count in summary["flagged_per_class"].items():
        click.echo(f"  {name:9s} {count}")
    if "detection" in summary:
        d = summary["detection"]
        click.echo(f"against the true labels: ROC-AUC {d['auc']:.3f}  precision "
                   f"{d['precision']:.3f}  recall {d['recall']:.3f}")


@cli.command()
def models():
    """List the registered backbones."""
    from ferkeras.models import describe_models

    for name, doc in describe_models().items():
        click.echo(f"{name:18s} {doc}")


@cli.command()
def methods():
    """List the methods of the noisy rows (cycle.method) and the terms that compose."""
    from ferkeras.methods import COMPOSABLE, METHODS

    for m in METHODS.values():
        click.echo(f"{m.name:10s} {m.description}\n{'':10s} {m.paper}")
    click.echo("\ncomposable (train keys, not methods):")
    for name, (keys, what, paper) in COMPOSABLE.items():
        click.echo(f"{name:10s} {keys}: {what}\n{'':10s} {paper}")


@cli.command(name="recipe-doc")
def recipe_doc():
    """Print every recipe key with its default and meaning."""
    from ferkeras.training.recipe import describe_fields

    for key, doc, default in describe_fields():
        click.echo(f"{key} = {default!r}\n    {doc}")


@cli.group(cls=LazyGroup, lazy=_LAZY_DATA)
def data():
    """Synthesize, inspect and summarise datasets."""


def main():
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
