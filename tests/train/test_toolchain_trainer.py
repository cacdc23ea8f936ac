"""Toolchain training: the DQN and the searched-returns route learn a toy task, searched targets
equal brute-force returns, the replay memory and schedules, the data recipe, short `tools` and
`agent` runs with bit-exact resume, and export into manifest entries the registry loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy import ndimage

from restore_cli.engine.registry import load_entry
from restore_cli.engine.toolchain import greedy_rollout, load_toolchain, parse_chain
from restore_cli.engine.weights import load_manifest, read_safetensors, sha256_file
from restore_cli.errors import RestoreError
from restore_cli.models.architectures import build_model
from restore_cli.models.toolchain import TOOL_SPECS, ToolchainAgent
from restore_cli.ops.degradation import jpeg_compress
from restore_cli.ops.kernels import fspecial_gaussian
from restore_cli.ops.patches import patch_psnr
from restore_cli.train.data import ImageSet
from restore_cli.train.toolchain_data import PatchPairs, apply_single_distortion, draw_tool_parameters, episode_pairs, multi_scale_set
from restore_cli.train.toolchain_config import AgentConfig, ToolsConfig
from restore_cli.train.toolchain_dqn import DQNLearner, DQNSettings, Episode, ReplayMemory, dqn_learning_rate, epsilon_at
from restore_cli.train.toolchain_export import export_toolchain_checkpoint
from restore_cli.train.toolchain_search import SearchSet, search_regression_step, search_returns
from restore_cli.train.toolchain_trainer import run_agent_training, run_tools_training, tools_loss


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a toy task -----------------------------------------------------------------------------------
# Clean patches are grey texture around 0.5 with a small zero-mean jitter (no tool can help them);
# "up" patches are shifted by +0.25, "down" ones by −0.25. Tool 0 subtracts 0.0025, tool 1 adds it:
# each matching step gains about 0.09 dB, a wrong one loses as much, a tool on a clean patch about
# 1.1 dB (its jitter alone leaves it at 46.7 dB, below the 50 dB skip threshold). Right answers: clean → stop, up → tool 0, down → tool 1.

TOY_PATCH = 8
SHIFT, STEP = 0.25, 0.0025
STOP = 2


def toy_pairs(rng: np.random.Generator, kinds: np.ndarray) -> PatchPairs:
    n = len(kinds)
    base = 0.4 + 0.2 * torch.from_numpy(rng.random((n, 1, TOY_PATCH, TOY_PATCH))).float()
    jitter = 0.008 * (2 * torch.from_numpy(rng.random((n, 1, TOY_PATCH, TOY_PATCH))).float() - 1)
    offset = torch.from_numpy(np.array([0.0, SHIFT, -SHIFT])[kinds]).float().view(n, 1, 1, 1)
    clean = torch.from_numpy(kinds == 0).view(n, 1, 1, 1)
    return PatchPairs(base + offset + jitter * clean, base)


class ToyEnvironment:
    n_tools = 2

    def sample(self, n: int, rng: np.random.Generator, generator: torch.Generator) -> PatchPairs:
        return toy_pairs(rng, rng.integers(3, size=n))

    def apply(self, x: torch.Tensor, tool: int) -> torch.Tensor:
        return x - STEP if tool == 0 else x + STEP


def first_actions(agent: ToolchainAgent) -> list[set[int]]:
    """The greedy first action on 8 fixed patches of each kind (clean, up, down)."""
    rng = np.random.default_rng(123)
    return [set(greedy_rollout(ToyEnvironment().apply, agent, toy_pairs(rng, np.full(8, kind)).inputs, max_steps=1)
                .actions[:, 0].tolist()) for kind in range(3)]


def test_dqn_learns_to_stop_on_clean_input_and_pick_the_matching_tool() -> None:
    torch.manual_seed(0)
    agent = ToolchainAgent(channels=1, tools=2, patch=TOY_PATCH, hidden=16)
    assert first_actions(agent) != [{STOP}, {0}, {1}]  # not solved by the initialisation
    settings = DQNSettings(gamma=0.99, replay=2000, learn_start=32, train_every=1, target_every=40, epsilon_steps=200,
                           epsilon_end=0.1, parallel=32, batch=32, max_steps=2, lr=1e-3, lr_half_life=10**9, lr_floor=0.0)
    learner = DQNLearner(agent, ToyEnvironment(), settings, torch.device("cpu"))
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    while learner.transitions < 200:  # about 170 train steps of 32 episodes
        learner.run_round(rng, generator)
    assert learner.train_steps == learner.transitions - 32 and learner.target_copies == learner.transitions // 40
    assert first_actions(agent) == [{STOP}, {0}, {1}]


def test_search_route_learns_the_toy_task() -> None:
    torch.manual_seed(0)
    agent = ToolchainAgent(channels=1, tools=2, patch=TOY_PATCH, hidden=16)
    rng = np.random.default_rng(1)
    data = SearchSet(search_returns(ToyEnvironment(), ToyEnvironment().sample(128, rng, None), max_steps=2, beam=2, gamma=0.99))
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    for _ in range(150):
        search_regression_step(agent, optimizer, data, 32, rng, torch.device("cpu"), 1e-3)
    assert first_actions(agent) == [{STOP}, {0}, {1}]


def brute_force_q(env: ToyEnvironment, x: torch.Tensor, gt: torch.Tensor, steps_left: int, gamma: float,
                  start: float | None = None) -> torch.Tensor:
    """Optimal Q-values by exhaustive recursion, independent of the beam search: stop = 0, and
    an episode ends after a step that leaves the PSNR below the start's (the DQN episode rule)."""
    start = float(patch_psnr(x, gt)) if start is None else start
    q = torch.zeros(env.n_tools + 1)
    for a in range(env.n_tools):
        y = env.apply(x, a).clamp(0, 1)
        reward = float(patch_psnr(y, gt) - patch_psnr(x, gt))
        ends = steps_left == 1 or float(patch_psnr(y, gt)) < start
        follow = 0.0 if ends else float(brute_force_q(env, y, gt, steps_left - 1, gamma, start).max().clamp_min(0))
        q[a] = reward + gamma * follow
    return q


