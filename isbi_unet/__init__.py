"""isbi_unet: the seed U-Net's project around ``data.py`` and ``model.py``, one sub-package per step.

The sub-packages follow the data's way, and each imports only from those listed before it:

- base modules: :mod:`~isbi_unet.errors`, :mod:`~isbi_unet.hardware`, :mod:`~isbi_unet.protocol`
  (the train / select / test split and the k-fold blocks), :mod:`~isbi_unet.network`
  (model files and precision);
- :mod:`~isbi_unet.io`: data in (image files, TIFF stacks, fetching, the manifest, checks,
  augmentation, training pairs);
- :mod:`~isbi_unet.evaluation`: the ISBI 2012 metric and the scoring of folders, stacks
  and runs (every later step measures itself with it);
- :mod:`~isbi_unet.training`: recipes, losses, callbacks, exact resume, the training loop;
- :mod:`~isbi_unet.prediction`: whole-image, overlap-tile and streamed prediction, engines;
- :mod:`~isbi_unet.cells`: instance segmentation of membrane maps;
- :mod:`~isbi_unet.export`: ONNX, SavedModel and bioimage.io packages;
- :mod:`~isbi_unet.pipeline`: train, choose on the selection slices, test once; k-fold;
- :mod:`~isbi_unet.cli`: the command line (``unet`` and ``python main.py``).

The seed's faces, ``data.py`` (data in) and ``model.py`` (the network), sit at the
repository's top level beside this package: :mod:`~isbi_unet.io` comes before them, the
training and later steps after them.
"""

__version__ = "1.0.0"
