"""Starting points for training: a ResUNet from denoiser weights, USRNet's H from a schedule.

- `load_usrnet_weights`: a whole USRNet (`restore train usrnet --init` with a usrnet file), to
  fine-tune prior and H together, e.g. after a plug-and-play stage that trained H alone.
- `load_resunet_weights`: the denoiser itself (`restore train denoiser --init`) or USRNet's prior
  (`restore train usrnet --init` with a denoiser file) from a resunet-denoiser file. A colour file can start a
  gray network and the other way round: the input weights of the RGB channels are summed (gray
  from colour) or split in three (colour from gray), the output weights averaged or replicated, so
  that on a gray image replicated to RGB the new network computes what the old one did.
- `fit_hyper_schedule`: USRNet's hyper-parameter network H fitted to the plug-and-play schedule of
  DPIR (Zhang et al., TPAMI 2021): denoiser levels σ_k log-spaced from 49/255 down to
  max(s, 255·σ)/255 and α_k = λ·σ_eff²/σ_k² with λ = 0.23, so that training starts from a
  working HQS solver instead of a random one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from restore_cli.errors import RestoreError

# DPIR's settings for SR and deblurring: first denoiser level, trade-off λ.
SCHEDULE_FIRST_SIGMA = 49.0 / 255.0
SCHEDULE_LAMBDA = 0.23
# σ used in α_k = λ σ²/σ_k² when the input is noise-free: keeps α_k (and the FFT solve) well scaled.
SCHEDULE_SIGMA_FLOOR = 1.0 / 255.0


def _adapt_channels(name: str, value: Tensor, shape: tuple[int, ...]) -> Tensor | None:
    """`value` (a head or tail weight) converted to `shape` between 1 and 3 image channels, or None."""
    have = tuple(value.shape)
    if len(have) != 4 or have[2:] != shape[2:]:
        return None
    if name == "m_head.weight" and have[0] == shape[0] and {have[1], shape[1]} == {2, 4}:
        image, level = value[:, :-1], value[:, -1:]
        image = image.sum(dim=1, keepdim=True) if shape[1] == 2 else image.expand(-1, 3, -1, -1) / 3.0
        return torch.cat((image, level), dim=1)
    if name == "m_tail.weight" and have[1] == shape[1] and {have[0], shape[0]} == {1, 3}:
        return value.mean(dim=0, keepdim=True) if shape[0] == 1 else value.expand(3, -1, -1, -1).clone()
    return None


def load_resunet_weights(target: nn.Module, tensors: dict[str, Tensor], metadata: dict[str, Any], path: Path, role: str) -> str:
    """Load resunet-denoiser `tensors` into the ResUNet `target`; returns "exact" or "converted"
    (colour ↔ gray). RestoreError naming the file and the differences when they do not fit."""
    arch = metadata.get("arch")
    if arch is not None and arch != "resunet-denoiser":
        raise RestoreError(f"{role} needs resunet-denoiser weights, this file holds {arch!r}", path)
    state = target.state_dict()
    loaded: dict[str, Tensor] = {}
    converted = False
    problems = [k for k in state if k not in tensors] + [k for k in tensors if k not in state]
    for key, want in state.items():
        if key not in tensors:
            continue
        value = tensors[key]
        if tuple(value.shape) != tuple(want.shape):
            adapted = _adapt_channels(key, value, tuple(want.shape))
            if adapted is None:
                problems.append(key)
                continue
            value, converted = adapted, True
        loaded[key] = value.to(want.dtype)
    if problems:
        from restore_cli.models.architectures import ARCHITECTURES

        wanted = {"channels": target.out_nc, "nc": tuple(target.nc), "nb": target.nb}  # type: ignore[attr-defined]
        try:
            found: Any = ARCHITECTURES["resunet-denoiser"].infer_config(tensors)
        except ValueError:
            found = f"{len(tensors)} tensors not in the resunet-denoiser layout"
        raise RestoreError(f"{role} does not fit: it needs a denoiser {wanted}, the file holds {found}", path)
    target.load_state_dict(loaded)
    return "converted" if converted else "exact"


def load_usrnet_weights(target: nn.Module, tensors: dict[str, Tensor], path: Path) -> str:
    """Load a whole usrnet file (prior p and H) into the USRNet `target`; returns "exact".
    RestoreError naming the file and the tensors that differ when the sizes do not match."""
    state = target.state_dict()
    missing = [k for k in state if k not in tensors]
    extra = [k for k in tensors if k not in state]
    resized = [k for k in state if k in tensors and tuple(tensors[k].shape) != tuple(state[k].shape)]
    if missing or extra or resized:
        shown = ", ".join((missing + extra + resized)[:3])
        raise RestoreError(
            f"--init does not fit this usrnet's --arch-config: {len(missing)} tensors missing, {len(extra)} extra, "
            f"{len(resized)} of another shape (e.g. {shown})",
            path,
        )
    target.load_state_dict({k: tensors[k].to(v.dtype) for k, v in state.items()})
    return "exact"


def hyper_schedule(sigma: Tensor, scale: Tensor, n_iter: int) -> tuple[Tensor, Tensor]:
    """DPIR's (α_k, σ_k), each N×K, for noise levels `sigma` (N, [0,1] scale) and scales `scale` (N)."""
    last = torch.maximum(scale.to(torch.float64) / 255.0, sigma.to(torch.float64))
    steps = torch.linspace(0.0, 1.0, n_iter, dtype=torch.float64) if n_iter > 1 else torch.zeros(1, dtype=torch.float64)
    log_first = math.log(SCHEDULE_FIRST_SIGMA)
    levels = torch.exp(log_first + steps[None, :] * (torch.log(last)[:, None] - log_first))
    effective = torch.clamp(sigma.to(torch.float64), min=SCHEDULE_SIGMA_FLOOR)
    alpha = SCHEDULE_LAMBDA * effective[:, None] ** 2 / levels**2
    return alpha, levels


def fit_hyper_schedule(h: nn.Module, n_iter: int, scales: tuple[int, ...], sigma_max: float, steps: int = 3000, seed: int = 0) -> float:
    """Fit H: (σ, s) → (α, β) to `hyper_schedule` on a grid of σ ∈ [0, sigma_max] and `scales`
    (log-space mean squared error, Adam). Returns the final RMS error of log α and log β."""
    sigma = torch.linspace(0.0, max(sigma_max, 1e-3), 26, dtype=torch.float64)
    grid_sigma = sigma.repeat(len(scales))
    grid_scale = torch.tensor(scales, dtype=torch.float64).repeat_interleave(len(sigma))
    alpha, beta = hyper_schedule(grid_sigma, grid_scale, n_iter)
    target = torch.log(torch.cat((alpha, beta), dim=1)).float()
    inputs = torch.stack((grid_sigma, grid_scale), dim=1).float()[:, :, None, None]
    weight = next(h.parameters())
    inputs, target = inputs.to(weight.device, weight.dtype), target.to(weight.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = torch.optim.Adam(h.parameters(), lr=3e-3)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = 3e-3 if step < steps * 2 // 3 else 3e-4
            loss = torch.mean((torch.log(h(inputs).flatten(1).float()) - target) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        final = torch.mean((torch.log(h(inputs).flatten(1).float()) - target) ** 2)
    return float(final.sqrt())
