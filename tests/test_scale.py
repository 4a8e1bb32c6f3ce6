"""AffectNet-layout synthesis, the pre-decode shuffle, and the precision / XLA recipe keys."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ferkeras.data.affectnet_synth import (
    damage_sources,
    landmark_template,
    write_affectnet_layout,
)
from ferkeras.data.sources import load_bundle
from ferkeras.data.table import Split
from ferkeras.training.recipe import DataConfig, RecipeError, recipe_from_dict


@pytest.fixture(scope="module")
def affectnet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "AffectNet"
    info = write_affectnet_layout(root, n_train=200, n_test=16, sides=(48, 80), workers=2)
    return root, info


def test_affectnet_layout_reads_back_with_real_proportions(affectnet_root):
    root, info = affectnet_root
    lines = (root / "Manually_Annotated_file_lists/training.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header == ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                      "facial_landmarks", "expression", "valence", "arousal"]
    row = lines[1].split(",")
    assert len(row[5].split(";")) == 136  # 68 landmarks, x;y
    counts = info["train_counts"]
    assert sum(counts.values()) == 200
    # AffectNet's order of class sizes: happy > neutral > sad ~ anger > ... > contempt.
    assert counts["happy"] > counts["neutral"] > counts["sad"] > counts["fear"]
    cfg = DataConfig(source="affectnet", root=str(root), class_set="affectnet8",
                     image_size=32, channels=3, val_fraction=0.1)
    bundle = load_bundle(cfg, seed=0)
    assert len(bundle.train) + len(bundle.val) == 200 and len(bundle.test) == 16
    assert not bundle.train.skipped
    assert np.bincount(bundle.test.labels, minlength=8).tolist() == [2] * 8
    # Each face box lies inside its image, and the JPEG is RGB.
    path, box = bundle.train.paths[0], bundle.train.boxes[0]
    with Image.open(path) as im:
        assert im.mode == "RGB" and box[0] + box[2] <= im.width and box[1] + box[3] <= im.height


def test_affectnet_layout_same_seed_same_files(tmp_path):
    a = write_affectnet_layout(tmp_path / "a", n_train=16, n_test=0, sides=(32, 40), workers=1)
    b = write_affectnet_layout(tmp_path / "b", n_train=16, n_test=0, sides=(32, 40), workers=2)
    lists = "Manually_Annotated_file_lists/training.csv"
    assert (tmp_path / "a" / lists).read_text() == (tmp_path / "b" / lists).read_text()
    assert a["bytes"] == b["bytes"]
    with pytest.raises(FileExistsError):
        write_affectnet_layout(tmp_path / "a", n_train=16, n_test=0, workers=1)


def test_damaged_sources_are_skipped_and_named(tmp_path):
    root = tmp_path / "AffectNet"
    write_affectnet_layout(root, n_train=40, n_test=0, sides=(32, 48), workers=1)
    damaged = damage_sources(root)
    cfg = DataConfig(source="affectnet", root=str(root), class_set="affectnet8",
                     image_size=32, channels=3, val_fraction=0.1)
    bundle = load_bundle(cfg, seed=0)
    skipped = [p for p, _ in bundle.train.skipped]
    assert len(bundle.train) + len(bundle.val) == 37 and len(skipped) == 3
    for rel, _ in damaged:
        assert any(p.endswith(rel) for p in skipped), rel
    assert any("skipped 3 unusable" in (n or "") for n in bundle.notes)


def test_landmark_template_in_unit_box():
    t = landmark_template()
    assert t.shape == (68, 2) and t.min() >= 0.0 and t.max() <= 1.0


def test_first_batch_does_not_decode_the_whole_split(tmp_path):
    """The training shuffle runs on rows before decoding: drawing one batch from 3000 rows
    must not read them all. Before, the shuffle buffer (N decoded images: 43 GB for
    AffectNet at 112 px) filled first, so one unreadable file anywhere failed the first
    batch, and memory grew by a decoded image per row."""
    import tensorflow as tf

    from ferkeras.data.pipeline import make_dataset

    good = tmp_path / "good.jpg"
    Image.new("RGB", (24, 24), (90, 40, 10)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    paths = np.array([str(good)] * 2999 + [str(bad)])
    split = Split(labels=np.zeros(3000, np.int32), paths=paths)
    cfg = DataConfig(source="folder", root=str(tmp_path), image_size=16, channels=1)
    ds = make_dataset(split, cfg, batch_size=4, shuffle=True, seed=3, augment="weak")
    images, labels, index = next(iter(ds))
    assert images.shape == (4, 16, 16, 1)
    assert 2999 not in index.numpy()
    # The unshuffled stream (evaluation order) still reaches the bad row and says so.
    with pytest.raises(tf.errors.InvalidArgumentError):
        for _ in make_dataset(split, cfg, batch_size=1000):
            pass


def test_shuffle_order_unchanged_by_moving_it(tmp_path):
    """In-memory rows come out in the permutation the seed fixes (resume depends on it)."""
    from ferkeras.data.pipeline import make_dataset

    images = np.arange(64, dtype=np.uint8).reshape(64, 1, 1, 1) * np.ones((1, 4, 4, 1), np.uint8)
    split = Split(labels=np.zeros(64, np.int32), images=images)
    cfg = DataConfig(image_size=4, channels=1)
    a = np.concatenate([b[2].numpy() for b in make_dataset(split, cfg, batch_size=8,
                                                           shuffle=True, seed=5)])
    b = np.concatenate([b[2].numpy() for b in make_dataset(split, cfg, batch_size=8,
                                                           shuffle=True, seed=5)])
    firsts = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in make_dataset(
        split, cfg, batch_size=8, shuffle=True, seed=5)])
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(64))
    assert not np.array_equal(a, np.arange(64))
    assert np.array_equal(firsts, a.astype(np.float32))  # images travel with their index


# ----------------------------------------------------------------------------- recipe keys
def test_precision_and_jit_keys_validate():
    r = recipe_from_dict({"train": {"precision": "mixed_bfloat16", "jit_compile": True}})
    assert r.train.precision == "mixed_bfloat16" and r.train.jit_compile is True
    with pytest.raises(RecipeError, match="train.precision.*Received: 'bfloat16'"):
        recipe_from_dict({"train": {"precision": "bfloat16"}})
    with pytest.raises(RecipeError, match="train.jit_compile.*must be bool"):
        recipe_from_dict({"train": {"jit_compile": "yes"}})
    # XLA cannot compile the cycle's step (dynamic shapes): refused up front, not mid-run.
    with pytest.raises(RecipeError, match="train.jit_compile.*cycle.enabled"):
        recipe_from_dict({"train": {"jit_compile": True}, "cycle": {"enabled": True}})


def test_mixed_precision_keeps_logits_ema_and_tables_float32():
    import keras

    from ferkeras.models import build_network
    from ferkeras.trainers.cycle import CycleTrainer
    from ferkeras.training.recipe import ModelConfig
    from ferkeras.training.strategy import precision_policy

    with precision_policy("mixed_bfloat16"):
        net = build_network(ModelConfig(backbone="small_cnn", width=4), input_shape=(16, 16, 1),
                            num_classes=3)
        trainer = CycleTrainer(net, num_classes=3, num_samples=10, ema_decay=0.9)
        trainer.compile(optimizer=keras.optimizers.SGD(0.01))
        trainer.build_state((16, 16, 1))
    assert keras.config.dtype_policy().name == "float32"  # restored
    assert net.layers[1].compute_dtype == "bfloat16"
    out = net(np.zeros((2, 16, 16, 1), np.float32))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    ema_out = trainer.ema_network(np.zeros((2, 16, 16, 1), np.float32))
    assert keras.backend.standardize_dtype(ema_out.dtype) == "float32"
    for v in (trainer.labelled_mask, trainer.clean_prob, trainer.model_prior,
              trainer.log_prior, trainer.ema_updates, *trainer.ema_network.weights):
        assert v.dtype == "float32", v.name
    with pytest.raises(ValueError, match="Received: precision='float16'"), \
            precision_policy("float16"):
        pass


def test_predict_probs_compiled_pass_matches_eager_and_frees_the_network():
    import gc
    import weakref

    import keras

    from ferkeras.data.pipeline import make_dataset
    from ferkeras.models import build_network
    from ferkeras.training.passes import predict_probs

    images = np.random.default_rng(0).integers(0, 256, (37, 16, 16, 1), dtype=np.uint8)
    split = Split(labels=np.zeros(37, np.int32), images=images)
    ds = make_dataset(split, DataConfig(image_size=16, channels=1), batch_size=16)
    net = build_network("small_cnn", width=4, input_shape=(16, 16, 1), num_classes=3)
    probs, index = predict_probs(net, ds)
    eager = keras.ops.convert_to_numpy(keras.ops.softmax(net(images.astype(np.float32))))
    assert probs.dtype == np.float32 and index.tolist() == list(range(37))
    np.testing.assert_allclose(probs, eager, atol=1e-5)
    # New weights in the same network are seen without a retrace.
    net.set_weights([w * 0.5 for w in net.get_weights()])
    eager = keras.ops.convert_to_numpy(keras.ops.softmax(net(images.astype(np.float32))))
    np.testing.assert_allclose(predict_probs(net, ds)[0], eager, atol=1e-5)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None  # the cached pass does not keep its network alive


def test_unique_draws_link_the_rest_and_damage_spares_the_links(tmp_path):
    import os

    root = tmp_path / "AffectNet"
    info = write_affectnet_layout(root, n_train=30, n_test=0, sides=(32, 40), workers=1,
                                  unique=10)
    assert info["n_unique"] == 10 and sum(info["train_counts"].values()) == 30
    lines = (root / "Manually_Annotated_file_lists/training.csv").read_text().splitlines()[1:]
    assert len({row.split(",", 1)[0] for row in lines}) == 30
    assert [r.split(",", 1)[1] for r in lines[10:20]] == [r.split(",", 1)[1] for r in lines[:10]]
    first = root / "Manually_Annotated_Images" / lines[0].split(",", 1)[0]
    assert os.stat(first).st_nlink == 3
    damage_sources(root, within=10)
    from ferkeras.data.affectnet import read_affectnet_official
    from ferkeras.labels import get_class_names

    splits, _ = read_affectnet_official(root, class_names=get_class_names("affectnet8"),
                                        face_margin=0.1)
    assert len(splits["train"].skipped) == 3 and len(splits["train"]) == 27  # links intact


def test_cycle_fit_on_an_indexed_stream_does_not_read_it_first():
    """training.py hands CycleTrainer.fit the phase's (views, label, index) stream, capped at
    steps_per_epoch. Reading it to count samples cost a whole extra pass over every epoch of
    the phase (decode + both views) and failed outright on a capped stream."""
    import keras
    import tensorflow as tf

    from ferkeras.models import build_network
    from ferkeras.trainers.cycle import CycleTrainer

    reads = []

    def gen():
        for step in range(50):
            reads.append(step)
            x = np.full((8, 16, 16, 1), step, np.float32)
            yield (x, x), np.zeros(8, np.int32), np.arange(8, dtype=np.int32) + 8 * (step % 4)

    spec = ((tf.TensorSpec((8, 16, 16, 1)), tf.TensorSpec((8, 16, 16, 1))),
            tf.TensorSpec((8,), tf.int32), tf.TensorSpec((8,), tf.int32))
    stream = tf.data.Dataset.from_generator(gen, output_signature=spec)
    net = build_network("small_cnn", width=4, input_shape=(16, 16, 1), num_classes=3)
    trainer = CycleTrainer(net, num_classes=3, num_samples=64)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01))
    trainer.build_state((16, 16, 1))
    trainer.set_class_prior(np.ones(3))
    trainer.fit(stream, epochs=1, steps_per_epoch=2, verbose=0)
    assert len(reads) <= 4  # the two steps (plus what prefetch pulls), not all 50 batches


def test_auto_precision_follows_native_bfloat16():
    from ferkeras.training.strategy import cpu_has_bf16, resolve_precision

    assert cpu_has_bf16("flags : fpu avx512f avx512_bf16 avx512_vnni")
    assert cpu_has_bf16("flags : fpu amx_bf16 amx_tile")
    assert not cpu_has_bf16("flags : fpu avx2 avx512f")
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") in ("float32", "mixed_bfloat16")
    with pytest.raises(ValueError, match="Received: precision='bf16'"):
        resolve_precision("bf16")
