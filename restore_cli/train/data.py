"""Training data: clean images held in memory as uint8, the random patch sampler, and the
prefetcher that makes batches ahead in a thread.

Every image of the given folders is read once (`io.images.read_image`) and kept as an
H×W×C uint8 array: gray images are replicated to 3 channels for colour training, colour images
are converted with MATLAB `rgb2gray` weights for gray training. A training batch is a set of
random square patches, each under one of the 8 dihedral transforms (rotations by 90° and flips),
with every random choice taken from the `numpy.random.Generator` passed in, so that a seed fixes
the batches and a saved generator state resumes them exactly. 16-bit images are rounded to 8 bits.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from restore_cli.errors import RestoreError
from restore_cli.io.images import SUPPORTED_SUFFIXES, read_image
from restore_cli.ops.colour import rgb_to_gray

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True)
class ImageSet:
    """Clean images in memory: `images[i]` is H×W×C uint8 read from `paths[i]`; `skipped` are the
    files left out for being smaller than the patch."""

    images: tuple[np.ndarray, ...]
    paths: tuple[Path, ...]
    channels: int
    skipped: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """sha256 over every image's size and pixels, in order: tells whether a resumed run sees
        the same data (file names and folders may move; the pixels may not)."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(repr(image.shape).encode())
            digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, hidden entries skipped), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RestoreError("data folder not found" if not folder.exists() else "not a folder", folder)
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUPPORTED_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def to_uint8_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """H×W×C float array in [0, 1] (C = 1 or 3) → H×W×`channels` uint8.

    3 → 1: MATLAB rgb2gray weights, then rounding; 1 → 3: the gray channel replicated.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    c = pixels.shape[2]
    if c not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {c}")
    if channels == 1 and c == 3:
        gray = rgb_to_gray(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float64)))
        pixels = gray.numpy().transpose(1, 2, 0)
    levels = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    if channels == 3 and c == 1:
        levels = np.repeat(levels, 3, axis=2)
    return np.ascontiguousarray(levels)


def load_image_set(folders: Sequence[Path], channels: int, min_size: int = 1) -> ImageSet:
    """Read every image of `folders` as H×W×`channels` uint8, leaving out (and listing in
    `skipped`) those smaller than `min_size` on either side: a training patch must fit inside.

    Raises RestoreError for a missing folder, a folder without images, an unreadable image, or
    when no image is large enough.
    """
    if channels not in (1, 3):
        raise RestoreError(f"channels must be 1 or 3, got {channels}")
    if not folders:
        raise RestoreError("no data folder given")
    images: list[np.ndarray] = []
    paths: list[Path] = []
    skipped: list[Path] = []
    for folder in folders:
        files = list_images(Path(folder))
        if not files:
            suffixes = ", ".join(SUPPORTED_SUFFIXES)
            raise RestoreError(f"no images found (looked for {suffixes})", folder)
        for path in files:
            array = to_uint8_channels(read_image(path).pixels, channels)
            if min(array.shape[:2]) < min_size:
                skipped.append(path)
                continue
            images.append(array)
            paths.append(path)
    if not images:
        where = ", ".join(str(f) for f in folders)
        raise RestoreError(f"all {len(skipped)} images are smaller than {min_size}×{min_size} (use a smaller --patch)", where)
    return ImageSet(images=tuple(images), paths=tuple(paths), channels=channels, skipped=tuple(skipped))


def dihedral(array: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 dihedral transforms of an H×W(×C) array: rotate by 90°·(mode % 4) counter-
    clockwise, then flip upside down when mode ≥ 4 (the convention of `ops.kernels.augment_kernel`)."""
    if not 0 <= mode < 8:
        raise ValueError(f"augmentation mode must be in 0..7, got {mode}")
    out = np.rot90(array, mode % 4, axes=(0, 1))
    return out[::-1] if mode >= 4 else out


def uint8_to_tensor(batch: np.ndarray) -> Tensor:
    """N×H×W×C uint8 → N×C×H×W float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


def sample_patches(images: ImageSet, batch: int, patch: int, rng: np.random.Generator) -> Tensor:
    """`batch` random `patch`×`patch` crops → N×C×P×P float32 in [0, 1].

    Per sample, in this order from `rng`: the image (uniform over images), the top-left corner
    (uniform over valid positions), the dihedral transform (uniform over 8).
    """
    out = np.empty((batch, patch, patch, images.channels), dtype=np.uint8)
    for i in range(batch):
        image = images.images[int(rng.integers(len(images)))]
        height, width = image.shape[:2]
        top = int(rng.integers(height - patch + 1))
        left = int(rng.integers(width - patch + 1))
        mode = int(rng.integers(8))
        out[i] = dihedral(image[top : top + patch, left : left + patch], mode)
    return uint8_to_tensor(out)


def center_crop(image: np.ndarray, max_size: int, multiple: int = 1) -> np.ndarray:
    """Centre crop of an H×W×C array to at most `max_size` per side, each side a multiple of
    `multiple` (validation keeps images small and sizes divisible by the scale)."""
    height, width = image.shape[:2]
    new_h = min(height, max_size) // multiple * multiple
    new_w = min(width, max_size) // multiple * multiple
    if new_h < 1 or new_w < 1:
        raise ValueError(f"a {height}×{width} image has no {multiple}-multiple crop")
    top = (height - new_h) // 2
    left = (width - new_w) // 2
    return image[top : top + new_h, left : left + new_w]


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BatchPrefetcher(Generic[T, S]):
    """Makes training batches `depth` steps ahead in a background thread (depth 0: on demand).

    `produce()` makes one batch; `snapshot()`, called right after it, records the random state
    that the *next* batch will start from. `next()` returns (batch, that state), so a checkpoint
    taken after consuming a batch saves exactly the state from which the run continues, however
    far ahead the thread is. Only the producer touches the generators.
    """

    def __init__(self, produce: Callable[[], T], snapshot: Callable[[], S], depth: int = 0) -> None:
        self._produce = produce
        self._snapshot = snapshot
        self._depth = depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name="restore-train-batches", daemon=True)
            self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._produce()
                if not self._put((batch, self._snapshot())):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(_Failure(error))

    def next(self) -> tuple[T, S]:
        if self._thread is None:
            batch = self._produce()
            return batch, self._snapshot()
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=30)
