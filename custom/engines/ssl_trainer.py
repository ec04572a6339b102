"""The image-only pre-training baselines of ``t3d_pretrain`` (``method``: ``ssl_swin`` | ``restoration_only``) as a
MONAI ``Trainer``: same data loader (crops of ``PairsDataset``; the reports are ignored), same backbone, same
optimiser, schedule, step count and checkpoint/export handlers as T3D, so only the pretext tasks differ.
"""

from __future__ import annotations

import torch

from custom.engines.pretraining_trainer import PretrainingTrainer
from custom.losses.ssl_losses import SwinSSLLoss
from custom.losses.tir import MaskedRestorationLoss
from custom.transforms.corruption import BlockMaskCorruption
from custom.transforms.ssl_views import RandomCutout, random_rotation

__all__ = ["METHODS", "IMAGE_ONLY_METHODS", "LOSS_KEYS", "ImageSSLTrainer"]

#: every value of the bundle's ``method`` key; the first is the T3D trainer's, the others this module's
METHODS: tuple[str, ...] = ("t3d", "ssl_swin", "restoration_only")
IMAGE_ONLY_METHODS: tuple[str, ...] = METHODS[1:]
#: ``state.output`` keys per method
LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "ssl_swin": ("loss", "rotation", "contrast", "reconstruction"),
    "restoration_only": ("loss", "restoration"),
}


class ImageSSLTrainer(PretrainingTrainer):
    """One step of an image-only baseline on crops ``(B, K, 1, *S)`` flattened to ``(N, 1, *S)``:

    - ``ssl_swin`` (Tang et al. 2022): two views, each a random 0/90/180/270-degree rotation then a random cut-out
      (``view_augment``); one encoder pass over both; ``ssl_loss`` = rotation CE + view NT-Xent + L1 reconstruction of
      the rotated, uncut view.
    - ``restoration_only`` (Models-Genesis style; T3D's TIR without report and interactor): ``corruption`` (the TIR
      block masking) then ``restoration_loss`` (the TIR masked L1).

    The engine and the optimisation step (:class:`~custom.engines.pretraining_trainer.PretrainingTrainer`: MONAI
    ``Trainer``, DDP sampler epochs, gradient clipping, the non-finite-loss stop) are the ones T3D's trainer extends,
    so the baselines and T3D differ only in the loss. ``amp`` uses bfloat16 autocast (no loss scaling).
    ``state.output`` holds floats under :data:`LOSS_KEYS`.
    """

    def __init__(
        self,
        method: str,
        ssl_loss: SwinSSLLoss | None = None,
        view_augment: RandomCutout | None = None,
        restoration_loss: MaskedRestorationLoss | None = None,
        corruption: BlockMaskCorruption | None = None,
        **engine_args,
    ) -> None:
        """``engine_args``: what :class:`PretrainingTrainer` takes (``device``, ``max_epochs``, ``train_data_loader``,
        ``network``, ``optimizer``, ``epoch_length``, ``amp``, ``gradient_clip``, ``train_handlers``,
        ``progress_bar``)."""
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
        self.method = method
        self.ssl_loss = ssl_loss
        self.view_augment = view_augment or RandomCutout()
        self.restoration_loss = restoration_loss
        self.corruption = corruption
        super().__init__(amp_dtype="bfloat16", **engine_args)

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

    def _loss(self, batchdata: dict) -> tuple[torch.Tensor, dict[str, float]]:
        crops = batchdata["image"].to(self.state.device, torch.float32, non_blocking=True).flatten(0, 1)
        with torch.autocast(crops.device.type, dtype=self.amp_dtype, enabled=self.amp):
            terms = self._ssl_swin(crops) if self.method == "ssl_swin" else self._restoration_only(crops)
        return terms["loss"], {key: float(terms[key].detach()) for key in LOSS_KEYS[self.method]}