@pytest.mark.parametrize(("max_steps", "beam"), [(1, 1), (2, 2), (3, 4)])
def test_searched_targets_equal_brute_force_returns_when_the_beam_covers_every_chain(max_steps: int, beam: int) -> None:
    env = ToyEnvironment()
    pairs = toy_pairs(np.random.default_rng(2), np.array([0, 1, 2, 1]))
    tree = search_returns(env, pairs, max_steps=max_steps, beam=beam, gamma=0.9)
    for i in range(4):
        expected = brute_force_q(env, pairs.inputs[i:i + 1], pairs.targets[i:i + 1], max_steps, 0.9)
        torch.testing.assert_close(tree["targets.0"][i, 0], expected, atol=2e-3, rtol=0)
    assert tree["states.0"].dtype == torch.uint8 and tree["states.0"].shape == (4, 1, 1, TOY_PATCH, TOY_PATCH)
    if max_steps > 1:
        assert tree["states.1"].shape[1] == min(beam, 2)  # the expanded children of the root
    # A narrow beam keeps the best child and gives lower bounds elsewhere.
    narrow = search_returns(env, pairs, max_steps=3, beam=1, gamma=0.9)
    full = search_returns(env, pairs, max_steps=3, beam=4, gamma=0.9)
    assert torch.all(narrow["targets.0"] <= full["targets.0"] + 1e-4)
    best = full["targets.0"][:, 0].argmax(dim=1)
    torch.testing.assert_close(narrow["targets.0"][torch.arange(4), 0, best], full["targets.0"][torch.arange(4), 0, best], atol=1e-4, rtol=0)


