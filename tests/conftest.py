"""Test-session setup: quiet TF, a private KERAS_HOME, and 2 logical CPU devices so
MirroredStrategy can run with 2 replicas on a CPU-only machine.

If the 2 logical devices cannot be created (TF was initialised before this hook, e.g. by a
plugin), the session does not hide it: the report header says why, and every test that asks
for the `two_cpu_devices` fixture fails with that reason instead of quietly checking less.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="ferkeras-keras-home-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

LOGICAL_CPUS = 2
_device_setup_error: str | None = None


def pytest_configure(config):
    global _device_setup_error
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * LOGICAL_CPUS
        )
    except RuntimeError as err:  # TF already initialised: fine only if the devices exist
        have = len(tf.config.list_logical_devices("CPU"))
        if have < LOGICAL_CPUS:
            _device_setup_error = (f"could not create {LOGICAL_CPUS} logical CPU devices "
                                   f"(have {have}): {err}")


def pytest_report_header(config):
    return f"logical CPU devices: {_device_setup_error or f'{LOGICAL_CPUS}, set up'}"


def _two_device_names() -> list[str]:
    import tensorflow as tf

    if _device_setup_error:
        pytest.fail(_device_setup_error)
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < LOGICAL_CPUS:
        pytest.fail(f"expected {LOGICAL_CPUS} logical CPU devices, found {names}")
    return names[:LOGICAL_CPUS]


@pytest.fixture
def two_cpu_devices() -> list[str]:
    """Names of the 2 logical CPU devices; fails the test, with the reason, without them."""
    return _two_device_names()


_MIRRORED = []


@pytest.fixture
def mirrored_strategy():
    """ONE `MirroredStrategy` over the 2 logical CPUs for the whole session.

    Every MirroredStrategy numbers its collective instances from the same start, and the
    process-wide collective executor remembers each instance's tensor shape: a second
    strategy whose model differs from the first's aborts its all-reduce with "Shape mismatch
    in the collective instance" (and the abort poisons every later collective). Sharing one
    strategy keeps the instance keys increasing across tests.
    """
    import tensorflow as tf

    names = _two_device_names()
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(names))
    return _MIRRORED[0]


def make_toy_bundle(*, n_train=512, n_val=128, size=16, seed=0, noise=0.0):
    """A tiny 8-class bundle (AffectNet names) that a small CNN separates in a few epochs,
    with `noise` of the training labels flipped to another class, drawn uniformly
    (known truth).

    The class is coded by the image's brightness (level 22 + 26 * class under uniform noise
    of amplitude 40), which flips and shifts, the weak augmentation, keep: a class code by
    position would be scrambled by the cycle's weak views. Val and test are clean.
    Returns (bundle, is_noisy (n_train,) bool).
    """
    from ferkeras.data.table import DatasetBundle, Split
    from ferkeras.labels import get_class_names

    r = np.random.default_rng(seed)
    num_classes = 8

    def draw(n):
        labels = r.permutation(np.arange(n) % num_classes)
        images = r.uniform(0, 40, size=(n, size, size, 1)) + (22 + 26 * labels)[:, None, None,
                                                                                 None]
        return labels, np.clip(images, 0, 255).astype(np.uint8)

    truth, images = draw(n_train)
    is_noisy = r.random(n_train) < noise
    given = np.where(is_noisy, (truth + r.integers(1, num_classes, n_train)) % num_classes,
                     truth)
    lv, iv = draw(n_val)
    lt, it = draw(n_val)
    bundle = DatasetBundle(
        class_names=get_class_names("affectnet8"),
        train=Split(labels=given, images=images, true_labels=truth),
        val=Split(labels=lv, images=iv, true_labels=lv),
        test=Split(labels=lt, images=it, true_labels=lt),
        source="toy",
    )
    return bundle, is_noisy


@pytest.fixture
def toy_bundle(monkeypatch):
    """Make `train_recipe` train on `make_toy_bundle(**kwargs)`; returns that function's
    result. (The recipe still names a source; the loader is replaced for this test only.)"""
    import ferkeras.data.sources as sources

    def install(**kwargs):
        bundle, is_noisy = make_toy_bundle(**kwargs)
        monkeypatch.setattr(sources, "load_bundle", lambda *a, **k: bundle)
        return bundle, is_noisy

    return install
