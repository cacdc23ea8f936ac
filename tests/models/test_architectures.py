"""The architecture table: configs round-trip through state-dict shapes, presets, clear errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from restore_cli.models.architectures import ARCHITECTURES, PRESETS, build_model, get_architecture
from restore_cli.models.resunet import NoiseMapDenoiser
from restore_cli.models.usrnet import USRNet

ROUND_TRIP_CASES: list[tuple[str, dict[str, Any]]] = [
    ("usrnet", {"n_iter": 3, "h_nc": 8, "in_nc": 4, "out_nc": 3, "nc": (8, 16, 16, 24), "nb": 2}),
    ("usrnet", {"n_iter": 5, "h_nc": 6, "in_nc": 2, "out_nc": 1, "nc": (4, 8, 8, 12), "nb": 1}),
    ("usrnet", {"n_iter": 1, "h_nc": 4, "in_nc": 4, "out_nc": 3, "nc": (4, 4, 8, 8), "nb": 3}),
    ("resunet-denoiser", {"channels": 3, "nc": (8, 16, 16, 24), "nb": 4}),
    ("resunet-denoiser", {"channels": 1, "nc": (4, 8, 12, 12), "nb": 1}),
]


@pytest.mark.parametrize(("arch", "config"), ROUND_TRIP_CASES)
def test_config_round_trips_through_the_state_dict(arch: str, config: dict[str, Any]) -> None:
    model = build_model(arch, config)
    state = model.state_dict()
    inferred = get_architecture(arch).infer_config(state)
    assert inferred == config
    rebuilt = build_model(arch, inferred)
    rebuilt.load_state_dict(state, strict=True)
    for key, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, state[key]), key


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_and_round_trip(preset: str) -> None:
    arch, config = PRESETS[preset]
    with torch.device("meta"):  # full-size models: shapes only
        model = build_model(arch, config)
    assert get_architecture(arch).infer_config(model.state_dict()) == config


def test_builders_give_the_expected_modules() -> None:
    assert isinstance(build_model("usrnet", PRESETS["usrnet-tiny"][1]), USRNet)
    assert isinstance(build_model("resunet-denoiser", {"nc": (4, 4, 4, 4), "nb": 1}), NoiseMapDenoiser)
    assert PRESETS["usrnet"] == ("usrnet", {"n_iter": 8, "h_nc": 64, "in_nc": 4, "out_nc": 3, "nc": (64, 128, 256, 512), "nb": 2})
    assert PRESETS["usrnet-tiny"] == ("usrnet", {"n_iter": 6, "h_nc": 32, "in_nc": 4, "out_nc": 3, "nc": (16, 32, 64, 64), "nb": 2})
    with torch.device("meta"):
        full = build_model("usrnet", {})  # defaults = the published USRNet
    assert sum(p.numel() for p in full.parameters()) == 17_016_016
    assert all(name == entry.name for name, entry in ARCHITECTURES.items())


def test_partial_config_is_merged_over_defaults_and_lists_accepted() -> None:
    full = get_architecture("usrnet").full_config({"n_iter": 2, "nc": [4, 4, 8, 8]})
    assert full["nc"] == (4, 4, 8, 8) and full["n_iter"] == 2 and full["h_nc"] == 64


def test_unknown_architecture_and_option_are_reported() -> None:
    with pytest.raises(KeyError, match="unknown architecture 'swinir'.*usrnet"):
        build_model("swinir", {})
    with pytest.raises(ValueError, match="no option"):
        build_model("usrnet", {"n_iters": 4})


def test_state_dict_of_another_layout_is_rejected() -> None:
    denoiser_state = build_model("resunet-denoiser", {"nc": (4, 4, 4, 4), "nb": 1}).state_dict()
    with pytest.raises(ValueError, match="usrnet"):
        get_architecture("usrnet").infer_config(denoiser_state)
    prior_only = {key[2:]: value for key, value in build_model("usrnet", {"nc": (4, 4, 4, 4), "nb": 1, "h_nc": 4}).state_dict().items() if key.startswith("p.")}
    # A bare USRNet prior (in 4, out 3) is a valid denoiser layout; a truncated one is not.
    assert get_architecture("resunet-denoiser").infer_config(prior_only)["channels"] == 3
    del prior_only["m_tail.weight"]
    with pytest.raises(ValueError, match="m_tail"):
        get_architecture("resunet-denoiser").infer_config(prior_only)
