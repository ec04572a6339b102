"""Experiments spanning several bundles: the paper table (``python -m t3d_tools.experiments.paper_table``)."""
