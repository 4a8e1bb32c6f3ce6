"""Models shipped inside the package: `ferkeras predict` needs no download and no `--model`.

Each sub-folder is an export folder (`model.onnx` + `metadata.json`, see
`ferkeras.deploy.inference`) with its `MODEL_CARD.md`. `ferkeras ship EXPORT_DIR` (the
`ferkeras.commands.ship_model` command) quantizes an export to int8 and installs it here.
"""

from __future__ import annotations

import os
import pathlib

SHIPPED_NAME = "ferplus8"
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / SHIPPED_NAME
MODEL_ENV = "FERKERAS_MODEL"


def shipped_model() -> pathlib.Path | None:
    """The shipped model's folder, or None when this install has none (a source tree before
    `ferkeras ship` has run)."""
    if (SHIPPED_DIR / "model.onnx").is_file() and (SHIPPED_DIR / "metadata.json").is_file():
        return SHIPPED_DIR
    return None


def default_model(model: str | os.PathLike | None = None) -> tuple[pathlib.Path | None, str]:
    """(folder, where it came from) of the model to use: `model` if given, else
    $FERKERAS_MODEL, else the shipped model; (None, reason) when there is none."""
    if model:
        return pathlib.Path(model), "--model"
    env = os.environ.get(MODEL_ENV)
    if env:
        return pathlib.Path(env), f"${MODEL_ENV}"
    shipped = shipped_model()
    if shipped is not None:
        return shipped, "shipped"
    return None, (f"no model: this ferkeras has no shipped model in {SHIPPED_DIR}; pass "
                  f"--model EXPORT_DIR (or set ${MODEL_ENV}); `make export` writes one from "
                  "your own training run")
