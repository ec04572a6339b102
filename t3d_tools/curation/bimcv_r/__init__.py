"""BIMCV-R curation: ``BIMCV-R.csv`` and its CT folder to pairs and classification datalists.

Modules: :mod:`.labels` (the chest-CT vocabulary of the English labeler and its coverage of the ``Labels`` column),
:mod:`.curate` (the pipeline, reusing :mod:`t3d_tools.curation.bimcv`'s outputs), :mod:`.miniature` (a test copy
with the release's columns and quirks). Command line: ``python -m t3d_tools.curation.bimcv_r --help``;
documentation: ``docs/ct_rate_curation.md``.
"""
