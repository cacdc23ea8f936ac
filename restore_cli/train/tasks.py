"""Training tasks: how a batch of clean patches becomes (network input, target), on the fly.

- Denoiser (DRUNet recipe, ANCHORS 2.3): x + n with n ~ N(0, σ²), σ ~ U[σ_lo, σ_hi] per patch;
  the network gets σ as a constant map and predicts the clean image.
- USRNet (ANCHORS 1.1, 1.10): y = (x ⊗ k)↓s + n with one scale s per batch, a random 25×25
  kernel per patch (`ops.kernels.training_kernel`: ½ motion, ½ anisotropic Gaussian), wrap
  boundary, upper-left decimation, and float noise with σ = 0 for 1/9 of the patches and
  σ ~ U[σ_lo, σ_hi] otherwise.

SFM (ANCHORS 3.2): with probability `rate` per patch the clean image is DCT-band masked *before*
the degradation, and the masked image is also the target. For AWGN this is exactly the
reference's loss (predicted residual vs the noise): input = masked + n, target = input − n =
masked. For SR the HR is masked before blur and decimation, and the network is asked to recover
that masked HR, not to invent the missing band.

Random choices: the recipe draws (σ, kernels, scale) come from a `numpy.random.Generator`;
tensor draws (noise, SFM selection and masks) from a CPU `torch.Generator`. Batches are built on
the CPU so that they do not depend on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import torch
from torch import Tensor

from restore_cli.ops.dct import SfmMode, sfm_batch
from restore_cli.ops.degradation import add_gaussian_noise, blur, decimate
from restore_cli.ops.kernels import fspecial_gaussian, training_kernel

TaskName = Literal["denoiser", "usrnet"]

KERNEL_SIZE = 25
# USRNet (KAIR dataset_usrnet): one patch in nine is noise-free.
ZERO_NOISE_FRACTION = 1.0 / 9.0
# Validation degradations: σ 25 for the denoiser; ×4 with an isotropic Gaussian (width 1.6,
# kernels_12 #3) and no noise for USRNet.
VAL_DENOISER_SIGMA_255 = 25.0
VAL_USRNET_SCALE = 4
VAL_USRNET_KERNEL_WIDTH = 1.6
VAL_SEED = 0


@dataclass(frozen=True)
class SfmSettings:
    """Stochastic frequency masking of the clean patches: each one with probability `rate`."""

    rate: float
    mode: SfmMode
    center: float = 0.85
    spread: float = 0.15

    @property
    def active(self) -> bool:
        return self.rate > 0.0


@dataclass
class DenoiserBatch:
    """noisy N×C×P×P, sigma N×1×1×1 on [0, 1], target N×C×P×P."""

    noisy: Tensor
    sigma: Tensor
    target: Tensor

    def model_args(self) -> tuple:
        return (self.noisy, self.sigma)

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> DenoiserBatch:
        return DenoiserBatch(
            noisy=self.noisy.to(device).contiguous(memory_format=memory_format),
            sigma=self.sigma.to(device),
            target=self.target.to(device),
        )


@dataclass
class UsrnetBatch:
    """lr N×C×(P/s)×(P/s), kernels N×1×25×25, one integer scale, sigma N×1×1×1, target N×C×P×P."""

    lr: Tensor
    kernels: Tensor
    scale: int
    sigma: Tensor
    target: Tensor

    def model_args(self) -> tuple:
        return (self.lr, self.kernels, self.scale, self.sigma)

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> UsrnetBatch:
        return UsrnetBatch(
            lr=self.lr.to(device).contiguous(memory_format=memory_format),
            kernels=self.kernels.to(device),
            scale=self.scale,
            sigma=self.sigma.to(device),
            target=self.target.to(device),
        )


TrainingBatch = Union[DenoiserBatch, UsrnetBatch]


def apply_sfm(clean: Tensor, sfm: SfmSettings | None, generator: torch.Generator) -> Tensor:
    """The clean batch with each sample DCT-masked with probability sfm.rate (unchanged if off)."""
    if sfm is None or not sfm.active:
        return clean
    return sfm_batch(clean, sfm.rate, sfm.mode, generator, center=sfm.center, spread=sfm.spread)


def denoiser_batch(
    clean: Tensor,
    noise_range: tuple[float, float],
    rng: np.random.Generator,
    generator: torch.Generator,
    sfm: SfmSettings | None = None,
) -> DenoiserBatch:
    """AWGN training pair from clean N×C×P×P patches; `noise_range` is (σ_lo, σ_hi) on [0, 1].

    Draw order: N values σ ~ U[lo, hi] from `rng`; then SFM (selection, masks) and the noise from
    `generator`. The noise is not clipped (the benchmark convention, ANCHORS 6.2).
    """
    lo, hi = noise_range
    sigma = torch.from_numpy(rng.uniform(lo, hi, size=clean.shape[0])).to(torch.float32)
    target = apply_sfm(clean, sfm, generator)
    noisy = add_gaussian_noise(target, sigma, generator)
    return DenoiserBatch(noisy=noisy, sigma=sigma.view(-1, 1, 1, 1), target=target)


def usrnet_batch(
    clean: Tensor,
    scales: tuple[int, ...],
    noise_range: tuple[float, float],
    rng: np.random.Generator,
    generator: torch.Generator,
    sfm: SfmSettings | None = None,
) -> UsrnetBatch:
    """USRNet training pair from clean HR N×C×P×P patches (P divisible by every scale).

    Draw order from `rng`: the scale (uniform over `scales`), N kernels, N noise-free flags
    (probability 1/9), N values σ ~ U[lo, hi]; then SFM and the noise from `generator`.
    """
    n = clean.shape[0]
    scale = int(scales[int(rng.integers(len(scales)))])
    kernels = np.stack([training_kernel(rng, KERNEL_SIZE) for _ in range(n)])
    noise_free = rng.random(n) < ZERO_NOISE_FRACTION
    lo, hi = noise_range
    sigma_np = np.where(noise_free, 0.0, rng.uniform(lo, hi, size=n))
    sigma = torch.from_numpy(sigma_np).to(torch.float32)
    k = torch.from_numpy(kernels).to(torch.float32).unsqueeze(1)  # N×1×25×25
    target = apply_sfm(clean, sfm, generator)
    lr = decimate(blur(target, k, boundary="wrap"), scale)
    lr = add_gaussian_noise(lr.contiguous(), sigma, generator)
    return UsrnetBatch(lr=lr, kernels=k, scale=scale, sigma=sigma.view(-1, 1, 1, 1), target=target)


def denoiser_validation_batch(clean: Tensor, index: int) -> DenoiserBatch:
    """Fixed validation pair for one clean 1×C×H×W image: σ = 25, noise seeded by VAL_SEED + index."""
    generator = torch.Generator().manual_seed(VAL_SEED + index)
    sigma = torch.full((1,), VAL_DENOISER_SIGMA_255 / 255.0)
    noisy = add_gaussian_noise(clean, sigma, generator)
    return DenoiserBatch(noisy=noisy, sigma=sigma.view(1, 1, 1, 1), target=clean)


def usrnet_validation_batch(clean: Tensor) -> UsrnetBatch:
    """Fixed validation pair for one clean 1×C×H×W image (sides divisible by 4): ×4, Gaussian
    kernel of width 1.6, no noise."""
    k = torch.from_numpy(fspecial_gaussian(KERNEL_SIZE, VAL_USRNET_KERNEL_WIDTH)).to(torch.float32).view(1, 1, KERNEL_SIZE, KERNEL_SIZE)
    lr = decimate(blur(clean, k, boundary="wrap"), VAL_USRNET_SCALE).contiguous()
    return UsrnetBatch(lr=lr, kernels=k, scale=VAL_USRNET_SCALE, sigma=torch.zeros(1, 1, 1, 1), target=clean)
