"""Bundles as users meet them: pack a bundle into the zip MONAI's ``download`` expects (``pack``).

``python -m t3d_tools.packaging <bundle>`` (console script ``t3d-pack``) builds ``dist/<name>_v<version>.zip``;
``python -m t3d_tools.packaging.download --name <name> --url ... | --repo ... --bundle_dir DIR`` fetches one, checks the
whole archive (``archive``: the one archive check of the project, also used by ``t3d_tools.serving.prepare``) and only
then unpacks it.
"""
