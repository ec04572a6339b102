"""The one error of the packing step, :class:`PackError`: the other ``t3d_tools.packaging`` modules raise it and
``python -m t3d_tools.packaging`` prints it as one line (exit status 2)."""

__all__ = ["PackError"]


class PackError(ValueError):
    """A bundle that cannot be packed as asked; the message is one line."""
