"""Shared code of the T3D bundles: networks, losses, transforms, data tools, engines, evaluation and weights."""
