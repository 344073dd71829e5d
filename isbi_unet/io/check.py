"""Check a training folder before training: pairs, formats, mask values, balance, duplicates.

``check_dataset`` reads every image/mask pair once (with ``list_images``, ``read_image`` and
``isbi_unet.io.pairs.find_mask``) and returns a :class:`DataReport`: what was found and
the list of problems that make training fail or meaningless (a missing mask, a
non-binary or lossy-JPEG mask, masks mixing the 0/1 and 0/255 conventions, an all-zero
or all-one mask, a constant image, duplicate images), plus warnings that do not stop
training (e.g. masks that look inverted).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isbi_unet.errors import UserError
from isbi_unet.io.images import image_from_array, list_images, read_array, read_image
from isbi_unet.io.input_scale import scale_kind, scale_warning
from isbi_unet.io.pairs import as_cell_mask, check_binary_mask, check_label_mask, find_mask

LOSSY_SUFFIXES = (".jpg", ".jpeg")
# A mask whose pixels are this close to 0 or 255, but not all exactly, was compressed or resampled.
NEAR_BINARY_TOLERANCE = 16


@dataclass
class DataReport:
    """What ``check_dataset`` found in one training folder.

    ``image_kinds`` / ``mask_kinds`` count descriptions such as "512x512 uint8, 1 channel";
    ``conventions`` counts "0/255", "0/1" or "labels" masks; ``foreground_fraction`` is the
    share of cell pixels (binary masks, read as ``mask_foreground`` says), None without masks read.
    """

    image_dir: Path
    mask_dir: Path
    pairs: list[str] = field(default_factory=list)
    image_kinds: Counter = field(default_factory=Counter)
    mask_kinds: Counter = field(default_factory=Counter)
    conventions: Counter = field(default_factory=Counter)
    foreground_fraction: float | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Several lines: the folders, pairs, formats, mask values, balance, problems."""
        lines = [f"{len(self.pairs)} image/mask pairs in {self.image_dir} and {self.mask_dir}"]
        lines += [f"  images: {count} x {kind}" for kind, count in self.image_kinds.most_common()]
        lines += [f"  masks:  {count} x {kind}" for kind, count in self.mask_kinds.most_common()]
        if self.conventions:
            lines.append("  mask values: " + ", ".join(f"{kind} ({count})" for kind, count in self.conventions.most_common()))
        if self.foreground_fraction is not None:
            lines.append(f"  cell pixels: {100 * self.foreground_fraction:.1f}% of all mask pixels")
        lines += [f"warning: {text}" for text in self.warnings]
        lines += [f"problem: {text}" for text in self.problems]
        lines.append(f"{len(self.problems)} problem(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def file_kind(path: Path, array: np.ndarray) -> str:
    """'HxW dtype, C channel(s)' of a file: the dtype stored in the file, the shape read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            dtype = {"1": "bool", "L": "uint8", "P": "uint8 palette", "RGB": "uint8", "RGBA": "uint8",
                     "LA": "uint8", "I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}.get(image.mode, image.mode)
            channels = len(image.getbands())
    except (OSError, ValueError):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                dtype, channels = str(page.dtype), page.samplesperpixel
        except (OSError, ValueError, tifffile.TiffFileError):
            dtype, channels = "unknown dtype", array.shape[-1]
    return f"{array.shape[1]}x{array.shape[0]} {dtype}, {channels} channel{'s' if channels > 1 else ''}"


def mask_convention(values: np.ndarray) -> str | None:
    """'0/255' or '0/1' for a binary mask's unique values, None when ambiguous or not binary."""
    value_set = set(values.tolist())
    if value_set <= {0.0, 255.0} and 255.0 in value_set:
        return "0/255"
    if value_set <= {0.0, 1.0} and 1.0 in value_set:
        return "0/1"
    return None


def mask_value_problem(mask: np.ndarray, path: Path, num_class: int) -> str | None:
    """Why the (H, W, 1) mask's values are unusable with num_class, or None."""
    try:
        if num_class > 1:
            check_label_mask(mask, str(path), num_class)
        else:
            check_binary_mask(mask, str(path))
    except UserError as error:
        message = str(error)
        near = np.minimum(mask, np.abs(255.0 - mask)) <= NEAR_BINARY_TOLERANCE
        if num_class == 1 and near.mean() > 0.95:
            message += "; it looks JPEG-compressed or resampled: threshold it at 128 and save it as PNG"
        return message
    return None


def check_pair(image_path: Path, mask_path: Path, report: DataReport, num_class: int,
               mask_foreground: str = "cell") -> tuple[bytes, int, int] | None:
    """Read one pair, add its kinds and problems to report.

    Returns (image digest, cell pixels of the mask read as ``mask_foreground`` says,
    mask pixels), or None when unreadable.
    """
    try:
        raw = read_array(image_path)
        image = image_from_array(raw, image_path, as_gray=False)
        mask = read_image(mask_path, as_gray=True)
    except UserError as error:
        report.problems.append(str(error))
        return None
    scale = scale_warning(raw)
    if scale is not None and not any(scale_kind(scale) in warning for warning in report.warnings):  # once per kind
        report.warnings.append(f"{image_path}: {scale}")
    report.image_kinds[file_kind(image_path, image)] += 1
    report.mask_kinds[file_kind(mask_path, mask)] += 1
    if image.shape[:2] != mask.shape[:2]:
        report.problems.append(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]}; they must be the same size")
    if mask_path.suffix.lower() in LOSSY_SUFFIXES:
        report.problems.append(f"{mask_path}: mask saved as lossy JPEG (its edges get grey values); save masks as PNG or TIFF")
    values = np.unique(mask)
    value_problem = mask_value_problem(mask, mask_path, num_class)
    if value_problem and mask_path.suffix.lower() not in LOSSY_SUFFIXES:
        report.problems.append(value_problem)
    convention = f"labels 0..{num_class - 1}" if num_class > 1 else mask_convention(values)
    if convention and not value_problem:
        report.conventions[convention] += 1
    if len(values) == 1:
        what = "all zero" if values[0] == 0 else f"all {values[0]:g}"
        report.problems.append(f"{mask_path}: mask is {what}: one class only teaches nothing; fix or remove the pair")
    if image.min() == image.max():
        report.problems.append(f"{image_path}: image is constant ({image.min():g} everywhere); fix or remove the pair")
    digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()
    cells = mask if num_class > 1 else as_cell_mask(mask, mask_foreground)
    return digest, int(np.count_nonzero(cells)), mask.size


