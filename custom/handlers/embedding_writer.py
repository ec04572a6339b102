"""Handler that saves the volume embeddings an ``EmbeddingEvaluator`` produced (inference of the pre-trained
encoder)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ignite.engine import Engine, Events

__all__ = ["EmbeddingWriter"]


class EmbeddingWriter:
    """Collects ``engine.state.output["image_embedding"]`` ``(B, E)`` in dataset order and writes
    ``output_path`` (``.npz``: ``embeddings`` ``(N, E)`` float32, ``images`` ``(N,)`` source paths) at the end."""

    def __init__(self, output_path: str, image_paths: Sequence[str]) -> None:
        self.output_path = output_path
        self.image_paths = list(image_paths)
        self.embeddings: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.embeddings.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        self.embeddings.append(engine.state.output["image_embedding"].detach().cpu().numpy())

    def _write(self, engine: Engine) -> None:
        embeddings = np.concatenate(self.embeddings).astype(np.float32)
        if len(embeddings) != len(self.image_paths):
            raise RuntimeError(f"EmbeddingWriter: expected {len(self.image_paths)} embeddings, found {len(embeddings)}")
        os.makedirs(os.path.dirname(os.path.abspath(self.output_path)), exist_ok=True)
        np.savez(self.output_path, embeddings=embeddings, images=np.asarray(self.image_paths))
