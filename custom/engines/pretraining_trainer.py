"""What every pre-training method's trainer shares (T3D and the image-only baselines): the MONAI ``Trainer`` set-up,
the DDP sampler's epoch, the optional progress bar, and one optimisation step around a method-specific loss."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar
from monai.engines import Trainer
from monai.utils import ensure_tuple
from torch.utils.data import DataLoader, DistributedSampler

from custom.engines.finite_loss import batch_sources, check_finite_loss

__all__ = ["PretrainingTrainer", "step_terms"]


def step_terms(output: list | dict) -> dict:
    """``engine.state.output`` of a pre-training step -> its dict of floats.

    The trainers store ``[terms]``: a one-element list is the decollated form MONAI's default tracking handlers read
    (``from_engine(["loss"], first=True)`` under ``--tracking mlflow``); a bare dict is accepted too."""
    return output[0] if isinstance(output, list) else output


class PretrainingTrainer(Trainer):
    """A MONAI ``Trainer`` whose step is: ``network.train()``, zero the gradients, :meth:`_loss` (the method's loss
    tensor and its terms as floats), stop on a non-finite loss naming the batch's files, backward (scaled for float16
    autocast on CUDA), clip the gradient norm to ``gradient_clip``, optimiser step. ``state.output`` is ``[terms]``.

    Subclasses implement :meth:`_loss`; :meth:`_attach_before_handlers` registers event handlers that must run
    before the config's ``train_handlers`` at the same event. ``amp`` autocasts with ``amp_dtype`` (bfloat16 needs
    no loss scaling). ``progress_bar`` (default: when stdout is a terminal) shows a tqdm bar per epoch with
    ``progress_terms(state.output)``.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch_length: int | None = None,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        gradient_clip: float | None = 1.0,
        train_handlers: Sequence | None = None,
        progress_bar: bool | None = None,
        progress_terms: Callable[[list | dict], dict] = step_terms,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            amp=amp,
            decollate=False,
        )
        self.network = network
        self.optimizer = optimizer
        self.amp_dtype = getattr(torch, amp_dtype)
        self.gradient_clip = gradient_clip
        self._attach_before_handlers()
        if train_handlers:
            self._register_handlers(ensure_tuple(train_handlers))
        sampler = getattr(train_data_loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            self.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch))
        if progress_bar if progress_bar is not None else sys.stdout.isatty():
            ProgressBar(persist=False).attach(self, output_transform=progress_terms)

    def _attach_before_handlers(self) -> None:
        """Event handlers that must precede the config's handlers at the same event (none here)."""

    def _loss(self, batchdata: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's loss for one batch and its terms (floats, including ``loss``) for ``state.output``."""
        raise NotImplementedError

    def _iteration(self, engine: PretrainingTrainer, batchdata: dict) -> list[dict]:
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss, terms = engine._loss(batchdata)
        check_finite_loss(
            loss, engine.state.iteration, batch_sources(batchdata, getattr(engine.data_loader, "dataset", None))
        )
        on_cuda = loss.device.type == "cuda"
        scaler = engine.scaler if engine.amp and engine.amp_dtype == torch.float16 and on_cuda else None
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(engine.optimizer)
        else:
            loss.backward()
        if engine.gradient_clip:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.gradient_clip)
        if scaler is not None:
            scaler.step(engine.optimizer)
            scaler.update()
        else:
            engine.optimizer.step()
        return [terms]
