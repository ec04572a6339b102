"""One-line errors as the last line a bundle run prints.

``python -m monai.bundle run`` wraps every exception raised while it evaluates a config in
``RuntimeError("Failed to evaluate ConfigExpression ...")``, so the project's own one-line messages (a bad volume,
a NaN loss, an unloadable checkpoint, an unknown override) end up in the middle of a long traceback.
:func:`install_error_hook`, the first ``initialize`` item of every bundle config, replaces ``sys.excepthook`` for the
rest of the process: when the uncaught exception, or any exception in its ``__cause__``/``__context__`` chain, is a
:class:`custom.errors.OneLineError` (the one base of every one-line error, so no list of types is kept here), the run
prints the traceback only with ``T3D_TRACEBACK=1`` and ends with the line ``error: <message>``; the exit status
stays 1 (when other threads are alive the process ends right after that line, before an interpreter teardown that
could abort natively: :func:`_exit_before_teardown_if_threads_run`). Any other exception keeps Python's full
traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import traceback
from types import TracebackType

from custom.errors import OneLineError

__all__ = ["install_error_hook", "one_line_message"]

#: OS errors that name a file and are the whole diagnosis: a read-only folder, a full disk, ``ulimit -f``
_ONE_LINE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def one_line_message(error: BaseException) -> str | None:
    """The message of the first :class:`~custom.errors.OneLineError` in ``error``'s chain, or None.

    A ``DataLoader`` worker re-raises its exception with the worker's traceback inside the message; the diagnosis is
    then that message's last line, without its ``module.Class:`` prefix."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ONE_LINE_ERRNOS and current.filename:
            files = " -> ".join(str(f) for f in (current.filename, current.filename2) if f)
            return f"{files}: expected a writable file or folder, found {current.strerror}"
        if isinstance(current, OneLineError):
            lines = [line.strip() for line in str(current).strip().splitlines() if line.strip()]
            if not lines:
                return type(current).__name__
            last = lines[-1]
            prefix = f"{type(current).__module__}.{type(current).__name__}: "
            return last[len(prefix) :] if last.startswith(prefix) else last
        current = current.__cause__ or current.__context__
    return None


def _hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    message = one_line_message(error)
    if message is None or os.environ.get("T3D_TRACEBACK"):
        traceback.print_exception(kind, error, tb)
    if message is not None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        _exit_before_teardown_if_threads_run()


def _exit_before_teardown_if_threads_run() -> None:
    """End the process now (status 1) when other threads are alive, so the error line stays the last thing printed.

    A loader thread may still be inside native code when the main thread's error ends the run (MONAI's
    ``CacheDataset`` fills its cache in a ``ThreadPool`` whose ``terminate()`` does not wait for the item being
    loaded). At interpreter teardown such a daemon thread is unwound through torch's C++ frames and the process
    aborts with ``terminate called without an active exception`` (exit 134) after the error line, some of the
    time. Log handlers and the standard streams are flushed first; with no other thread the normal exit follows."""
    if threading.active_count() <= 1:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed stream: nothing to flush
            pass
    os._exit(1)


def install_error_hook() -> bool:
    """Install the hook (idempotent); returns True so a config can list it as an ``initialize`` expression."""
    sys.excepthook = _hook
    return True
