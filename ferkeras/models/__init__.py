"""Networks: the backbone registry (`backbones.py`). `list_models()` is import-light;
`build_network` imports Keras."""

from ferkeras.models.backbones import BN_MOMENTUM, build_network, describe_models, list_models

__all__ = ["BN_MOMENTUM", "build_network", "describe_models", "list_models"]
