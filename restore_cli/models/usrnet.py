"""USRNet: deep unfolding network for non-blind super-resolution (Zhang, Van Gool, Timofte,
CVPR 2020), ANCHORS 1.2–1.6.

K HQS iterations alternate the closed-form data step D (no parameters, FFT, Eq. 7) and the
ResUNet prior P, with per-iteration α_k (for D) and β_k (noise-level map for P) predicted by
the hyper-parameter MLP H from (σ, s). Submodules are named `d`, `p`, `h` as in the published
layout, giving 42 state-dict tensors (p.* 36 bias-free conv weights, h.mlp.{0,2,4}.{weight,bias}).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from restore_cli.models.resunet import ResUNet
from restore_cli.ops.hqs import DataTerms, data_step, prepare_data_terms

# Added to the Softplus output so that α, β stay strictly positive (α divides in D).
HYPER_EPS = 1e-6


class DataModule(nn.Module):
    """D: z = argmin_z ‖y − (z⊗k)↓s‖² + α‖z − x‖² (closed form, no trainable parameters)."""

    def forward(self, x: Tensor, terms: DataTerms, alpha: Tensor, scale: int) -> Tensor:
        return data_step(x, terms, alpha, scale)


class HyPaNet(nn.Module):
    """H: (σ, s) → (α_1..α_K, β_1..β_K) by a 1×1-conv MLP with Softplus output, plus 1e-6.

    x: N×2×1×1 → N×2K×1×1; channels [0, K) are α, [K, 2K) are β.
    """

    def __init__(self, in_nc: int = 2, out_nc: int = 16, channels: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(in_nc, channels, 1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_nc, 1, bias=True),
            nn.Softplus(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x) + HYPER_EPS


def _sigma_batch(sigma: Tensor | float, n: int, device: torch.device) -> Tensor:
    """σ as a float32 N×1×1×1 tensor (from a float, a 0-d tensor, N, N×1 or N×1×1×1 values)."""
    sigma_t = torch.as_tensor(sigma, dtype=torch.float32, device=device).reshape(-1, 1, 1, 1)
    if sigma_t.shape[0] not in (1, n):
        raise ValueError(f"sigma has {sigma_t.shape[0]} values for a batch of {n}")
    return sigma_t.expand(n, 1, 1, 1)


class USRNet(nn.Module):
    """Deep unfolding SR network. forward(x, k, scale, sigma) → N×C×(s·h)×(s·w), unclamped.

    x: N×C×h×w LR in [0,1] (C = out_nc = in_nc − 1); k: N×1×kh×kw or kh×kw (any size, even ones
    too; one kernel broadcast to all channels); scale: integer s ≥ 1 (s = 1 is deblurring);
    sigma: N×1×1×1 (or a float) noise std on the [0,1] scale.
    The FFT data step and H run in float32 (float64 for float64 input) with autocast disabled, even
    when P runs under bf16 autocast; the result has the dtype of x.
    """

    def __init__(
        self,
        n_iter: int = 8,
        h_nc: int = 64,
        in_nc: int = 4,
        out_nc: int = 3,
        nc: Sequence[int] = (64, 128, 256, 512),
        nb: int = 2,
    ) -> None:
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"USRNet needs at least one iteration, got n_iter={n_iter}")
        if in_nc != out_nc + 1:
            raise ValueError(f"USRNet prior takes the image plus a β map: in_nc must be out_nc + 1, got {in_nc}, {out_nc}")
        self.d = DataModule()
        self.p = ResUNet(in_nc=in_nc, out_nc=out_nc, nc=nc, nb=nb)
        self.h = HyPaNet(in_nc=2, out_nc=2 * n_iter, channels=h_nc)
        self.n_iter = int(n_iter)
        self.channels = int(out_nc)

    def hyper_parameters(self, sigma: Tensor | float, scale: int, n: int = 1, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """(α, β), each N×K×1×1 float32, from H on the input (σ, s) (s as a raw float, not normalised)."""
        h_weight = next(self.h.parameters())
        device = device if device is not None else h_weight.device
        sigma_t = _sigma_batch(sigma, n, device)
        with torch.autocast(device_type=device.type, enabled=False):
            h_in = torch.cat((sigma_t, torch.full_like(sigma_t, float(scale))), dim=1)
            ab = self.h(h_in.to(h_weight.dtype)).float()
        return ab[:, : self.n_iter], ab[:, self.n_iter :]

    def forward(self, x: Tensor, k: Tensor, scale: int, sigma: Tensor | float) -> Tensor:
        scale = int(scale)
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        n, channels = x.shape[:2]
        if channels != self.channels:
            raise ValueError(f"USRNet expects {self.channels} channels, got {channels}")
        if k.dim() >= 3 and k.shape[0] not in (1, n):
            raise ValueError(f"got {k.shape[0]} kernels for a batch of {n} images")
        out_dtype = x.dtype
        fft_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        prior_weight = next(self.p.parameters(), None)
        prior_dtype = prior_weight.dtype if prior_weight is not None else fft_dtype
        alpha, beta = self.hyper_parameters(sigma, scale, n, x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = x.to(fft_dtype)
            terms = prepare_data_terms(y, k.to(fft_dtype), scale)
            # x_0: nearest-neighbour upsampling of y (exact pixel replication).
            estimate = y.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
        for i in range(self.n_iter):
            with torch.autocast(device_type=x.device.type, enabled=False):
                z = self.d(estimate.to(fft_dtype), terms, alpha[:, i : i + 1], scale)
            beta_map = beta[:, i : i + 1].expand(n, 1, z.shape[-2], z.shape[-1])
            estimate = self.p(torch.cat((z, beta_map.to(z.dtype)), dim=1).to(prior_dtype))
        return estimate.to(out_dtype)
