"""Base of the handlers that score a whole ``EmbeddingEvaluator`` run at once (zero-shot, retrieval).

It gathers, per iteration, the items' dataset ``index`` and the evaluator's ``image_embedding`` (and
``text_embedding`` when the batch had reports), and calls :meth:`finish` at the end of the epoch with everything in
dataset order, before per-epoch logging so that what ``finish`` puts into ``engine.state.metrics`` is logged.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events

__all__ = ["EmbeddingCollector"]


class EmbeddingCollector:
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._finish)

    def _reset(self, engine: Engine) -> None:
        self._indices: list[int] = []
        self._images: list[torch.Tensor] = []
        self._texts: list[torch.Tensor] = []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        self._indices += [int(i) for i in torch.as_tensor(engine.state.batch["index"]).reshape(-1)]
        self._images.append(output["image_embedding"].detach().float().cpu())
        if "text_embedding" in output:
            self._texts.append(output["text_embedding"].detach().float().cpu())

    def _finish(self, engine: Engine) -> None:
        order = sorted(range(len(self._indices)), key=self._indices.__getitem__)
        images = torch.cat(self._images)[order]
        texts = torch.cat(self._texts)[order] if len(self._texts) == len(self._images) else None
        self.finish(engine, [self._indices[i] for i in order], images, texts)

    def finish(self, engine: Engine, indices: list[int], images: torch.Tensor, texts: torch.Tensor | None) -> None:
        """``indices`` (dataset order), ``images`` ``(N, E)``, ``texts`` ``(N, E)`` or None."""
        raise NotImplementedError
