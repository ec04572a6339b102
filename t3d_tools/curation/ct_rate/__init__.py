"""CT-RATE curation: the hub's dataset folder to pairs and classification datalists with the 18-label set.

Modules: :mod:`.layout` (names, columns, the 18 labels), :mod:`.tables` (the CSVs, checked), :mod:`.volumes` (one
volume: header rule, repaired copy, resumable log, parallel workers), :mod:`.curate` (the pipeline),
:mod:`.miniature` (a test dataset with the real names and quirks). Command line:
``python -m t3d_tools.curation.ct_rate --help``; documentation: ``docs/ct_rate_curation.md``.
"""
