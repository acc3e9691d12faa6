"""ESC-50 data: metadata, splits, download, checks and the feature cache."""
