"""Bundles as users meet them: pack a bundle into the zip MONAI's ``download`` expects (``pack``).

``python -m custom.pack <bundle>`` (or ``python -m custom.packaging <bundle>``) builds ``dist/<name>_v<version>.zip``.
"""
