"""Name tables that must load without Keras: the supervised losses.

Each kind of name has one table; the recipe's allowed values and the builders both read it.
The other kinds live beside their builders, which are import-light too:
`ferkeras.data.sources` (sources), `ferkeras.models` (backbones), `ferkeras.noise.selection`
(selectors), `ferkeras.methods` (the methods of the noisy rows, `cycle.method`) and
`ferkeras.labels` (class sets).
"""

from __future__ import annotations

# name -> meaning; the Keras loss objects are `ferkeras.losses` (imports Keras).
LOSSES: dict[str, str] = {
    "ce": "softmax cross-entropy",
    "logit_adjusted": "logit-adjusted cross-entropy (Menon et al.), temperature train.tau",
    "balanced_softmax": "balanced softmax (Ren et al.)",
    "class_balanced": "class-balanced weights by effective number (Cui et al.), train.cb_beta",
}


def list_losses() -> list[str]:
    """Names of the supervised losses (`train.loss`), in table order."""
    return list(LOSSES)