def test_dqn_loss_bootstraps_from_the_target_network_and_weights_length_groups() -> None:
    torch.manual_seed(5)
    agent = ToolchainAgent(channels=1, tools=2, patch=TOY_PATCH, hidden=6)
    learner = DQNLearner(agent, ToyEnvironment(), DQNSettings(gamma=0.9, batch=3, lr=1e-3), torch.device("cpu"))
    torch.nn.init.normal_(learner.target.q.bias)  # a target network that differs from the online one
    s = torch.rand(4, 1, TOY_PATCH, TOY_PATCH)
    short = Episode(s[:1], torch.tensor([2]), torch.tensor([0.0]))  # stop at once
    long = Episode(s[1:4], torch.tensor([0, 1, 0]), torch.tensor([0.3, -0.2, 0.5]))
    learner.memory.add(short)
    learner.memory.add(long)
    learner.memory.sample = lambda n, rng: [short, long, long]  # type: ignore[method-assign]
    with torch.no_grad():  # the targets restated step by step: y = r + γ·max Q_target(s′), y = r at the end
        q_long, q_target = [], []
        state, target_state = agent.initial_state(1), learner.target.initial_state(1)
        for t, previous in enumerate((-1, 0, 1)):
            q, state = agent(s[1 + t:2 + t], torch.tensor([previous]), state)
            qt, target_state = learner.target(s[1 + t:2 + t], torch.tensor([previous]), target_state)
            q_long.append(q[0, int(long.actions[t])])
            q_target.append(qt[0].max())
        y = [0.3 + 0.9 * q_target[1], -0.2 + 0.9 * q_target[2], 0.5]
        long_loss = sum(float(torch.nn.functional.huber_loss(q_long[t], torch.tensor(float(y[t])))) for t in range(3)) / 3
        q_short = agent(s[:1], torch.tensor([-1]), agent.initial_state(1))[0][0, 2]
        expected = float(torch.nn.functional.huber_loss(q_short, torch.tensor(0.0))) / 3 + long_loss * 2 / 3
    assert learner.train_step(np.random.default_rng(0), 0) == pytest.approx(expected, rel=1e-5)


def test_episodes_follow_the_reference_rules() -> None:
    class WithCleanPatches(ToyEnvironment):
        def sample(self, n: int, rng: np.random.Generator, generator: torch.Generator) -> PatchPairs:
            pairs = super().sample(n, rng, generator)
            pairs.inputs[:4] = pairs.targets[:4]  # identical: 100 dB, above the 50 dB threshold
            return pairs

    settings = DQNSettings(learn_start=10**9, parallel=300, max_steps=3, replay=1000)  # ε = 1: every action random
    learner = DQNLearner(ToolchainAgent(channels=1, tools=2, patch=TOY_PATCH, hidden=4), WithCleanPatches(), settings, torch.device("cpu"))
    rng = np.random.default_rng(7)
    episodes = learner.play_round(rng, torch.Generator())
    assert len(episodes) == 296  # the four perfect patches were skipped
    assert learner.transitions == sum(len(e) for e in episodes) == learner.memory.written
    ended = {"stop": 0, "drop": 0, "limit": 0}
    for e in episodes:
        x = e.states[0]
        for t in range(len(e)):
            assert torch.equal(e.states[t], x)
            action = int(e.actions[t])
            if action == STOP:
                assert float(e.rewards[t]) == 0.0 and t == len(e) - 1
                ended["stop"] += 1
                break
            x = ToyEnvironment().apply(x[None], action)[0].clamp(0, 1)
        else:
            last = len(e) - 1
            dropped = float(e.rewards[: last + 1].sum()) < -1e-6
            assert dropped or len(e) == 3
            assert all(float(e.rewards[: t + 1].sum()) >= -1e-6 for t in range(last))  # no earlier drop below the start
            ended["drop" if dropped else "limit"] += 1
    assert all(count > 0 for count in ended.values()), ended


def test_replay_memory_keeps_whole_episodes_and_drops_the_oldest() -> None:
    memory = ReplayMemory(capacity=5)
    episodes = [Episode(torch.full((n, 1, 2, 2), float(k)), torch.arange(n), torch.full((n,), float(k))) for k, n in enumerate((2, 3, 2))]
    memory.add(episodes[0])
    memory.add(episodes[1])
    assert len(memory) == 2 and memory.written == 5
    memory.add(episodes[2])  # overwrites the slots of the first episode
    assert len(memory) == 2 and [len(memory.get(i)) for i in range(2)] == [3, 2]
    assert torch.equal(memory.get(0).states, episodes[1].states) and torch.equal(memory.get(1).rewards, episodes[2].rewards)
    copy = ReplayMemory(capacity=5)
    copy.load_state(memory.state_tensors(), memory.written)
    assert [torch.equal(copy.get(i).states, memory.get(i).states) for i in range(2)] == [True, True]
    assert len(memory.sample(7, np.random.default_rng(0))) == 7


