"""BIMCV-VLP curation: 3D CT + report pairs and the multi-label classification set from BIMCV-COVID19.

Modules: :mod:`.tables` (TSV reading, configurable column names), :mod:`.mids` (walk the MIDS tree, series rules,
one volume per study), :mod:`.reports` (cleaning, translation with a cache), :mod:`.labels` (``Labels`` column and
English labeler, one vocabulary), :mod:`.curate` (the two pipelines, ``curate`` and ``curate_csv``),
:mod:`.records` (study/exclusion records, probe cache, patient splits), :mod:`.sources` (the tree's tables, volume
selection, the CSV), :mod:`.pairing` (which images and reports become studies), :mod:`.outputs` (datalists,
exclusions, dry run), :mod:`.stats` (statistics and plots), :mod:`.miniature` (a test tree with planted defects).
Command line: ``python -m t3d_tools.curation.bimcv --help``; documentation: ``docs/bimcv_curation.md``.
"""
