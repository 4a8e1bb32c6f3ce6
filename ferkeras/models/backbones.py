"""Backbone registry. `list_models()` is import-light; building imports Keras.

Every network takes float32 pixels in [0, 255] of shape (H, W, C) and returns logits (K,).
The rescaling to the backbone's range is baked into the network, so exported models and the
predictor need no separate preprocessing beyond resize and channel conversion.
"""

from __future__ import annotations

import random

# Keras's default 0.99 leaves the moving statistics far from the data after the few hundred
# steps of a CPU-sized run, and inference-mode predictions collapse to one class.
BN_MOMENTUM = 0.9

_REGISTRY: dict[str, str] = {
    "small_cnn": "3 conv blocks, ~0.3M params at width 32; fast on CPU.",
    "vgg4": "4-block VGG-style CNN, ~1.2M params at width 32; the FER2013 bench model.",
    "resnet18": "ResNet-18 (basic blocks, 2-2-2-2), stem adapted to small faces.",
    "mobilenetv3small": "keras.applications MobileNetV3Small; weights: imagenet optional.",
    "efficientnetv2b0": "keras.applications EfficientNetV2B0; weights: imagenet optional.",
}


def list_models() -> list[str]:
    """Names of the registered backbones."""
    return sorted(_REGISTRY)


def describe_models() -> dict[str, str]:
    return dict(_REGISTRY)


def build_network(name, *, num_classes: int, input_shape=(48, 48, 1), width: int = 32,
                  dropout: float = 0.2, weights: str = "", seed: int = 0):
    """Build a functional `keras.Model` mapping pixels in [0, 255] to logits (B, K).

    As in timm and keras-hub, the backbone is named: `build_network("resnet18",
    num_classes=7, input_shape=(48, 48, 1))`; `list_models()` gives the names.

    Args:
        name: a registered backbone (see `list_models()`), or a
        `ferkeras.training.recipe.ModelConfig`
            (the recipe path), whose backbone, width, dropout and weights then apply.
        num_classes: K, the number of logits.
        input_shape: (H, W, C) of the input images.
        width: base channel width of the in-house CNNs (small_cnn, vgg4, resnet18).
        dropout: dropout rate before the classifier.
        weights: "" (random), "imagenet" (keras.applications backbones, downloads) or a path
            to a `.weights.h5` file.
        seed: seeds every initialiser and the dropout layer. The global random state
            (Python, NumPy, TensorFlow) is left as it was.
    """
    import keras

    if not isinstance(name, str):  # a recipe's ModelConfig
        cfg = name
        name, width, dropout, weights = cfg.backbone, cfg.width, cfg.dropout, cfg.weights
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backbone {name!r}. Valid backbones: {list_models()}. "
                         f"Received: name={name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C). Received: input_shape={input_shape}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int. Received: width={width!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    if weights == "imagenet" and name not in ("mobilenetv3small", "efficientnetv2b0"):
        raise ValueError(
            f"weights='imagenet' needs a keras.applications backbone. Received: backbone={name}"
        )
    init = _Seeds(seed)
    inputs = keras.Input(shape=input_shape, name="image")
    builder = {
        "small_cnn": _small_cnn,
        "vgg4": _vgg4,
        "resnet18": _resnet18,
        "mobilenetv3small": _applications,
        "efficientnetv2b0": _applications,
    }[name]
    features = builder(inputs, name=name, width=width, weights=weights, init=init)
    x = keras.layers.Dropout(dropout, seed=init.next(), name="head_dropout")(features)
    # float32 head: logits (and every softmax, loss and table fed from them) stay float32
    # under a mixed-precision policy (train.precision); a no-op under float32.
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32",
                                **init.dense())(x)
    network = keras.Model(inputs, logits, name=name)
    if builder is _applications and weights != "imagenet":
        _reseed_random_init(network, init)
    if weights and weights != "imagenet":
        network.load_weights(weights)
    return network