def test_exploration_and_learning_rate_schedules() -> None:
    s = DQNSettings(learn_start=100, epsilon_steps=1000, epsilon_end=0.1)
    assert [epsilon_at(t, s) for t in (0, 100, 600, 1100, 5000)] == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    assert dqn_learning_rate(0, 1e-4, 1_000_000, 2.5e-5) == 1e-4
    assert dqn_learning_rate(1_000_000, 1e-4, 1_000_000, 2.5e-5) == pytest.approx(5e-5)
    assert dqn_learning_rate(500_000, 1e-4, 1_000_000, 2.5e-5) == pytest.approx(1e-4 / 2**0.5)
    assert dqn_learning_rate(5_000_000, 1e-4, 1_000_000, 2.5e-5) == 2.5e-5


# --- data recipe -----------------------------------------------------------------------------------


def test_single_distortions_follow_the_recipe() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((2, 3, 20, 20)))
    blurred = apply_single_distortion(x, "blur", [1.5, 3.0], torch.Generator())
    for i, sigma in enumerate((1.5, 3.0)):
        k = fspecial_gaussian(21, sigma)
        for c in range(3):  # scipy's 'nearest' is replicate borders; convolve flips the kernel
            np.testing.assert_allclose(blurred[i, c].numpy(), ndimage.convolve(x[i, c].numpy(), k, mode="nearest"), atol=1e-9)
    flat = torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64)
    noisy = apply_single_distortion(flat, "noise", [20.0], torch.Generator().manual_seed(0))
    assert abs(float((noisy - flat).std()) - 20 / 255) < 0.003
    edge = apply_single_distortion(torch.ones(1, 3, 16, 16), "noise", [30.0], torch.Generator().manual_seed(0))
    assert float(edge.max()) == 1.0  # clipped
    jpeg = apply_single_distortion(x[:1].float(), "jpeg", [35.0], torch.Generator())
    assert torch.equal(jpeg, jpeg_compress(x[:1].float(), 35.0))
    for spec in TOOL_SPECS:
        values = draw_tool_parameters(spec, 200, rng)
        assert values.min() >= spec.low and values.max() <= spec.high and values.max() - values.min() > 0.8 * (spec.high - spec.low)


def test_clean_share_starts_episodes_from_the_clean_patch() -> None:
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.random((160, 160, 3)), (3, 3, 0))
    images = ImageSet(images=((255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8),), paths=(Path("a"),), channels=3)

    def clean_count(single: float, clean: float, n: int = 400) -> int:
        pairs = episode_pairs(images, n, 16, "moderate", single, np.random.default_rng(0), torch.Generator().manual_seed(0), clean)
        return int(sum(torch.equal(a, b) for a, b in zip(pairs.inputs, pairs.targets)))

    assert clean_count(0.0, 1.0) == 400  # every start is the clean patch
    assert clean_count(0.5, 0.0) == 0  # no mixed or single distortion leaves a patch untouched
    assert 140 <= clean_count(0.5, 0.4) <= 180  # the share holds, beside the single distortions
    with pytest.raises(ValueError, match="at most 1"):
        episode_pairs(images, 4, 16, "moderate", 0.7, rng, torch.Generator(), 0.4)
    with pytest.raises(RestoreError, match="--clean-share"):
        AgentConfig(data=(Path("."),), output=Path("runs/agent"), method="search", single_share=0.7, clean_share=0.4)
    with pytest.raises(RestoreError, match="--method search"):
        AgentConfig(data=(Path("."),), output=Path("runs/agent"), method="dqn", clean_share=0.1)


