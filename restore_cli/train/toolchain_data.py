"""Training data of the RL-Restore toolchain (ANCHORS 4.5): clean images at three scales, 63×63
patches, and the distortions made on the fly.

- Scales: every training image is used at ×1, ×2/3 and ×1/3 (MATLAB bicubic on uint8, as
  `generate_train.m` does with `imresize`); versions smaller than a patch are left out.
- Single distortions (tool training): Gaussian blur with a 21×21 kernel and replicate borders,
  AWGN clipped to [0, 1], or a JPEG round trip, with the parameter uniform over the tool's range.
- Mixed distortions (agent training, joint fine-tuning, the generic CNN): blur → noise → JPEG at a
  severity's level triples (`restore_cli.ops.rl_restore`).
- Episodes (agent training): a share of single-distortion patches mixed with the mixed ones
  (about 1:1 in the reference, ANCHORS 4.4).

Random choices: numpy draws from the `Generator` passed in, tensor draws (noise) from the torch
`Generator`, in the order each docstring gives, so that a saved generator state resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from restore_cli.models.toolchain import TOOL_SPECS, ToolSpec
from restore_cli.ops.degradation import add_gaussian_noise, blur, jpeg_compress
from restore_cli.ops.kernels import fspecial_gaussian
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.rl_restore import BLUR_KERNEL_SIZE, SEVERITY_WINDOWS, apply_mixed_distortion, draw_mixed_distortion
from restore_cli.train.data import ImageSet, load_image_set, sample_patches

SCALES: tuple[float, ...] = (1.0, 2.0 / 3.0, 1.0 / 3.0)
PATCH = 63
VAL_SEED = 0


def multi_scale_set(images: ImageSet, patch: int = PATCH, scales: Sequence[float] = SCALES) -> ImageSet:
    """Every image at each scale (MATLAB bicubic on uint8), leaving out versions smaller than
    `patch`; order: image by image, scales in the given order."""
    out: list[np.ndarray] = []
    paths: list[Path] = []
    for image, path in zip(images.images, images.paths):
        for scale in scales:
            if scale == 1.0:
                resized = image
            else:
                chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
                resized = np.ascontiguousarray(matlab_imresize(chw, scale=scale).numpy().transpose(1, 2, 0))
            if min(resized.shape[:2]) >= patch:
                out.append(resized)
                paths.append(path)
    return ImageSet(images=tuple(out), paths=tuple(paths), channels=images.channels, skipped=images.skipped)


def load_training_patches_source(folders: Sequence[Path], channels: int, patch: int = PATCH) -> tuple[ImageSet, str]:
    """The training images at three scales and the fingerprint of the originals (for resume)."""
    originals = load_image_set(list(folders), channels, min_size=patch)
    return multi_scale_set(originals, patch), originals.fingerprint()


# --- single distortions ------------------------------------------------------------------------


def draw_tool_parameters(spec: ToolSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """n parameters uniform over the tool's range (blur σ, noise σ on 0–255, or JPEG quality)."""
    return rng.uniform(spec.low, spec.high, size=n)


def apply_single_distortion(x: Tensor, distortion: str, values: Sequence[float], generator: torch.Generator) -> Tensor:
    """One distortion per image of x (N×C×H×W in [0, 1]) with its own parameter: blur σ (21×21
    Gaussian, replicate borders), noise σ on the 0–255 scale (clipped to [0, 1]), JPEG quality."""
    values = [float(v) for v in values]
    if len(values) != x.shape[0]:
        raise ValueError(f"got {len(values)} parameters for {x.shape[0]} images")
    if distortion == "blur":
        kernels = np.stack([fspecial_gaussian(BLUR_KERNEL_SIZE, max(v, 1e-3)) for v in values])[:, None]
        return blur(x, torch.from_numpy(kernels).to(x.dtype), boundary="replicate")
    if distortion == "noise":
        return add_gaussian_noise(x, torch.tensor(values, dtype=x.dtype) / 255.0, generator=generator, clip=True)
    if distortion == "jpeg":
        return torch.cat([jpeg_compress(x[i:i + 1], v) for i, v in enumerate(values)])
    raise ValueError(f"unknown distortion {distortion!r}")


