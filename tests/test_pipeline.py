"""tf.data pipeline and augmentation: every op eagerly and inside Dataset.map (they differ)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ferkeras.data import augment as aug
from ferkeras.data.pipeline import collect_images, make_dataset, to_model_input
from ferkeras.data.table import Split
from ferkeras.training.recipe import DataConfig

SEED = tf.constant([3, 7], tf.int64)


def _image(size=32, channels=1):
    r = np.random.default_rng(0)
    return tf.constant(r.uniform(0, 255, (size, size, channels)).astype(np.float32))


@pytest.mark.parametrize("mode", ["weak", "strong"])
@pytest.mark.parametrize("channels", [1, 3])
def test_augment_eager_matches_dataset_map(mode, channels):
    image = _image(channels=channels)
    eager = aug.augment(image, SEED, mode=mode)
    mapped = next(iter(tf.data.Dataset.from_tensors(image).map(
        lambda im: aug.augment(im, SEED, mode=mode))))
    assert eager.shape == image.shape == mapped.shape
    assert eager.dtype == tf.float32
    assert float(tf.reduce_min(eager)) >= 0.0 and float(tf.reduce_max(eager)) <= 255.0
    # stateless ops: same seed, same result, eager or in a graph
    np.testing.assert_allclose(eager.numpy(), mapped.numpy(), atol=1e-3)
    assert not np.allclose(eager.numpy(), image.numpy())


def _find_flip_and_shift(out, src, pad):
    """(flip, dy, dx) with out[y, x] == flip(src)[y + dy, x + dx] on the interior, or None."""
    h, w = src.shape[:2]
    inner = out[pad:h - pad, pad:w - pad]
    for flip in (False, True):
        ref = src[:, ::-1] if flip else src
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.allclose(inner, ref[pad + dy:h - pad + dy, pad + dx:w - pad + dx]):
                    return flip, dy, dx
    return None


def test_weak_augment_is_a_flip_plus_shift_of_the_same_pixels():
    image = _image().numpy()
    pad = int(np.ceil(32 * 0.125))  # translate=0.125 of the side: up to 4 px
    found = []
    for i in range(24):
        out = aug.weak_augment(tf.constant(image), tf.constant([i, 5], tf.int64)).numpy()
        move = _find_flip_and_shift(out, image, pad)
        assert move is not None, f"seed {i}: not a flip + shift of at most {pad} px"
        found.append(move)
    # Both flips and many shifts are drawn; the identity (or a flip alone) fails here.
    assert {flip for flip, _, _ in found} == {False, True}
    assert len({(dy, dx) for _, dy, dx in found}) >= 8
    assert sum(move == (False, 0, 0) for move in found) <= 2


def test_rand_augment_runs_every_op_and_is_seeded():
    image = _image(channels=3)
    outs = [aug.rand_augment(image, tf.constant([i, 1], tf.int64)).numpy() for i in range(40)]
    for out in outs:
        assert out.shape == (32, 32, 3) and out.min() >= 0.0 and out.max() <= 255.0
    distinct = {round(float(np.abs(o - image.numpy()).mean()), 3) for o in outs}
    assert len(distinct) > 10  # many different ops and magnitudes drawn
    again = aug.rand_augment(image, tf.constant([3, 1], tf.int64)).numpy()
    np.testing.assert_allclose(again, outs[3])


def _grey_box(out, fill=127.5):
    """(height, width) of the grey region if it is one axis-aligned box, else None."""
    grey = np.isclose(out[..., 0], fill)
    rows, cols = np.flatnonzero(grey.any(axis=1)), np.flatnonzero(grey.any(axis=0))
    if not len(rows):
        return None
    box = np.zeros_like(grey)
    box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    if not np.array_equal(grey, box):
        return None
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_cutout_blanks_a_square():
    image = tf.fill((32, 32, 1), 200.0)
    shapes = []
    for i in range(20):
        out = aug.cutout(image, tf.constant([i, 2], tf.int64), size_fraction=0.5).numpy()
        shape = _grey_box(out)
        assert shape is not None, f"seed {i}: the blanked pixels are not one box"
        assert max(shape) <= 16 and min(shape) >= 8  # half the side, cut only by the border
        assert np.all(out[~np.isclose(out, 127.5)] == 200.0)  # nothing else touched
        shapes.append(shape)
    assert (16, 16) in shapes  # a square of half the side where it lies inside the image
    assert len(set(shapes)) > 1  # its place is drawn
    with pytest.raises(ValueError, match="mode='medium'"):
        aug.augment(image, SEED, mode="medium")


def test_strong_augment_ends_with_a_cutout():
    image = _image()  # uniform noise: no grey box of its own
    assert _grey_box(image.numpy()) is None
    for i in range(8):
        out = aug.strong_augment(image, tf.constant([i, 9], tf.int64)).numpy()
        shape = _grey_box(out)
        assert shape is not None and min(shape) >= 8, f"seed {i}: no cutout box"


def test_to_model_input_converts_channels_and_size():
    grey = tf.zeros((40, 40, 1), tf.uint8)
    out = to_model_input(grey, size=24, channels=3)
    assert out.shape == (24, 24, 3) and out.dtype == tf.float32
    rgb = tf.fill((24, 24, 3), tf.constant(90, tf.uint8))
    out = to_model_input(rgb, size=24, channels=1)
    assert out.shape == (24, 24, 1)
    np.testing.assert_allclose(out.numpy(), 90.0, atol=1.0)


def _split(n=12, size=20):
    r = np.random.default_rng(1)
    images = r.integers(0, 255, (n, size, size, 1)).astype(np.uint8)
    return Split(labels=np.arange(n) % 3, images=images)


def test_dataset_yields_image_label_index_in_order():
    split = _split()
    cfg = DataConfig(image_size=20, channels=1)
    batches = list(make_dataset(split, cfg, batch_size=5))
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    index = np.concatenate([b[2].numpy() for b in batches])
    np.testing.assert_array_equal(index, np.arange(12))
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(labels, split.labels)
    np.testing.assert_allclose(collect_images(split, cfg), split.images.astype(np.float32))


def test_shuffle_is_seeded_and_covers_every_sample():
    split = _split()
    cfg = DataConfig(image_size=20, channels=1)
    order = [np.concatenate([b[2].numpy() for b in make_dataset(
        split, cfg, batch_size=4, shuffle=True, seed=s)]) for s in (5, 5, 6)]
    np.testing.assert_array_equal(order[0], order[1])
    assert not np.array_equal(order[0], order[2])
    assert sorted(order[0]) == list(range(12))


def test_private_threadpool_keeps_the_same_seeded_stream():
    """`threadpool_size` (bench/speed_options.py) changes where the maps run, not what they
    yield: same seed, same shuffled and augmented batches."""
    split = _split()
    cfg = DataConfig(image_size=20, channels=1)

    def stream(**kw):
        return [(b[0].numpy(), b[2].numpy()) for b in make_dataset(
            split, cfg, batch_size=4, shuffle=True, augment="weak", seed=3, **kw)]

    for (xa, ia), (xb, ib) in zip(stream(), stream(threadpool_size=1), strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)
    with pytest.raises(ValueError, match="threadpool_size=-1"):
        make_dataset(split, cfg, batch_size=4, threadpool_size=-1)


def test_view_pairs_and_strong_mask():
    split = _split()
    cfg = DataConfig(image_size=20, channels=1)
    mask = tf.Variable(np.array([0, 1] * 6, np.float32))  # the trainer's labelled mask
    (weak, strong), _, index = next(iter(make_dataset(
        split, cfg, batch_size=12, views=True, labelled_mask=mask)))
    assert weak.shape == strong.shape == (12, 20, 20, 1)
    same = np.all(np.isclose(weak.numpy(), strong.numpy()), axis=(1, 2, 3))
    # strong views only where the mask is 0 (the unlabelled samples)
    np.testing.assert_array_equal(same, mask.numpy()[index.numpy()] > 0.5)
    mask.assign(np.ones(12, np.float32))  # the pipeline reads the variable at iteration time
    (weak, strong), _, _ = next(iter(make_dataset(
        split, cfg, batch_size=12, views=True, labelled_mask=mask)))
    np.testing.assert_allclose(weak.numpy(), strong.numpy())


def test_files_are_decoded_cropped_and_resized(tmp_path):
    paths = []
    for i in range(3):
        arr = np.zeros((60, 80, 3), np.uint8)
        arr[10:40, 20:50] = 255  # the "face"
        path = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    boxes = np.array([[20, 10, 30, 30], [-1, -1, -1, -1], [20, 10, 30, 30]], np.int32)
    split = Split(labels=[0, 1, 2], paths=np.array(paths), boxes=boxes)
    images = collect_images(split, DataConfig(image_size=16, channels=1))
    assert images.shape == (3, 16, 16, 1)
    assert images[0].min() > 250  # cropped to the white box
    assert images[1].min() < 5  # whole image: black border included
    np.testing.assert_allclose(images[0], images[2])
