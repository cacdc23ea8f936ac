"""ResUNet / NoiseMapDenoiser: published key layout, bias-free, padding and crop, σ map."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from restore_cli.models.resunet import NoiseMapDenoiser, ResUNet

SMALL_NC = (8, 16, 16, 16)

# The 36 keys of the published ResUNet layout for nb = 2 (read from cszn/KAIR models/network_usrnet_v1.py
# and models/basicblock.py: B.conv(mode='C') is a bare Conv2d, B.sequential flattens, ResBlock.res =
# Sequential(conv, ReLU, conv)).
REFERENCE_KEYS_NB2 = [
    "m_head.weight",
    "m_down1.0.res.0.weight", "m_down1.0.res.2.weight", "m_down1.1.res.0.weight", "m_down1.1.res.2.weight",
    "m_down1.2.weight",
    "m_down2.0.res.0.weight", "m_down2.0.res.2.weight", "m_down2.1.res.0.weight", "m_down2.1.res.2.weight",
    "m_down2.2.weight",
    "m_down3.0.res.0.weight", "m_down3.0.res.2.weight", "m_down3.1.res.0.weight", "m_down3.1.res.2.weight",
    "m_down3.2.weight",
    "m_body.0.res.0.weight", "m_body.0.res.2.weight", "m_body.1.res.0.weight", "m_body.1.res.2.weight",
    "m_up3.0.weight", "m_up3.1.res.0.weight", "m_up3.1.res.2.weight", "m_up3.2.res.0.weight",
    "m_up3.2.res.2.weight",
    "m_up2.0.weight", "m_up2.1.res.0.weight", "m_up2.1.res.2.weight", "m_up2.2.res.0.weight",
    "m_up2.2.res.2.weight",
    "m_up1.0.weight", "m_up1.1.res.0.weight", "m_up1.1.res.2.weight", "m_up1.2.res.0.weight",
    "m_up1.2.res.2.weight",
    "m_tail.weight",
]


def _seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (1.0 / parameter[0].numel()) ** 0.5)
    return module.eval()


def test_key_names_follow_the_published_layout() -> None:
    keys = list(ResUNet(in_nc=4, out_nc=3, nc=SMALL_NC, nb=2).state_dict())
    assert len(REFERENCE_KEYS_NB2) == 36
    assert keys == REFERENCE_KEYS_NB2
    assert keys[:6] == [
        "m_head.weight",
        "m_down1.0.res.0.weight",
        "m_down1.0.res.2.weight",
        "m_down1.1.res.0.weight",
        "m_down1.1.res.2.weight",
        "m_down1.2.weight",
    ]
    assert keys[-3:] == ["m_up1.2.res.0.weight", "m_up1.2.res.2.weight", "m_tail.weight"]


def test_shapes_and_no_bias() -> None:
    net = ResUNet(in_nc=4, out_nc=3, nc=(8, 16, 24, 32), nb=2)
    state = net.state_dict()
    assert not any("bias" in key for key in state)
    assert all(module.bias is None for module in net.modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in net.modules())
    assert state["m_head.weight"].shape == (8, 4, 3, 3)
    assert state["m_down1.2.weight"].shape == (16, 8, 2, 2)  # strided conv: out, in
    assert state["m_down3.2.weight"].shape == (32, 24, 2, 2)
    assert state["m_up3.0.weight"].shape == (32, 24, 2, 2)  # transposed conv: in, out
    assert state["m_up1.0.weight"].shape == (16, 8, 2, 2)
    assert state["m_tail.weight"].shape == (3, 8, 3, 3)


def test_published_parameter_counts_of_drunet() -> None:
    """ANCHORS 2.3: DRUNet (nb = 4) has 32,640,960 (colour) and 32,638,656 (gray) parameters."""
    with torch.device("meta"):
        colour, gray = NoiseMapDenoiser(channels=3), NoiseMapDenoiser(channels=1)
    assert sum(p.numel() for p in colour.parameters()) == 32_640_960
    assert sum(p.numel() for p in gray.parameters()) == 32_638_656


def test_single_block_body_is_the_bare_block() -> None:
    keys = list(ResUNet(nc=SMALL_NC, nb=1).state_dict())
    assert "m_body.res.0.weight" in keys and "m_down1.1.weight" in keys


@pytest.mark.parametrize(("height", "width"), [(37, 53), (8, 8), (1, 5), (16, 9)])
def test_output_has_the_input_size(height: int, width: int) -> None:
    net = _seeded(ResUNet(in_nc=4, out_nc=3, nc=SMALL_NC, nb=1))
    with torch.no_grad():
        out = net(torch.rand(2, 4, height, width))
    assert out.shape == (2, 3, height, width)
    assert torch.isfinite(out).all()


def test_padding_is_replicate_at_bottom_right_then_crop() -> None:
    net = _seeded(ResUNet(in_nc=4, out_nc=3, nc=SMALL_NC, nb=1))
    x = torch.rand(1, 4, 13, 21)
    padded = F.pad(x, (0, 3, 0, 3), mode="replicate")  # 16×24: no padding inside
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :13, :21])


def test_zero_weights_give_zero_output() -> None:
    """No global residual and no bias: an all-zero network maps anything to 0."""
    net = ResUNet(in_nc=4, out_nc=3, nc=SMALL_NC, nb=1)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        assert net(torch.rand(1, 4, 16, 16)).abs().max() == 0


def test_denoiser_concatenates_a_constant_sigma_map() -> None:
    denoiser = _seeded(NoiseMapDenoiser(channels=3, nc=SMALL_NC, nb=1))
    assert list(denoiser.state_dict()) == list(ResUNet(in_nc=4, out_nc=3, nc=SMALL_NC, nb=1).state_dict())
    x = torch.rand(2, 3, 19, 11)
    sigma = 25 / 255
    with torch.no_grad():
        out = denoiser(x, sigma)
        plain = ResUNet.forward(denoiser, torch.cat((x, torch.full((2, 1, 19, 11), sigma)), dim=1))
        torch.testing.assert_close(out, plain)
        torch.testing.assert_close(denoiser(x, torch.full((2, 1, 1, 1), sigma)), out)
        # One σ per image: each result equals the single-image run.
        per_image = denoiser(x, torch.tensor([0.01, 0.2]).reshape(2, 1, 1, 1))
        torch.testing.assert_close(per_image[1:], denoiser(x[1:], 0.2))
        assert not torch.allclose(per_image[:1], denoiser(x[:1], 0.2))
    assert out.shape == x.shape
    with pytest.raises(ValueError):
        denoiser(torch.rand(1, 1, 8, 8), sigma)


def test_gray_denoiser() -> None:
    denoiser = _seeded(NoiseMapDenoiser(channels=1, nc=SMALL_NC, nb=1))
    assert denoiser.state_dict()["m_head.weight"].shape[1] == 2
    with torch.no_grad():
        assert denoiser(torch.rand(1, 1, 10, 7), torch.tensor(0.1)).shape == (1, 1, 10, 7)


def test_channels_last_bf16_autocast_matches_fp32() -> None:
    denoiser = _seeded(NoiseMapDenoiser(channels=3, nc=SMALL_NC, nb=2))
    x = torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        reference = denoiser(x, 0.05)
        denoiser = denoiser.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = denoiser(x.to(memory_format=torch.channels_last), 0.05)
    assert low.shape == reference.shape
    relative = (low.float() - reference).norm() / reference.norm()
    assert relative < 0.05, relative
