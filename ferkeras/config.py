"""The typed-field helper every recipe section uses, import-light (no Keras, no YAML).

A section is a dataclass whose fields carry their documentation and limits:

    @dataclasses.dataclass
    class PNPConfig:
        eta: float = field(0.5, "Weight of JS in the OOD target.", min=0.0, max=1.0)

`ferkeras.training.recipe` validates every key against this metadata (type, `choices`,
`min`, `max`) and `ferkeras recipe-doc` prints the docs. Method sections live beside their
method (`ferkeras.methods.<name>`), the rest in `ferkeras.training.recipe`.
"""

from __future__ import annotations

import dataclasses


def field(default, doc, *, choices=None, min=None, max=None, factory=None):
    """A dataclass field with its doc and limits. `choices`: a tuple, or a callable that
    returns the names of a registry (read when a recipe is validated)."""
    meta = {"doc": doc, "choices": choices, "min": min, "max": max}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_choices(meta) -> tuple | None:
    """A field's allowed values: a tuple, or read from its name table (a callable)."""
    choices = meta.get("choices")
    return tuple(choices()) if callable(choices) else choices
