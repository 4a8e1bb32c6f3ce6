"""`train(recipe, bundle)`: one training path for every dataset, driven by a recipe.

Strategy -> trainer -> one `fit` per phase of the schedule (`ferkeras.training.schedule`), with
validation, checkpoints and run state -> final scores of best and last weights on validation
and, once, on test (`ferkeras.training.evaluate_run`) -> metrics.json + plots. `train_recipe` loads
the recipe's data, then trains.

The noise cycle has one owner, its controller (`CycleControl`): training calls it at each
phase start, saves and restores its state, and adds its summary to the metrics. Supervised
runs get `NoCycle`, which does nothing.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import typing

from ferkeras import io
from ferkeras.training.recipe import Recipe, recipe_hash, recipe_to_yaml
from ferkeras.training.runs import prepare_run_dir
from ferkeras.training.schedule import Phase, plan_phases

__all__ = ["CycleControl", "NoCycle", "Phase", "plan_phases", "train", "train_recipe",
           "train_with_baseline"]


class CycleControl(typing.Protocol):
    """What training asks of the noise cycle's controller (`NoiseSplit`, or `NoCycle`)."""

    labelled_mask: typing.Any  # the trainer's (N,) split table the pipeline reads, or None

    def begin_phase(self, phase: Phase, first_epoch: int) -> None:
        """Called before the phase's input stream is built (split here)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def summary(self) -> dict:
        """Entries for metrics.json."""


class NoCycle:
    """The controller of a run without the cycle: no split, no state, nothing to report."""

    labelled_mask = None

    def begin_phase(self, phase: Phase, first_epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        return {}


def epoch_stream(split, data_cfg, *, batch_size, seed, start, end, steps_per_epoch, augment,
                 views, labelled_mask=None):
    """All epochs [start, end) as one dataset; epoch e is shuffled/augmented with seed (seed, e),
    so a resumed run sees exactly the batches the uninterrupted run would have seen. With
    `data_cfg.cache`, the epochs share one cached source: each image is decoded once per
    phase, not once per epoch."""
    from ferkeras.data.pipeline import cached_source, make_dataset

    source = cached_source(split, data_cfg) if data_cfg.cache else None
    stream = None
    for epoch in range(start, end):
        ds = make_dataset(
            split, data_cfg, batch_size=batch_size, shuffle=True, augment=augment, views=views,
            seed=seed * 10007 + epoch, drop_remainder=True, labelled_mask=labelled_mask,
            source=source,
        ).take(steps_per_epoch)
        stream = ds if stream is None else stream.concatenate(ds)
    return stream


def steps_for(n_train: int, recipe: Recipe) -> int:
    steps = n_train // recipe.train.batch_size
    if steps < 1:
        raise ValueError(
            f"train.batch_size={recipe.train.batch_size} is larger than the {n_train} training "
            "samples."
        )
    if recipe.train.steps_per_epoch:
        steps = min(steps, recipe.train.steps_per_epoch)
    return steps


def build_optimizer(train_cfg, *, total_steps: int, steps_per_epoch: int):
    import keras

    warmup = int(round(train_cfg.warmup_epochs * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else train_cfg.learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        warmup_target=train_cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
        alpha=0.0,
    )
    if train_cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                    weight_decay=train_cfg.weight_decay or None)
    return keras.optimizers.AdamW(schedule, weight_decay=train_cfg.weight_decay)


def train_recipe(recipe: Recipe, *, run_dir, resume=False, overwrite=False, strategy="auto",
                 verbose="auto", echo=print) -> dict:
    """Load the recipe's data (`sources.load_bundle`), then `train` on it."""
    from ferkeras.data.sources import load_bundle

    strat = resolve_strategy(strategy)  # before the bundle: a tfds source runs TF ops
    bundle = load_bundle(recipe.data, seed=recipe.seed)
    return train(recipe, bundle, run_dir=run_dir, resume=resume, overwrite=overwrite,
                 strategy=strat, verbose=verbose, echo=echo)


def resolve_strategy(strategy):
    """A `tf.distribute.Strategy` from a name (`choose_strategy`) or the strategy itself."""
    if isinstance(strategy, str):
        from ferkeras.training.strategy import choose_strategy

        return choose_strategy(strategy)
    return strategy


