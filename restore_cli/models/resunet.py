"""ResUNet: the bias-free residual U-Net that is USRNet's prior module P (ANCHORS 1.3) and,
with nb = 4 and a noise-level map as extra input, the DRUNet denoiser (ANCHORS 2.3).

Parameter names and module order follow the published layout (attributes m_head, m_down1..3,
m_body, m_up3..1, m_tail; residual blocks hold a Sequential named `res`), so state dicts
released in that layout load without remapping. For nb = 2 the keys of m_down1 are
`m_down1.0.res.0.weight`, `m_down1.0.res.2.weight`, `m_down1.1.res.{0,2}.weight`,
`m_down1.2.weight` (the 2×2 strided conv); for m_up1 the transposed conv comes first (`m_up1.0`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# The three 2× down-samplings need sizes that are multiples of 8; the input is padded to that.
SIZE_MULTIPLE = 8


class ResBlock(nn.Module):
    """x + conv3×3(ReLU(conv3×3(x))), bias-free, no normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res(x)


def _blocks(channels: int, nb: int) -> list[nn.Module]:
    return [ResBlock(channels) for _ in range(nb)]


class ResUNet(nn.Module):
    """Four-scale residual U-Net with additive skips and no global residual.

    head 3×3 conv → 3 × (nb ResBlocks, 2×2 stride-2 conv) → nb ResBlocks →
    3 × (2×2 stride-2 transposed conv, nb ResBlocks) → tail 3×3 conv. No bias anywhere, no
    activation after head, tail, strided or transposed convs. The input is replicate-padded at the
    bottom/right to a multiple of 8 and the output cropped back, so any H×W works.
    x: N×in_nc×H×W → N×out_nc×H×W.
    """

    def __init__(self, in_nc: int = 4, out_nc: int = 3, nc: Sequence[int] = (64, 128, 256, 512), nb: int = 2) -> None:
        super().__init__()
        nc = tuple(int(c) for c in nc)
        if len(nc) != 4:
            raise ValueError(f"ResUNet needs 4 widths (one per scale), got {nc}")
        if nb < 1:
            raise ValueError(f"ResUNet needs at least one residual block per stage, got nb={nb}")
        self.in_nc, self.out_nc, self.nc, self.nb = int(in_nc), int(out_nc), nc, int(nb)

        self.m_head = nn.Conv2d(in_nc, nc[0], 3, padding=1, bias=False)
        self.m_down1 = nn.Sequential(*_blocks(nc[0], nb), nn.Conv2d(nc[0], nc[1], 2, stride=2, bias=False))
        self.m_down2 = nn.Sequential(*_blocks(nc[1], nb), nn.Conv2d(nc[1], nc[2], 2, stride=2, bias=False))
        self.m_down3 = nn.Sequential(*_blocks(nc[2], nb), nn.Conv2d(nc[2], nc[3], 2, stride=2, bias=False))
        # The published layout collapses a one-element body to the bare block (keys m_body.res.*).
        self.m_body = ResBlock(nc[3]) if nb == 1 else nn.Sequential(*_blocks(nc[3], nb))
        self.m_up3 = nn.Sequential(nn.ConvTranspose2d(nc[3], nc[2], 2, stride=2, bias=False), *_blocks(nc[2], nb))
        self.m_up2 = nn.Sequential(nn.ConvTranspose2d(nc[2], nc[1], 2, stride=2, bias=False), *_blocks(nc[1], nb))
        self.m_up1 = nn.Sequential(nn.ConvTranspose2d(nc[1], nc[0], 2, stride=2, bias=False), *_blocks(nc[0], nb))
        self.m_tail = nn.Conv2d(nc[0], out_nc, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pad_bottom = -height % SIZE_MULTIPLE
        pad_right = -width % SIZE_MULTIPLE
        if pad_bottom or pad_right:
            x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
        x1 = self.m_head(x)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        x = self.m_body(x4)
        x = self.m_up3(x + x4)
        x = self.m_up2(x + x3)
        x = self.m_up1(x + x2)
        x = self.m_tail(x + x1)
        return x[..., :height, :width]


def noise_level_map(sigma: Tensor | float, like: Tensor) -> Tensor:
    """Constant N×1×H×W map of σ (on the [0,1] scale) shaped and typed like `like` (N×C×H×W).

    sigma: a float, a 0-d tensor, or one value per image (N, N×1 or N×1×1×1).
    """
    n, _, height, width = like.shape
    sigma_t = torch.as_tensor(sigma, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)
    if sigma_t.shape[0] not in (1, n):
        raise ValueError(f"sigma has {sigma_t.shape[0]} values for a batch of {n}")
    return sigma_t.expand(n, 1, height, width)


class NoiseMapDenoiser(ResUNet):
    """Non-blind denoiser (DRUNet layout, ANCHORS 2.3): ResUNet on [image, constant σ map].

    in_nc = channels + 1, out_nc = channels; the state-dict keys are those of the plain ResUNet, so
    with channels = 3 and equal nc/nb its weights initialise a USRNet prior directly.
    forward(x N×C×H×W in [0,1], sigma on the [0,1] scale) → N×C×H×W.
    """

    def __init__(self, channels: int = 3, nc: Sequence[int] = (64, 128, 256, 512), nb: int = 4) -> None:
        super().__init__(in_nc=channels + 1, out_nc=channels, nc=nc, nb=nb)
        self.channels = int(channels)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:  # type: ignore[override]
        if x.shape[1] != self.channels:
            raise ValueError(f"denoiser expects {self.channels} channels, got {x.shape[1]}")
        return super().forward(torch.cat((x, noise_level_map(sigma, x)), dim=1))
