"""Backbone registry. `list_models()` is import-light; building imports Keras.

Every network takes float32 pixels in [0, 255] of shape (H, W, C) and returns logits (K,).
The rescaling to the backbone's range is baked into the network, so exported models and the
predictor need no separate preprocessing beyond resize and channel conversion.
"""

from __future__ import annotations

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


def build_network(model_cfg, *, input_shape, num_classes: int, seed: int = 0):
    """Build a functional `keras.Model` mapping pixels in [0, 255] to logits.

    model_cfg: a `ferkeras.recipe.ModelConfig`. input_shape: (H, W, C).
    """
    import keras

    name = model_cfg.backbone
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backbone {name!r}. Valid backbones: {list_models()}")
    if model_cfg.weights == "imagenet" and name not in ("mobilenetv3small", "efficientnetv2b0"):
        raise ValueError(
            f"weights='imagenet' needs a keras.applications backbone. Received: backbone={name}"
        )
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    builder = {
        "small_cnn": _small_cnn,
        "vgg4": _vgg4,
        "resnet18": _resnet18,
        "mobilenetv3small": _applications,
        "efficientnetv2b0": _applications,
    }[name]
    features = builder(inputs, model_cfg)
    x = keras.layers.Dropout(model_cfg.dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    network = keras.Model(inputs, logits, name=name)
    if model_cfg.weights and model_cfg.weights != "imagenet":
        network.load_weights(model_cfg.weights)
    return network


def _conv_bn(x, filters, name, strides=1):
    import keras

    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=name + "_conv"
    )(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_bn")(x)
    return keras.layers.ReLU(name=name + "_relu")(x)


def _small_cnn(inputs, cfg):
    import keras

    w = cfg.width
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((w, 2 * w, 4 * w)):
        x = _conv_bn(x, filters, f"block{i}a")
        x = _conv_bn(x, filters, f"block{i}b")
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    return keras.layers.GlobalAveragePooling2D(name="gap")(x)


def _vgg4(inputs, cfg):
    import keras

    w = cfg.width
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((w, 2 * w, 4 * w, 8 * w)):
        x = _conv_bn(x, filters, f"block{i}a")
        x = _conv_bn(x, filters, f"block{i}b")
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(4 * w, activation="relu", name="fc")(x)
    return x


def _resnet18(inputs, cfg):
    import keras

    w = max(cfg.width, 16)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn(x, w, "stem")
    for stage, (filters, stride) in enumerate(((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2))):
        for block in range(2):
            s = stride if block == 0 else 1
            name = f"stage{stage}_block{block}"
            shortcut = x
            y = _conv_bn(x, filters, name + "_a", strides=s)
            y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=name + "_b_conv")(y)
            y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_b_bn")(y)
            if s != 1 or shortcut.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=s, use_bias=False,
                                               name=name + "_proj")(shortcut)
                shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                           name=name + "_proj_bn")(shortcut)
            x = keras.layers.Add(name=name + "_add")([y, shortcut])
            x = keras.layers.ReLU(name=name + "_out")(x)
    return keras.layers.GlobalAveragePooling2D(name="gap")(x)


def _applications(inputs, cfg):
    import keras

    x = inputs
    if inputs.shape[-1] == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    weights = "imagenet" if cfg.weights == "imagenet" else None
    if cfg.backbone == "mobilenetv3small":
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
