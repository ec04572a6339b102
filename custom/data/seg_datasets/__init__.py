"""Dataset-layout readers and synthetic miniature writers for the segmentation bundles."""
