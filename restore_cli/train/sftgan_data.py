"""SFT-GAN training data: HR patches, LR made on the fly, and category labels from the texture
clusters (`ops.texture_categories`).

- LR: MATLAB bicubic ×1/4 of the HR patch (`ops.resize.matlab_imresize`, antialiased; 96 HR → 24
  LR), clamped and rounded to 8-bit levels, as an LR photo file would hold it (ANCHORS 5.4, 6.3).
- Prior-network labels: the category of every WINDOW×WINDOW window of the HR patch on the STRIDE
  grid (a 96 patch holds 5×5 windows); window (r, c) covers LR pixels [4·r·s/16 …], i.e. an 8×8
  LR window at stride 4, which is how the prior network's per-pixel predictions are pooled.
- Discriminator labels: one category per HR patch, the majority of its windows when it holds at
  least half of them, else IGNORE (mixed patches train no class).

Random choices come from the `numpy.random.Generator` passed in (patches and windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from restore_cli.models.sft import SCALE, CategoryPriorNet
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.texture_categories import (
    STRIDE,
    WINDOW,
    TextureClusters,
    category_grid,
    patch_category,
)
from restore_cli.train.data import ImageSet, sample_patches

IGNORE = -100
MIN_PURITY = 0.5


def lr_from_hr(hr: Tensor) -> Tensor:
    """N×C×P×P HR patches in [0, 1] → N×C×(P/4)×(P/4) LR: MATLAB bicubic, clamped, 8-bit levels."""
    lr = matlab_imresize(hr.to(torch.float64), scale=1.0 / SCALE).clamp(0.0, 1.0)
    return (torch.round(lr * 255.0) / 255.0).to(torch.float32)


def clusters_of(prior: CategoryPriorNet) -> TextureClusters:
    """The category definition stored in a prior network's buffers."""
    return TextureClusters(
        centres=prior.centres.detach().cpu().double().numpy(),
        mean=prior.feature_mean.detach().cpu().double().numpy(),
        scale=prior.feature_scale.detach().cpu().double().numpy(),
    )


def store_clusters(prior: CategoryPriorNet, clusters: TextureClusters) -> None:
    """Write a category definition into a prior network's buffers (shapes must agree)."""
    with torch.no_grad():
        for buffer, value in ((prior.centres, clusters.centres), (prior.feature_mean, clusters.mean),
                              (prior.feature_scale, clusters.scale)):
            if tuple(buffer.shape) != tuple(value.shape):
                raise ValueError(f"cluster shapes {value.shape} do not fit the prior network's {tuple(buffer.shape)}")
            buffer.copy_(torch.from_numpy(np.asarray(value)).to(buffer.dtype))


def sample_cluster_windows(images: ImageSet, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random WINDOW×WINDOW RGB windows → count×3×W×W float64 in [0, 1]. Per window, from
    `rng`: the image (uniform), the top-left corner (uniform). Features are dihedral-invariant, so
    no augmentation is drawn."""
    out = np.empty((count, 3, WINDOW, WINDOW), dtype=np.float64)
    for i in range(count):
        image = images.images[int(rng.integers(len(images)))]
        top = int(rng.integers(image.shape[0] - WINDOW + 1))
        left = int(rng.integers(image.shape[1] - WINDOW + 1))
        out[i] = image[top:top + WINDOW, left:left + WINDOW].transpose(2, 0, 1) / 255.0
    return out


def window_grids(hr: Tensor, clusters: TextureClusters) -> np.ndarray:
    """Category grids of HR patches N×3×P×P → N×R×C int64 (R = C = (P − WINDOW)/STRIDE + 1)."""
    patches = hr.detach().cpu().double().numpy()
    return np.stack([category_grid(p, clusters) for p in patches])


@dataclass
class PriorBatch:
    """lr N×3×p×p, labels N×R×C int64 (window categories)."""

    lr: Tensor
    labels: Tensor

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> PriorBatch:
        return PriorBatch(self.lr.to(device).contiguous(memory_format=memory_format), self.labels.to(device))


@dataclass
class GanBatch:
    """lr N×3×p×p, hr N×3×P×P, category N int64 (IGNORE for mixed patches)."""

    lr: Tensor
    hr: Tensor
    category: Tensor

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> GanBatch:
        return GanBatch(self.lr.to(device).contiguous(memory_format=memory_format),
                        self.hr.to(device).contiguous(memory_format=memory_format), self.category.to(device))


def prior_batch(images: ImageSet, batch: int, patch: int, rng: np.random.Generator, clusters: TextureClusters) -> PriorBatch:
    """Training batch of the prior network: random HR patches (data.sample_patches draws), their LR
    and their window categories."""
    hr = sample_patches(images, batch, patch, rng)
    return PriorBatch(lr_from_hr(hr), torch.from_numpy(window_grids(hr, clusters)))


def gan_batch(images: ImageSet, batch: int, patch: int, rng: np.random.Generator, clusters: TextureClusters | None) -> GanBatch:
    """Training batch of the generator (and discriminator): HR patches, LR, patch categories
    (all IGNORE when `clusters` is None, i.e. stage 1, which needs none)."""
    hr = sample_patches(images, batch, patch, rng)
    if clusters is None:
        category = torch.full((batch,), IGNORE, dtype=torch.int64)
    else:
        grids = window_grids(hr, clusters)
        category = torch.tensor([patch_category(g, clusters.categories, MIN_PURITY, IGNORE) for g in grids], dtype=torch.int64)
    return GanBatch(lr_from_hr(hr), hr, category)


def validation_crop(image: np.ndarray, max_size: int) -> Tensor:
    """Centre crop of an H×W×3 uint8 image to at most `max_size`, sides multiples of 4 → 1×3×H×W."""
    height, width = image.shape[:2]
    new_h, new_w = min(height, max_size) // SCALE * SCALE, min(width, max_size) // SCALE * SCALE
    top, left = (height - new_h) // 2, (width - new_w) // 2
    crop = image[top:top + new_h, left:left + new_w]
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).unsqueeze(0).to(torch.float32) / 255.0


def pooled_window_probabilities(probabilities: Tensor) -> Tensor:
    """Per-pixel LR category probabilities N×K×h×w → N×K×R×C: the mean over each 8×8 LR window
    at stride 4 (the LR footprint of the WINDOW×WINDOW HR windows at STRIDE)."""
    size, step = WINDOW // SCALE, STRIDE // SCALE
    return torch.nn.functional.avg_pool2d(probabilities, size, stride=step)
