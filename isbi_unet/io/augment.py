"""Random geometric augmentation with the meaning of Keras 2's ImageDataGenerator.

The seed's ``aug_dict`` keys keep their Keras 2 meaning:

- ``rotation_range``: degrees; the angle is uniform in [-r, r].
- ``width_shift_range`` / ``height_shift_range``: a fraction of the width / height when
  below 1, pixels otherwise; uniform in [-s, s].
- ``shear_range``: shear angle in degrees, uniform in [-s, s].
- ``zoom_range``: a float z means [1 - z, 1 + z]; a pair is [lo, hi]. Row and column
  zooms are drawn independently. As in Keras, a factor above 1 zooms out.
- ``horizontal_flip`` / ``vertical_flip``: flip with probability 1/2, after the affine.
- ``fill_mode``: "nearest", "constant" (with ``cval``), "reflect" or "wrap".

Two extensions, off by default:

- ``elastic_sigma``: the paper's elastic deformation: random displacement vectors on a
  coarse ``elastic_grid`` x ``elastic_grid`` grid (default 3) with this standard
  deviation in pixels, interpolated bicubically to every pixel.
- ``rot90``: a random multiple of 90 degrees (with the flips, all 8 symmetries).

The affine matrix is composed as Keras 2 composed it (rotation, shift, shear, zoom about
the centre) and maps output (row, col) to input (row, col). The crop window, flips and
quarter turns are folded into the same matrix, so a 256x256 training patch is cut from
the transformed 512x512 slice in one interpolation per plane, with real context instead
of fill at its edges. Image, mask and weight map get the identical transform.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
from skimage.transform import resize, warp

# Keras 2 (scipy.ndimage) fill modes -> skimage.transform.warp modes.
_FILL_MODES = {"nearest": "edge", "constant": "constant", "reflect": "symmetric", "wrap": "wrap"}


@dataclass(frozen=True)
class AugmentSpec:
    """Parsed aug_dict. See the module docstring for each field's meaning."""

    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0
    elastic_sigma: float = 0.0
    elastic_grid: int = 3
    rot90: bool = False

    @classmethod
    def from_dict(cls, aug_dict: Mapping | None) -> "AugmentSpec":
        """Build from a seed-style aug_dict; unknown keys raise ValueError."""
        aug_dict = dict(aug_dict or {})
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(aug_dict) - known)
        if unknown:
            raise ValueError(
                f"unsupported aug_dict keys {unknown}; supported: {sorted(known)}"
            )
        if aug_dict.get("fill_mode", "nearest") not in _FILL_MODES:
            raise ValueError(f"fill_mode must be one of {sorted(_FILL_MODES)}")
        zoom = aug_dict.get("zoom_range", 0.0)
        if isinstance(zoom, (list, tuple)):
            aug_dict["zoom_range"] = (float(zoom[0]), float(zoom[1]))
        return cls(**aug_dict)

    @property
    def zoom_bounds(self) -> tuple[float, float]:
        if isinstance(self.zoom_range, tuple):
            return self.zoom_range
        return (1.0 - self.zoom_range, 1.0 + self.zoom_range)


def _shift(value: float, size: int, rng: np.random.Generator) -> float:
    """Keras 2 shift: a fraction of size below 1, pixels otherwise."""
    if not value:
        return 0.0
    offset = rng.uniform(-value, value)
    return offset * size if abs(value) < 1 else offset


