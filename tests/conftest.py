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


@pytest.fixture
def two_cpu_devices() -> list[str]:
    """Names of the 2 logical CPU devices; fails the test, with the reason, without them."""
    import tensorflow as tf

    if _device_setup_error:
        pytest.fail(_device_setup_error)
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < LOGICAL_CPUS:
        pytest.fail(f"expected {LOGICAL_CPUS} logical CPU devices, found {names}")
    return names[:LOGICAL_CPUS]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def make_toy_bundle(*, n_train=96, n_val=32, size=16, num_classes=8, seed=0, noise=0.0):
    """Tiny learnable bundle: class id drawn as a bright square at a class-specific spot."""
    from ferkeras.data.table import DatasetBundle, Split
    from ferkeras.labels import get_class_names

    r = np.random.default_rng(seed)

    def draw(n):
        labels = np.arange(n) % num_classes
        images = r.integers(0, 60, size=(n, size, size, 1)).astype(np.uint8)
        for i, c in enumerate(labels):
            y, x = divmod(int(c), 4)
            images[i, 2 + 6 * y: 6 + 6 * y, 1 + 3 * x: 4 + 3 * x] = 250
        return labels, images

    ly, im = draw(n_train)
    noisy = ly.copy()
    flip = r.random(n_train) < noise
    noisy[flip] = (ly[flip] + 1) % num_classes
    lv, iv = draw(n_val)
    names = get_class_names("affectnet8")[:num_classes]
    return DatasetBundle(
        class_names=names,
        train=Split(labels=noisy, images=im, true_labels=ly),
        val=Split(labels=lv, images=iv, true_labels=lv),
        test=Split(labels=lv, images=iv, true_labels=lv),
        source="toy",
    )
