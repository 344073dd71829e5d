"""The command line: ``unet`` (console script) and ``python main.py``."""