def train(recipe: Recipe, bundle, *, run_dir, resume=False, overwrite=False, strategy="auto",
          verbose="auto", echo=print, callbacks=()) -> dict:
    """Train `recipe` on `bundle` (a `DatasetBundle`) into `run_dir`; return the final metrics
    (also in metrics.json). `strategy` is a name (`ferkeras.training.strategy.STRATEGIES`) or a
    strategy object.

    `callbacks`: extra `keras.callbacks.Callback`s, appended after the run's own (validation
    checkpoint, run state, TensorBoard), so at an epoch end they see that epoch's `val_*`
    logs; `self.model` is the trainer (its `eval_network` is what the checkpoints hold).
    For logging: they are not part of the run's saved state and must not change training.

    `verbose`: Keras's progress output; "auto" (`training.console.progress_verbosity`) is the
    bar on a terminal and one line per epoch under a pipe or in a log file.

    Only the chief writes `run_dir`; the other workers of a multi-worker run write into a
    temporary folder that is deleted when they finish. A run folder this call creates is
    removed again if the run fails before its first epoch is saved, so a bad recipe or
    dataset leaves nothing behind; after that, the folder keeps the last good state for
    `resume`.
    """
    from ferkeras.training.console import progress_verbosity
    from ferkeras.training.runs import RunFolderError, discard_unstarted, is_fresh
    from ferkeras.training.strategy import any_worker, is_chief

    run_dir = pathlib.Path(run_dir)
    verbose = progress_verbosity(verbose)
    t0 = time.time()
    strat = resolve_strategy(strategy)  # first: MultiWorkerMirroredStrategy precedes all TF ops
    chief = is_chief(strat)
    out_dir = run_dir if chief else _worker_tmp_dir(run_dir, strat)
    fresh = chief and not resume and (overwrite or is_fresh(run_dir))
    try:
        error, state = None, None
        try:
            if chief:
                state = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite,
                                        recipe_hash=recipe_hash(recipe))
            else:  # workers start empty; the chief's state is broadcast after the build
                prepare_run_dir(out_dir, resume=False, overwrite=True)
        except RunFolderError as err:
            fresh, error = False, err  # never remove a folder this call was refused
        if any_worker(strat, error is not None):
            raise error or RunFolderError("another worker could not prepare its run folder "
                                          "(see its output); this one stops too.")
        if state is None and chief:
            io.atomic_write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
        metrics = _train(recipe, bundle, run_dir=run_dir, out_dir=out_dir, state=state, strat=strat,
                         chief=chief, t0=t0, verbose=verbose, echo=echo,
                         extra_callbacks=tuple(callbacks))
        any_worker(strat, False)  # finish together: the chief has written everything
        return metrics
    except BaseException:
        if fresh:
            discard_unstarted(run_dir)
        raise
    finally:
        if not chief:
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)


