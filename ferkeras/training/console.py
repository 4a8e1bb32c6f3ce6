"""Progress output of a training run: Keras's bar on a terminal, one line per epoch elsewhere.

Under a pipe or a log file the bar's carriage returns write every step as its own line,
thousands of lines an epoch; Keras's `verbose=2` writes one line per epoch instead.
"""

from __future__ import annotations

import sys

VERBOSITY = ("auto", 0, 1, 2)


def progress_verbosity(verbose="auto", *, stream=None) -> int:
    """Keras's `verbose` for `fit`: 0 silent, 1 the bar, 2 one line per epoch. "auto" gives
    1 when `stream` (default: sys.stdout) is a terminal, else 2."""
    if verbose not in VERBOSITY or isinstance(verbose, bool):
        raise ValueError(f"verbose must be one of {list(VERBOSITY)}. Received: "
                         f"verbose={verbose!r}")
    if verbose != "auto":
        return int(verbose)
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if callable(isatty) and isatty() else 2
