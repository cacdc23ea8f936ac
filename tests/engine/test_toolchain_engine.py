"""Running toolchains: votes over 63×63 patches pick one action per step, the tool runs on the
whole image (tiled or not, same result), stop and step limits, tool restriction, per-patch
rollouts, the best fixed chain, and loading errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from restore_cli.engine.device import Placement
from restore_cli.engine.registry import ResolvedModel
from restore_cli.engine.restore import TileRequest
from restore_cli.engine.toolchain import (
    FIXED_CHAIN_KEY,
    TOOL_CONTEXT,
    ToolchainRunner,
    best_fixed_chain,
    chain_text,
    greedy_rollout,
    load_toolchain,
    parse_chain,
    parse_tool_list,
    rank_fixed_chains,
)
from restore_cli.errors import RestoreError
from restore_cli.models.architectures import build_model
from restore_cli.models.toolchain import Toolbox, ToolchainAgent
from restore_cli.ops.patches import patch_psnr

CPU = Placement(torch.device("cpu"), "fp32")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BrightnessAgent(ToolchainAgent):
    """Votes blur-1 (tool 0) on bright patches, blur-2 (tool 1) on dark ones, and stop after
    `stop_after` steps (counted in the LSTM state)."""

    def __init__(self, stop_after: int = 1, patch: int = 63, tools: int = 12) -> None:
        super().__init__(channels=3, tools=tools, patch=patch, hidden=1)
        self.stop_after = stop_after

    def forward(self, x: Tensor, previous: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        steps = state[0][:, :1] + 1.0
        bright = x.mean(dim=(1, 2, 3)) > 0.5
        q = torch.zeros(x.shape[0], self.actions, device=x.device)
        q[bright, 0] = 1.0 + x.mean(dim=(1, 2, 3))[bright]
        q[~bright, 1] = 1.0
        q[(steps[:, 0] > self.stop_after), self.stop_action] = 5.0
        return q, (steps.expand(-1, state[0].shape[1]).contiguous(), state[1])


def constant_agent(preferred: int, tools: int = 12) -> ToolchainAgent:
    """An agent whose Q-values are the same for every patch and step: `preferred` is largest,
    then tool 4, …, by index."""
    agent = ToolchainAgent(channels=3, tools=tools, patch=63, hidden=4)
    with torch.no_grad():
        agent.q.weight.zero_()
        agent.q.bias.copy_(-torch.arange(tools + 1, dtype=torch.float32) / 100)
        agent.q.bias[preferred] = 1.0
    return agent


def resolved(module: torch.nn.Module, arch: str, config: dict, name: str) -> ResolvedModel:
    return ResolvedModel(module.eval(), name, arch, config, "toolchain", [1], config["channels"], "safe", None, None)


@pytest.fixture(scope="module")
def toolbox() -> ResolvedModel:
    torch.manual_seed(0)
    return resolved(Toolbox(3), "toolbox", {"channels": 3}, "box")


def runner_for(toolbox: ResolvedModel, agent: ToolchainAgent, **kwargs) -> ToolchainRunner:
    config = {"channels": 3, "tools": agent.tools, "patch": agent.patch, "hidden": agent.hidden}
    return ToolchainRunner(toolbox, resolved(agent, "toolchain-agent", config, "agent"), CPU, **kwargs)


def reference_tool(toolbox: ResolvedModel, index: int, x: Tensor) -> Tensor:
    """Independent statement of a whole-image tool step: reflect-pad by the receptive radius,
    run, crop, clamp."""
    with torch.no_grad():
        y = toolbox.module.tool(index)(F.pad(x, (TOOL_CONTEXT,) * 4, mode="reflect"))
    return y[..., TOOL_CONTEXT:-TOOL_CONTEXT, TOOL_CONTEXT:-TOOL_CONTEXT].clamp(0, 1)


def quadrant_image() -> Tensor:
    """130×140: three bright 63×63 patches, one dark (bottom right), leftover borders dark."""
    x = torch.full((1, 3, 130, 140), 0.2)
    x[..., :63, :126] = 0.8
    x[..., 63:126, :63] = 0.8
    return x + 0.01 * torch.rand(1, 3, 130, 140)


def test_a_stop_vote_returns_the_input_unchanged(toolbox: ResolvedModel) -> None:
    runner = runner_for(toolbox, constant_agent(12))
    x = torch.rand(1, 3, 70, 90)
    y, chain = runner.run(x)
    assert torch.equal(y, x)
    assert chain.names == ["stop"] and chain.stopped and chain.describe() == "stop"
    assert chain.steps[0].votes == {"stop": 1} and chain.steps[0].patches == 1


def test_the_majority_picks_the_tool_and_it_runs_on_the_whole_image(toolbox: ResolvedModel) -> None:
    runner = runner_for(toolbox, BrightnessAgent(stop_after=1), tiles=TileRequest(0))
    x = quadrant_image()
    y, chain = runner.run(x)
    assert chain.names == ["blur-1", "stop"] and chain.describe() == "blur-1 → stop"
    first = chain.steps[0]
    assert first.votes == {"blur-1": 3, "blur-2": 1} and first.patches == 4  # leftover borders do not vote
    assert set(first.q_values) == {*[f"{k}-{i}" for k in ("blur", "noise", "jpeg") for i in (1, 2, 3, 4)], "stop"}
    assert first.q_values["blur-2"] == pytest.approx(0.25)  # mean over the four patches
    torch.testing.assert_close(y, reference_tool(toolbox, 0, x))


def test_tiled_and_whole_image_tools_agree(toolbox: ResolvedModel) -> None:
    x = torch.rand(1, 3, 75, 90)
    whole = runner_for(toolbox, constant_agent(7), tiles=TileRequest(0)).apply_tool(7, x)  # an 8-layer tool
    tiled = runner_for(toolbox, constant_agent(7), tiles=TileRequest(32, 8)).apply_tool(7, x)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    assert float(whole.min()) >= 0 and float(whole.max()) <= 1


def test_step_limit_tool_restriction_and_gray_images(toolbox: ResolvedModel) -> None:
    runner = runner_for(toolbox, constant_agent(0), allowed_tools=(5,), max_steps=2, tiles=TileRequest(0))
    x = torch.rand(1, 1, 64, 64)
    y, chain = runner.run(x)
    assert chain.names == ["noise-2", "noise-2"] and not chain.stopped
    assert chain.describe() == "noise-2 → noise-2 (max 2 steps)"
    assert set(chain.steps[0].q_values) == {"noise-2", "stop"}  # only allowed actions are reported
    assert y.shape == (1, 1, 64, 64)
    rgb = x.expand(-1, 3, -1, -1)
    torch.testing.assert_close(y, reference_tool(toolbox, 5, reference_tool(toolbox, 5, rgb)).mean(dim=1, keepdim=True))


def test_tool_lists_are_parsed_by_name_id_and_kind() -> None:
    assert parse_tool_list("blur-2,tool12") == (1, 11)
    assert parse_tool_list("noise") == (4, 5, 6, 7)
    assert parse_tool_list(" JPEG-1 , jpeg-1") == (8,)
    with pytest.raises(RestoreError, match="unknown tool 'sharpen'"):
        parse_tool_list("blur-1,sharpen")
    with pytest.raises(RestoreError, match="at least one"):
        parse_tool_list(",")


def shift_tools(x: Tensor, index: int) -> Tensor:
    """Toy tools: tool 0 subtracts 0.1, tool 1 adds 0.1."""
    return x - 0.1 if index == 0 else x + 0.1


def test_greedy_rollout_lets_every_patch_follow_its_own_chain() -> None:
    agent = BrightnessAgent(stop_after=2, patch=8, tools=2)
    x = torch.cat([torch.full((2, 3, 8, 8), 0.9), torch.full((1, 3, 8, 8), 0.2)])
    target = x.clone()
    target[:2] -= 0.2
    rollout = greedy_rollout(shift_tools, agent, x, target, max_steps=3)
    # Bright patches: tool 0 twice (0.9 → 0.7, still bright) then stop; the dark one: tool 1, tool 1, stop.
    assert rollout.actions.tolist() == [[0, 0, 2], [0, 0, 2], [1, 1, 2]]
    torch.testing.assert_close(rollout.outputs[:2], torch.full((2, 3, 8, 8), 0.7))
    torch.testing.assert_close(rollout.outputs[2:], torch.full((1, 3, 8, 8), 0.4))
    assert rollout.psnr_out is not None and float(rollout.psnr_out[0]) > 90  # exactly undone
    allowed = torch.tensor([False, True, True])
    restricted = greedy_rollout(shift_tools, agent, x, max_steps=1, allowed=allowed)
    assert restricted.actions[:, 0].tolist() == [1, 1, 1]  # tool 0 masked out: the next best is tool 1


def test_best_fixed_chain_agrees_with_brute_force() -> None:
    torch.manual_seed(4)
    clean = 0.3 + 0.4 * torch.rand(6, 1, 5, 5)
    inputs = clean.clone()
    inputs[:4] += 0.2  # most patches want tool 0 twice
    inputs[4:] -= 0.05  # tool 1 overshoots these: it never helps
    best = best_fixed_chain(shift_tools, inputs, clean, n_tools=2, max_steps=3)
    brute = {}
    for length in range(4):
        for chain in itertools.product(range(2), repeat=length):
            x = inputs
            for tool in chain:
                x = shift_tools(x, tool).clamp(0, 1)
            brute[chain] = float(patch_psnr(x, clean).mean())
    assert best.chain == max(brute, key=lambda c: (brute[c], -len(c))) == (0, 0)
    assert best.psnr == pytest.approx(brute[(0, 0)], abs=1e-4)
    ranking = rank_fixed_chains(shift_tools, inputs, clean, n_tools=2, max_steps=3)
    assert len(ranking) == 1 + 2 + 4 + 8 and sorted(r.chain for r in ranking) == sorted(brute)
    assert best_fixed_chain(shift_tools, inputs, clean, n_tools=2, allowed=[1]).chain == ()  # only tool 1: doing nothing wins


def test_beam_ranking_extends_only_the_best_prefixes() -> None:
    """A beam wide enough to keep every prefix gives the exhaustive ranking; beam 1 follows the
    best chain of each length: tool 0 helps once, a second time overshoots, so beam 1 scores
    (0,), then (0, 0)/(0, 1) and (0, ·, ·): 1 + 3·2 chains."""
    torch.manual_seed(5)
    clean = 0.3 + 0.4 * torch.rand(4, 1, 5, 5)
    inputs = clean + 0.1
    full = rank_fixed_chains(shift_tools, inputs, clean, n_tools=2, max_steps=3)
    wide = rank_fixed_chains(shift_tools, inputs, clean, n_tools=2, max_steps=3, beam=4)
    assert [(c.chain, round(c.psnr, 6)) for c in wide] == [(c.chain, round(c.psnr, 6)) for c in full]
    narrow = rank_fixed_chains(shift_tools, inputs, clean, n_tools=2, max_steps=3, beam=1)
    assert len(narrow) == 1 + 3 * 2
    assert {c.chain for c in narrow if len(c.chain) == 2} == {(0, 0), (0, 1)}
    assert narrow[0].chain == full[0].chain == (0,)
    assert best_fixed_chain(shift_tools, inputs, clean, n_tools=2, beam=1).chain == (0,)
    with pytest.raises(ValueError):
        rank_fixed_chains(shift_tools, inputs, clean, n_tools=2, beam=0)


def test_parse_chain_keeps_order_and_repeats() -> None:
    assert parse_chain("noise-3, blur-2,noise-3") == (6, 1, 6)
    assert parse_chain("tool12") == (11,)
    assert chain_text(parse_chain("jpeg-1,blur-4")) == "jpeg-1,blur-4"
    with pytest.raises(RestoreError, match="unknown tool 'blur'"):
        parse_chain("blur")  # a kind is not one tool
    with pytest.raises(RestoreError, match="at least one"):
        parse_chain(" , ")


def test_run_chain_applies_the_tools_in_order(toolbox: ResolvedModel) -> None:
    runner = runner_for(toolbox, constant_agent(12))
    x = torch.rand(1, 3, 40, 50)
    expected = reference_tool(toolbox, 4, reference_tool(toolbox, 0, x))
    torch.testing.assert_close(runner.run_chain(x, (0, 4)), expected, atol=1e-5, rtol=0)
    gray = x[:, :1]
    y = runner.run_chain(gray, (2,))
    torch.testing.assert_close(y, reference_tool(toolbox, 2, gray.expand(-1, 3, -1, -1)).mean(1, keepdim=True), atol=1e-5, rtol=0)
    assert runner.fixed_chain is None


def test_the_agents_recorded_fixed_chain_is_read_from_its_metadata(toolbox: ResolvedModel) -> None:
    agent = constant_agent(12)
    config = {"channels": 3, "tools": agent.tools, "patch": agent.patch, "hidden": agent.hidden}
    model = ResolvedModel(agent.eval(), "agent", "toolchain-agent", config, "toolchain", [1], 3, "safe", None, None,
                          {FIXED_CHAIN_KEY: "noise-3,blur-2"})
    assert ToolchainRunner(toolbox, model, CPU).fixed_chain == (6, 1)


def save(path: Path, arch: str, config: dict) -> Path:
    module = build_model(arch, config)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path),
              metadata={"arch": arch, "config": json.dumps(config)})
    return path


def test_loading_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path / "empty"))
    box = save(tmp_path / "box.safetensors", "toolbox", {"channels": 3})
    agent = save(tmp_path / "agent.safetensors", "toolchain-agent", {"channels": 3, "tools": 12, "patch": 63, "hidden": 50})
    with pytest.raises(RestoreError, match="no trained toolbox is installed.*--toolbox"):
        load_toolchain(None, agent, device="cpu")
    with pytest.raises(RestoreError, match="no trained toolchain-agent is installed"):
        load_toolchain(box, None, device="cpu")
    with pytest.raises(RestoreError, match="--toolbox needs 'toolbox' weights, these are 'toolchain-agent'"):
        load_toolchain(agent, agent, device="cpu")
    small = save(tmp_path / "small.safetensors", "toolchain-agent", {"channels": 3, "tools": 2, "patch": 63, "hidden": 4})
    with pytest.raises(RestoreError, match="chooses among 2 tools"):
        load_toolchain(box, small, device="cpu")
    runner = load_toolchain(str(box), str(agent), device="cpu", max_steps=1)
    assert runner.max_steps == 1 and runner.describe_models() == {"toolbox": "box", "agent": "agent"}