def test_three_scales_follow_matlab_sizes_and_drop_small_versions() -> None:
    images = ImageSet(images=(np.zeros((90, 120, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)), paths=(Path("a"), Path("b")), channels=3)
    scaled = multi_scale_set(images, patch=30)
    # MATLAB imresize output size: ceil(size · scale); 40×64 at 2/3 is 27×43 and at 1/3 14×22 (< 30, dropped)
    assert [im.shape[:2] for im in scaled.images] == [(90, 120), (60, 80), (30, 40), (40, 64)]
    assert scaled.paths == (Path("a"),) * 3 + (Path("b"),)


# --- runs, resume and export -----------------------------------------------------------------------


def write_images(folder: Path, count: int = 3, size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        a = ndimage.gaussian_filter(rng.random((size, size, 3)), (2, 2, 0))
        a = (a - a.min()) / (a.max() - a.min())
        Image.fromarray(np.rint(a * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {**{f"model.{k}": v for k, v in load_file(str(path / "model.safetensors")).items()},
            **{f"opt.{k}": v for k, v in load_file(str(path / "optimizer.safetensors")).items()}}


def assert_same_checkpoints(a: Path, b: Path) -> None:
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 4
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    sa, sb = (json.loads((p / "state.json").read_text()) for p in (a, b))
    assert sa["rng"] == sb["rng"] and sa["step"] == sb["step"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("toolchain-data") / "images")


def tools_config(data: Path, output: Path, **overrides: Any) -> ToolsConfig:
    base: dict[str, Any] = dict(data=(data,), output=output, patch=16, batch=2, steps=4, milestones=(3,),
                                checkpoint_every=10**6, log_every=1, seed=1, device="cpu", command_line="restore train tools …")
    base.update(overrides)
    return ToolsConfig(**base)


def test_tools_training_resumes_bit_exactly_and_exports(data: Path, tmp_path: Path) -> None:
    straight = run_tools_training(tools_config(data, tmp_path / "a", val=data, val_every=2, val_patches=12))
    first = run_tools_training(tools_config(data, tmp_path / "b", steps=2, val=data, val_every=2, val_patches=12))
    resumed = run_tools_training(tools_config(data, tmp_path / "b", resume=tmp_path / "b", val=data, val_every=2, val_patches=12))
    assert first.step == 2 and resumed.step == 4 and resumed.losses == straight.losses[2:]
    assert straight.losses[-1] < straight.losses[0]  # the tools learn
    assert_same_checkpoints(straight.checkpoint, resumed.checkpoint)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(RestoreError, match="lr"):
        run_tools_training(tools_config(data, tmp_path / "b", steps=6, lr=1e-4, resume=tmp_path / "b"))
    with pytest.raises(RestoreError, match="already holds a training run"):
        run_tools_training(tools_config(data, tmp_path / "b"))

    result = export_toolchain_checkpoint(tmp_path / "a", "toolbox", tmp_path / "weights", metrics={"note": 1})
    entry = load_manifest(tmp_path / "weights")["toolbox"]
    assert entry.sha256 == sha256_file(result.weights) and entry.task == "toolchain" and entry.arch == "toolbox"
    assert entry.training["steps"] == 4 and entry.training["command"] == "restore train tools …"
    assert entry.training["loss"] == "mse" and entry.training["lr_gamma"] == 0.5
    assert entry.training["tool_ranges"]["noise-3"] == {"reference": "tool07", "distortion": "noise", "low": 17.0, "high": 27.0}
    model = load_entry(entry, tmp_path / "weights")
    for key, value in load_file(str(straight.checkpoint / "model.safetensors")).items():
        assert torch.equal(model.module.state_dict()[key], value)
    with pytest.raises(RestoreError, match="already exists"):
        export_toolchain_checkpoint(tmp_path / "a", "toolbox", tmp_path / "weights")


def test_psnr_loss_is_minus_the_mean_patch_psnr_and_weighs_patches_alike(data: Path, tmp_path: Path) -> None:
    target = torch.zeros(2, 3, 8, 8)
    out = target.clone()
    out[0] += 0.1  # MSE 1e-2: 20 dB
    out[1] += 0.001  # MSE 1e-6: 60 dB
    assert tools_loss("psnr", out, target).item() == pytest.approx(-(20 + 60) / 2, abs=1e-3)
    assert tools_loss("mse", out, target).item() == pytest.approx((1e-2 + 1e-6) / 2, rel=1e-4)
    out.requires_grad_(True)
    tools_loss("psnr", out, target).backward()
    grad = out.grad.flatten(1).abs().sum(dim=1)
    # halving either patch's error gains the same 6 dB, so the small error gets the larger push
    assert grad[1] / grad[0] == pytest.approx(100.0, rel=1e-3)
    trained = run_tools_training(tools_config(data, tmp_path / "psnr", loss="psnr", steps=6, lr=3e-3))
    assert all(-80 < loss < 0 for loss in trained.losses)  # minus a PSNR in dB
    assert trained.losses[-1] < trained.losses[0]
    with pytest.raises(RestoreError, match="--loss"):
        tools_config(data, tmp_path / "x", loss="l1")


@pytest.fixture(scope="module")
def toolbox_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("toolbox") / "box.safetensors"
    module = build_model("toolbox", {"channels": 3})
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path),
              metadata={"arch": "toolbox", "config": json.dumps({"channels": 3})})
    return path


def agent_config(data: Path, output: Path, toolbox: Path, **overrides: Any) -> AgentConfig:
    base: dict[str, Any] = dict(data=(data,), output=output, toolbox=str(toolbox), patch=16, hidden=8, batch=4, parallel=4,
                                replay=60, learn_start=4, train_every=2, target_every=6, epsilon_steps=20, steps=24,
                                checkpoint_every=10**6, log_every=5, seed=2, device="cpu", fixed_chain_patches=0)
    base.update(overrides)
    return AgentConfig(**base)


def test_dqn_agent_training_resumes_bit_exactly(data: Path, tmp_path: Path, toolbox_file: Path) -> None:
    straight = run_agent_training(agent_config(data, tmp_path / "a", toolbox_file, keep_checkpoints=1))
    first = run_agent_training(agent_config(data, tmp_path / "b", toolbox_file, steps=12, keep_checkpoints=1))
    resumed = run_agent_training(agent_config(data, tmp_path / "b", toolbox_file, resume=tmp_path / "b", keep_checkpoints=1))
    assert 12 <= first.step < straight.step == resumed.step and straight.step >= 24
    assert resumed.losses == straight.losses[len(straight.losses) - len(resumed.losses):] and resumed.losses
    assert_same_checkpoints(straight.checkpoint, resumed.checkpoint)
    state_a, state_b = (json.loads((r.checkpoint / "state.json").read_text()) for r in (straight, resumed))
    assert state_a["dqn"]["counters"] == state_b["dqn"]["counters"]
    extra_a, extra_b = (load_file(str(tmp_path / run / state["dqn"]["file"])) for run, state in (("a", state_a), ("b", state_b)))
    assert extra_a.keys() == extra_b.keys() and all(torch.equal(extra_a[k], extra_b[k]) for k in extra_a)
    assert sorted(p.name for p in (tmp_path / "b").glob("dqn-*")) == [state_b["dqn"]["file"]]  # older ones pruned
    other = tmp_path / "box2.safetensors"
    tensors, metadata = read_safetensors(toolbox_file)
    save_file({k: v + 1 if k == "tool01.conv1.bias" else v for k, v in tensors.items()}, str(other), metadata=metadata)
    with pytest.raises(RestoreError, match="toolbox differs"):
        run_agent_training(agent_config(data, tmp_path / "b", other, steps=40, resume=tmp_path / "b"))


def test_search_agent_training_resumes_bit_exactly_and_exports_a_working_toolchain(
        data: Path, tmp_path: Path, toolbox_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = dict(method="search", search_patches=6, search_chunk=4, beam=2, steps=6, milestones=(4,), val=data,
                   val_patches=4, val_every=3, fixed_chain_patches=4)
    straight = run_agent_training(agent_config(data, tmp_path / "a", toolbox_file, **options))
    first = run_agent_training(agent_config(data, tmp_path / "b", toolbox_file, **{**options, "steps": 3}))
    resumed = run_agent_training(agent_config(data, tmp_path / "b", toolbox_file, resume=tmp_path / "b", **options))
    assert first.step == 3 and resumed.losses == straight.losses[3:]
    assert_same_checkpoints(straight.checkpoint, resumed.checkpoint)
    chunks = sorted((tmp_path / "a" / "search").iterdir())
    assert [p.name for p in chunks] == ["chunk-00000.safetensors", "chunk-00001.safetensors"]
    assert load_file(str(chunks[1]))["states.0"].shape[0] == 2  # 6 patches = 4 + 2
    records = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["chunk"] for r in records if r["kind"] == "search"] == [1, 2]
    fixed = json.loads((tmp_path / "a" / "fixed-chain.json").read_text())
    assert [r["chain"] for r in records if r["kind"] == "fixed_chain"] == [fixed["chain"]]
    scores = [t["psnr"] for t in fixed["top"]]
    assert scores == sorted(scores, reverse=True) and fixed["psnr"] == scores[0] and fixed["top"][0]["chain"] == fixed["chain"]
    assert fixed["psnr"] >= fixed["input_psnr"]  # the empty chain (the input) is one of the candidates
    resumed_records = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "fixed_chain" for r in resumed_records) == 1  # the resumed run read it back
    assert {"psnr", "gain", "stop_at_start"} <= set(next(r for r in records if r["kind"] == "val"))

    weights = tmp_path / "weights"
    box_sha = sha256_file(toolbox_file)
    export_toolchain_checkpoint(tmp_path / "a", "toolchain-agent", weights)
    (weights / "toolbox.safetensors").write_bytes(toolbox_file.read_bytes())
    from restore_cli.engine.weights import ModelEntry, add_manifest_entry

    add_manifest_entry(ModelEntry(name="toolbox", file="toolbox.safetensors", sha256=box_sha, arch="toolbox",
                                  config={"channels": 3}, task="toolchain"), weights)
    entry = load_manifest(weights)["toolchain-agent"]
    assert entry.task == "toolchain" and entry.training["toolbox_sha256"] == box_sha and entry.training["mode"] == "search"
    assert read_safetensors(weights / entry.file)[1]["toolbox_sha256"] == box_sha
    assert entry.training["fixed_chain"]["chain"] == fixed["chain"]
    assert read_safetensors(weights / entry.file)[1].get("fixed_chain", "") == fixed["chain"]
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(weights))
    runner = load_toolchain(device="cpu")  # the shipped names, sha256-checked
    y, chain = runner.run(torch.rand(1, 3, 40, 40))
    assert y.shape == (1, 3, 40, 40) and 1 <= len(chain.steps) <= 3
    assert runner.fixed_chain == (parse_chain(fixed["chain"]) if fixed["chain"] else None)


