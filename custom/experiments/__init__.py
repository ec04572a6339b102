"""Experiments spanning several bundles: the paper table (``python -m custom.experiments.paper_table``)."""
