"""Dataset conversion, one sub-package per source format (nnU-Net v2's rule): ``bimcv`` (BIMCV-COVID19 / BIMCV-R)."""
