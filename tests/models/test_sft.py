"""SFT-GAN modules: the SFT layer's identity and per-pixel modulation (against a per-pixel numpy
statement), shapes of the condition network, generator, prior network and discriminator, the
parameter count against ANCHORS (1.83 M), the reference key layout and the architecture table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from restore_cli.models.architectures import PRESETS, build_model, get_architecture
from restore_cli.models.sft import (
    SFTGAN,
    CategoryDiscriminator,
    CategoryPriorNet,
    SFTGenerator,
    SFTLayer,
    condition_network,
    sft_modulate,
    upsample_prior,
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_prior(n: int, k: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, h, w, generator=g) * 3, dim=1)


def test_sft_is_the_identity_for_gamma_one_and_beta_zero() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 64, 5, 7)
    assert torch.equal(sft_modulate(features, torch.ones(1), torch.zeros(1)), features)
    layer = SFTLayer()
    # The scale branch predicts Δγ (γ = 1 + Δγ): zeroed last convs give γ = 1 and β = 0 whatever the condition.
    with torch.no_grad():
        for conv in (layer.SFT_scale_conv1, layer.SFT_shift_conv1):
            conv.weight.zero_()
            conv.bias.zero_()
    condition = torch.randn(2, 32, 5, 7) * 10
    gamma, beta = layer.modulation(condition)
    assert torch.equal(gamma, torch.ones_like(gamma)) and torch.equal(beta, torch.zeros_like(beta))
    assert torch.equal(layer(features, condition), features)
    # A random layer is not the identity, so the test above can fail.
    assert not torch.allclose(SFTLayer()(features, condition), features)


def test_sft_modulates_each_pixel_from_its_own_condition() -> None:
    torch.manual_seed(1)
    layer = SFTLayer(nf=6, cond_nc=5, hidden=4)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    features = torch.randn(1, 6, 3, 4, dtype=torch.float64)
    condition = torch.randn(1, 5, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        out = layer.double()(features, condition)[0].numpy()

    def branch(c: np.ndarray, conv0: torch.nn.Conv2d, conv1: torch.nn.Conv2d) -> np.ndarray:
        w0, b0 = conv0.weight.detach()[:, :, 0, 0].numpy(), conv0.bias.detach().numpy()
        w1, b1 = conv1.weight.detach()[:, :, 0, 0].numpy(), conv1.bias.detach().numpy()
        h = w0 @ c + b0
        h = np.where(h > 0, h, 0.1 * h)
        return w1 @ h + b1

    f, c = features[0].numpy(), condition[0].numpy()
    for y in range(3):
        for x in range(4):
            gamma = 1.0 + branch(c[:, y, x], layer.SFT_scale_conv0, layer.SFT_scale_conv1)
            beta = branch(c[:, y, x], layer.SFT_shift_conv0, layer.SFT_shift_conv1)
            np.testing.assert_allclose(out[:, y, x], gamma * f[:, y, x] + beta, rtol=1e-12, atol=1e-12)
    # Changing the condition at one pixel changes the output there only.
    changed = condition.clone()
    changed[0, :, 1, 2] += 1.0
    with torch.no_grad():
        diff = (layer(features, changed) - layer(features, condition)).abs().sum(dim=1)[0]
    assert diff[1, 2] > 0 and float(diff.sum() - diff[1, 2]) == 0.0


@pytest.mark.parametrize(("h", "w"), [(1, 1), (5, 7), (8, 3), (9, 9)])
def test_condition_and_generator_shapes(h: int, w: int) -> None:
    torch.manual_seed(0)
    generator = SFTGenerator()
    prior = random_prior(2, 8, 4 * h, 4 * w)
    assert generator.condition(prior).shape == (2, 32, h, w)
    with torch.no_grad():
        out = generator(torch.rand(2, 3, h, w), prior)
    assert out.shape == (2, 3, 4 * h, 4 * w) and torch.isfinite(out).all()
    assert condition_network(5, 16, 12)(random_prior(1, 5, 4 * h, 4 * w)).shape == (1, 12, h, w)


def test_generator_rejects_a_prior_of_the_wrong_size_or_count() -> None:
    generator = SFTGenerator(nf=8, nb=1, cond_hidden=8)
    with pytest.raises(ValueError, match="prior must be"):
        generator(torch.rand(1, 3, 5, 5), random_prior(1, 8, 5, 5))
    with pytest.raises(ValueError, match="prior must be"):
        generator(torch.rand(1, 3, 5, 5), random_prior(1, 7, 20, 20))


def test_parameter_count_matches_the_reference() -> None:
    generator = SFTGenerator()
    total = sum(p.numel() for p in generator.parameters())
    condition = sum(p.numel() for p in generator.CondNet.parameters())
    assert total == 1_833_763  # counted from the layer list of ANCHORS 5.2
    assert abs(total - 1.83e6) / 1.83e6 < 0.005  # ANCHORS: 1.83 M (PyTorch SFT_Net)
    assert condition == 70_176  # ANCHORS: about 70 K


def test_reference_state_dict_layout() -> None:
    keys = set(SFTGenerator().state_dict())
    for key in ("conv0.weight", "sft_branch.0.sft0.SFT_scale_conv0.weight", "sft_branch.15.conv1.bias",
                "sft_branch.16.SFT_shift_conv1.weight", "sft_branch.17.weight", "HR_branch.0.weight",
                "HR_branch.3.weight", "HR_branch.6.weight", "HR_branch.8.weight", "CondNet.0.weight", "CondNet.8.bias"):
        assert key in keys, key
    assert SFTGenerator().state_dict()["CondNet.0.weight"].shape == (128, 8, 4, 4)  # 4×4 stride-4 on HR maps


def test_discriminator_heads() -> None:
    torch.manual_seed(0)
    disc = CategoryDiscriminator(categories=8)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        real_fake, category = disc(x)
        features = disc.features(x)
    assert real_fake.shape == (2,) and category.shape == (2, 8)
    assert [tuple(f.shape[1:]) for f in features] == [(64, 48, 48), (128, 24, 24), (256, 12, 12), (512, 6, 6)]
    small = CategoryDiscriminator(categories=3, nf=4, patch=32)
    assert [tuple(t.shape) for t in small(torch.rand(5, 3, 32, 32))] == [(5,), (5, 3)]
    with pytest.raises(ValueError, match="32×32"):
        small(torch.rand(1, 3, 48, 48))


@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 5), (24, 24)])
def test_prior_network_gives_probabilities_at_lr_size(h: int, w: int) -> None:
    torch.manual_seed(0)
    net = CategoryPriorNet(categories=6)
    p = net.probabilities(torch.rand(2, 3, h, w))
    assert p.shape == (2, 6, h, w)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, h, w))


def test_prior_network_reach_is_its_receptive_radius() -> None:
    """The tiled runner's context for the prior network is `receptive_radius`: a change of one
    pixel must not move outputs farther away than that (and must move some at that distance)."""
    torch.manual_seed(0)
    net = CategoryPriorNet(nf=8, nb=6)
    x = torch.rand(1, 3, 49, 49)
    changed = x.clone()
    changed[0, :, 24, 24] += 1.0
    with torch.no_grad():
        diff = (net(changed) - net(x)).abs().sum(dim=1)[0]
    reach = net.receptive_radius  # one 3×3 head plus dilations 1, 2, 4, 8, 1, 2
    assert reach == 19
    rows, cols = torch.nonzero(diff > 0, as_tuple=True)
    assert int((rows - 24).abs().max()) == reach and int((cols - 24).abs().max()) == reach


def test_upsampled_prior_stays_a_distribution_and_combined_model_matches_its_parts() -> None:
    torch.manual_seed(0)
    p = random_prior(1, 8, 5, 6)
    up = upsample_prior(p)
    assert up.shape == (1, 8, 20, 24) and float(up.min()) >= 0
    torch.testing.assert_close(up.sum(dim=1), torch.ones(1, 20, 24))
    model = SFTGAN(SFTGenerator(nf=8, nb=1, cond_hidden=8), CategoryPriorNet(nf=8, nb=2))
    lr = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        auto = model(lr)
        parts = model.generator(lr, upsample_prior(model.prior.probabilities(lr)))
        torch.testing.assert_close(auto, parts)
        torch.testing.assert_close(model(lr, p), model(lr, upsample_prior(p)))
    with pytest.raises(ValueError, match="categories"):
        SFTGAN(SFTGenerator(categories=4, nf=8, nb=1), CategoryPriorNet(categories=5))


ROUND_TRIP: list[tuple[str, dict[str, Any]]] = [
    ("sftgan-generator", {"in_nc": 3, "out_nc": 3, "categories": 5, "nf": 8, "nb": 2, "cond_nc": 6, "cond_hidden": 12, "sft_hidden": 4}),
    ("sftgan-prior", {"in_nc": 3, "categories": 4, "nf": 8, "nb": 3, "features": 11}),
    ("sftgan", {"in_nc": 3, "out_nc": 3, "categories": 3, "nf": 8, "nb": 1, "cond_nc": 4, "cond_hidden": 8, "sft_hidden": 4,
                "prior_nf": 6, "prior_nb": 2, "features": 11}),
]


@pytest.mark.parametrize(("arch", "config"), ROUND_TRIP)
def test_architecture_table_round_trips(arch: str, config: dict[str, Any]) -> None:
    model = build_model(arch, config)
    state = model.state_dict()
    assert get_architecture(arch).infer_config(state) == config
    assert get_architecture(arch).task == "sr-texture"
    build_model(arch, config).load_state_dict(state, strict=True)


def test_presets_and_layout_errors() -> None:
    arch, config = PRESETS["sftgan"]
    with torch.device("meta"):
        model = build_model(arch, config)
    assert isinstance(model, SFTGAN)
    assert sum(p.numel() for p in model.generator.parameters()) == 1_833_763
    generator_state = build_model("sftgan-generator", {"nf": 8, "nb": 1}).state_dict()
    with pytest.raises(ValueError, match="sftgan"):
        get_architecture("sftgan").infer_config(generator_state)
    with pytest.raises(ValueError, match="sftgan-prior"):
        get_architecture("sftgan-prior").infer_config(generator_state)


def test_generator_starts_near_an_upsampler_with_sft_near_identity() -> None:
    """Initialisation (reference: SFT and condition layers Kaiming ×0.1, zero biases): γ ≈ 1 and
    β ≈ 0 at the start, so the prior perturbs the first generator only mildly."""
    torch.manual_seed(0)
    layer = SFTLayer()
    with torch.no_grad():
        gamma, beta = layer.modulation(torch.randn(1, 32, 8, 8))
    assert float((gamma - 1).abs().mean()) < 0.05 and float(beta.abs().mean()) < 0.05
    assert float(F.l1_loss(gamma, torch.ones_like(gamma))) > 0  # but not exactly the identity
