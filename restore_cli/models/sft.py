"""SFT-GAN (Wang, Yu, Dong, Loy, CVPR 2018; ANCHORS 5): spatial feature transform layers, the
condition network, the ×4 generator, the category-aware discriminator, and the small network
that predicts the categorical prior from the LR image.

SFT layer: SFT(F | γ, β) = γ ⊙ F + β (paper Eq. 2), γ and β per pixel and channel. Here γ is
parametrised as γ = 1 + Δγ, where the scale branch predicts Δγ; that is exactly the PyTorch
re-implementation's F ⊙ (scale + 1) + shift, written with the paper's meaning of γ, so "γ = 1,
β = 0" is the identity and zeroed branch outputs give γ = 1.

Generator (the PyTorch `SFT_Net` layout, state-dict keys unchanged so its released weights
import directly): conv0 3→64; `sft_branch` = 16 residual blocks (SFT → conv → ReLU → SFT → conv,
plus skip), an SFT layer and a conv, with a long skip around the branch; `HR_branch` = 2 × (conv
64→256, pixel shuffle ×2, ReLU), conv 64→64, ReLU, conv 64→3. `CondNet` takes the K category
maps at HR size through a 4×4 stride-4 conv (reaching LR size) and 1×1 convs to the shared
32-channel condition. LeakyReLU slope 0.1 (PyTorch reference). Default size 1,833,763 parameters
(ANCHORS: 1.83 M), of which CondNet 70,176.

The prior here is predicted at LR size by `CategoryPriorNet`; `upsample_prior` makes the HR-size
maps (bilinear, which keeps each pixel a probability vector) that CondNet expects, so the layer
list stays the reference's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SCALE = 4
LEAKY_SLOPE = 0.1
# The reference recipe initialises SFT and condition layers with Kaiming ×0.1 and zero biases
# (ANCHORS 5.4); the residual-block convs get the same scaling so that 16 blocks start near identity.
SMALL_INIT = 0.1
# The prior network's residual convolutions start at half the Kaiming scale (6 blocks, no norm).
PRIOR_RESIDUAL_INIT = 0.5


def sft_modulate(features: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """SFT(F | γ, β) = γ ⊙ F + β, element-wise (paper Eq. 2); γ, β broadcast against F."""
    return gamma * features + beta


def _init_conv(conv: nn.Conv2d, scale: float = 1.0, a: float = 0.0) -> None:
    nn.init.kaiming_normal_(conv.weight, a=a, mode="fan_in")
    with torch.no_grad():
        conv.weight.mul_(scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class SFTLayer(nn.Module):
    """One SFT layer: γ = 1 + scale_branch(ψ), β = shift_branch(ψ), output γ ⊙ F + β.

    Each branch is 1×1 conv cond_nc→hidden, LeakyReLU 0.1, 1×1 conv hidden→nf (ANCHORS 5.1).
    forward(features N×nf×H×W, condition N×cond_nc×H×W) → N×nf×H×W.
    """

    def __init__(self, nf: int = 64, cond_nc: int = 32, hidden: int = 32) -> None:
        super().__init__()
        self.SFT_scale_conv0 = nn.Conv2d(cond_nc, hidden, 1)
        self.SFT_scale_conv1 = nn.Conv2d(hidden, nf, 1)
        self.SFT_shift_conv0 = nn.Conv2d(cond_nc, hidden, 1)
        self.SFT_shift_conv1 = nn.Conv2d(hidden, nf, 1)
        for conv in (self.SFT_scale_conv0, self.SFT_scale_conv1, self.SFT_shift_conv0, self.SFT_shift_conv1):
            _init_conv(conv, SMALL_INIT, LEAKY_SLOPE)

    def modulation(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        """(γ, β), each N×nf×H×W."""
        delta = self.SFT_scale_conv1(F.leaky_relu(self.SFT_scale_conv0(condition), LEAKY_SLOPE))
        beta = self.SFT_shift_conv1(F.leaky_relu(self.SFT_shift_conv0(condition), LEAKY_SLOPE))
        return 1.0 + delta, beta

    def forward(self, features: Tensor, condition: Tensor) -> Tensor:
        gamma, beta = self.modulation(condition)
        return sft_modulate(features, gamma, beta)


class SFTResBlock(nn.Module):
    """x + conv1(SFT1(ReLU(conv0(SFT0(x))))) (PyTorch reference order)."""

    def __init__(self, nf: int = 64, cond_nc: int = 32, hidden: int = 32) -> None:
        super().__init__()
        self.sft0 = SFTLayer(nf, cond_nc, hidden)
        self.conv0 = nn.Conv2d(nf, nf, 3, padding=1)
        self.sft1 = SFTLayer(nf, cond_nc, hidden)
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        _init_conv(self.conv0, SMALL_INIT)
        _init_conv(self.conv1, SMALL_INIT)

    def forward(self, features: Tensor, condition: Tensor) -> Tensor:
        out = F.relu(self.conv0(self.sft0(features, condition)))
        out = self.conv1(self.sft1(out, condition))
        return features + out


def condition_network(categories: int = 8, hidden: int = 128, cond_nc: int = 32) -> nn.Sequential:
    """Shared condition: conv 4×4 stride 4 (K→hidden, HR → LR size), LeakyReLU, three 1×1 convs
    hidden→hidden with LeakyReLU, 1×1 conv hidden→cond_nc (ANCHORS 5.1)."""
    layers: list[nn.Module] = [nn.Conv2d(categories, hidden, SCALE, stride=SCALE), nn.LeakyReLU(LEAKY_SLOPE)]
    for _ in range(3):
        layers += [nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(LEAKY_SLOPE)]
    layers.append(nn.Conv2d(hidden, cond_nc, 1))
    net = nn.Sequential(*layers)
    for module in net:
        if isinstance(module, nn.Conv2d):
            _init_conv(module, SMALL_INIT, LEAKY_SLOPE)
    return net


class SFTGenerator(nn.Module):
    """×4 SR generator modulated by category maps.

    forward(lr N×in_nc×h×w in [0, 1], prior N×K×4h×4w category probabilities) → N×out_nc×4h×4w
    (not clamped). Any h, w ≥ 1.
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, categories: int = 8, nf: int = 64, nb: int = 16,
                 cond_nc: int = 32, cond_hidden: int = 128, sft_hidden: int = 32) -> None:
        super().__init__()
        if nb < 1 or categories < 1:
            raise ValueError(f"SFT generator needs nb >= 1 and categories >= 1, got nb={nb}, categories={categories}")
        self.in_nc, self.out_nc, self.categories, self.nf, self.nb = int(in_nc), int(out_nc), int(categories), int(nf), int(nb)
        self.conv0 = nn.Conv2d(in_nc, nf, 3, padding=1)
        branch: list[nn.Module] = [SFTResBlock(nf, cond_nc, sft_hidden) for _ in range(nb)]
        branch += [SFTLayer(nf, cond_nc, sft_hidden), nn.Conv2d(nf, nf, 3, padding=1)]
        self.sft_branch = nn.ModuleList(branch)
        self.HR_branch = nn.Sequential(
            nn.Conv2d(nf, nf * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
            nn.Conv2d(nf, nf * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
            nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(),
            nn.Conv2d(nf, out_nc, 3, padding=1),
        )
        self.CondNet = condition_network(categories, cond_hidden, cond_nc)
        _init_conv(self.conv0)
        _init_conv(branch[-1], SMALL_INIT)  # type: ignore[arg-type]
        for module in self.HR_branch:
            if isinstance(module, nn.Conv2d):
                _init_conv(module)

    def condition(self, prior: Tensor) -> Tensor:
        """The shared condition N×cond_nc×h×w from HR-size category maps N×K×4h×4w."""
        return self.CondNet(prior)

    def forward(self, lr: Tensor, prior: Tensor) -> Tensor:
        n, _, h, w = lr.shape
        expected = (n, self.categories, SCALE * h, SCALE * w)
        if tuple(prior.shape) != expected:
            raise ValueError(f"prior must be {expected} for a {h}×{w} input (K maps at ×{SCALE}), got {tuple(prior.shape)}")
        cond = self.condition(prior)
        features = self.conv0(lr)
        out = features
        for block in self.sft_branch[:-2]:
            out = block(out, cond)
        out = self.sft_branch[-1](self.sft_branch[-2](out, cond))
        return self.HR_branch(features + out)


def prior_dilations(nb: int) -> tuple[int, ...]:
    """Dilations of the prior network's body: 1, 2, 4, 8, 1, 2, 4, 8, …"""
    return tuple(2 ** (i % 4) for i in range(nb))


class CategoryPriorNet(nn.Module):
    """The categorical prior from the LR image: K logits per LR pixel.

    head 3×3 conv (in_nc→nf) on x − 0.5, LeakyReLU; nb residual blocks x + LeakyReLU(3×3 conv
    with dilation 1, 2, 4, 8, 1, …); 1×1 conv nf→K. Receptive field radius 1 + Σ dilations (19 LR
    pixels for nb = 6): enough to see the 8×8-LR windows the categories are defined on.

    The buffers hold the categories' definition (`ops.texture_categories.TextureClusters`:
    centres in the standardised feature space, and the mean and scale of that map), so a trained
    prior carries what its categories mean. forward(x N×in_nc×h×w) → logits N×K×h×w.
    """

    def __init__(self, in_nc: int = 3, categories: int = 8, nf: int = 32, nb: int = 6, features: int = 11) -> None:
        super().__init__()
        self.in_nc, self.categories, self.nf, self.nb = int(in_nc), int(categories), int(nf), int(nb)
        self.head = nn.Conv2d(in_nc, nf, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(nf, nf, 3, padding=d, dilation=d) for d in prior_dilations(nb))
        self.tail = nn.Conv2d(nf, categories, 1)
        self.register_buffer("centres", torch.zeros(categories, features))
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_scale", torch.ones(features))
        _init_conv(self.head, 1.0, LEAKY_SLOPE)
        for conv in self.body:
            _init_conv(conv, PRIOR_RESIDUAL_INIT, LEAKY_SLOPE)
        _init_conv(self.tail, SMALL_INIT)

    @property
    def receptive_radius(self) -> int:
        return 1 + sum(prior_dilations(self.nb))

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.head(x - 0.5), LEAKY_SLOPE)
        for conv in self.body:
            h = h + F.leaky_relu(conv(h), LEAKY_SLOPE)
        return self.tail(h)

    def probabilities(self, x: Tensor) -> Tensor:
        """Softmax over the K categories, N×K×h×w."""
        return torch.softmax(self.forward(x), dim=1)


def upsample_prior(prior: Tensor, scale: int = SCALE) -> Tensor:
    """LR category maps N×K×h×w → HR size N×K×(s·h)×(s·w), bilinear (half-pixel centres, edges
    clamped): a convex combination per pixel, so probabilities stay probabilities."""
    return F.interpolate(prior, scale_factor=scale, mode="bilinear", align_corners=False)


class SFTGAN(nn.Module):
    """The runnable model: the generator plus the prior network that feeds it (one weights file,
    keys `generator.*` and `prior.*`). forward(lr, prior=None): without a prior, the prior network
    predicts it from `lr`; a given prior is LR-size (N×K×h×w) or HR-size (N×K×4h×4w)."""

    def __init__(self, generator: SFTGenerator, prior: CategoryPriorNet) -> None:
        super().__init__()
        if generator.categories != prior.categories:
            raise ValueError(f"generator takes {generator.categories} categories, the prior network gives {prior.categories}")
        self.generator = generator
        self.prior = prior

    def forward(self, lr: Tensor, prior: Tensor | None = None) -> Tensor:
        if prior is None:
            prior = self.prior.probabilities(lr)
        if prior.shape[-2:] == lr.shape[-2:]:
            prior = upsample_prior(prior)
        return self.generator(lr, prior)


class CategoryDiscriminator(nn.Module):
    """VGG-style discriminator with a real/fake head and a K-way category head (ANCHORS 5.4).

    Four stages (conv 3×3 stride 1, conv 4×4 stride 2; widths nf, 2nf, 4nf, 8nf), BatchNorm after
    every conv but the first, LeakyReLU 0.1; a `patch`×`patch` input (96 → 512×6×6) is flattened
    into two heads Linear(·, 100), LeakyReLU, Linear(100, 1 | K). Input in [0, 1], scaled to [−1, 1].
    forward(x N×in_nc×patch×patch) → (real/fake logits N, category logits N×K).
    """

    def __init__(self, in_nc: int = 3, categories: int = 8, nf: int = 64, patch: int = 96) -> None:
        super().__init__()
        if patch % 16 or patch < 16:
            raise ValueError(f"discriminator patch must be a positive multiple of 16, got {patch}")
        self.patch, self.categories = int(patch), int(categories)
        widths = (nf, nf * 2, nf * 4, nf * 8)
        stages = []
        previous = in_nc
        for index, width in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(previous, width, 3, padding=1, bias=index == 0)]
            if index > 0:
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.LeakyReLU(LEAKY_SLOPE),
                       nn.Conv2d(width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(LEAKY_SLOPE)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.ModuleList(stages)
        flat = widths[-1] * (patch // 16) ** 2
        self.real_fake = nn.Sequential(nn.Linear(flat, 100), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(100, 1))
        self.category = nn.Sequential(nn.Linear(flat, 100), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(100, categories))

    def features(self, x: Tensor) -> list[Tensor]:
        """The four stage outputs (for feature matching)."""
        if tuple(x.shape[-2:]) != (self.patch, self.patch):
            raise ValueError(f"discriminator takes {self.patch}×{self.patch} patches, got {tuple(x.shape[-2:])}")
        h = x * 2.0 - 1.0
        out = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def heads(self, last: Tensor) -> tuple[Tensor, Tensor]:
        flat = last.flatten(1)
        return self.real_fake(flat).squeeze(1), self.category(flat)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.heads(self.features(x)[-1])
