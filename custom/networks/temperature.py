"""The bound of the learnable contrastive temperature, here with the model that owns the parameter (``T3DModel``):
the TCL loss, the trainer's log and the zero-shot report read it from here."""

from __future__ import annotations

import math

__all__ = ["LOGIT_SCALE_MAX"]

#: upper bound of the learnable log inverse temperature (CLIP's: the temperature never goes below 0.01)
LOGIT_SCALE_MAX = math.log(100.0)
