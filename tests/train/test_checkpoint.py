"""Checkpoints: safetensors + JSON only, exact round trips, atomic replacement, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from restore_cli.errors import RestoreError
from restore_cli.train import checkpoint as ckpt


def adam_after_steps(steps: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(steps):
        loss = model(torch.full((1, 2, 5, 5), float(i))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_and_generators(tmp_path: Path) -> None:
    model, opt = adam_after_steps(3)
    rng = np.random.default_rng(11)
    rng.random(5)
    gen = torch.Generator().manual_seed(12)
    torch.rand(3, generator=gen)
    state = {"rng": [{"numpy": ckpt.numpy_rng_state(rng), "torch": ckpt.torch_rng_state(gen)}], "note": "x"}
    path = ckpt.save_checkpoint(tmp_path, 3, model.state_dict(), opt.state_dict(), state)

    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    json.loads((path / "state.json").read_text())  # plain JSON, nothing pickled
    loaded = ckpt.load_checkpoint(tmp_path)  # the run folder resolves through `latest`
    assert loaded.path == path and loaded.step == 3 and loaded.state["note"] == "x"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model[key], value)

    model2, opt2 = adam_after_steps(0)
    model2.load_state_dict(loaded.model)
    opt2.load_state_dict(loaded.optimizer)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for index, entries in opt.state_dict()["state"].items():
        for name, value in entries.items():
            assert torch.equal(opt2.state_dict()["state"][index][name], value)

    rng2 = ckpt.numpy_rng_from_state(loaded.state["rng"][0]["numpy"])
    gen2 = torch.Generator()
    ckpt.set_torch_rng_state(gen2, loaded.state["rng"][0]["torch"])
    np.testing.assert_array_equal(rng2.random(4), rng.random(4))
    assert torch.equal(torch.rand(4, generator=gen2), torch.rand(4, generator=gen))


def test_latest_points_to_newest_and_old_checkpoints_are_pruned(tmp_path: Path) -> None:
    model, opt = adam_after_steps(1)
    (tmp_path / ".ckpt-0000005.tmp-99999").mkdir()  # left behind by a killed process
    for step in (10, 20, 30):
        ckpt.save_checkpoint(tmp_path, step, model.state_dict(), opt.state_dict(), {}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30]
    assert (tmp_path / "latest").read_text().strip() == "ckpt-0000030"
    # Saving the same step again replaces it whole; no temporary folders are left behind.
    ckpt.save_checkpoint(tmp_path, 30, model.state_dict(), opt.state_dict(), {"again": True}, keep=2)
    assert ckpt.read_checkpoint_state(tmp_path)["again"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    ckpt.save_checkpoint(tmp_path, 40, model.state_dict(), opt.state_dict(), {}, keep=0)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30, 40]


def test_resolving_something_else_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match="not found"):
        ckpt.resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "run").mkdir()
    with pytest.raises(RestoreError, match="not a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "run")
