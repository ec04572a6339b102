"""Bundles as users meet them: pack a bundle into the zip MONAI's ``download`` expects (``pack``).

``python -m custom.pack <bundle>`` (or ``python -m custom.packaging <bundle>``) builds ``dist/<name>_v<version>.zip``;
``python -m custom.packaging.download --name <name> --url ... | --repo ... --bundle_dir DIR`` fetches one, checks the
whole archive (``archive``: the one archive check of the project, also used by ``custom.serving.prepare``) and only
then unpacks it.
"""
