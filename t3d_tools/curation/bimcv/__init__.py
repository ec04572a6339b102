"""BIMCV-VLP curation: 3D CT + report pairs and the multi-label classification set from BIMCV-COVID19.

Modules: :mod:`.tables` (TSV reading, configurable column names), :mod:`.mids` (walk the MIDS tree, series rules,
one volume per study), :mod:`.reports` (cleaning, translation with a cache), :mod:`.labels` (``Labels`` column and
English labeler, one vocabulary), :mod:`.curate` (the pipeline), :mod:`.miniature` (a test tree with planted defects).
Command line: ``python -m t3d_tools.curation.bimcv --help``; documentation: ``docs/bimcv_curation.md``.
"""