def test_joint_and_generic_modes(data: Path, tmp_path: Path, toolbox_file: Path) -> None:
    agent_path = tmp_path / "agent.safetensors"
    agent = build_model("toolchain-agent", {"channels": 3, "tools": 12, "patch": 16, "hidden": 8})
    with torch.no_grad():  # a fixed policy: blur-1 then noise-2 on every patch, then stop
        agent.q.weight.zero_()
        agent.q.bias.zero_()
        agent.q.bias[0] = 1.0
    save_file({k: v.contiguous() for k, v in agent.state_dict().items()}, str(agent_path),
              metadata={"arch": "toolchain-agent", "config": json.dumps({"channels": 3, "tools": 12, "patch": 16, "hidden": 8})})
    joint = run_tools_training(tools_config(data, tmp_path / "joint", mode="joint", init=toolbox_file, agent=agent_path,
                                            steps=2, single_weight=0.0, max_steps=1))
    start = read_safetensors(toolbox_file)[0]
    changed = {key.split(".")[0] for key, value in joint.model_state.items() if not torch.equal(value, start[key])}
    assert changed == {"tool01"}  # with the single-distortion term off, only the chain's tool learns
    generic = run_tools_training(tools_config(data, tmp_path / "generic", mode="generic", steps=2))
    assert "body.0.weight" in generic.model_state
    state = json.loads((generic.checkpoint / "state.json").read_text())
    assert state["arch"] == "generic-cnn" and state["model_config"] == {"channels": 3, "width": 63, "depth": 14}
    with pytest.raises(RestoreError, match="--joint needs --agent"):
        tools_config(data, tmp_path / "x", mode="joint", init=toolbox_file)