@dataclass
class PatchPairs:
    """Distorted inputs and clean targets, N×C×P×P on the CPU."""

    inputs: Tensor
    targets: Tensor

    def to(self, device: torch.device) -> PatchPairs:
        return PatchPairs(self.inputs.to(device), self.targets.to(device))


def tool_pairs(images: ImageSet, spec: ToolSpec, batch: int, patch: int, rng: np.random.Generator,
               generator: torch.Generator) -> PatchPairs:
    """Training pairs of one tool. Draw order: patches (`sample_patches`), then the parameters
    from `rng`, then noise from `generator`."""
    clean = sample_patches(images, batch, patch, rng)
    values = draw_tool_parameters(spec, batch, rng)
    return PatchPairs(apply_single_distortion(clean, spec.distortion, values, generator), clean)


def toolbox_pairs(images: ImageSet, batch: int, patch: int, rng: np.random.Generator,
                  generator: torch.Generator) -> list[PatchPairs]:
    """One batch per tool, tool01 … tool12 in order."""
    return [tool_pairs(images, spec, batch, patch, rng, generator) for spec in TOOL_SPECS]


# --- mixed distortions and episodes --------------------------------------------------------------


def check_severity(severity: str) -> None:
    if severity not in SEVERITY_WINDOWS:
        raise ValueError(f"unknown severity {severity!r}; use one of {', '.join(SEVERITY_WINDOWS)}")


def mixed_pairs(images: ImageSet, batch: int, patch: int, severity: str, rng: np.random.Generator,
                generator: torch.Generator) -> PatchPairs:
    """Mixed blur → noise → JPEG pairs at a severity. Draw order: patches, then per patch its
    distortion (`draw_mixed_distortion`) from `rng` and its noise from `generator`."""
    check_severity(severity)
    clean = sample_patches(images, batch, patch, rng)
    inputs = torch.cat([apply_mixed_distortion(clean[i:i + 1], draw_mixed_distortion(rng, severity), generator)
                        for i in range(batch)])
    return PatchPairs(inputs, clean)


def episode_pairs(images: ImageSet, batch: int, patch: int, severity: str, single_share: float,
                  rng: np.random.Generator, generator: torch.Generator, clean_share: float = 0.0) -> PatchPairs:
    """Starting patches of agent episodes: with probability `single_share` a single distortion
    from a random tool's range, with probability `clean_share` the clean patch itself (every tool
    can only lose there: the case the stop action is for), else a mixed one at `severity`.
    Draw order: patches; then per patch one uniform number that makes the choice, (single) the
    tool and its parameter or (mixed) the distortion, and its noise; so clean_share 0 draws
    exactly as before it existed."""
    check_severity(severity)
    if single_share + clean_share > 1.0 + 1e-9:
        raise ValueError(f"single_share + clean_share must be at most 1, got {single_share} + {clean_share}")
    clean = sample_patches(images, batch, patch, rng)
    inputs = []
    for i in range(batch):
        one = clean[i:i + 1]
        u = rng.random()
        if u < single_share:
            spec = TOOL_SPECS[int(rng.integers(len(TOOL_SPECS)))]
            inputs.append(apply_single_distortion(one, spec.distortion, draw_tool_parameters(spec, 1, rng), generator))
        elif u < single_share + clean_share:
            inputs.append(one.clone())
        else:
            inputs.append(apply_mixed_distortion(one, draw_mixed_distortion(rng, severity), generator))
    return PatchPairs(torch.cat(inputs), clean)


def validation_rng(seed: int = VAL_SEED) -> tuple[np.random.Generator, torch.Generator]:
    """Fixed generators of validation sets (the same patches at every validation)."""
    return np.random.default_rng([seed, 99]), torch.Generator().manual_seed(seed + 99)
