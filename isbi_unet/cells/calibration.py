"""Reading a membrane map's own calibration, without labels.

Maps of a network on data it was not trained on, or of another network, keep their
ranking of pixels but not their scale: one network's 0.5 is another's 0.9. Functions
here look at the maps alone.

* :func:`label_free_threshold`: a threshold of a folder's maps chosen without labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def label_free_threshold(maps: Sequence[np.ndarray]) -> float:
    """A threshold for maps (H, W) float32 in [0, 1] (high = cell), chosen without labels:
    the median over the maps of each map's Otsu threshold."""
    from skimage.filters import threshold_otsu

    return float(np.median([threshold_otsu(np.asarray(prob, np.float32)) for prob in maps]))