def check_dataset(data_dir: str | Path, num_class: int = 1, progress: bool = False,
                  mask_foreground: str = "cell") -> DataReport:
    """Check every image/mask pair of a training folder (see train.find_training_folders).

    ``mask_foreground``: what binary masks' non-zero pixels are, "cell" (ISBI's labels)
    or "membrane"; the balance and the inverted-mask warning read masks that way.

    Raises UserError only when the folder itself is missing; everything else found is
    listed in the returned report's ``problems`` (training would fail or be meaningless)
    and ``warnings``.
    """
    from isbi_unet.protocol import find_training_folders

    image_dir, mask_dir = find_training_folders(data_dir)
    report = DataReport(image_dir, mask_dir)
    try:
        image_paths = list_images(image_dir)
        mask_paths = list_images(mask_dir)
    except UserError as error:
        report.problems.append(str(error))
        return report
    matched = {path: find_mask(path, mask_dir) for path in image_paths}
    for path, mask in matched.items():
        if mask is None:
            report.problems.append(f"{path}: no mask named {path.stem}.png (or {path.stem}_mask.png) in {mask_dir}; add it or remove the image")
    for path in sorted(set(mask_paths) - set(matched.values())):
        report.problems.append(f"{path}: mask without an image in {image_dir}; add the image or remove the mask")
    bar = None
    if progress:
        from isbi_unet.progress import progress_bar

        bar = progress_bar(len(matched), "pair")
    seen: dict[bytes, Path] = {}
    foreground = total = 0
    for image_path, mask_path in matched.items():
        found = check_pair(image_path, mask_path, report, num_class, mask_foreground) if mask_path else None
        if found:
            report.pairs.append(image_path.stem)
            digest, cells, pixels = found
            if digest in seen:
                report.problems.append(f"{image_path}: same pixels as {seen[digest]}; remove one "
                                       "(a copy on both sides of the validation split inflates the held-out scores)")
            seen.setdefault(digest, image_path)
            foreground, total = foreground + cells, total + pixels
        if bar is not None:
            bar.add(1)
    if total:
        report.foreground_fraction = foreground / total
    if len(report.conventions) > 1 and num_class == 1:
        report.problems.append(f"masks mix the 0/1 and 0/255 conventions ({dict(report.conventions)}); a batch with "
                               "both reads the 0/1 masks as all membrane: save every mask as 0/255")
    if num_class > 1 and mask_foreground != "cell":
        report.problems.append("--mask-foreground is for binary masks; label masks (--num-class) say each pixel's class")
    if num_class == 1 and report.foreground_fraction is not None and report.foreground_fraction < 0.5:
        other = "membrane" if mask_foreground == "cell" else "cell"
        report.warnings.append(
            f"only {100 * report.foreground_fraction:.1f}% of mask pixels are cell as --mask-foreground "
            f"{mask_foreground} reads the masks, though cells cover most of a slice: the masks look inverted; "
            f"if their non-zero pixels are {other}, add --mask-foreground {other}")
    return report


def require_clean(data_dir: str | Path, num_class: int = 1, mask_foreground: str = "cell") -> DataReport:
    """Check the folder; raise UserError naming the first problem when there is any."""
    report = check_dataset(data_dir, num_class=num_class, mask_foreground=mask_foreground)
    if report.problems:
        more = len(report.problems) - 1
        suffix = f" ({more} more problem(s): run `python main.py check --data {data_dir}`)" if more else ""
        raise UserError(report.problems[0] + suffix)
    return report
