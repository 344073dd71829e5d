"""The augmentation contract: Keras 2 meanings, and one identical transform per pair."""

import numpy as np
import pytest

from conftest import synthetic_slice
from isbi_unet.io.augment import AugmentSpec, augment_planes, random_affine
from isbi_unet.training.recipes import BLOG_AUG_DICT

STRONG = dict(rotation_range=30, width_shift_range=0.1, height_shift_range=0.1, shear_range=10,
              zoom_range=0.2, horizontal_flip=True, vertical_flip=True, rot90=True, fill_mode="reflect")


def angle_of(matrix: np.ndarray) -> float:
    """Rotation angle in degrees of a pure rotation matrix."""
    return float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))


@pytest.mark.parametrize("aug", [BLOG_AUG_DICT, STRONG, dict(STRONG, elastic_sigma=10.0)])
def test_image_and_mask_get_the_identical_transform(aug):
    image, _ = synthetic_slice((128, 128), seed=3)
    image = image.astype(np.float32)
    mask = 255.0 - image  # a mask computed from its image
    rng = np.random.default_rng(0)
    for _ in range(5):
        out_image, out_mask = augment_planes(np.stack([image, mask]), AugmentSpec.from_dict(aug), rng, (64, 64))
        np.testing.assert_allclose(out_mask, 255.0 - out_image, atol=1e-3)


def test_transform_actually_changes_the_image_and_differs_between_draws():
    image, _ = synthetic_slice((96, 96), seed=1)
    image = image[None].astype(np.float32)
    spec = AugmentSpec.from_dict(STRONG)
    rng = np.random.default_rng(1)
    first = augment_planes(image, spec, rng)
    second = augment_planes(image, spec, rng)
    assert not np.allclose(first, image)
    assert not np.allclose(first, second)


def test_rotation_range_is_in_degrees():
    """rotation_range=0.2 means at most 0.2 degrees, as in Keras 2 (not radians)."""
    spec = AugmentSpec.from_dict(dict(rotation_range=0.2))
    rng = np.random.default_rng(0)
    angles = [abs(angle_of(random_affine(spec, (64, 64), rng))) for _ in range(200)]
    assert max(angles) <= 0.2 and max(angles) > 0.1
    spec = AugmentSpec.from_dict(dict(rotation_range=90))
    angles = [abs(angle_of(random_affine(spec, (64, 64), rng))) for _ in range(200)]
    assert 80 < max(angles) <= 90


def test_shift_is_a_fraction_of_the_size_below_one_and_pixels_above():
    rng = np.random.default_rng(0)
    fraction = AugmentSpec.from_dict(dict(width_shift_range=0.25))
    shifts = [random_affine(fraction, (100, 200), rng)[1, 2] for _ in range(300)]
    assert 40 < max(np.abs(shifts)) <= 50  # 0.25 * width 200
    pixels = AugmentSpec.from_dict(dict(height_shift_range=3))
    shifts = [random_affine(pixels, (100, 200), rng)[0, 2] for _ in range(300)]
    assert 2.5 < max(np.abs(shifts)) <= 3


def test_zoom_range_float_means_one_plus_minus():
    spec = AugmentSpec.from_dict(dict(zoom_range=0.1))
    assert spec.zoom_bounds == (0.9, 1.1)
    assert AugmentSpec.from_dict(dict(zoom_range=[0.5, 2])).zoom_bounds == (0.5, 2.0)


def test_pure_horizontal_flip_mirrors_columns():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    spec = AugmentSpec.from_dict(dict(horizontal_flip=True))
    outputs = {augment_planes(image, spec, np.random.default_rng(seed)).tobytes() for seed in range(20)}
    assert outputs == {image.tobytes(), image[:, :, ::-1].tobytes()}


@pytest.mark.parametrize("mode", ["nearest", "constant", "reflect", "wrap"])
def test_fill_modes(mode):
    image = np.ones((1, 32, 32), np.float32) * 100
    spec = AugmentSpec.from_dict(dict(width_shift_range=0.5, fill_mode=mode, cval=7.0))
    out = augment_planes(image, spec, np.random.default_rng(5))
    assert out.shape == image.shape
    if mode == "constant":
        assert (out == 7.0).any()
    else:
        np.testing.assert_allclose(out, 100.0, atol=1e-4)


def test_crop_is_taken_from_the_image_without_augmentation():
    image = np.random.default_rng(0).random((2, 50, 60)).astype(np.float32)
    out = augment_planes(image, AugmentSpec(), np.random.default_rng(2), (16, 20))
    found = any(np.array_equal(out, image[:, r:r + 16, c:c + 20]) for r in range(35) for c in range(41))
    assert out.shape == (2, 16, 20) and found


def test_elastic_displacement_has_the_requested_scale():
    from isbi_unet.io.augment import elastic_displacement

    rng = np.random.default_rng(0)
    fields = np.stack([elastic_displacement((64, 64), 10.0, 3, rng) for _ in range(200)])
    assert fields.shape == (200, 2, 64, 64)
    assert 7.0 < fields[:, :, 32, 32].std() < 13.0  # the coarse grid's centre node


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="brightness_range"):
        AugmentSpec.from_dict(dict(brightness_range=(0.5, 1.5)))
    with pytest.raises(ValueError, match="fill_mode"):
        AugmentSpec.from_dict(dict(fill_mode="mirror-ish"))


@pytest.mark.parametrize("flip_h", [False, True])
@pytest.mark.parametrize("flip_v", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_symmetry_matrix_maps_output_pixels_to_their_source(flip_h, flip_v, turns):
    from isbi_unet.io.augment import symmetry_matrix

    array = np.arange(5 * 7).reshape(5, 7)
    expected = flipped(array, flip_h, flip_v, turns)
    matrix = symmetry_matrix(flip_h, flip_v, turns, array.shape)
    rows, cols = np.indices(expected.shape)
    source = np.rint(np.tensordot(matrix, np.stack([rows, cols, np.ones_like(rows)]), axes=1)).astype(int)
    np.testing.assert_array_equal(array[source[0], source[1]], expected)


def flipped(array: np.ndarray, flip_h: bool, flip_v: bool, turns: int) -> np.ndarray:
    array = array[:, ::-1] if flip_h else array
    return np.rot90(array[::-1] if flip_v else array, turns)


def test_flips_and_turns_folded_into_the_warp_equal_flipping_its_output():
    """One interpolation with the symmetries inside gives the same pixels as warping and
    then flipping and turning the result."""
    from isbi_unet.io.augment import augment_planes

    image, _ = synthetic_slice((96, 96), seed=2)
    planes = image[None].astype(np.float32)
    affine_only = AugmentSpec.from_dict(dict(rotation_range=20, shear_range=5, zoom_range=0.1, fill_mode="reflect"))
    with_symmetries = AugmentSpec.from_dict(dict(affine_only.__dict__, horizontal_flip=True, vertical_flip=True,
                                                 rot90=True))
    seen = set()
    for seed in range(12):
        plain = augment_planes(planes, affine_only, np.random.default_rng(seed), (48, 64))[0]
        folded = augment_planes(planes, with_symmetries, np.random.default_rng(seed), (48, 64))[0]
        matches = [(h, v, k) for h in (0, 1) for v in (0, 1) for k in range(4)
                   if folded.shape == flipped(plain, h, v, k).shape
                   and np.allclose(folded, flipped(plain, h, v, k), atol=1e-3)]
        assert matches, f"seed {seed}: the folded warp is no flip or turn of the plain one"
        seen.add(matches[0])
    assert len(seen) > 3  # the draws did flip and turn
