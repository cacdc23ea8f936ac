"""Recurrent deep Q-learning of the toolchain agent (ANCHORS 4.3): the environment of tools,
settings and schedules, episodes, the replay memory and the learner.

Episodes of ≤ max_steps steps, reward = PSNR gain of each step, episodes end at stop, at the
step limit or when PSNR falls below its start, patches above `skip_psnr` dB skipped; ε-greedy;
replay of whole episodes; minibatches grouped by length, each group weighted by its share;
y = r + γ·max Q_target(s′) (y = r at the end); Huber loss; Adam with lr halving continuously per
`lr_half_life` steps down to `lr_floor`; target copied every `target_every` steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.engine.device import Placement
from restore_cli.errors import RestoreError
from restore_cli.models.toolchain import MAX_STEPS, TOOL_SPECS, ToolchainAgent
from restore_cli.ops.patches import patch_psnr
from restore_cli.train.data import ImageSet
from restore_cli.train.toolchain_data import PatchPairs, episode_pairs

HUBER_DELTA = 1.0


class ToolEnvironment(Protocol):
    """What the agent acts on: starting patches with their clean targets, and the tools."""

    n_tools: int

    def sample(self, n: int, rng: np.random.Generator, generator: torch.Generator) -> PatchPairs: ...

    def apply(self, x: Tensor, tool: int) -> Tensor: ...


class ToolRunsStopped(Exception):
    """Raised by `ToolboxEnvironment.apply` when its `should_stop` says so: how the long phases
    before training (fixed-chain ranking, chain search) answer Ctrl-C and the time limit within
    one batch of tool runs instead of at the end of the phase."""


class ToolboxEnvironment:
    """Episodes on training patches (`episode_pairs`) with a frozen toolbox as the tools.
    `should_stop`, where set, is asked before every batch of tool runs (`ToolRunsStopped`)."""

    def __init__(self, toolbox: nn.Module, images: ImageSet, patch: int, severity: str, single_share: float,
                 device: torch.device, placement: Placement, batch: int = 32, clean_share: float = 0.0) -> None:
        # channels_last and batches of 32 patches: 1.4–1.7× faster tool runs on the CPU than NCHW
        # (measured on 63×63 patches; larger batches are slower there, out of cache).
        self.toolbox = toolbox.to(device).eval().to(memory_format=torch.channels_last)
        for p in self.toolbox.parameters():
            p.requires_grad_(False)
        self.images, self.patch, self.severity, self.single_share = images, patch, severity, single_share
        self.clean_share = clean_share
        self.device, self.placement, self.batch = device, placement, batch
        self.n_tools = len(TOOL_SPECS)
        self.should_stop: Callable[[], bool] | None = None

    def sample(self, n: int, rng: np.random.Generator, generator: torch.Generator) -> PatchPairs:
        return episode_pairs(self.images, n, self.patch, self.severity, self.single_share, rng, generator,
                             self.clean_share)

    @torch.no_grad()
    def apply(self, x: Tensor, tool: int) -> Tensor:
        outs = []
        for start in range(0, x.shape[0], self.batch):
            if self.should_stop is not None and self.should_stop():
                raise ToolRunsStopped
            part = x[start:start + self.batch].to(self.device).contiguous(memory_format=torch.channels_last)
            with self.placement.autocast():
                out = self.toolbox(part, tool)
            outs.append(out.float().to(x.device))
        return torch.cat(outs)


@dataclass(frozen=True)
class DQNSettings:
    """Recurrent deep Q-learning settings (ANCHORS 4.3); steps are transitions."""

    gamma: float = 0.99
    replay: int = 20_000
    learn_start: int = 5_000
    train_every: int = 4
    target_every: int = 10_000
    epsilon_steps: int = 1_000_000
    epsilon_end: float = 0.1
    parallel: int = 32
    batch: int = 32
    max_steps: int = MAX_STEPS
    lr: float = 1e-4
    lr_half_life: int = 1_000_000
    lr_floor: float = 2.5e-5
    skip_psnr: float = 50.0


def epsilon_at(step: int, settings: DQNSettings) -> float:
    """1 until learning starts, then linear to `epsilon_end` over `epsilon_steps` transitions."""
    progress = max(0, step - settings.learn_start) / settings.epsilon_steps
    return max(settings.epsilon_end, 1.0 - (1.0 - settings.epsilon_end) * progress)


def dqn_learning_rate(step: int, lr: float, half_life: int, floor: float) -> float:
    """lr · 0.5^(step / half_life), not below `floor` (continuous exponential decay)."""
    return max(floor, lr * 0.5 ** (step / half_life))


@dataclass
class Episode:
    """One episode: the states acted on (T×C×P×P), the actions and the rewards (T)."""

    states: Tensor
    actions: Tensor
    rewards: Tensor

    def __len__(self) -> int:
        return int(self.actions.shape[0])


class ReplayMemory:
    """Whole episodes in a ring of `capacity` transitions (states stored as float16); the oldest
    episodes drop out as new ones overwrite their slots. Sampling is uniform over episodes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.states: Tensor | None = None
        self.actions = torch.zeros(capacity, dtype=torch.long)
        self.rewards = torch.zeros(capacity, dtype=torch.float32)
        self.episodes: list[tuple[int, int]] = []  # (first transition, length), oldest first
        self.written = 0

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episode: Episode) -> None:
        length = len(episode)
        if self.states is None:
            self.states = torch.zeros((self.capacity, *episode.states.shape[1:]), dtype=torch.float16)
        slots = (self.written + torch.arange(length)) % self.capacity
        self.states[slots] = episode.states.to(torch.float16)
        self.actions[slots] = episode.actions
        self.rewards[slots] = episode.rewards.float()
        self.episodes.append((self.written, length))
        self.written += length
        oldest = self.written - self.capacity
        while self.episodes and self.episodes[0][0] < oldest:
            self.episodes.pop(0)

    def get(self, index: int) -> Episode:
        assert self.states is not None
        start, length = self.episodes[index]
        slots = (start + torch.arange(length)) % self.capacity
        return Episode(self.states[slots].float(), self.actions[slots], self.rewards[slots])

    def sample(self, n: int, rng: np.random.Generator) -> list[Episode]:
        picks = rng.integers(len(self.episodes), size=n)
        return [self.get(int(i)) for i in picks]

    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {"replay.actions": self.actions.clone(), "replay.rewards": self.rewards.clone(),
                   "replay.episodes": torch.tensor(self.episodes, dtype=torch.long).reshape(-1, 2)}
        if self.states is not None:
            tensors["replay.states"] = self.states
        return tensors

    def load_state(self, tensors: dict[str, Tensor], written: int) -> None:
        self.actions = tensors["replay.actions"].clone()
        self.rewards = tensors["replay.rewards"].clone()
        self.episodes = [(int(a), int(b)) for a, b in tensors["replay.episodes"].tolist()]
        self.states = tensors["replay.states"].clone() if "replay.states" in tensors else None
        self.written = written


