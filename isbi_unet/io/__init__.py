"""Data in: image files, TIFF stacks, fetching ISBI 2012, its manifest, checking a training folder, augmentation."""