def _train(recipe, bundle, *, run_dir, out_dir, state, strat, chief, t0, verbose, echo,
           extra_callbacks=()) -> dict:
    from ferkeras.callbacks.evaluate import NaNGuard, ValidationCheckpoint
    from ferkeras.callbacks.state import RunState
    from ferkeras.labels import class_names_for
    from ferkeras.models import build_network
    from ferkeras.noise.trusted import finish_run, prepare_bundle
    from ferkeras.training.evaluate_run import final_metrics, write_metric_plots
    from ferkeras.training.strategy import patch_keras_for_distribution, scaling_rule

    bundle, trusted_rows, _ = prepare_bundle(bundle, recipe.trusted, seed=recipe.seed)
    bundle.check_classes()
    class_names = tuple(bundle.class_names)
    if tuple(class_names_for(recipe.data)) != class_names:
        raise ValueError(f"{bundle.source}: class names {class_names} do not match the class set "
                         f"{recipe.data.class_set}.")
    for note in bundle.notes:
        echo(f"data: {note}")
    input_shape = (recipe.data.image_size, recipe.data.image_size, recipe.data.channels)
    rule = scaling_rule(strat, global_batch=recipe.train.batch_size,
                        learning_rate=recipe.train.learning_rate)
    phases = plan_phases(recipe)
    total_epochs = phases[-1].end
    spe = steps_for(len(bundle.train), recipe)
    if chief:
        from ferkeras.training.strategy import resolve_precision

        io.atomic_write_json(run_dir / "run_info.json", {
            "precision": resolve_precision(recipe.train.precision),
            "class_names": list(class_names), "image_size": recipe.data.image_size,
            "channels": recipe.data.channels, "recipe_hash": recipe_hash(recipe),
            "n_train": len(bundle.train), "n_val": len(bundle.val),
            "n_test": len(bundle.test) if bundle.test is not None else 0,
            "steps_per_epoch": spe, "epochs": total_epochs, "scaling": rule,
            "data_notes": bundle.notes,
            # unreadable sources skipped per split; each is named in skipped_files.tsv
            "skipped": {name: len(getattr(bundle, name).skipped) for name in
                        ("train", "val", "test") if getattr(bundle, name) is not None},
        })
        _write_skipped(run_dir, bundle)

    from ferkeras.data.pipeline import make_dataset

    eval_batch = max(recipe.train.batch_size, 256)
    val_ds = make_dataset(bundle.val, recipe.data, batch_size=eval_batch)
    import keras

    from ferkeras.training.strategy import precision_policy

    # A recipe run owns its process: `seed` is the run's global seed (TensorFlow's op-level
    # seeds of the shuffles and view draws derive from it). `build_network` itself leaves
    # the global random state alone; it seeds its own initialisers.
    keras.utils.set_random_seed(recipe.seed)
    with strat.scope(), precision_policy(recipe.train.precision):
        network = build_network(recipe.model, input_shape=input_shape,
                                num_classes=len(class_names), seed=recipe.seed)
        trainer = _make_trainer(recipe, network, bundle)
        trainer.compile(optimizer=build_optimizer(
            recipe.train, total_steps=spe * total_epochs, steps_per_epoch=spe),
            jit_compile=recipe.train.jit_compile)
        trainer.build_state(input_shape)
    patch_keras_for_distribution(trainer, strat)
    trainer.set_class_prior(bundle.train.class_counts(len(class_names)),
                            beta=recipe.train.cb_beta)

    checkpoint = ValidationCheckpoint(
        val_dataset=val_ds, val_labels=bundle.val.labels, class_names=class_names,
        run_dir=out_dir, select_metric=recipe.train.select_metric, write=chief,
    )
    control = _make_control(recipe, trainer, bundle, out_dir, chief, strat, echo,
                            trusted_rows=trusted_rows)
    run_state = RunState(run_dir=out_dir, checkpoint=checkpoint, write=chief, strategy=strat,
                         extra_state=[control])
    start_epoch = run_state.restore(trainer, state)
    if start_epoch >= total_epochs:
        echo(f"resume: {run_dir} has all {total_epochs} epochs; recomputing the final metrics")
    elif start_epoch:
        echo(f"resume: continuing {run_dir} at epoch {start_epoch + 1}/{total_epochs}")
    from ferkeras.callbacks.forward import method_callbacks

    # training-time methods (forward correction) change trainer variables at an epoch end:
    # before RunState, so that epoch's saved state holds them
    methods = method_callbacks(recipe, trainer=trainer, bundle=bundle, run_dir=out_dir,
                               write=chief, strategy=strat, echo=echo,
                               trusted_rows=trusted_rows)
    callbacks = [NaNGuard(), checkpoint, *methods, run_state]
    if chief:
        import keras

        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"),
                                                     write_graph=False))
    callbacks.extend(extra_callbacks)  # the caller's, last: they see the epoch's val_* logs
    train_seconds = 0.0
    for phase in phases:
        if start_epoch >= phase.end:
            continue
        first = max(start_epoch, phase.start)
        control.begin_phase(phase, first)  # split now, before the stream reads the mask
        stream = epoch_stream(
            bundle.train, recipe.data, batch_size=recipe.train.batch_size, seed=recipe.seed,
            start=first, end=phase.end, steps_per_epoch=spe,
            augment="none" if phase.views else recipe.train.augment, views=phase.views,
            labelled_mask=control.labelled_mask if phase.views else None,
        )
        echo(f"{phase.name}: epochs {first + 1}-{phase.end} of {total_epochs}, "
             f"{spe} steps/epoch, global batch {recipe.train.batch_size} "
             f"on {rule['replicas']} replica(s)")
        t_phase = time.time()
        trainer.fit(stream, epochs=phase.end, initial_epoch=first, steps_per_epoch=spe,
                    callbacks=callbacks, verbose=verbose, shuffle=False)
        train_seconds += time.time() - t_phase

    metrics = final_metrics(trainer.eval_network, bundle, recipe.data,
                            checkpoints=pathlib.Path(out_dir) / "checkpoints",
                            class_names=class_names, select_metric=recipe.train.select_metric,
                            best_epoch=checkpoint.best["epoch"], batch_size=eval_batch)
    metrics.update({
        "recipe": recipe.name, "recipe_hash": recipe_hash(recipe), "epochs": total_epochs,
        "train_seconds": round(train_seconds, 2), "wall_seconds": round(time.time() - t0, 2),
        "replicas": rule["replicas"],
    })
    metrics.update(control.summary())
    for method in methods:
        metrics.update(method.summary())
    if chief:
        decision = finish_run(run_dir, recipe, bundle, trusted_rows, class_names=class_names,
                              batch_size=eval_batch)
        if decision:
            metrics["decision"] = decision
            for line in decision_lines(decision):
                echo(line)
        io.atomic_write_json(run_dir / "metrics.json", metrics)
        write_metric_plots(metrics, class_names, run_dir)
    return metrics


