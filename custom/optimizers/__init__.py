"""Optimiser set-up shared by the bundles."""

from custom.optimizers.param_groups import weight_decay_groups

__all__ = ["weight_decay_groups"]