def test_ctrl_c_stops_the_fixed_chain_ranking_within_a_batch_of_tool_runs(data: Path, tmp_path: Path, toolbox_file: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the phases before training (fixed-chain ranking, chain search) ends the run
    within one batch of tool runs, with nothing half-written, instead of at the end of the phase."""
    import os
    import signal

    from restore_cli.train import toolchain_dqn

    original, calls = toolchain_dqn.ToolboxEnvironment.apply, []

    def counting(self: Any, x: torch.Tensor, tool: int) -> torch.Tensor:
        calls.append(tool)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, tool)

    monkeypatch.setattr(toolchain_dqn.ToolboxEnvironment, "apply", counting)
    result = run_agent_training(agent_config(data, tmp_path / "a", toolbox_file, method="search", search_patches=4,
                                             search_chunk=2, fixed_chain_patches=4))
    assert result.reason == "interrupted" and len(calls) == 3  # ranking all chains takes 12 + 12·B·2 runs
    assert not (tmp_path / "a" / "fixed-chain.json").exists() and not list((tmp_path / "a").glob("search/*"))


def test_joint_export_keeps_the_history_of_the_toolbox_it_started_from(data: Path, tmp_path: Path, toolbox_file: Path) -> None:
    """A joint run started from a store's toolbox records that toolbox's own training table when it
    starts; the record survives a resume after the store's file was replaced by the export itself."""
    from restore_cli.engine.weights import ModelEntry, add_manifest_entry

    store = tmp_path / "store"
    store.mkdir()
    (store / "toolbox.safetensors").write_bytes(toolbox_file.read_bytes())
    box_sha = sha256_file(toolbox_file)
    add_manifest_entry(ModelEntry(name="toolbox", file="toolbox.safetensors", sha256=box_sha, arch="toolbox",
                                  config={"channels": 3}, task="toolchain", training={"mode": "single", "steps": 7}), store)
    agent_path = tmp_path / "agent.safetensors"
    agent = build_model("toolchain-agent", {"channels": 3, "tools": 12, "patch": 16, "hidden": 8})
    save_file({k: v.contiguous() for k, v in agent.state_dict().items()}, str(agent_path),
              metadata={"arch": "toolchain-agent", "config": json.dumps({"channels": 3, "tools": 12, "patch": 16, "hidden": 8})})
    options = dict(mode="joint", init=store / "toolbox.safetensors", agent=agent_path, max_steps=1)
    run_tools_training(tools_config(data, tmp_path / "joint", steps=1, **options))
    export_toolchain_checkpoint(tmp_path / "joint", "toolbox", store, overwrite=True)
    assert sha256_file(store / "toolbox.safetensors") != box_sha  # the init's file is gone now
    run_tools_training(tools_config(data, tmp_path / "joint", steps=2, resume=tmp_path / "joint", **options))
    entry = export_toolchain_checkpoint(tmp_path / "joint", "toolbox", store, overwrite=True).entry
    assert entry.training["steps"] == 2 and entry.training["mode"] == "joint"
    init = entry.training["init"]
    assert init["sha256"] == box_sha and init["name"] == "toolbox" and init["training"] == {"mode": "single", "steps": 7}


def test_search_regression_raises_targets_to_the_floor() -> None:
    """With a target floor, the regressed loss is the Huber loss to max(target, floor): a −20 dB
    tool counts as −1 dB; without one the same step sees the raw −20."""
    from restore_cli.train.toolchain_dqn import huber, unroll

    n, patch = 4, 16
    gen = torch.Generator().manual_seed(0)
    states = torch.randint(0, 256, (n, 1, 3, patch, patch), generator=gen, dtype=torch.uint8)
    targets = torch.full((n, 1, 13), -20.0)
    targets[..., 0] = 1.0
    data = SearchSet({"states.0": states, "targets.0": targets})
    losses = {}
    for floor in (-1.0, None):
        torch.manual_seed(0)
        agent = ToolchainAgent(channels=3, tools=12, patch=patch, hidden=8)
        with torch.no_grad():
            q = unroll(agent, states[:, 0:1].float() / 255.0, torch.full((n, 1), -1))
        optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        picks = np.random.default_rng(0).integers(n, size=8)
        losses[floor] = search_regression_step(agent, optimizer, data, 8, rng, torch.device("cpu"), 1e-3, floor)
        expected = targets if floor is None else targets.clamp(min=floor)
        assert losses[floor] == pytest.approx(float(huber(q[picks], expected[picks]).mean()), rel=1e-5)
    assert losses[None] > 10 * losses[-1.0]
