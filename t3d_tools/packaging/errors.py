"""The one error of the packing step, :class:`PackError`: the other ``t3d_tools.packaging`` modules raise it and
``python -m t3d_tools.packaging`` prints it as one line (exit status 2); :func:`one_line_os_error` is how the
packaging, download and serving commands print an ``OSError`` (disk full, ``ulimit -f``, a read-only folder)."""

from custom.errors import OneLineError

__all__ = ["PackError", "one_line_os_error"]


class PackError(OneLineError, ValueError):
    """A bundle that cannot be packed as asked; the message is one line."""


def one_line_os_error(err: BaseException) -> str:
    """``<file>: <reason>`` for an ``OSError`` that names its file (never Python's ``[Errno N] ...`` form), the
    reason alone otherwise; any other exception's message as it is."""
    if isinstance(err, OSError) and err.strerror:
        files = [f for f in (err.filename, err.filename2) if f]
        return f"{' -> '.join(str(f) for f in files)}: {err.strerror}" if files else err.strerror
    return " ".join(str(err).split())