def random_affine(
    spec: AugmentSpec, out_shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A random 3x3 matrix mapping output (row, col, 1) to input (row, col, 1).

    Composed as Keras 2's ``get_random_transform``/``apply_affine_transform``:
    rotation @ shift @ shear @ zoom, about the centre of an ``out_shape`` image.
    """
    height, width = out_shape
    theta = np.deg2rad(rng.uniform(-spec.rotation_range, spec.rotation_range)) if spec.rotation_range else 0.0
    tx = _shift(spec.height_shift_range, height, rng)
    ty = _shift(spec.width_shift_range, width, rng)
    shear = np.deg2rad(rng.uniform(-spec.shear_range, spec.shear_range)) if spec.shear_range else 0.0
    lo, hi = spec.zoom_bounds
    zx, zy = (1.0, 1.0) if lo == hi == 1 else rng.uniform(lo, hi, 2)

    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shear_matrix = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shear_matrix @ zoom

    centre_r, centre_c = height / 2 - 0.5, width / 2 - 0.5
    to_centre = np.array([[1, 0, centre_r], [0, 1, centre_c], [0, 0, 1]])
    from_centre = np.array([[1, 0, -centre_r], [0, 1, -centre_c], [0, 0, 1]])
    return to_centre @ matrix @ from_centre


def elastic_displacement(
    out_shape: tuple[int, int], sigma: float, grid: int, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random displacements, shape (2, H, W) in pixels (rows, cols).

    Vectors drawn from N(0, sigma^2) on a grid x grid lattice and interpolated bicubically.
    """
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    return np.stack([resize(c, out_shape, order=3, mode="edge") for c in coarse])


def symmetry_matrix(flip_h: bool, flip_v: bool, quarter_turns: int, shape: tuple[int, int]) -> np.ndarray:
    """The 3x3 matrix that maps output (row, col, 1) of ``np.rot90(flips(a), quarter_turns)``
    to (row, col, 1) of ``a``, an array of ``shape`` (h, w); flips: columns (h) then rows (v).
    """
    height, width = shape
    matrix = np.eye(3)
    if flip_h:
        matrix = matrix @ np.array([[1, 0, 0], [0, -1, width - 1], [0, 0, 1]])
    if flip_v:
        matrix = matrix @ np.array([[-1, 0, height - 1], [0, 1, 0], [0, 0, 1]])
    for _ in range(quarter_turns % 4):  # np.rot90: out[i, j] = in[j, w_in - 1 - i]
        matrix = matrix @ np.array([[0, 1, 0], [-1, 0, width - 1], [0, 0, 1]])
        height, width = width, height
    return matrix


def _integer_shift(matrix: np.ndarray) -> tuple[int, int] | None:
    """(row, col) offset when the matrix is a whole-pixel translation, else None."""
    if np.allclose(matrix[:2, :2], np.eye(2)) and np.allclose(matrix[:2, 2], np.round(matrix[:2, 2])):
        return int(round(matrix[0, 2])), int(round(matrix[1, 2]))
    return None


def augment_planes(
    planes: np.ndarray,
    spec: AugmentSpec,
    rng: np.random.Generator,
    out_shape: tuple[int, int] | None = None,
    orders: Sequence[int] | None = None,
) -> np.ndarray:
    """Apply one random transform (and crop) to every plane of a stack.

    Args:
      planes: (C, H, W) stack, e.g. image channels, mask and weight map of one slice;
        float32 and C-contiguous planes are used without a copy.
      spec: the augmentation.
      rng: source of randomness; one draw serves all planes.
      out_shape: (h, w) of a random crop window, h <= H and w <= W; None keeps (H, W).
      orders: interpolation order per plane; default 1 (bilinear, as Keras) for all.
        Use 0 (nearest) for integer label masks.

    Returns:
      float32 (C, h, w) stack ((C, w, h) after an odd number of quarter turns of a
      non-square crop). The affine warp, crop, flips and quarter turns are one
      interpolation per plane; without a random affine or elastic part the crop,
      flips and turns are exact pixel copies.
    """
    if planes.ndim != 3:
        raise ValueError("augment_planes needs a (C, H, W) stack")
    height, width = planes.shape[1:]
    out_h, out_w = out_shape or (height, width)
    if out_h > height or out_w > width:
        raise ValueError(f"crop {(out_h, out_w)} larger than the image {(height, width)}")
    orders = list(orders) if orders is not None else [1] * len(planes)
    row0 = int(rng.integers(0, height - out_h + 1))
    col0 = int(rng.integers(0, width - out_w + 1))
    matrix = np.array([[1, 0, row0], [0, 1, col0], [0, 0, 1]]) @ random_affine(spec, (out_h, out_w), rng)
    displacement = (elastic_displacement((out_h, out_w), spec.elastic_sigma, spec.elastic_grid, rng)
                    if spec.elastic_sigma else None)
    flip_h = spec.horizontal_flip and rng.random() < 0.5
    flip_v = spec.vertical_flip and rng.random() < 0.5
    quarter_turns = int(rng.integers(0, 4)) if spec.rot90 else 0

    shift = _integer_shift(matrix) if displacement is None else None
    if shift is not None:  # a plain crop: copy pixels, then flip and turn them
        (r, c) = shift
        out = planes[:, r:r + out_h, c:c + out_w].astype(np.float32)
        if flip_h:
            out = out[:, :, ::-1]
        if flip_v:
            out = out[:, ::-1]
        return np.ascontiguousarray(np.rot90(out, quarter_turns, axes=(1, 2)))

    # Output pixel -> pre-flip crop pixel -> input pixel, in one matrix.
    matrix = matrix @ symmetry_matrix(flip_h, flip_v, quarter_turns, (out_h, out_w))
    final_shape = (out_w, out_h) if quarter_turns % 2 else (out_h, out_w)
    if displacement is not None:
        if final_shape != (out_h, out_w):
            displacement = displacement.transpose(0, 2, 1)
        rows, cols = np.mgrid[0:final_shape[0], 0:final_shape[1]].astype(np.float64) + displacement
        inverse_map = np.stack([
            matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2],
            matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2],
        ])
    else:
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # (row, col) <-> (x, y)
        inverse_map = swap @ matrix @ swap
    out = np.empty((len(planes), *final_shape), np.float32)
    for index, (plane, order) in enumerate(zip(planes, orders)):
        out[index] = warp(
            plane.astype(np.float32, copy=False), inverse_map, output_shape=final_shape, order=order,
            mode=_FILL_MODES[spec.fill_mode], cval=spec.cval, preserve_range=True, clip=False,
        )
    return out


