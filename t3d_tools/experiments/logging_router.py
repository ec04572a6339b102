"""Where a run's output goes: :func:`logged_to` sends this process's logging, stdout and stderr to one run's log file
while it executes, through a single stream router that loggers created during the run stay bound to."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys

__all__ = ["logged_to"]


class _StreamRouter(io.TextIOBase):
    """A stream that writes wherever ``target`` points now. Loggers that MONAI and ignite create during a run bind to
    ``sys.stdout`` as it is then; binding them to this router keeps them writing to the current run's log (and to
    the console between runs) instead of to a closed file."""

    def __init__(self) -> None:
        super().__init__()
        self.target = sys.stdout

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False


_ROUTER = _StreamRouter()


@contextlib.contextmanager
def logged_to(path: str):
    """Send this process's logging, stdout and stderr to ``path`` while a run executes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_streams = sys.stdout, sys.stderr
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(_ROUTER)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        root.handlers, root.level = [handler], logging.INFO
        _ROUTER.target = log
        sys.stdout = sys.stderr = _ROUTER
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved_streams
            _ROUTER.target = saved_streams[0]
            root.handlers, root.level = saved_handlers, saved_level
