"""The T3D pre-training step as a MONAI ``Trainer``, so every MONAI/ignite handler attaches to it unchanged."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from custom.engines.precise_batch_norm import recompute_batch_norm_statistics
from custom.engines.pretraining_trainer import PretrainingTrainer, step_terms
from custom.losses.tcl import TextInformedContrastiveLoss
from custom.losses.tir import MaskedRestorationLoss
from custom.transforms.corruption import BlockMaskCorruption
from custom.weights.checkpoint import unwrap

__all__ = ["T3DTrainer", "loss_terms"]

logger = logging.getLogger(__name__)


def loss_terms(output: list | dict) -> dict:
    """``engine.state.output`` -> the numbers ``StatsHandler``/TensorBoard print: total, TCL and TIR losses, and the
    fraction of report pairs TCL treated as positives (``positives``)."""
    terms = step_terms(output)
    return {key: terms[key] for key in ("loss", "tcl", "tir", "positives")}


class T3DTrainer(PretrainingTrainer):
    """One step: crops ``(B, K, 1, *S)`` -> clean + corrupted crops -> TCL on the clean crops' embeddings against the
    reports, TIR on the corrupted crops restored through the interactor -> ``tcl_weight * TCL + tir_weight * TIR``.

    A zero weight skips that branch's forward pass (the paper's ablations). The engine, the optimisation step (autocast
    with ``amp_dtype``, gradient clipping, the non-finite-loss stop) and the progress bar are
    :class:`~custom.engines.pretraining_trainer.PretrainingTrainer`'s. ``state.output`` is ``[terms]``, a dict of the
    floats ``loss``, ``tcl``, ``tir``, ``temperature``, ``positives`` (read it with ``step_terms``).
    ``precise_bn_batches`` > 0 recomputes the batch-norm running statistics over that many training batches every
    ``precise_bn_every`` epochs and after the last one (:func:`recompute_batch_norm_statistics`), before any
    validation or checkpoint of that epoch.
    ``positives`` in the step's terms is the fraction of different-report pairs TCL treated as positives (from the
    loss's output dict); above ``max_positive_fraction`` the targets approach uniform (where a collapsed embedding is
    optimal) and a warning names the step (the first time, then a count at each epoch end).
    TCL gets the batch entries its ``required_batch_keys`` names (read once, at the first step). After every
    optimiser step (with TCL on) the model's temperature is clamped at its bound
    (:meth:`T3DModel.clamp_logit_scale_`), the one place it is.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        tcl_loss: TextInformedContrastiveLoss,
        tir_loss: MaskedRestorationLoss,
        corruption: BlockMaskCorruption,
        tcl_weight: float = 1.0,
        tir_weight: float = 1.0,
        epoch_length: int | None = None,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        gradient_clip: float | None = 1.0,
        train_handlers: Sequence | None = None,
        progress_bar: bool | None = None,
        method: str = "t3d",
        precise_bn_batches: int = 0,
        precise_bn_every: int = 1,
        max_positive_fraction: float = 0.5,
    ) -> None:
        if method != "t3d":  # `--method ssl_swin` without its overlay would otherwise silently train T3D
            raise ValueError(
                f"method: T3DTrainer trains 't3d', found {method!r}; stack configs/method_{method}.json on train.json"
            )
        if tcl_weight == 0 and tir_weight == 0:
            raise ValueError("tcl_weight, tir_weight: expected at least one non-zero weight, found both 0")
        self.tcl_loss = tcl_loss
        self.tir_loss = tir_loss
        self.corruption = corruption
        self.tcl_weight = tcl_weight
        self.tir_weight = tir_weight
        self.precise_bn = (precise_bn_batches, precise_bn_every)
        self.max_positive_fraction = max_positive_fraction
        self._steps_over_positive_bound = 0
        self._tcl_batch_keys: tuple[str, ...] | None = None  # read from the loss at the first step
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            epoch_length=epoch_length,
            amp=amp,
            amp_dtype=amp_dtype,
            gradient_clip=gradient_clip,
            train_handlers=train_handlers,
            progress_bar=progress_bar,
            progress_terms=loss_terms,
        )
        if tcl_weight:
            self.add_event_handler(Events.EPOCH_COMPLETED, self._report_positive_fraction)

    def _attach_before_handlers(self) -> None:
        num_batches, every = self.precise_bn
        if num_batches > 0:  # before the handlers: the validation of the same epoch end sees the new statistics
            self.add_event_handler(Events.EPOCH_COMPLETED, self._precise_batch_norm, num_batches, every)

    def _precise_batch_norm(self, engine: T3DTrainer, num_batches: int, every: int) -> None:
        epoch = engine.state.epoch
        if epoch % every and epoch != engine.state.max_epochs:
            return
        network = unwrap(engine.network)  # DDP would all-reduce gradients that are never computed here
        recompute_batch_norm_statistics(
            network, engine.data_loader, lambda batch: self._forward(network, batch), num_batches
        )

    def _check_positive_fraction(self, fraction: float) -> None:
        if fraction <= self.max_positive_fraction:
            return
        if self._steps_over_positive_bound == 0:
            logger.warning(
                f"TCL: {fraction:.2f} of report pairs are positives at iteration {self.state.iteration} "
                f"(max_positive_fraction {self.max_positive_fraction}); targets near uniform favour a collapsed "
                f"embedding: check report_affinity ('{self.tcl_loss.affinity.source}')"
            )
        self._steps_over_positive_bound += 1

    def _report_positive_fraction(self, engine: T3DTrainer) -> None:
        if self._steps_over_positive_bound:
            logger.warning(
                f"TCL: epoch {engine.state.epoch}: {self._steps_over_positive_bound} step(s) so far with more than "
                f"{self.max_positive_fraction} of report pairs as positives"
            )

    def _iteration(self, engine: T3DTrainer, batchdata: dict) -> list[dict]:
        output = super()._iteration(engine, batchdata)
        if self.tcl_weight:  # without TCL nothing trains the temperature
            unwrap(engine.network).clamp_logit_scale_()
        return output

    def _forward(self, network: torch.nn.Module, batchdata: dict) -> tuple:
        """Crops ``(B, K, 1, *S)`` -> ``(out, crops (B*K, 1, *S), mask, crop_to_report (B*K,))``."""
        crops = batchdata["image"].to(self.state.device, torch.float32, non_blocking=True)  # float16 from the loader
        batch, per_volume = crops.shape[:2]
        crops = crops.flatten(0, 1)  # (B*K, 1, *S): the K crops of volume b are rows b*K .. b*K+K-1
        crop_to_report = torch.arange(batch, device=crops.device).repeat_interleave(per_volume)
        corrupted, mask = self.corruption(crops) if self.tir_weight else (None, None)
        with torch.autocast(crops.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = network(crops if self.tcl_weight else None, corrupted, list(batchdata["report"]), crop_to_report)
        return out, crops, mask, crop_to_report

    def _loss(self, batchdata: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out, crops, mask, crop_to_report = self._forward(self.network, batchdata)
        zero = crops.new_zeros(())
        tcl, positives, scale = zero, 0.0, float(out.logit_scale.detach())
        if self.tcl_weight:  # float32 logits outside autocast: the loss switches autocast off itself
            if self._tcl_batch_keys is None:
                self._tcl_batch_keys = self.tcl_loss.required_batch_keys
            inputs = {key: batchdata[key] for key in self._tcl_batch_keys}
            result = self.tcl_loss(out.image_embeddings, out.text_embeddings, crop_to_report, out.logit_scale, **inputs)
            tcl, positives, scale = result["loss"], result["positive_fraction"], result["logit_scale"]
            self._check_positive_fraction(positives)
        with torch.autocast(crops.device.type, dtype=self.amp_dtype, enabled=self.amp):
            tir = self.tir_loss(out.restored, crops, mask) if self.tir_weight else zero
        loss = self.tcl_weight * tcl + self.tir_weight * tir.float()
        terms = {
            "loss": float(loss.detach()),
            "tcl": float(tcl.detach()),
            "tir": float(tir.detach()),
            "temperature": 1.0 / scale,
            "positives": positives,
        }
        return loss, terms
