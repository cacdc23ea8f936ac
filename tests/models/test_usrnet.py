"""USRNet: published sizes and keys, forward shapes, the hyper-network and the unfolding logic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from restore_cli.models.resunet import NoiseMapDenoiser
from restore_cli.models.usrnet import USRNet
from restore_cli.ops.hqs import data_step, prepare_data_terms

SMALL = {"n_iter": 2, "h_nc": 8, "nc": (8, 16, 16, 16), "nb": 1}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan = parameter[0].numel() if parameter.dim() > 1 else 1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * fan**-0.5)
    return module.eval()


def _gaussian(size: int, sigma: float = 1.5) -> Tensor:
    axis = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def test_published_parameter_counts() -> None:
    """ANCHORS 1.4/1.5: 17,016,016 (P 17,010,624, H 5,392) and tiny 590,332 (P 588,784, H 1,548)."""
    with torch.device("meta"):  # shapes only, no memory, no init time
        full = USRNet(n_iter=8, h_nc=64, nc=(64, 128, 256, 512), nb=2)
    tiny = USRNet(n_iter=6, h_nc=32, nc=(16, 32, 64, 64), nb=2)
    assert (_count(full), _count(full.p), _count(full.h)) == (17_016_016, 17_010_624, 5_392)
    assert (_count(tiny), _count(tiny.p), _count(tiny.h)) == (590_332, 588_784, 1_548)
    assert _count(tiny.d) == 0


def test_state_dict_has_42_tensors_in_the_published_layout() -> None:
    state = USRNet(n_iter=6, h_nc=32, nc=(16, 32, 64, 64), nb=2).state_dict()
    keys = list(state)
    assert len(keys) == 42
    assert keys[0] == "p.m_head.weight" and keys[35] == "p.m_tail.weight"
    assert all(key.startswith("p.") and key.endswith(".weight") for key in keys[:36])
    assert keys[36:] == ["h.mlp.0.weight", "h.mlp.0.bias", "h.mlp.2.weight", "h.mlp.2.bias", "h.mlp.4.weight", "h.mlp.4.bias"]
    assert state["h.mlp.0.weight"].shape == (32, 2, 1, 1)
    assert state["h.mlp.4.weight"].shape == (12, 32, 1, 1)
    assert state["p.m_head.weight"].shape == (16, 4, 3, 3)


def test_denoiser_weights_initialise_the_prior() -> None:
    denoiser = NoiseMapDenoiser(channels=3, nc=(8, 16, 16, 16), nb=2)
    net = USRNet(n_iter=3, h_nc=8, nc=(8, 16, 16, 16), nb=2)
    net.p.load_state_dict(denoiser.state_dict(), strict=True)
    torch.testing.assert_close(net.p.m_tail.weight, denoiser.m_tail.weight)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("ksize", [25, 24])
def test_forward_shapes(scale: int, ksize: int) -> None:
    net = _seeded(USRNet(**SMALL))
    x = torch.rand(2, 3, 7, 9)
    kernel = _gaussian(ksize).expand(2, 1, ksize, ksize)
    with torch.no_grad():
        out = net(x, kernel, scale, torch.full((2, 1, 1, 1), 5 / 255))
    assert out.shape == (2, 3, 7 * scale, 9 * scale)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_gray_config_and_kernel_broadcast() -> None:
    net = _seeded(USRNet(in_nc=2, out_nc=1, **SMALL))
    x = torch.rand(3, 1, 6, 5)
    kernel = _gaussian(5)
    with torch.no_grad():
        broadcast = net(x, kernel, 2, 0.01)  # kh×kw kernel and a float σ
        batched = net(x, kernel.expand(3, 1, 5, 5), 2, torch.full((3, 1, 1, 1), 0.01))
    assert broadcast.shape == (3, 1, 12, 10)
    torch.testing.assert_close(broadcast, batched)
    with pytest.raises(ValueError):
        net(torch.rand(1, 3, 6, 5), kernel, 2, 0.01)


def test_hyper_network_input_and_positive_outputs() -> None:
    net = _seeded(USRNet(**SMALL))
    seen: list[Tensor] = []
    net.h.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    alpha, beta = net.hyper_parameters(torch.tensor([0.0, 7.65 / 255]).reshape(2, 1, 1, 1), 3, n=2)
    # H sees (σ, s) with s the raw integer scale, not normalised.
    torch.testing.assert_close(seen[0], torch.tensor([[0.0, 3.0], [7.65 / 255, 3.0]]).reshape(2, 2, 1, 1))
    assert alpha.shape == beta.shape == (2, SMALL["n_iter"], 1, 1)
    assert (alpha > 0).all() and (beta > 0).all()
    with torch.no_grad():
        net.h.mlp[4].bias.fill_(-200.0)  # Softplus underflows; the +1e-6 keeps α, β positive
        net.h.mlp[4].weight.zero_()
    alpha, beta = net.hyper_parameters(0.0, 4)
    torch.testing.assert_close(alpha, torch.full_like(alpha, 1e-6))
    assert (beta > 0).all()


class _FirstChannels(nn.Module):
    """Stands in for the prior: returns the image channels of [z, β map] unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.clone())
        return x[:, : self.channels]


