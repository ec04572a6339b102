"""The image-only pre-training baselines of ``t3d_pretrain`` (``method``: ``ssl_swin`` | ``restoration_only``) as a
MONAI ``Trainer``: same data loader (crops of ``PairsDataset``; the reports are ignored), same backbone, same
optimiser, schedule, step count and checkpoint/export handlers as T3D, so only the pretext tasks differ.
"""

from __future__ import annotations

import sys

import torch
from ignite.handlers import ProgressBar

from custom.engines.t3d_trainer import T3DTrainer, step_terms
from custom.handlers.finite_loss import batch_sources, check_finite_loss
from custom.losses.ssl_losses import SwinSSLLoss
from custom.losses.tir import MaskedRestorationLoss
from custom.transforms.corruption import BlockMaskCorruption
from custom.transforms.ssl_views import RandomCutout, random_rotation

__all__ = ["METHODS", "IMAGE_ONLY_METHODS", "LOSS_KEYS", "ImageSSLTrainer", "ssl_loss_terms"]

#: every value of the bundle's ``method`` key; the first is the T3D trainer's, the others this module's
METHODS: tuple[str, ...] = ("t3d", "ssl_swin", "restoration_only")
IMAGE_ONLY_METHODS: tuple[str, ...] = METHODS[1:]
#: ``state.output`` keys per method
LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "ssl_swin": ("loss", "rotation", "contrast", "reconstruction"),
    "restoration_only": ("loss", "restoration"),
}


def ssl_loss_terms(output: list | dict) -> dict:
    """``engine.state.output`` -> the numbers ``StatsHandler``/TensorBoard print (every loss term of the method)."""
    return dict(step_terms(output))


class ImageSSLTrainer(T3DTrainer):
    """One step of an image-only baseline on crops ``(B, K, 1, *S)`` flattened to ``(N, 1, *S)``:

    - ``ssl_swin`` (Tang et al. 2022): two views, each a random 0/90/180/270-degree rotation then a random cut-out
      (``view_augment``); one encoder pass over both; ``ssl_loss`` = rotation CE + view NT-Xent + L1 reconstruction of
      the rotated, uncut view.
    - ``restoration_only`` (Models-Genesis style; T3D's TIR without report and interactor): ``corruption`` (the TIR
      block masking) then ``restoration_loss`` (the TIR masked L1).

    The engine set-up (MONAI ``Trainer``, DDP sampler epochs, gradient clipping) is T3D's own, inherited, so the
    baselines and T3D differ only in the step. ``amp`` uses bfloat16 autocast (no loss scaling). ``state.output``
    holds floats under :data:`LOSS_KEYS`.
    """

    def __init__(
        self,
        method: str,
        ssl_loss: SwinSSLLoss | None = None,
        view_augment: RandomCutout | None = None,
        restoration_loss: MaskedRestorationLoss | None = None,
        corruption: BlockMaskCorruption | None = None,
        progress_bar: bool | None = None,
        **engine_args,
    ) -> None:
        """``engine_args``: what :class:`T3DTrainer` takes for the engine (``device``, ``max_epochs``,
        ``train_data_loader``, ``network``, ``optimizer``, ``epoch_length``, ``amp``, ``gradient_clip``,
        ``train_handlers``); its loss arguments are set here."""
        if method not in IMAGE_ONLY_METHODS:
            raise ValueError(
                f"method: expected one of {IMAGE_ONLY_METHODS} for ImageSSLTrainer ('t3d' uses T3DTrainer, "
                f"configs/train.json alone), found {method!r}"
            )
        needed = {
            "ssl_swin": {"ssl_loss": ssl_loss},
            "restoration_only": {"restoration_loss": restoration_loss, "corruption": corruption},
        }
        missing = [name for name, value in needed[method].items() if value is None]
        if missing:
            raise ValueError(f"method {method!r}: expected {', '.join(missing)}, found None")
        super().__init__(
            tcl_loss=None, tir_loss=restoration_loss, corruption=corruption, tcl_weight=0.0, tir_weight=1.0,
            amp_dtype="bfloat16", progress_bar=False, **engine_args,
        )  # fmt: skip
        self.method = method
        self.ssl_loss = ssl_loss
        self.view_augment = view_augment or RandomCutout()
        self.restoration_loss = restoration_loss
        if progress_bar if progress_bar is not None else sys.stdout.isatty():
            ProgressBar(persist=False).attach(self, output_transform=ssl_loss_terms)

    def _ssl_swin(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        n = crops.shape[0]
        view1, rotation1 = random_rotation(crops)
        view2, rotation2 = random_rotation(crops)
        targets = torch.cat([view1, view2])
        augmented, _ = self.view_augment(targets)
        out = self.network(augmented)
        return self.ssl_loss(
            out.rotation_logits, torch.cat([rotation1, rotation2]), out.projections[:n], out.projections[n:],
            out.reconstruction, targets,
        )  # fmt: skip

    def _restoration_only(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        corrupted, mask = self.corruption(crops)
        loss = self.restoration_loss(self.network(corrupted).reconstruction, crops, mask)
        return {"loss": loss, "restoration": loss}

    def _iteration(self, engine: ImageSSLTrainer, batchdata: dict) -> list[dict]:
        crops = batchdata["image"].to(engine.state.device, torch.float32, non_blocking=True).flatten(0, 1)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(crops.device.type, dtype=engine.amp_dtype, enabled=engine.amp):
            terms = engine._ssl_swin(crops) if engine.method == "ssl_swin" else engine._restoration_only(crops)
        check_finite_loss(
            terms["loss"],
            engine.state.iteration,
            batch_sources(batchdata, getattr(engine.data_loader, "dataset", None)),
        )
        terms["loss"].backward()
        if engine.gradient_clip:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.gradient_clip)
        engine.optimizer.step()
        return [{key: float(terms[key].detach()) for key in LOSS_KEYS[engine.method]}]  # decollated form, as T3DTrainer
