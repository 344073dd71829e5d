"""Test-time augmentation: the mean over the 8 flips and quarter turns, for maps and affinities.

Membrane maps (B, H, W, K) are mapped back by the inverse view. Affinity channels
(one per offset) also change their offset under a view; :func:`tta_channel_sources`
and :func:`restore_view` put each channel back where the original view had it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.prediction.tiling import PredictFn
from isbi_unet.training.affinities import shifted_views


def _view_vector(offset: Sequence[int], flip: bool, quarter_turns: int) -> tuple[int, int]:
    """Where a displacement (dy, dx) points after ``rot90(flip_x(image), quarter_turns)``
    (numpy's flip of axis 1, then rot90 over the (row, column) axes)."""
    dy, dx = int(offset[0]), int(offset[1])
    if flip:
        dx = -dx
    for _ in range(quarter_turns % 4):  # rot90: (y, x) -> (W - 1 - x, y)
        dy, dx = -dx, dy
    return dy, dx


def tta_channel_sources(offsets: Sequence[Sequence[int]], flip: bool, quarter_turns: int) -> list[tuple[int, bool]]:
    """For each channel k, (channel of the transformed view, shifted) that holds its edge.

    The edge p -> p + o becomes T(p) -> T(p) + R o in the view. When R o is an offset
    of the model, that channel at T(p) holds it (shifted False); when -R o is, the same
    edge is stored at T(p + o), seen from the other pixel (shifted True: read the
    back-transformed channel at p + o). Raises UserError when neither is an offset.
    """
    index = {tuple(int(v) for v in o): k for k, o in enumerate(offsets)}
    sources = []
    for offset in offsets:
        vector = _view_vector(offset, flip, quarter_turns)
        if vector in index:
            sources.append((index[vector], False))
        elif (-vector[0], -vector[1]) in index:
            sources.append((index[(-vector[0], -vector[1])], True))
        else:
            raise UserError(f"test-time augmentation needs the offsets to map onto each other under flips and "
                            f"quarter turns; offset {tuple(offset)} does not: predict without --tta")
    return sources


def restore_view(output: np.ndarray, offsets: Sequence[Sequence[int]], flip: bool, quarter_turns: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Affinities predicted on a transformed view, in the original frame and channel order.

    output: (B, h, w, K) predictions for ``rot90(flip_x(batch), quarter_turns)``.
    Returns (affinities, weights), both (B, H, W, K) float32: weights is 0 where the
    edge's value had to be read at p + o outside the image (nothing known there).
    """
    back = np.rot90(output, -quarter_turns, axes=(1, 2))
    if flip:
        back = back[:, :, ::-1]
    restored = np.zeros(back.shape, np.float32)
    weights = np.zeros(back.shape, np.float32)
    for channel, (source, shifted) in enumerate(tta_channel_sources(offsets, flip, quarter_turns)):
        if not shifted:
            restored[..., channel] = back[..., source]
            weights[..., channel] = 1.0
            continue
        here, there = shifted_views(back.shape[1:3], offsets[channel])
        restored[(slice(None),) + here + (channel,)] = back[(slice(None),) + there + (source,)]
        weights[(slice(None),) + here + (channel,)] = 1.0
    return restored, weights


def with_tta(predict_fn: PredictFn, offsets: Sequence[Sequence[int]] | None = None) -> PredictFn:
    """Wrap predict_fn to average over the 8 flips and quarter turns (square inputs).

    ``offsets``: the outputs are affinities of these (dy, dx) offsets (isbi_unet/training/affinities.py);
    a flip or turn changes an offset's direction, so each view's channels are mapped
    back to the offsets they stand for (``restore_view``) before averaging.
    """

    def averaged(batch: np.ndarray) -> np.ndarray:
        views = []
        for flip in (False, True):
            flipped = batch[:, :, ::-1] if flip else batch
            views.extend(np.rot90(flipped, k, axes=(1, 2)) for k in range(4))
        same_shape = all(view.shape == batch.shape for view in views)
        if same_shape:
            outputs = np.split(predict_fn(np.concatenate(views)), 8)
        else:
            outputs = [predict_fn(np.ascontiguousarray(view)) for view in views]
        if offsets is not None:
            from isbi_unet.prediction.tta import restore_view

            total, count = 0.0, 0.0
            for index, output in enumerate(outputs):
                restored, known = restore_view(output, offsets, *divmod(index, 4))
                total, count = total + restored * known, count + known
            return total / np.maximum(count, 1.0)
        total = 0.0
        for index, output in enumerate(outputs):
            flip, k = divmod(index, 4)
            restored = np.rot90(output, -k, axes=(1, 2))
            total = total + (restored[:, :, ::-1] if flip else restored)
        return total / 8.0

    return averaged
