"""`NoiseSplit` for your own `fit`: the cycle's split as a callback with a few keywords.

    trainer.fit(x, y, epochs=12, callbacks=[NoiseSplit(warmup_epochs=4, every=3)])

At the start of epoch `warmup_epochs`, and every `every` epochs after it, the callback splits
the training set of the `CycleTrainer` being fitted into labelled (trusted) and unlabelled
samples. The work is the recipe path's own: `ferkeras.callbacks.noise_split.NoiseSplit`
(per-sample losses -> `selection.split_training_set` -> the trainer's tables and class
prior); this class only finds the training data in the trainer's `fit` and keeps the
reports in `report_dir/split-eNNN/`.
"""

from __future__ import annotations

import dataclasses
import pathlib

import keras
import numpy as np

from ferkeras.callbacks import noise_split

SELECTOR_OPTIONS = ("p_clean", "gmm_scope", "min_class_samples", "keep_ratio")


class _Controller(noise_split.NoiseSplit):
    """The recipe path's split, writing reports into one folder of the user's choice."""

    report_dir: pathlib.Path

    def _write(self, epoch, result, probs, found=None) -> None:
        """The split's report; `found` (the trusted split's thresholds and T) is for the
        recipe path's trusted selector, which this callback does not offer."""
        from ferkeras.reports import write_split_report

        write_split_report(self.report_dir / f"split-e{epoch + 1:03d}", split=self.split,
                           data_cfg=self.data_cfg, class_names=self.class_names, result=result,
                           pred_probs=probs)


class _LazyImages:
    """Rows of a numbered dataset, read only when indexed (a report's contact sheet)."""

    def __init__(self, ordered, n):
        self.ordered, self.n = ordered, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        import tensorflow as tf

        index = np.asarray(index)
        wanted = tf.constant(index.astype(np.int32))
        rows = {}
        ds = self.ordered.filter(lambda x, y, i: tf.reduce_any(tf.equal(i, wanted)))
        for image, _, i in ds:
            rows[int(i)] = np.asarray(image)
        return np.stack([rows[int(i)] for i in index])


class NoiseSplit(keras.callbacks.Callback):
    """Split the training set into clean and noisy, inside `CycleTrainer.fit`.

    Args:
      warmup_epochs: epochs trained on all labels before the first split (>= 0).
      every: epochs between splits (>= 1).
      report_dir: a folder for one report per split (counts, per-sample CSV, loss histogram,
        contact sheet of the suspects, detection scores when `true_labels` is given); None
        writes nothing.
      selector: 'gmm' (DivideMix) or 'small_loss' (Co-teaching).
      normalize: 'per_class' or 'global' loss normalisation.
      loss_window: average each sample's loss over the last k splits.
      class_names: K names for the reports (default '0'..'K-1').
      true_labels: optional (N,) int true labels (-1 unknown), for detection scores.
      seed: GMM seed.
      verbose: print one line per split.
      **options: the selector's options: p_clean, gmm_scope, min_class_samples (gmm);
        keep_ratio (small_loss).

    After `fit`, `last_split` is the latest `selection.SplitResult` (labelled mask, clean
    probability, clean prior, losses) and `splits` the epochs that split.
    """

    def __init__(self, *, warmup_epochs=1, every=1, report_dir=None, selector="gmm",
                 normalize="per_class", loss_window=1, class_names=None, true_labels=None,
                 seed=0, verbose=1, **options):
        super().__init__()
        from ferkeras.selection import list_selectors

        for key, value, low in (("warmup_epochs", warmup_epochs, 0), ("every", every, 1),
                                ("loss_window", loss_window, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} must be an int >= {low}. Received: {key}={value!r}")
        if selector not in list_selectors():
            raise ValueError(f"Unknown selector. Valid: {list_selectors()}. "
                             f"Received: selector={selector!r}")
        if normalize not in ("per_class", "global"):
            raise ValueError("normalize must be 'per_class' or 'global'. "
                             f"Received: normalize={normalize!r}")
        unknown = sorted(set(options) - set(SELECTOR_OPTIONS))
        if unknown:
            raise ValueError(f"Unknown option(s) {unknown}. Valid: {list(SELECTOR_OPTIONS)}")
        self.warmup_epochs, self.every = warmup_epochs, every
        self.report_dir = pathlib.Path(report_dir) if report_dir is not None else None
        self.selector, self.normalize, self.loss_window = selector, normalize, loss_window
        self.class_names = None if class_names is None else tuple(class_names)
        self.true_labels = None if true_labels is None else np.asarray(true_labels, np.int32)
        self.seed, self.verbose, self.options = int(seed), verbose, options
        self.controller = None
        self.split_epochs: frozenset[int] = frozenset()
        self.splits: list[int] = []
        self.last_split = None

    def on_train_begin(self, logs=None):
        from ferkeras.recipe import CycleConfig, DataConfig

        trainer = self.model
        data = getattr(trainer, "training_set", None)
        if data is None or not hasattr(trainer, "set_split"):
            raise ValueError("NoiseSplit works inside a ferkeras CycleTrainer's fit. Received "
                             f"a model of type {type(trainer).__name__}")
        if self.true_labels is not None and len(self.true_labels) != len(data):
            raise ValueError(f"true_labels must have one entry per training sample "
                             f"({len(data)}). Received: {len(self.true_labels)}")
        k = trainer.num_classes
        names = self.class_names or tuple(str(c) for c in range(k))
        if len(names) != k:
            raise ValueError(f"class_names must name the {k} classes. Received: {list(names)}")
        shape = data.image_shape
        cfg = CycleConfig(enabled=True, warmup_epochs=self.warmup_epochs,
                          epochs_per_cycle=self.every, selector=self.selector,
                          normalize=self.normalize, loss_window=self.loss_window,
                          **self.options)
        # The one schedule: plan_phases' split epochs for this fit's epoch count.
        from ferkeras.schedule import plan_cycle_phases, split_epochs

        epochs = int((self.params or {}).get("epochs") or self.warmup_epochs + self.every)
        cycles = max(0, -(-(epochs - self.warmup_epochs) // self.every))
        self.split_epochs = split_epochs(plan_cycle_phases(
            dataclasses.replace(cfg, cycles=cycles), epochs=epochs)) if cycles else frozenset()
        split = self._split(data)
        self.controller = _Controller(
            trainer=trainer, train_split=split, cycle_cfg=cfg, class_names=names,
            data_cfg=DataConfig(image_size=int(shape[0]), channels=int(shape[-1])),
            split_epochs=(), run_dir=None, seed=self.seed, write=False,
            echo=print if self.verbose else (lambda msg: None), cb_beta=trainer.cb_beta,
            dataset=data.eval_dataset(512))
        if self.report_dir is not None:
            self.controller.report_dir = self.report_dir
            self.controller.write = True

    def _split(self, data):
        from ferkeras.data.table import Split

        if data.images is not None:
            images = data.images
        elif data.ordered is not None:
            images = _LazyImages(data.ordered, len(data))
        else:  # a dataset with its own indices: no images for the contact sheet
            images = _LazyImages(data.given.unbatch(), len(data))
        return Split(labels=data.labels, images=images, true_labels=self.true_labels)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.split_epochs:
            self.last_split = self.controller.run_split(epoch)
            self.splits.append(epoch)
