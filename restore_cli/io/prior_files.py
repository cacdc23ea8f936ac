"""Category-prior files for `restore sr --model sftgan --prior FILE` and `--save-prior`.

Two input formats, each at LR size (the input image's h×w) or HR size (s·h × s·w):

- `.npy`: float (or integer/bool) array K×H×W of per-pixel category probabilities, K = the
  model's number of categories. Every value must be finite and ≥ 0 and every pixel must sum to 1
  within SUM_TOLERANCE (it is then renormalised exactly). Maps that are not probabilities are
  refused rather than normalised: a silent normalisation would hide logits, a missing category
  or overlapping masks.
- a label image (PNG, TIFF or BMP; one channel: 8/16-bit gray or palette indices): one integer
  label per pixel. Without a class list a label is the category index itself (0 … K−1). A class
  list (text, one `LABEL CATEGORY` pair per line, `#` comments) maps the image's labels to
  categories; CATEGORY `uniform` means no information (equal probabilities), e.g. `255 uniform`
  for a "void" label.

`write_prior_png` writes the most likely category per pixel as a palette PNG whose palette
indices are the categories, so the file it writes is itself a valid label image for `--prior`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_bytes

SUM_TOLERANCE = 1e-3
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
UNIFORM = "uniform"

# Distinct colours for the first categories (then generated), as in segmentation colour maps.
_BASE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (70, 130, 180), (34, 139, 34), (210, 180, 140), (178, 34, 34), (255, 215, 0),
    (0, 139, 139), (148, 0, 211), (255, 140, 0), (0, 0, 128), (154, 205, 50), (255, 105, 180),
    (139, 69, 19), (0, 255, 255), (240, 240, 240), (30, 30, 30),
)


@dataclass(frozen=True)
class PriorMaps:
    """Category probabilities K×H×W float32 (each pixel sums to 1) and whether H×W is the HR size."""

    probabilities: np.ndarray
    at_hr: bool

    @property
    def categories(self) -> int:
        return int(self.probabilities.shape[0])


def category_palette(categories: int) -> np.ndarray:
    """K×3 uint8 colours, the same for every call (fixed list, then a golden-angle hue walk)."""
    colours = list(_BASE_PALETTE[:categories])
    index = len(colours)
    while len(colours) < categories:
        hue = (index * 0.618033988749895) % 1.0
        rgb = Image.new("HSV", (1, 1), (int(hue * 255), 200, 220)).convert("RGB").getpixel((0, 0))
        colours.append(tuple(int(v) for v in rgb))  # type: ignore[arg-type]
        index += 1
    return np.array(colours, dtype=np.uint8).reshape(-1, 3)


def _check_size(height: int, width: int, lr_size: tuple[int, int], scale: int, path: Path) -> bool:
    """True for HR size, False for LR size; RestoreError otherwise."""
    h, w = lr_size
    if (height, width) == (h, w):
        return False
    if (height, width) == (scale * h, scale * w):
        return True
    raise RestoreError(
        f"prior is {height}×{width}, but this input needs {h}×{w} (LR size) or {scale * h}×{scale * w} (HR size)", path
    )


def _read_npy(path: Path, categories: int, lr_size: tuple[int, int], scale: int) -> PriorMaps:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RestoreError("prior file not found", path) from None
    except (OSError, ValueError, EOFError) as exc:
        raise RestoreError(f"cannot read the prior as a .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", path) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
        raise RestoreError(f"prior must be a numeric array, got dtype {getattr(array, 'dtype', type(array))}", path)
    if array.ndim != 3:
        raise RestoreError(f"prior must be a K×H×W array of category probabilities, got shape {array.shape}", path)
    if array.shape[0] != categories:
        hint = " (channels last? expected K×H×W)" if array.shape[-1] == categories else ""
        raise RestoreError(f"prior has {array.shape[0]} maps, but the model uses {categories} categories{hint}", path)
    at_hr = _check_size(array.shape[1], array.shape[2], lr_size, scale, path)
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise RestoreError("prior contains NaN or infinite values", path)
    if values.min() < 0:
        y, x = np.unravel_index(int(values.min(axis=0).argmin()), values.shape[1:])
        raise RestoreError(f"prior has negative values (min {values.min():.4g} at pixel ({y}, {x})); it must hold probabilities", path)
    sums = values.sum(axis=0)
    worst = np.unravel_index(int(np.abs(sums - 1.0).argmax()), sums.shape)
    if abs(sums[worst] - 1.0) > SUM_TOLERANCE:
        raise RestoreError(
            f"prior does not sum to 1 over the categories (pixel ({worst[0]}, {worst[1]}) sums to {sums[worst]:.4g}); "
            "give probabilities, e.g. p / p.sum(axis=0)", path,
        )
    return PriorMaps((values / sums).astype(np.float32), at_hr)


def read_class_list(path: Path, categories: int) -> dict[int, int]:
    """`LABEL CATEGORY` lines → {label: category index}; category −1 stands for `uniform`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RestoreError("class list not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RestoreError(f"cannot read the class list ({exc})", path) from None
    mapping: dict[int, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise RestoreError(f"line {number}: expected 'LABEL CATEGORY', got {raw.strip()!r}", path)
        try:
            label = int(parts[0])
        except ValueError:
            raise RestoreError(f"line {number}: label {parts[0]!r} is not an integer", path) from None
        if label < 0:
            raise RestoreError(f"line {number}: label {label} is negative", path)
        if parts[1].lower() == UNIFORM:
            category = -1
        else:
            try:
                category = int(parts[1])
            except ValueError:
                raise RestoreError(f"line {number}: category {parts[1]!r} is neither an index nor '{UNIFORM}'", path) from None
            if not 0 <= category < categories:
                raise RestoreError(f"line {number}: category {category} is out of range (the model has categories 0–{categories - 1})", path)
        if label in mapping:
            raise RestoreError(f"line {number}: label {label} is listed twice", path)
        mapping[label] = category
    if not mapping:
        raise RestoreError("class list is empty", path)
    return mapping


def _read_labels(path: Path) -> np.ndarray:
    """H×W int64 labels of a one-channel image (gray values or palette indices)."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise RestoreError(f"a label image needs one channel of integer labels (gray or palette), this one is {mode}", path)
            labels = np.asarray(image).astype(np.int64)
    except FileNotFoundError:
        raise RestoreError("prior file not found", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RestoreError(f"cannot read the label image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", path) from None
    if labels.ndim != 2:
        raise RestoreError(f"a label image needs one channel, got shape {labels.shape}", path)
    return labels


def _labels_to_probabilities(labels: np.ndarray, categories: int, mapping: dict[int, int] | None, path: Path,
                             classes: Path | None) -> np.ndarray:
    present = np.unique(labels)
    if mapping is None:
        bad = present[(present < 0) | (present >= categories)]
        if bad.size:
            y, x = np.argwhere(labels == bad[0])[0]
            raise RestoreError(
                f"label {bad[0]} at pixel ({y}, {x}) is out of range: the model has categories 0–{categories - 1} "
                "(give a class list to map other labels)", path,
            )
        lookup = {int(v): int(v) for v in present}
    else:
        missing = [int(v) for v in present if int(v) not in mapping]
        if missing:
            y, x = np.argwhere(labels == missing[0])[0]
            raise RestoreError(f"label {missing[0]} at pixel ({y}, {x}) is not in the class list {classes}", path)
        lookup = mapping
    out = np.zeros((categories, *labels.shape), dtype=np.float32)
    for value in present:
        category = lookup[int(value)]
        where = labels == value
        if category < 0:
            out[:, where] = 1.0 / categories
        else:
            out[category, where] = 1.0
    return out


def read_prior_file(path: Path, categories: int, lr_size: tuple[int, int], scale: int = 4,
                    classes: Path | None = None) -> PriorMaps:
    """Read a `.npy` probability array or a label image (with an optional class list) for an input
    of LR size `lr_size` = (h, w); RestoreError naming the file and the problem otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if classes is not None:
            raise RestoreError("a class list applies to label images, not to .npy probability maps", classes)
        return _read_npy(path, categories, lr_size, scale)
    if suffix in LOSSY_SUFFIXES:
        raise RestoreError("a label image must be lossless (PNG, TIFF or BMP): lossy compression changes labels", path)
    if suffix not in LABEL_SUFFIXES:
        raise RestoreError("unknown prior format: give a K×H×W .npy array or a label image (.png, .tif, .bmp)", path)
    mapping = None if classes is None else read_class_list(classes, categories)
    labels = _read_labels(path)
    at_hr = _check_size(labels.shape[0], labels.shape[1], lr_size, scale, path)
    return PriorMaps(_labels_to_probabilities(labels, categories, mapping, path, classes), at_hr)


def find_prior_in_folder(folder: Path, stem: str) -> Path:
    """The prior file of one input in a `--prior FOLDER`: `<stem>.npy` or `<stem>.png|.tif|.tiff|.bmp`."""
    candidates = [folder / f"{stem}{suffix}" for suffix in (".npy", *LABEL_SUFFIXES)]
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise RestoreError(f"no prior for input '{stem}' (looked for {stem}.npy, {stem}.png, {stem}.tif, {stem}.bmp)", folder)
    if len(found) > 1:
        raise RestoreError(f"several priors for input '{stem}': {', '.join(p.name for p in found)}", folder)
    return found[0]


def prior_png_bytes(probabilities: np.ndarray) -> bytes:
    """The most likely category per pixel of K×H×W maps as palette-PNG bytes (index = category)."""
    p = np.asarray(probabilities)
    if p.ndim != 3:
        raise ValueError(f"expected K×H×W maps, got shape {p.shape}")
    k = p.shape[0]
    if k > 256:
        raise ValueError(f"a palette PNG holds at most 256 categories, got {k}")
    labels = np.ascontiguousarray(p.argmax(axis=0).astype(np.uint8))
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:k] = category_palette(k)
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_prior_png(path: Path, probabilities: np.ndarray) -> None:
    """Write the colour-coded category map (see `prior_png_bytes`) atomically."""
    atomic_write_bytes(Path(path), prior_png_bytes(probabilities))
