"""Patch tiling and voting for whole-image toolchains (RL-Restore `--dataset mine`, ANCHORS 4.7).

The agent looks at non-overlapping size×size patches laid from the top-left corner; the leftover
bottom rows and right columns take no part in the decision. Each patch proposes an action, and a
majority vote picks one action per step for the whole image. The per-patch PSNR with the
reference's 1e-10 guard (ANCHORS 4.2) is the reward of a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Vote",
    "extract_patches",
    "majority_vote",
    "patch_origins",
    "patch_psnr",
    "voting_patches",
]


def patch_origins(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners (row, col) of the ⌊H/size⌋·⌊W/size⌋ non-overlapping patches, row-major."""
    if size < 1:
        raise ValueError(f"patch size must be positive, got {size}")
    return [(r * size, c * size) for r in range(height // size) for c in range(width // size)]


def extract_patches(x: Tensor, size: int) -> Tensor:
    """N×C×H×W → (N·P)×C×size×size, the patches of `patch_origins` of each image in order
    (image-major, then row-major). P = 0 when the image is smaller than a patch."""
    if x.ndim != 4:
        raise ValueError(f"expected an N×C×H×W tensor, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    rows, cols = h // size, w // size
    if rows == 0 or cols == 0:
        return x.new_empty((0, c, size, size))
    grid = x[:, :, : rows * size, : cols * size].reshape(n, c, rows, size, cols, size)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(n * rows * cols, c, size, size)


def voting_patches(x: Tensor, size: int) -> Tensor:
    """The patches the agent votes with for one image (1×C×H×W): `extract_patches`, or, for an
    image smaller than a patch on either side, the image itself replicate-padded at the bottom
    and right to size×size (one voter)."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected a 1×C×H×W tensor, got shape {tuple(x.shape)}")
    patches = extract_patches(x, size)
    if patches.shape[0] > 0:
        return patches
    h, w = x.shape[-2:]
    crop = x[..., : min(h, size), : min(w, size)]
    return F.pad(crop, (0, size - crop.shape[-1], 0, size - crop.shape[-2]), mode="replicate")


@dataclass(frozen=True)
class Vote:
    """The outcome of one step's vote: the winning action and every action's count."""

    winner: int
    counts: tuple[int, ...]

    @property
    def voters(self) -> int:
        return sum(self.counts)


def majority_vote(actions: Sequence[int] | Tensor, n_actions: int, scores: Tensor | None = None) -> Vote:
    """The action most patches chose. Ties go to the tied action with the largest summed score
    over all patches (`scores`: P×n_actions, e.g. Q-values), then to the lowest action index."""
    chosen = torch.as_tensor(actions, dtype=torch.long).reshape(-1)
    if chosen.numel() == 0:
        raise ValueError("no votes")
    if int(chosen.min()) < 0 or int(chosen.max()) >= n_actions:
        raise ValueError(f"actions must be in 0..{n_actions - 1}")
    counts = torch.bincount(chosen, minlength=n_actions)
    tied = [int(a) for a in torch.nonzero(counts == counts.max()).flatten()]
    if len(tied) > 1 and scores is not None:
        if tuple(scores.shape) != (chosen.numel(), n_actions):
            raise ValueError(f"scores must be {chosen.numel()}×{n_actions}, got {tuple(scores.shape)}")
        totals = scores.detach().to(torch.float64).sum(dim=0)
        best = max(float(totals[a]) for a in tied)
        tied = [a for a in tied if float(totals[a]) == best]
    return Vote(winner=min(tied), counts=tuple(int(c) for c in counts))


def patch_psnr(x: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR on [0, 1] data, 10·log10(1 / (MSE + 1e-10)) (RL-Restore's reward): N."""
    return -patch_log_mse(x, target)


def patch_log_mse(x: Tensor, target: Tensor) -> Tensor:
    """Per-image 10·log10(MSE + 1e-10) on [0, 1] data, minus `patch_psnr`, differentiable: N."""
    if x.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(target.shape)}")
    mse = (x.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(mse + 1e-10)