def train_with_baseline(recipe: Recipe, *, run_dir, bundle=None, **kwargs) -> dict:
    """`train_recipe`, plus a plain-CE baseline on the same data when `cycle.compare_ce`.

    The baseline uses the same data, model, augmentation and total epoch budget, with the
    cycle off and `train.loss=ce`; metrics.json then holds `comparison` with both runs
    (`compare_runs`). `bundle`: the data, loaded from the recipe when None.
    """
    from ferkeras.data.sources import load_bundle

    kwargs["strategy"] = resolve_strategy(kwargs.get("strategy", "auto"))
    if bundle is None:
        bundle = load_bundle(recipe.data, seed=recipe.seed)  # once, for both runs
    metrics = train(recipe, bundle, run_dir=run_dir, **kwargs)
    if not (recipe.cycle.enabled and recipe.cycle.compare_ce):
        return metrics
    base = dataclasses.replace(
        recipe, name=recipe.name + "-ce",
        train=dataclasses.replace(recipe.train, loss="ce", epochs=plan_phases(recipe)[-1].end),
        cycle=dataclasses.replace(recipe.cycle, enabled=False, compare_ce=False),
    )
    base_dir = pathlib.Path(run_dir) / "ce_baseline"
    kwargs = {**kwargs, "resume": bool(kwargs.get("resume")) and (base_dir / "checkpoints" /
              "state.json").is_file()}
    if (base_dir / "metrics.json").is_file() and kwargs.get("resume"):
        import json

        base_metrics = json.loads((base_dir / "metrics.json").read_text())
    else:
        base_metrics = train(base, bundle, run_dir=base_dir, **kwargs)
    metrics["comparison"] = compare_runs(base_metrics, metrics)
    if metrics["comparison"]["split"] is None:
        kwargs.get("echo", print)(f"WARNING: {metrics['comparison']['note']}")
    from ferkeras.training.strategy import is_chief

    if is_chief(kwargs["strategy"]):  # workers write nothing
        io.atomic_write_json(pathlib.Path(run_dir) / "metrics.json", metrics)
    return metrics


