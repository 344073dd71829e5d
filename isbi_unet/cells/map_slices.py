"""Which maps a folder or a TIFF stack holds, and reading them one at a time.

:func:`map_slices` lists the maps of a folder (``N_predict.png``, or every image when
there is none) or the pages of a stack, each with its image, checking names, files and
sizes; a :class:`MapSlice` reads its map and image when asked, and :class:`LazyMaps`
gives a folder's maps to :mod:`isbi_unet.cells.calibration` one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isbi_unet.errors import UserError

MAP_SUFFIX = "_predict"
OUTPUT_SUFFIXES = ("_labels", "_overlay")  # what segment writes beside the maps


def _map_files(pred_root: Path, names: Sequence[str] | None) -> dict[str, Path]:
    """{name: map file} in natural order: ``N_predict.*`` files, or every image when none."""
    from isbi_unet.io.images import list_images

    files = [p for p in list_images(pred_root, exclude_suffix=OUTPUT_SUFFIXES[0])
             if not p.stem.endswith(OUTPUT_SUFFIXES)]
    maps = [p for p in files if p.stem.endswith(MAP_SUFFIX)] or files
    found: dict[str, Path] = {}
    for path in maps:
        name = path.stem[: -len(MAP_SUFFIX)] if path.stem.endswith(MAP_SUFFIX) else path.stem
        if name in found:
            raise UserError(f"two probability maps for {name!r} in {pred_root}: {found[name].name} and {path.name}; keep one")
        found[name] = path
    if names is not None:
        missing = [str(n) for n in names if str(n) not in found]
        if missing:
            raise UserError(f"no probability map for {', '.join(missing[:5])} in {pred_root}: check the names")
        found = {str(n): found[str(n)] for n in names}
    if not found:
        raise UserError(f"{pred_root}: no probability maps (N_predict.png) in this folder")
    return found


def _image_for(name: str, images_root: Path, what: str = "image") -> Path:
    matches = [p for p in sorted(images_root.glob(f"{name}.*")) if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg")]
    if not matches:
        raise UserError(f"no {what} {name}.png/.tif in {images_root} for the map of {name}: pass the folder of the {what}s "
                        "of the maps' slices")
    return matches[0]


@dataclass(frozen=True)
class MapSlice:
    """One map to segment, read when asked: ``read_map()`` (H, W) float32 in [0, 1] and
    ``read_image()`` (H, W) float32 0-255, the image its cells are drawn over (None: the
    map itself, :meth:`read` gives it as map x 255 without reading twice)."""

    name: str
    read_map: Callable[[], np.ndarray]
    read_image: Callable[[], np.ndarray] | None = None

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """(map, image), each file read once; UserError when their sizes differ (a file
        whose header did not tell the truth)."""
        prob = self.read_map()
        if self.read_image is None:
            return prob, prob * np.float32(255.0)
        image = self.read_image()
        if image.shape != prob.shape:
            raise _size_mismatch("image", self.name, image.shape, self.name, prob.shape)
        return prob, image


class LazyMaps(Sequence):
    """The maps of ``slices`` as a sequence that reads each map when it is indexed, so that
    a folder's calibration (isbi_unet.cells.calibration) holds about one map at a time."""

    def __init__(self, slices: Sequence[MapSlice]):
        self.slices = list(slices)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int | slice) -> np.ndarray | LazyMaps:
        if isinstance(index, slice):
            return LazyMaps(self.slices[index])
        return self.slices[index].read_map()


def _size_mismatch(what: str, name: str, image: tuple[int, int], where: str, prob: tuple[int, int]) -> UserError:
    return UserError(f"{what} of {name} is {image[1]}x{image[0]} but its map {where} is {prob[1]}x{prob[0]}: "
                     f"pass the {what}s of the maps' slices")


def map_slices(pred_root: Path, images_root: Path | None, names: Sequence[str] | None,
                what: str = "image") -> list[MapSlice]:
    """The maps of a folder with its folder of images, or of a TIFF stack (pages named 0, 1,
    ...) with its stack of images, or its folder of images in natural order (the pages then
    take the images' names); without images, the image is the map. ``what`` names the
    images in messages ("label" for labels read the same way). Names, files and sizes (from
    the files' headers) are checked here; pixels are read by the slices. UserError for a
    missing folder, file or image, an unreadable file, or a size mismatch."""
    from isbi_unet.io.images import read_image
    from isbi_unet.io.stacks import image_size, is_tiff_file, open_source, stack_source

    if images_root is not None and not images_root.exists():
        raise UserError(f"{images_root}: {what}s not found")
    slices = []
    if not is_tiff_file(pred_root):
        if images_root is not None and not images_root.is_dir():
            raise UserError(f"{images_root}: the maps are a folder; give the folder of the {what}s of their slices")
        for name, path in _map_files(pred_root, names).items():
            image_path = None if images_root is None else _image_for(name, images_root, what)
            if image_path is not None and image_size(image_path) != image_size(path):
                raise _size_mismatch(what, name, image_size(image_path), str(path), image_size(path))
            slices.append(MapSlice(name, lambda path=path: read_image(path)[..., 0] / np.float32(255.0),
                                   None if image_path is None else
                                   lambda image_path=image_path: read_image(image_path)[..., 0]))
        return slices
    source = stack_source(pred_root, 1)
    wanted = source.names if names is None else [str(name) for name in names]
    missing = [name for name in wanted if name not in source.names]
    if missing:
        raise UserError(f"{pred_root}: has pages 0-{len(source.names) - 1}, not {', '.join(missing[:5])}")
    image_source = (None if images_root is None  # a stack, or a folder in natural order
                    else open_source(images_root, 1, network_input=what == "image"))
    if image_source is not None and len(image_source.names) != len(source.names):
        raise UserError(f"{images_root} has {len(image_source.names)} {what}s but the maps {pred_root} "
                        f"{len(source.names)} pages: pass the {what}s of the maps' slices")
    if image_source is not None and image_source.shape[:2] != source.shape[:2]:
        raise _size_mismatch(what, wanted[0], image_source.shape[:2], f"{pred_root} page {wanted[0]}", source.shape[:2])

    def read_map(index: int) -> np.ndarray:
        return source.prepare(source.read(index))[..., 0]

    def read_page_image(index: int) -> np.ndarray:
        return image_source.prepare(image_source.read(index))[..., 0] * np.float32(255.0)

    renamed = image_source is not None and not is_tiff_file(images_root)  # the pages keep their images' names
    for name in wanted:
        index = int(name)
        slices.append(MapSlice(image_source.names[index] if renamed else name, lambda index=index: read_map(index),
                               None if image_source is None else lambda index=index: read_page_image(index)))
    return slices
