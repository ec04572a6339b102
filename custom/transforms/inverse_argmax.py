"""Class probabilities in the network's grid -> labels in the input's grid, one channel at a time.

MONAI's usual tail, ``Invertd`` then ``AsDiscreted(argmax=True)``, resamples all ``C`` probability channels to the
input grid at once: for a 512 x 512 x 246 CT and BTCV's 14 classes that is 3.6 GB of float32 plus the resampler's
temporaries, the peak of the whole inference. Inverting one channel at a time and keeping a running maximum gives
the same labels (the resampling is per channel; ties go to the lower class, as ``argmax``) with two input-size
channels alive instead of ``C`` (``benchmarks/btcv_full_size_inference.py``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, InvertibleTransform, MapTransform

__all__ = ["InvertArgmaxd"]


class InvertArgmaxd(MapTransform):
    """``data[key]`` ``(C, *S)`` probabilities (a ``MetaTensor`` in the preprocessed grid) -> ``(1, *S_in)`` uint8
    labels in the grid of ``data[orig_key]`` before ``transform`` (the preprocessing ``Compose``).

    Args:
        keys: prediction keys.
        transform: the invertible preprocessing the prediction's grid came from.
        orig_keys: the preprocessed input keys whose applied operations are inverted (one per key).
    """

    def __init__(
        self, keys: str | Sequence[str], transform: InvertibleTransform, orig_keys: str | Sequence[str]
    ) -> None:
        super().__init__(keys)
        orig = [orig_keys] if isinstance(orig_keys, str) else list(orig_keys)
        if len(orig) != len(self.keys):
            raise ValueError(f"orig_keys: expected one per key ({len(self.keys)}), found {len(orig)}")
        self.inverters = [
            Invertd(keys=key, transform=transform, orig_keys=o, nearest_interp=False, to_tensor=True)
            for key, o in zip(self.keys, orig)
        ]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, invert in zip(self.keys, self.inverters):
            probabilities = d[key]
            if probabilities.shape[0] > 256:
                raise ValueError(
                    f"{key}: expected at most 256 classes for uint8 labels, found {probabilities.shape[0]}"
                )
            best = labels = channel = None
            for c in range(probabilities.shape[0]):
                channel = invert({**d, key: probabilities[c : c + 1]})[key]
                if best is None:
                    best = channel.as_tensor().clone()
                    labels = torch.zeros(best.shape, dtype=torch.uint8)
                    continue
                higher = channel.as_tensor() > best  # strict: a tie keeps the lower class, as argmax does
                labels[higher] = c
                torch.maximum(best, channel.as_tensor(), out=best)
                del higher
            d[key] = MetaTensor(labels, meta=channel.meta)
        return d
