"""Serving the bundles with MONAI Label (run in MONAI Label's own venv: ``scripts/setup_monailabel.sh``).

``monailabel_app/`` is a small MONAI Label app for the T3D bundles (the classification bundle needs it; the
segmentation bundles are also served by MONAI Label's stock ``monaibundle`` app); ``prepare`` lays out an app folder
with packed bundles unzipped into its ``model/`` folder.
"""