class _Seeds:
    """Distinct, reproducible seeds for each initialiser of one network.

    A private `random.Random(seed)` draws them the way Keras draws an unseeded
    initialiser's seed (`randint(1, 1e9)` in construction order), so the in-house networks
    get the same weights as under `keras.utils.set_random_seed(seed)`, which this module
    used to call, without touching the global random state.
    """

    def __init__(self, seed: int):
        self.rng = random.Random(int(seed))

    def next(self) -> int:
        return self.rng.randint(1, int(1e9))

    def conv(self) -> dict:
        import keras

        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=self.next())}

    def dense(self) -> dict:
        return self.conv()


_INITIALIZED = (("kernel", "kernel_initializer"), ("kernel", "depthwise_initializer"),
                ("pointwise_kernel", "pointwise_initializer"), ("bias", "bias_initializer"))


def _reseed_random_init(model, init: _Seeds) -> None:
    """Redraw every kernel of a keras.applications model from a seeded initialiser.

    Those builders take no initialiser seeds; a fresh seeded draw of each layer's own
    initialiser makes the network reproducible without touching the global random state.
    """
    import keras

    for layer in _all_layers(model):
        for attr, init_attr in _INITIALIZED:
            var = getattr(layer, attr, None)
            initializer = getattr(layer, init_attr, None)
            if var is None or initializer is None or not hasattr(var, "assign"):
                continue
            config = keras.initializers.serialize(initializer)
            fresh = keras.initializers.deserialize(config)
            if hasattr(fresh, "seed"):
                fresh.seed = init.next()
            var.assign(fresh(var.shape, dtype=var.dtype))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _conv_bn(x, filters, name, init, strides=1):
    import keras

    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=name + "_conv",
        **init.conv()
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_bn")(x)
    return keras.layers.ReLU(name=name + "_relu")(x)


def _small_cnn(inputs, *, width, init, **_):
    import keras

    w = width
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((w, 2 * w, 4 * w)):
        x = _conv_bn(x, filters, f"block{i}a", init)
        x = _conv_bn(x, filters, f"block{i}b", init)
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    return keras.layers.GlobalAveragePooling2D(name="gap")(x)


def _vgg4(inputs, *, width, init, **_):
    import keras

    w = width
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((w, 2 * w, 4 * w, 8 * w)):
        x = _conv_bn(x, filters, f"block{i}a", init)
        x = _conv_bn(x, filters, f"block{i}b", init)
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(4 * w, activation="relu", name="fc", **init.dense())(x)
    return x


def _resnet18(inputs, *, width, init, **_):
    import keras

    w = max(width, 16)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn(x, w, "stem", init)
    for stage, (filters, stride) in enumerate(((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2))):
        for block in range(2):
            s = stride if block == 0 else 1
            name = f"stage{stage}_block{block}"
            shortcut = x
            y = _conv_bn(x, filters, name + "_a", init, strides=s)
            y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=name + "_b_conv", **init.conv())(y)
            y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_b_bn")(y)
            if s != 1 or shortcut.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=s, use_bias=False,
                                               name=name + "_proj", **init.conv())(shortcut)
                shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                           name=name + "_proj_bn")(shortcut)
            x = keras.layers.Add(name=name + "_add")([y, shortcut])
            x = keras.layers.ReLU(name=name + "_out")(x)
    return keras.layers.GlobalAveragePooling2D(name="gap")(x)


def _applications(inputs, *, name, weights, **_):
    import keras

    x = inputs
    if inputs.shape[-1] == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    weights = "imagenet" if weights == "imagenet" else None
    if name == "mobilenetv3small":
        # MobileNetV3 carries its own Rescaling to [-1, 1] from [0, 255].
        base = keras.applications.MobileNetV3Small(
            input_shape=tuple(x.shape[1:]), include_top=False, weights=weights,
            pooling="avg", include_preprocessing=True,
        )
    else:
        base = keras.applications.EfficientNetV2B0(
            input_shape=tuple(x.shape[1:]), include_top=False, weights=weights,
            pooling="avg", include_preprocessing=True,
        )
    return base(x)