def compare_runs(ce_metrics: dict, cycle_metrics: dict) -> dict:
    """The CE-vs-cycle comparison block of metrics.json, on the test split.

    Both runs picked their best epoch on validation, so validation scores cannot compare
    them fairly: without a test split the block says so (`split` None, `note`) and holds no
    figures.
    """
    if not (ce_metrics.get("test") and cycle_metrics.get("test")):
        return {"split": None, "weights": "best on validation",
                "note": "no test split: the CE-vs-cycle comparison is not reported, since "
                        "the validation split picked both runs' epochs. Add a test split "
                        "to compare them."}
    comparison = {"split": "test", "weights": "best on validation"}
    for name, m in (("ce", ce_metrics), ("cycle", cycle_metrics)):
        block = m["test"]["best"]
        comparison[name] = {k: block[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
        comparison[name]["wall_seconds"] = m["wall_seconds"]
    return comparison


def _make_trainer(recipe, network, bundle):
    """The cycle's trainer is its method's (`ferkeras.methods.METHODS`); without the cycle,
    the supervised trainer, whose composable terms (LT losses, ELR, distillation, forward
    correction) are train keys."""
    if recipe.cycle.enabled:
        from ferkeras.methods import get_method

        trainer_cls = get_method(recipe.cycle.method).trainer_class()
        return trainer_cls.from_recipe(recipe, network, bundle)
    from ferkeras.trainers.supervised import SupervisedTrainer

    trainer_cls = SupervisedTrainer
    if recipe.train.forward_correction != "none":  # Patrini et al. 2017, trainers/forward.py
        from ferkeras.trainers.forward import ForwardCorrectedTrainer

        trainer_cls = ForwardCorrectedTrainer
    return trainer_cls(
        network, num_classes=bundle.num_classes, loss=recipe.train.loss, tau=recipe.train.tau,
        label_smoothing=recipe.train.label_smoothing, ema_decay=recipe.train.ema_decay,
        soft_targets=bundle.train.soft_labels if recipe.data.label_mode == "probability"
        else None,
        # ELR and self-distillation (ferkeras.noise.soft_targets); off (0) by default.
        elr_lambda=recipe.train.elr_lambda, elr_beta=recipe.train.elr_beta,
        distill_alpha=recipe.train.distill_alpha,
        distill_temperature=recipe.train.distill_temperature,
        num_samples=len(bundle.train) if recipe.train.elr_lambda > 0 else None,
        row_weights=bundle.train.weights,
    )


def decision_lines(block: dict) -> list[str]:
    """Console lines for metrics.json's `decision` block: each rule's test (else trusted
    validation) accuracy and balanced accuracy beside argmax's, the baked one marked."""
    where = "test" if block.get("test") else "val_trusted"
    scores = block.get(where) or {}
    baked = block.get("baked", block.get("rule"))
    lines = [f"decision rule ({where}, fitted on {block.get('fitted_on_trusted_rows')} "
             "trusted rows):"]
    for name, m in scores.items():
        if name == block.get("rule") and name != "argmax":
            continue  # the baked rule is listed under its name@objective
        mark = "  <- baked into the export" if name == baked else ""
        lines.append(f"  {name:<24} accuracy {100 * m['accuracy']:.1f} %, balanced accuracy "
                     f"{100 * m['balanced_accuracy']:.1f} %{mark}")
    return lines


def _make_control(recipe, trainer, bundle, out_dir, chief, strat, echo,
                  trusted_rows=None) -> CycleControl:
    """The cycle's controller is its method's split (`Method.split`)."""
    if not recipe.cycle.enabled:
        return NoCycle()
    from ferkeras.methods import get_method

    split_cls = get_method(recipe.cycle.method).split_class()
    extra = {"trusted_rows": trusted_rows} if recipe.cycle.selector == "trusted" else {}
    return split_cls.from_recipe(recipe, trainer=trainer, bundle=bundle, run_dir=out_dir,
                                 write=chief, strategy=strat, echo=echo, **extra)


def _write_skipped(run_dir, bundle):
    rows = []
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        if split is not None:
            rows += [f"{name}\t{f}\t{reason}" for f, reason in split.skipped]
    if rows:
        io.atomic_write_text(run_dir / "skipped_files.tsv", "split\tfile\treason\n" +
                             "\n".join(rows) + "\n")


def _worker_tmp_dir(run_dir, strat):
    """A fresh temporary folder for a non-chief worker's (discarded) outputs."""
    import tempfile

    from ferkeras.training.strategy import task_name

    name = pathlib.Path(run_dir).name or "run"
    return pathlib.Path(tempfile.mkdtemp(prefix=f"ferkeras-{name}-{task_name(strat)}-"))


