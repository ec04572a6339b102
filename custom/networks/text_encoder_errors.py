"""The text encoder's one-line error, apart from the encoder so that the runtime of every bundle (segmentation and
classification too) can catch it without importing ``transformers``."""

from __future__ import annotations

__all__ = ["TextEncoderLoadError"]


class TextEncoderLoadError(OSError):
    """The text encoder (``text_encoder_name``) could not be loaded; one line naming it and the reason."""
