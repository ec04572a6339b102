"""Dataset conversion, one sub-package per source format (nnU-Net v2's rule): ``bimcv`` (BIMCV-COVID19 MIDS and
BIMCV-R style CSVs), ``bimcv_r`` (BIMCV-R as distributed), ``ct_rate`` (CT-RATE as downloaded from the hub)."""