def huber(x: Tensor, y: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Elementwise Huber loss: quadratic for |x − y| < δ, linear beyond (the reference's clipped error)."""
    return F.huber_loss(x, y, reduction="none", delta=delta)


def unroll(agent: ToolchainAgent, states: Tensor, previous: Tensor) -> Tensor:
    """Q-values along episodes: states N×T×C×P×P, previous actions N×T (−1 at the start) → N×T×A."""
    n, steps = states.shape[:2]
    state = agent.initial_state(n, states.device, states.dtype)
    qs = []
    for t in range(steps):
        q, state = agent(states[:, t], previous[:, t], state)
        qs.append(q)
    return torch.stack(qs, dim=1)


def previous_actions(actions: Tensor) -> Tensor:
    """N×T actions → N×T previous actions (−1, a_0, …, a_{T−2})."""
    return torch.cat([torch.full_like(actions[:, :1], -1), actions[:, :-1]], dim=1)


class DQNLearner:
    """The agent, its target network, Adam and the replay memory; `run_round()` plays one round
    of `parallel` episodes and then the train steps and target copies that fell due."""

    def __init__(self, agent: ToolchainAgent, env: ToolEnvironment, settings: DQNSettings, device: torch.device) -> None:
        self.agent = agent.to(device)
        self.target = copy.deepcopy(agent).to(device).eval()
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.env, self.settings, self.device = env, settings, device
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=settings.lr)
        self.memory = ReplayMemory(settings.replay)
        self.transitions = 0
        self.train_steps = 0
        self.target_copies = 0
        self.empty_rounds = 0

    # acting --------------------------------------------------------------------------------------
    @torch.no_grad()
    def play_round(self, rng: np.random.Generator, generator: torch.Generator) -> list[Episode]:
        """`parallel` ε-greedy episodes, added to the replay memory; returns them."""
        s, agent = self.settings, self.agent
        pairs = self.env.sample(s.parallel, rng, generator)
        start_psnr = patch_psnr(pairs.inputs, pairs.targets)
        keep = start_psnr <= s.skip_psnr
        x, gt, start_psnr = pairs.inputs[keep].float(), pairs.targets[keep].float(), start_psnr[keep]
        n = x.shape[0]
        agent.eval()
        state = agent.initial_state(n, self.device)
        previous = torch.full((n,), -1, dtype=torch.long)
        alive = torch.ones(n, dtype=torch.bool)
        current, current_psnr = x, start_psnr
        states, actions, rewards, lengths = [], [], [], torch.zeros(n, dtype=torch.long)
        stop = agent.stop_action
        for t in range(s.max_steps):
            epsilon = epsilon_at(self.transitions, s)
            q, state = agent(current.to(self.device), previous.to(self.device), state)
            greedy = q.float().argmax(dim=1).cpu()
            explore = torch.from_numpy(rng.random(n) < epsilon)
            random_actions = torch.from_numpy(rng.integers(agent.actions, size=n)).long()
            action = torch.where(explore, random_actions, greedy)
            nxt, reward = current.clone(), torch.zeros(n)
            for tool in torch.unique(action[alive & (action != stop)]).tolist():
                idx = torch.nonzero(alive & (action == tool)).flatten()
                nxt[idx] = self.env.apply(current[idx], int(tool)).clamp(0.0, 1.0)
            next_psnr = patch_psnr(nxt, gt)
            reward = torch.where(action == stop, torch.zeros(n), next_psnr - current_psnr)
            states.append(current)
            actions.append(action)
            rewards.append(reward)
            lengths += alive.long()
            self.transitions += int(alive.sum())
            done = (action == stop) | (next_psnr < start_psnr) | (t == s.max_steps - 1)
            alive = alive & ~done
            current, current_psnr, previous = nxt, next_psnr, action
            if not bool(alive.any()):
                break
        episodes = []
        for i in range(n):
            length = int(lengths[i])
            episodes.append(Episode(torch.stack([states[t][i] for t in range(length)]),
                                    torch.stack([actions[t][i] for t in range(length)]),
                                    torch.stack([rewards[t][i] for t in range(length)])))
            self.memory.add(episodes[-1])
        self.empty_rounds = 0 if n else self.empty_rounds + 1
        if self.empty_rounds >= 100:
            raise RestoreError(f"100 rounds in a row found only patches above {s.skip_psnr:g} dB (nearly clean); the training data give nothing to learn")
        return episodes

    # learning ------------------------------------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        s = self.settings
        return dqn_learning_rate(step, s.lr, s.lr_half_life, s.lr_floor)

    def train_step(self, rng: np.random.Generator, step: int) -> float:
        """One minibatch of whole episodes, grouped by length (weights #episodes/batch)."""
        s = self.settings
        batch = self.memory.sample(s.batch, rng)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.agent.train()
        total = torch.zeros((), device=self.device)
        for length in sorted({len(e) for e in batch}):
            members = [e for e in batch if len(e) == length]
            states = torch.stack([e.states for e in members]).to(self.device)
            actions = torch.stack([e.actions for e in members]).to(self.device)
            rewards = torch.stack([e.rewards for e in members]).to(self.device)
            prev = previous_actions(actions)
            q = unroll(self.agent, states, prev).gather(2, actions[..., None])[..., 0]
            with torch.no_grad():
                following = unroll(self.target, states, prev).max(dim=2).values
                bootstrap = torch.zeros_like(rewards)
                bootstrap[:, :-1] = following[:, 1:]
                y = rewards + s.gamma * bootstrap
            total = total + huber(q, y).mean() * (len(members) / s.batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.train_steps += 1
        return float(total.detach())

    def copy_target(self) -> None:
        self.target.load_state_dict(self.agent.state_dict())

    def run_round(self, rng: np.random.Generator, generator: torch.Generator) -> tuple[list[Episode], list[float]]:
        """Play a round, then the due train steps (each at its transition count) and target copies."""
        s = self.settings
        episodes = self.play_round(rng, generator)
        losses = []
        due = max(0, (self.transitions - s.learn_start) // s.train_every)
        while self.train_steps < due and len(self.memory) > 0:
            at = s.learn_start + (self.train_steps + 1) * s.train_every
            if at // s.target_every > self.target_copies:
                self.copy_target()
                self.target_copies = at // s.target_every
            losses.append(self.train_step(rng, at))
        if self.transitions // s.target_every > self.target_copies:
            self.copy_target()
            self.target_copies = self.transitions // s.target_every
        return episodes, losses

    def counters(self) -> dict[str, int]:
        return {"transitions": self.transitions, "train_steps": self.train_steps, "target_copies": self.target_copies,
                "replay_written": self.memory.written, "empty_rounds": self.empty_rounds}

    def load_counters(self, data: dict[str, int]) -> None:
        self.transitions = int(data["transitions"])
        self.train_steps = int(data["train_steps"])
        self.target_copies = int(data["target_copies"])
        self.empty_rounds = int(data.get("empty_rounds", 0))
