"""Prediction at native size: whole image, overlap tiles, test-time augmentation, streamed stacks, engines."""
