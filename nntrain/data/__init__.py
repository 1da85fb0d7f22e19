"""Data: sources (datasets.py), in-memory batching (loaders.py), normalizers and augmentations (transforms.py)."""
