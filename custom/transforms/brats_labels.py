"""Brain-tumour label maps <-> the three nested BraTS regions (TC, WT, ET) the network predicts.

MONAI's ``ConvertToMultiChannelBasedOnBratsClassesd`` assumes BraTS numbering (1 necrotic, 2 edema, 4 enhancing)
only; the Decathlon Task01 files number the same tissues 2 / 1 / 3. :class:`ConvertToBratsRegionsd` reads each
row's ``tumour_label_scheme`` (written by the dataset readers; not ``label_*``, which MONAI takes for label metadata)
so both sources train one network, and it rejects values
outside the scheme. :class:`BratsRegionsToLabeld` turns thresholded regions back into one BraTS label map for saving
and for MONAI Label.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from custom.errors import DataError
from custom.transforms.volume_checks import check_label_values

__all__ = ["LABEL_SCHEMES", "REGIONS", "ConvertToBratsRegionsd", "BratsRegionsToLabeld"]

#: tissue -> label value, per source numbering
LABEL_SCHEMES: dict[str, dict[str, int]] = {
    "brats": {"necrotic": 1, "edema": 2, "enhancing": 4},  # BraTS 2021 and earlier
    "brats2023": {"necrotic": 1, "edema": 2, "enhancing": 3},  # BraTS 2023+ (1 NCR, 2 SNFH, 3 ET)
    "msd_task01": {"edema": 1, "necrotic": 2, "enhancing": 3},
}
#: output channel order and the tissues each region contains
REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tumour core", ("necrotic", "enhancing")),
    ("whole tumour", ("necrotic", "edema", "enhancing")),
    ("enhancing tumour", ("enhancing",)),
)


class ConvertToBratsRegionsd(MapTransform):
    """Label map ``(1, *spatial)`` -> float regions ``(3, *spatial)``: TC, WT, ET.

    The numbering comes from ``data[scheme_key]`` (a :data:`LABEL_SCHEMES` name), ``default_scheme`` if absent.
    """

    def __init__(
        self, keys: KeysCollection, scheme_key: str = "tumour_label_scheme", default_scheme: str = "brats"
    ) -> None:
        super().__init__(keys)
        self.scheme_key, self.default_scheme = scheme_key, default_scheme

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        scheme_name = d.get(self.scheme_key) or self.default_scheme
        if scheme_name not in LABEL_SCHEMES:
            raise DataError(f"{self.scheme_key}: expected one of {sorted(LABEL_SCHEMES)}, found '{scheme_name}'")
        scheme = LABEL_SCHEMES[scheme_name]
        for key in self.key_iterator(d):
            label = d[key]
            source = str(getattr(label, "meta", {}).get("filename_or_obj", key))
            check_label_values(torch.unique(torch.as_tensor(label)).cpu().numpy(), [0, *scheme.values()], source)
            channel = label[0] if label.ndim == 4 else label
            regions = [torch.isin(channel, torch.tensor([scheme[t] for t in tissues])) for _, tissues in REGIONS]
            d[key] = torch.stack(regions).to(torch.float32)
            if hasattr(label, "meta"):  # keep geometry and the applied-transform trail for inversion
                d[key] = type(label)(d[key], meta=label.meta, applied_operations=label.applied_operations)
        return d


class BratsRegionsToLabeld(MapTransform):
    """Binary regions ``(3, *spatial)`` (TC, WT, ET) -> BraTS label map ``(1, *spatial)`` with values 0 / 1 / 2 / 4.

    Nesting is imposed from the outside in: WT voxels are edema (2), TC voxels inside it necrotic (1), ET voxels
    inside TC enhancing (4), so the map is consistent even when the three sigmoid outputs are not.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        brats = LABEL_SCHEMES["brats"]
        for key in self.key_iterator(d):
            regions = d[key] > 0.5
            tumour_core, whole, enhancing = regions[0], regions[1], regions[2]
            label = torch.zeros_like(regions[:1], dtype=torch.uint8)
            label[0][whole] = brats["edema"]
            label[0][whole & tumour_core] = brats["necrotic"]
            label[0][whole & tumour_core & enhancing] = brats["enhancing"]
            d[key] = type(d[key])(label, meta=d[key].meta) if hasattr(d[key], "meta") else label
        return d
