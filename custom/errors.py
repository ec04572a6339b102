"""The ground floor's errors: what every package of ``custom/`` (and the tooling) raises as a one-line diagnosis.

:class:`OneLineError` is the one base the runtime's error hook (:mod:`custom.runtime.errors`) recognises, so a new
one-line error needs no registration: derive from it (next to the built-in base callers already catch, e.g.
``ValueError``) and its message is printed as the run's last line. :class:`DataError` lives here rather than in
``custom.data`` because the lowest layers (transforms, volume checks) raise it too.
"""

from __future__ import annotations

__all__ = ["OneLineError", "DataError", "WeightTransferError"]


class OneLineError(Exception):
    """An error whose message is a complete one-line diagnosis: the file or key, what was expected, what was found."""


class DataError(OneLineError, ValueError):
    """A problem with input data; the message is one line naming the source, the expectation and the finding."""


class WeightTransferError(OneLineError, RuntimeError):
    """Pre-trained weights could not initialise the encoder; the message says which checkpoint and why. Here because
    the networks (which part is the encoder) and the weights (the transfer itself) both raise it."""