def test_delta_kernel_identity_prior_is_a_fixed_point() -> None:
    """s = 1, delta kernel: D(y, α) = (y + α·y)/(1 + α) = y for every α, so with an identity prior the
    network returns its input after all K iterations."""
    net = USRNet(n_iter=4, h_nc=8, nc=(8, 8, 8, 8), nb=1).eval()
    net.p = _FirstChannels(3)
    delta = torch.zeros(1, 1, 5, 5)
    delta[..., 2, 2] = 1.0
    x = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        out = net(x, delta, 1, torch.full((2, 1, 1, 1), 1e-4))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    assert len(net.p.inputs) == 4


def test_unfolding_order_alpha_beta_and_initialisation() -> None:
    """With the prior replaced by a recorder: iteration i runs D on the previous estimate with α_i
    (x_0 = nearest upsampling of y), then P on [z_i, β_i map]."""
    scale, n_iter = 3, 3
    net = USRNet(n_iter=n_iter, h_nc=8, nc=(8, 8, 8, 8), nb=1).eval()
    _seeded(net.h, seed=5)
    net.p = _FirstChannels(3)
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.random((1, 3, 4, 5))).float()
    kernel = torch.from_numpy(rng.random((1, 1, 6, 7))).float()
    kernel = kernel / kernel.sum()
    sigma = torch.full((1, 1, 1, 1), 0.02)
    with torch.no_grad():
        out = net(y, kernel, scale, sigma)
        alpha, beta = net.hyper_parameters(sigma, scale)
    terms = prepare_data_terms(y, kernel, scale)
    estimate = torch.from_numpy(np.kron(y.numpy(), np.ones((1, 1, scale, scale)))).float()  # nearest ×s
    for i in range(n_iter):
        z = data_step(estimate, terms, alpha[:, i : i + 1], scale)
        recorded = net.p.inputs[i]
        torch.testing.assert_close(recorded[:, :3], z)
        torch.testing.assert_close(recorded[:, 3:], beta[:, i : i + 1].expand(1, 1, 12, 15))
        estimate = z
    torch.testing.assert_close(out, estimate)
    assert len(set(float(a) for a in alpha.flatten())) == n_iter  # the α_i really differ


def test_bf16_autocast_channels_last_stays_close_to_fp32() -> None:
    net = _seeded(USRNet(n_iter=3, h_nc=8, nc=(8, 16, 16, 16), nb=2))
    x = torch.rand(1, 3, 9, 11)
    kernel = _gaussian(25, 2.0)
    sigma = torch.full((1, 1, 1, 1), 2.55 / 255)
    with torch.no_grad():
        reference = net(x, kernel, 2, sigma)
        net = net.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x.to(memory_format=torch.channels_last), kernel, 2, sigma)
    assert low.dtype == torch.float32 and low.shape == reference.shape
    relative = ((low - reference).norm() / reference.norm()).item()
    assert relative < 0.05, relative
    assert not torch.equal(low, reference)  # the prior really ran in bf16


def test_gradients_reach_prior_and_hyper_network() -> None:
    net = _seeded(USRNet(**SMALL)).train()
    x = torch.rand(2, 3, 6, 7)
    out = net(x, _gaussian(5), 2, torch.full((2, 1, 1, 1), 0.05))
    out.square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert net.h.mlp[4].weight.grad.abs().sum() > 0
