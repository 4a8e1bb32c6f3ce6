"""What a trainer's `fit` accepts, turned into the `(image, label, sample_index)` stream.

`fit` takes NumPy arrays `(x, y)`, a batched `tf.data.Dataset` of `(x, y)`, or a dataset of
`(x, y, sample_index)` (the recipe path's own pipeline; used as given). For the first two,
a `TrainingSet` numbers the samples: arrays by row; a dataset by the order of its first
pass, which is then cached so a sample keeps its index in every later epoch (and any random
augmentation in that dataset is frozen at its first pass: augment in the model, or pass
indices yourself). `TrainingSet.stream` is the shuffled training stream; with `views` it
yields the FixMatch pair `((weak, strong), label, index)`, the strong view computed only
for samples the current split made unlabelled.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


def _check_labels(y, n=None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)
                       and not np.all(np.equal(np.mod(y, 1), 0))):
        raise ValueError("y must hold int class ids, shape (N,). Received shape "
                         f"{y.shape}, dtype {y.dtype}")
    if n is not None and len(y) != n:
        raise ValueError(f"x and y must have the same length. Received: {n} images, "
                         f"{len(y)} labels")
    return y.astype(np.int32)


@dataclasses.dataclass
class TrainingSet:
    """A numbered training set.

    labels:  (N,) int32 given labels, by sample index.
    ordered: unbatched `(image, label, index)` dataset in index order (un-augmented), or
             None for a dataset passed with its own indices.
    given:   the user's batched `(x, y, index)` dataset, or None.
    images:  (N, H, W, C) array when the data came as arrays (reports use it), else None.
    batch_size: the batch size of the training stream.
    """

    ordered: object
    given: object
    images: np.ndarray | None
    batch_size: int
    known_labels: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """(N,) int32 labels by index; for a dataset with indices, read (once) on demand."""
        if self.known_labels is None:
            self.known_labels = _read_indexed_labels(self.given)
        return self.known_labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple:
        tf = _tf()
        spec = (self.ordered if self.ordered is not None else self.given).element_spec[0]
        spec = tf.nest.flatten(spec)[0]
        shape = tuple(spec.shape)
        return shape if self.ordered is not None else shape[1:]

    def eval_dataset(self, batch_size: int = 256):
        """Every sample once, batched, un-augmented, `(image, label, index)`."""
        if self.ordered is None:
            return self.given
        return self.ordered.batch(batch_size)

    def stream(self, *, shuffle: bool, seed: int, views: bool = False, labelled_mask=None):
        """The training stream; see the module docstring."""
        if self.ordered is None:
            return self.given
        tf = _tf()
        ds = self.ordered
        if shuffle:
            ds = ds.shuffle(min(len(self), 50_000), seed=seed, reshuffle_each_iteration=True)
        if views:
            from ferkeras.data import augment as aug

            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

            def _views(elem, s):
                image, label, index = elem
                s_weak, s_strong = tf.unstack(tf.random.experimental.stateless_split(s, 2))
                weak = aug.weak_augment(image, s_weak)
                if labelled_mask is None:
                    return (weak, aug.strong_augment(image, s_strong)), label, index
                strong = tf.cond(tf.gather(labelled_mask, index) < 0.5,
                                 lambda: aug.strong_augment(image, s_strong), lambda: weak)
                return (weak, strong), label, index

            ds = tf.data.Dataset.zip((ds, seeds)).map(_views,
                                                      num_parallel_calls=tf.data.AUTOTUNE)
        # No prefetch: Keras opens a new iterator after `on_epoch_begin`, so no batch of an
        # epoch is built before a split made at that epoch's start.
        return ds.batch(self.batch_size)


def training_set(x, y=None, *, batch_size=None) -> TrainingSet:
    """Number the samples of `fit`'s input; see the module docstring."""
    tf = _tf()
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("Pass y inside the dataset, not separately. Received: y of type "
                             f"{type(y).__name__} with a tf.data.Dataset x")
        return _from_dataset(x, batch_size)
    if y is None:
        raise ValueError("fit needs labels: fit(x, y) or a dataset of (x, y). Received: y=None")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be images of shape (N, H, W, C). Received shape: {x.shape}")
    labels = _check_labels(y, len(x))
    index = np.arange(len(x), dtype=np.int32)
    images = x if x.dtype == np.float32 else x.astype(np.float32)
    ordered = tf.data.Dataset.from_tensor_slices((images, labels, index))
    return TrainingSet(ordered=ordered, given=None, images=x, batch_size=int(batch_size or 32),
                       known_labels=labels)


def _from_dataset(ds, batch_size) -> TrainingSet:
    tf = _tf()
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError("A dataset for fit must yield (x, y) or (x, y, sample_index) "
                         f"batches. Received element_spec: {spec}")
    if len(spec) == 3:  # indices given: used as is
        return TrainingSet(ordered=None, given=ds, images=None, batch_size=int(batch_size or 0))
    y_shape = spec[1].shape
    if y_shape.rank not in (1, 2) or (y_shape.rank == 2 and y_shape[-1] != 1):
        raise ValueError("A dataset's y must be batches of int class ids, shape (B,) or (B, 1) "
                         f"(not one-hot). Received shape: {y_shape}")
    if batch_size is None:
        first = next(iter(ds.take(1)), None)
        if first is None:
            raise ValueError("The dataset passed to fit is empty.")
        batch_size = int(first[1].shape[0])

    def _number(i, elem):
        x, y = elem
        y = tf.reshape(y, [-1])[0] if y.shape.rank else y
        return tf.cast(x, tf.float32), tf.cast(y, tf.int32), tf.cast(i, tf.int32)

    ordered = ds.unbatch().enumerate().map(_number).cache()
    labels = np.concatenate([np.asarray(y) for _, y, _ in ordered.batch(4096)])
    # Known length: Keras then knows the steps per epoch (no "ran out of data" warning).
    ordered = ordered.apply(tf.data.experimental.assert_cardinality(len(labels)))
    return TrainingSet(ordered=ordered, given=None, images=None, batch_size=int(batch_size),
                       known_labels=_check_labels(labels))


def _read_indexed_labels(ds) -> np.ndarray:
    """Labels by index from one pass over a dataset of `(x, y, sample_index)` batches."""
    labels, index = [], []
    for _, y, i in ds:
        labels.append(np.asarray(y))
        index.append(np.asarray(i))
    labels, index = np.concatenate(labels), np.concatenate(index)
    order = np.argsort(index)
    if not np.array_equal(index[order], np.arange(len(index))):
        raise ValueError("sample_index must number the samples 0..N-1, each once per pass. "
                         f"Received indices from {int(index.min())} to {int(index.max())} "
                         f"for {len(index)} samples")
    return _check_labels(labels[order])
