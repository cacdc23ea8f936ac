"""Training the RL-Restore toolchain (ANCHORS 4.1–4.5): the tools, their joint fine-tuning, a
generic CNN for comparison, and the agent (recurrent deep Q-learning, or regression to searched
returns).

`restore train tools` (`ToolsConfig`, `run_tools_training`):
- single (default): every step trains all twelve tools, each on its own batch of 63×63 patches
  with one distortion drawn uniformly over its range (`TOOL_SPECS`), MSE to the clean patch.
  One Adam over the toolbox equals twelve independent ones (the losses share no parameter).
- joint (`--joint --agent A --init T`): the paper's joint training. Each step the frozen agent
  plays greedy chains on a batch of mixed-distortion patches; the MSE of each chain's final
  patch to the clean one is back-propagated through the chain into the tools it used, plus the
  single-distortion loss of one tool (round robin), weighted by `single_weight`, so that tools
  keep their specialities. Alternate with `restore train agent` (ANCHORS 4.4, Algorithm 1).
- generic (`--generic`): the generic CNN on mixed-distortion patches with the same steps.

`restore train agent` (`AgentConfig`, `run_agent_training`), tools frozen:
- dqn: DRQN as in the reference (ANCHORS 4.3): episodes of ≤ 3 steps, reward = PSNR gain of each
  step, episodes end at stop, at the step limit or when PSNR falls below its start, patches above
  50 dB skipped; ε-greedy; replay of whole episodes; minibatches of 32 episodes grouped by length,
  each group weighted by its share; y = r + γ·max Q_target(s′) (y = r at the end); Huber loss;
  Adam with lr halving continuously per `lr_half_life` steps down to `lr_floor`; target copied
  every `target_every` steps. Steps count transitions (environment steps), as in the reference.
  Episodes are played `parallel` at a time; the learner then catches up with the train steps and
  target copies that fell due meanwhile. Differences: the replay holds `replay` transitions
  (float16; 20,000 by default, the reference's 500,000 would take 12 GB), and acting uses the
  network of the round's start.
- search (faster): for each training patch a beam search over chains (every tool at the start,
  then every tool after the `beam` best states of each depth) gives Q-targets r + γ·V(next) with
  V = max(0, best child) where the child was expanded, 0 (stop) otherwise; the agent is then
  trained by Huber regression to these targets along the searched paths. Tools run once per
  patch (12·(1 + beam·(max_steps − 1)) runs) and the agent trains on the cache as long as wanted.
  The cache is kept in OUT/search/ chunk by chunk, so an interrupted search resumes by running
  the same command again.

Checkpoints, resume, time limit, progress and the log follow `restore_cli.train.trainer`:
model and optimizer in `restore_cli.train.checkpoint` folders, exact resume (random generator
states saved; the DQN's target network and replay memory go into OUT/dqn-<step>.safetensors,
written before the checkpoint that names it). Export with `export_toolchain_checkpoint`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.engine.device import Placement, select_device, select_precision
from restore_cli.engine.toolchain import DEFAULT_TOOLBOX, greedy_rollout, resolve_toolchain_model
from restore_cli.errors import RestoreError
from restore_cli.models.toolchain import MAX_STEPS, TOOL_NAMES, TOOL_SPECS, ToolchainAgent
from restore_cli.ops.patches import patch_psnr
from restore_cli.ops.rl_restore import SEVERITY_WINDOWS
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import BatchPrefetcher, ImageSet, load_image_set
from restore_cli.train.toolchain_data import (
    PatchPairs,
    episode_pairs,
    load_training_patches_source,
    mixed_pairs,
    tool_pairs,
    toolbox_pairs,
    validation_rng,
)
from restore_cli.train.trainer import (
    LOG_FILE,
    RunInfo,
    SilentObserver,
    StopRequest,
    TrainResult,
    learning_rate_at,
    rank_generators,
)

FAMILY = "toolchain"
ToolsMode = Literal["single", "joint", "generic"]
AgentMethod = Literal["dqn", "search"]
PrecisionName = Literal["auto", "fp32", "bf16"]
ARCH_OF_MODE: dict[str, str] = {"single": "toolbox", "joint": "toolbox", "generic": "generic-cnn"}
MANIFEST_TASK: dict[str, str] = {"toolbox": "toolchain", "toolchain-agent": "toolchain", "generic-cnn": "toolchain-baseline"}
DEFAULT_AGENT_STEPS: dict[str, int] = {"dqn": 2_000_000, "search": 20_000}
DEFAULT_AGENT_LR: dict[str, float] = {"dqn": 1e-4, "search": 3e-4}
# Cadences in steps (transitions for dqn, optimizer steps for search): the reference's for dqn.
DEFAULT_AGENT_CADENCE: dict[str, dict[str, int]] = {
    "dqn": {"checkpoint_every": 50_000, "val_every": 10_000, "log_every": 1_000},
    "search": {"checkpoint_every": 1_000, "val_every": 1_000, "log_every": 100},
}
SEARCH_DIR = "search"
DQN_FILE_RE = re.compile(r"^dqn-(\d+)\.safetensors$")
HUBER_DELTA = 1.0
# Fields that may differ between a checkpoint's config and the config resuming it.
RESUME_FREE_FIELDS = frozenset({"data", "val", "output", "steps", "checkpoint_every", "keep_checkpoints", "time_limit",
                                "val_every", "log_every", "resume", "command_line", "device", "precision", "prefetch",
                                "milestones", "agent", "init", "toolbox"})


# --- configuration ---------------------------------------------------------------------------------


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise RestoreError(message)


def _config_to_json(config: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[f.name] = value
    return out


def _config_from_json(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in known}
    for name in ("data", "milestones"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return cls(**values)


def _validate_common(config: Any) -> None:
    _need(len(config.data) > 0, "give at least one --data folder")
    _need(config.channels in (1, 3), f"--channels must be 1 or 3, got {config.channels}")
    _need(config.patch >= 8, f"--patch must be >= 8, got {config.patch}")
    _need(config.batch >= 1, f"--batch must be >= 1, got {config.batch}")
    _need(config.steps >= 1, f"--steps must be >= 1, got {config.steps}")
    _need(math.isfinite(config.lr) and config.lr > 0, f"--lr must be > 0, got {config.lr}")
    _need(config.precision in get_args(PrecisionName), f"--precision must be auto, fp32 or bf16, got {config.precision!r}")
    _need(config.checkpoint_every >= 1, "--checkpoint-every must be >= 1")
    _need(config.keep_checkpoints >= 0, "--keep must be >= 0 (0 keeps every checkpoint)")
    _need(config.time_limit is None or config.time_limit > 0, "--time-limit must be positive")
    _need(config.val_every >= 1 and config.log_every >= 1, "--val-every and --log-every must be >= 1")
    _need(config.val_patches >= 1, "--val-patches must be >= 1")
    _need(config.severity in SEVERITY_WINDOWS, f"--severity must be one of {', '.join(SEVERITY_WINDOWS)}, got {config.severity!r}")


def _set(config: Any, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)


def _normalise_paths(config: Any, names: Sequence[str]) -> None:
    _set(config, "data", tuple(Path(p) for p in config.data))
    _set(config, "output", Path(config.output))
    for name in names:
        if getattr(config, name) is not None:
            _set(config, name, Path(getattr(config, name)))


@dataclass(frozen=True)
class ToolsConfig:
    """`restore train tools`: single-distortion training of the toolbox, joint fine-tuning on the
    agent's chains, or the generic CNN on mixed distortions. `batch` is per tool in single mode."""

    data: tuple[Path, ...]
    output: Path
    mode: ToolsMode = "single"
    val: Path | None = None
    channels: int = 3
    patch: int = 63
    batch: int = 32
    steps: int = 100_000
    lr: float = 1e-3
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    lr_gamma: float = 0.5
    severity: str = "moderate"
    init: Path | None = None
    agent: Path | None = None
    single_weight: float = 1.0
    max_steps: int = MAX_STEPS
    seed: int = 0
    device: str = "auto"
    precision: PrecisionName = "auto"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    time_limit: float | None = None
    val_every: int = 1000
    val_patches: int = 64
    log_every: int = 100
    resume: Path | None = None
    prefetch: int | None = None
    command_line: str = ""

    def __post_init__(self) -> None:
        _normalise_paths(self, ("val", "init", "agent", "resume"))
        _set(self, "milestones", tuple(float(m) for m in self.milestones))
        _validate_common(self)
        _need(self.mode in get_args(ToolsMode), f"unknown tools training mode {self.mode!r}")
        _need(0 < self.lr_gamma <= 1, f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        for m in self.milestones:
            _need(m > 0 and (m < 1 or m == int(m)), f"--milestones: {m:g} is neither a fraction in (0, 1) nor a step number")
        if self.mode == "joint":
            _need(self.agent is not None, "--joint needs --agent FILE (the agent whose chains the tools are tuned on)")
            _need(self.init is not None, "--joint needs --init FILE (the trained toolbox to fine-tune)")
        else:
            _need(self.agent is None, "--agent applies to --joint training only")
        _need(not (self.mode == "generic" and self.init is not None), "--init applies to toolbox training only")
        _need(self.single_weight >= 0, "--single-weight must be >= 0")
        _need(1 <= self.max_steps <= 10, "--max-steps must be in 1..10")
        _need(self.prefetch is None or self.prefetch >= 0, "prefetch depth must be >= 0")

    @property
    def arch(self) -> str:
        return ARCH_OF_MODE[self.mode]

    def model_config(self) -> dict[str, Any]:
        from restore_cli.models.architectures import PRESETS

        return {**PRESETS[self.arch][1], "channels": self.channels}

    def resolved_milestones(self) -> tuple[int, ...]:
        return tuple(sorted(int(round(m * self.steps)) if m < 1 else int(m) for m in self.milestones))

    def to_json(self) -> dict[str, Any]:
        return {**_config_to_json(self), "task": "tools"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolsConfig:
        return _config_from_json(cls, data)


@dataclass(frozen=True)
class AgentConfig:
    """`restore train agent`: the agent on a frozen toolbox, by DQN or by regression to searched
    returns. `steps`: transitions (dqn) or optimizer steps (search); defaults per method."""

    data: tuple[Path, ...]
    output: Path
    toolbox: str = DEFAULT_TOOLBOX
    method: AgentMethod = "dqn"
    val: Path | None = None
    channels: int = 3
    patch: int = 63
    hidden: int = 50
    batch: int = 32
    steps: int | None = None
    lr: float | None = None
    severity: str = "moderate"
    single_share: float = 0.5
    max_steps: int = MAX_STEPS
    gamma: float = 0.99
    # dqn
    replay: int = 20_000
    learn_start: int = 5_000
    train_every: int = 4
    target_every: int = 10_000
    epsilon_steps: int = 1_000_000
    epsilon_end: float = 0.1
    parallel: int = 32
    lr_half_life: int = 1_000_000
    lr_floor: float = 2.5e-5
    skip_psnr: float = 50.0
    # search
    search_patches: int = 4096
    beam: int = 3
    search_chunk: int = 256
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    lr_gamma: float = 0.5
    # run
    seed: int = 0
    device: str = "auto"
    precision: PrecisionName = "auto"
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    time_limit: float | None = None
    val_every: int | None = None
    val_patches: int = 256
    log_every: int | None = None
    resume: Path | None = None
    command_line: str = ""

    def __post_init__(self) -> None:
        _normalise_paths(self, ("val", "resume"))
        if self.method in DEFAULT_AGENT_CADENCE:
            for name, value in DEFAULT_AGENT_CADENCE[self.method].items():
                if getattr(self, name) is None:
                    _set(self, name, value)
        _set(self, "toolbox", str(self.toolbox))
        _set(self, "milestones", tuple(float(m) for m in self.milestones))
        _need(self.method in get_args(AgentMethod), f"--method must be dqn or search, got {self.method!r}")
        if self.steps is None:
            _set(self, "steps", DEFAULT_AGENT_STEPS[self.method])
        if self.lr is None:
            _set(self, "lr", DEFAULT_AGENT_LR[self.method])
        _validate_common(self)
        _need(self.hidden >= 1, "--hidden must be >= 1")
        _need(0 <= self.single_share <= 1, f"--single-share must be in [0, 1], got {self.single_share}")
        _need(1 <= self.max_steps <= 10, "--max-steps must be in 1..10")
        _need(0 <= self.gamma <= 1, "--gamma must be in [0, 1]")
        _need(self.replay >= self.max_steps * self.parallel, "--replay must hold at least one round (max steps × --parallel transitions)")
        _need(self.learn_start >= 0 and self.train_every >= 1 and self.target_every >= 1, "--learn-start >= 0, --train-every and --target-every >= 1")
        _need(self.epsilon_steps >= 1 and 0 <= self.epsilon_end <= 1, "--epsilon-steps >= 1 and --epsilon-end in [0, 1]")
        _need(self.parallel >= 1, "--parallel must be >= 1")
        _need(self.lr_half_life >= 1 and self.lr_floor >= 0, "--lr-half-life >= 1 and --lr-floor >= 0")
        _need(self.search_patches >= 1 and self.search_chunk >= 1, "--search-patches and --search-chunk must be >= 1")
        _need(1 <= self.beam <= len(TOOL_SPECS), f"--beam must be in 1..{len(TOOL_SPECS)}")
        _need(0 < self.lr_gamma <= 1, f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        for m in self.milestones:
            _need(m > 0 and (m < 1 or m == int(m)), f"--milestones: {m:g} is neither a fraction in (0, 1) nor a step number")

    @property
    def arch(self) -> str:
        return "toolchain-agent"

    def model_config(self) -> dict[str, Any]:
        return {"channels": self.channels, "tools": len(TOOL_SPECS), "patch": self.patch, "hidden": self.hidden}

    def resolved_milestones(self) -> tuple[int, ...]:
        assert self.steps is not None
        return tuple(sorted(int(round(m * self.steps)) if m < 1 else int(m) for m in self.milestones))

    def dqn_settings(self) -> DQNSettings:
        assert self.lr is not None
        return DQNSettings(
            gamma=self.gamma, replay=self.replay, learn_start=self.learn_start, train_every=self.train_every,
            target_every=self.target_every, epsilon_steps=self.epsilon_steps, epsilon_end=self.epsilon_end,
            parallel=self.parallel, batch=self.batch, max_steps=self.max_steps, lr=self.lr,
            lr_half_life=self.lr_half_life, lr_floor=self.lr_floor, skip_psnr=self.skip_psnr,
        )

    def to_json(self) -> dict[str, Any]:
        return {**_config_to_json(self), "task": "agent"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentConfig:
        return _config_from_json(cls, data)


def config_mismatches(stored: Any, current: Any) -> list[str]:
    """Settings in which a resuming config differs from the checkpoint's (those that change the run)."""
    differences = [f"{f.name} {getattr(stored, f.name)!r} → {getattr(current, f.name)!r}"
                   for f in fields(stored) if f.name not in RESUME_FREE_FIELDS and getattr(stored, f.name) != getattr(current, f.name)]
    uses_milestones = not (isinstance(stored, AgentConfig) and stored.method == "dqn")
    if uses_milestones and stored.resolved_milestones() != current.resolved_milestones():
        differences.append(f"milestones {list(stored.resolved_milestones())} → {list(current.resolved_milestones())} "
                           "(give --milestones as step numbers to extend --steps)")
    return differences


def training_placement(precision: str, device: torch.device) -> Placement:
    """fp32, or bf16 autocast (asked for, or `auto` on CUDA with bf16); fp16 is not used here."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return select_precision(precision, device)  # type: ignore[arg-type]


# --- DQN -------------------------------------------------------------------------------------------


class ToolEnvironment(Protocol):
    """What the agent acts on: starting patches with their clean targets, and the tools."""

    n_tools: int

    def sample(self, n: int, rng: np.random.Generator, generator: torch.Generator) -> PatchPairs: ...

    def apply(self, x: Tensor, tool: int) -> Tensor: ...


class ToolboxEnvironment:
    """Episodes on training patches (`episode_pairs`) with a frozen toolbox as the tools."""

    def __init__(self, toolbox: nn.Module, images: ImageSet, patch: int, severity: str, single_share: float,
                 device: torch.device, placement: Placement, batch: int = 256) -> None:
        self.toolbox = toolbox.to(device).eval()
        for p in self.toolbox.parameters():
            p.requires_grad_(False)
        self.images, self.patch, self.severity, self.single_share = images, patch, severity, single_share
        self.device, self.placement, self.batch = device, placement, batch
        self.n_tools = len(TOOL_SPECS)

    def sample(self, n: int, rng: np.random.Generator, generator: torch.Generator) -> PatchPairs:
        return episode_pairs(self.images, n, self.patch, self.severity, self.single_share, rng, generator)

    @torch.no_grad()
    def apply(self, x: Tensor, tool: int) -> Tensor:
        outs = []
        for start in range(0, x.shape[0], self.batch):
            part = x[start:start + self.batch].to(self.device)
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


# --- searched returns ------------------------------------------------------------------------------


def _to_uint8(x: Tensor) -> Tensor:
    return torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


@torch.no_grad()
def search_returns(env: ToolEnvironment, pairs: PatchPairs, max_steps: int, beam: int, gamma: float) -> dict[str, Tensor]:
    """Beam search over chains of ≤ max_steps tools for every patch, with Q-targets.

    Level 0 is the input; each level d < max_steps expands its nodes with every tool; the `beam`
    children with the highest PSNR become the nodes of level d + 1 (for d + 1 < max_steps).
    Q(node, tool) = r + γ·V(child), r the PSNR gain, V(child) = max(0, max Q(child)) for expanded
    children and 0 otherwise: at the step limit, for children below the start's PSNR (the episode
    ends there, as in DQN training) and for children outside the beam (a lower bound: stop is
    always possible). Q(node, stop) = 0. Returns, per level d:
    `states.d` (N×m_d×C×P×P uint8), `targets.d` (N×m_d×A), and for d ≥ 1 `actions.d`, `parents.d`
    (N×m_d: the tool leading to the node and its parent's index in level d − 1)."""
    x, gt = pairs.inputs.float(), pairs.targets.float()
    n, tools = x.shape[0], env.n_tools
    levels_states = [x[:, None]]
    levels_psnr = [patch_psnr(x, gt)[:, None]]
    start = levels_psnr[0]  # N×1
    actions_of: list[Tensor] = [torch.zeros(n, 1, dtype=torch.long)]
    parents_of: list[Tensor] = [torch.zeros(n, 1, dtype=torch.long)]
    going_on: list[Tensor] = [torch.ones(n, 1, dtype=torch.bool)]  # the episode continues from the node
    rewards_of: list[Tensor] = []
    for depth in range(max_steps):
        nodes = levels_states[depth]  # N×m×C×P×P
        m = nodes.shape[1]
        flat = nodes.reshape(n * m, *nodes.shape[2:])
        gt_flat = gt[:, None].expand(n, m, *gt.shape[1:]).reshape(n * m, *gt.shape[1:])
        child_psnr = torch.stack([patch_psnr(env.apply(flat, a).clamp(0.0, 1.0), gt_flat) for a in range(tools)], dim=1)
        child_psnr = child_psnr.reshape(n, m, tools)
        rewards_of.append(child_psnr - levels_psnr[depth][..., None])
        if depth + 1 >= max_steps:
            break
        k = min(beam, m * tools)
        alive = child_psnr >= start[..., None]
        best = child_psnr.masked_fill(~alive, -math.inf).reshape(n, m * tools).topk(k, dim=1)
        parent, action = best.indices // tools, best.indices % tools
        chosen = torch.empty((n, k, *nodes.shape[2:]))
        for a in torch.unique(action).tolist():
            rows, cols = torch.nonzero(action == a, as_tuple=True)
            chosen[rows, cols] = env.apply(nodes[rows, parent[rows, cols]], int(a)).clamp(0.0, 1.0)
        levels_states.append(chosen)
        levels_psnr.append(child_psnr.reshape(n, m * tools).gather(1, best.indices))
        going_on.append(torch.isfinite(best.values))
        actions_of.append(action)
        parents_of.append(parent)
    depth_count = len(levels_states)
    targets: list[Tensor] = [torch.empty(0)] * depth_count
    for depth in reversed(range(depth_count)):
        r = rewards_of[depth]  # N×m×tools
        follow = torch.zeros_like(r)
        if depth + 1 < depth_count:
            value = targets[depth + 1].max(dim=2).values.clamp_min(0.0) * going_on[depth + 1]  # N×k (stop = 0 included)
            rows = torch.arange(n)[:, None].expand_as(parents_of[depth + 1])
            follow[rows, parents_of[depth + 1], actions_of[depth + 1]] = value
        q_tools = r + gamma * follow
        targets[depth] = torch.cat([q_tools, torch.zeros(*q_tools.shape[:2], 1)], dim=2)
    out: dict[str, Tensor] = {}
    for depth in range(depth_count):
        out[f"states.{depth}"] = _to_uint8(levels_states[depth]).contiguous()
        out[f"targets.{depth}"] = targets[depth].float().contiguous()
        if depth > 0:
            out[f"actions.{depth}"] = actions_of[depth].contiguous()
            out[f"parents.{depth}"] = parents_of[depth].contiguous()
    return out


@dataclass
class SearchSet:
    """Searched trees of many patches (see `search_returns`), concatenated."""

    tensors: dict[str, Tensor]

    @property
    def patches(self) -> int:
        return int(self.tensors["states.0"].shape[0])

    @property
    def depth_count(self) -> int:
        return sum(1 for key in self.tensors if key.startswith("states."))

    @property
    def nodes_per_patch(self) -> int:
        return sum(int(self.tensors[f"states.{d}"].shape[1]) for d in range(self.depth_count))

    def path(self, patch: int, node: int) -> list[tuple[int, int]]:
        """(level, index) from the root to the patch's `node`-th node (level order)."""
        level, index = 0, node
        for d in range(self.depth_count):
            size = int(self.tensors[f"states.{d}"].shape[1])
            if index < size:
                level = d
                break
            index -= size
        path = [(level, index)]
        while level > 0:
            index = int(self.tensors[f"parents.{level}"][patch, index])
            level -= 1
            path.append((level, index))
        return path[::-1]


def search_regression_step(agent: ToolchainAgent, optimizer: torch.optim.Optimizer, data: SearchSet, batch: int,
                           rng: np.random.Generator, device: torch.device, lr: float) -> float:
    """One Huber-regression step of all Q-values to their searched targets along `batch` random
    paths (a random patch, a random expanded node, its path from the root); groups by length."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    patches = rng.integers(data.patches, size=batch)
    nodes = rng.integers(data.nodes_per_patch, size=batch)
    paths = [(int(p), data.path(int(p), int(v))) for p, v in zip(patches, nodes)]
    agent.train()
    total = torch.zeros((), device=device)
    t = data.tensors
    for length in sorted({len(path) for _, path in paths}):
        members = [(p, path) for p, path in paths if len(path) == length]
        states = torch.stack([torch.stack([t[f"states.{lv}"][p, i] for lv, i in path]) for p, path in members])
        targets = torch.stack([torch.stack([t[f"targets.{lv}"][p, i] for lv, i in path]) for p, path in members])
        actions = torch.tensor([[-1] + [int(t[f"actions.{lv}"][p, i]) for lv, i in path[1:]] for p, path in members])
        q = unroll(agent, states.to(device).float() / 255.0, actions.to(device))
        total = total + huber(q, targets.to(device)).mean() * (len(members) / batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return float(total.detach())


# --- the runs --------------------------------------------------------------------------------------


def _crossed(before: int, after: int, every: int) -> bool:
    return before // every < after // every


def _seeded_model(arch: str, config: dict[str, Any], seed: int) -> nn.Module:
    from restore_cli.models.architectures import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, config)


class _Run:
    """What tools and agent runs share: set-up, resume, the loop, logging and checkpoints."""

    task = ""

    def __init__(self, config: Any, observer: Any) -> None:
        self.config = config
        self.observer = observer or SilentObserver()
        self.device = select_device(config.device)
        self.placement = training_placement(config.precision, self.device)
        self.log_path = config.output / LOG_FILE
        self.clock_start = time.monotonic()
        self.step = 0
        self.last_val: dict[str, Any] | None = None
        self.elapsed_before = 0.0

    # hooks -----------------------------------------------------------------------------------------
    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        raise NotImplementedError

    def _advance(self) -> list[float]:
        raise NotImplementedError

    def _validate(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state_extra(self) -> dict[str, Any]:
        return {}

    def _learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _rng_state(self) -> dict[str, Any]:
        return {"numpy": ckpt.numpy_rng_state(self.rng), "torch": ckpt.torch_rng_state(self.generator)}

    # set-up ----------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        checkpoint = ckpt.load_checkpoint(cfg.resume) if cfg.resume is not None else None
        if checkpoint is None and (cfg.output / ckpt.LATEST_NAME).exists():
            raise RestoreError(f"already holds a training run; continue it with --resume {cfg.output} or choose another --output", cfg.output)
        self.images, self.data_fingerprint = load_training_patches_source(cfg.data, cfg.channels, cfg.patch)
        self.val_pairs: PatchPairs | None = None
        self.rng, self.generator = rank_generators(cfg.seed, 0)
        self.model = _seeded_model(cfg.arch, cfg.model_config(), cfg.seed).to(self.device)
        if checkpoint is not None:
            self._check_resume(checkpoint)
        self._build(checkpoint)
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint.model)
            self.optimizer.load_state_dict(checkpoint.optimizer)
            rng_state = checkpoint.state["rng"][0]
            self.rng = ckpt.numpy_rng_from_state(rng_state["numpy"])
            ckpt.set_torch_rng_state(self.generator, rng_state["torch"])
            self.step = checkpoint.step
            self.last_val = checkpoint.state.get("last_val")
            self.elapsed_before = float(checkpoint.state.get("elapsed_s", 0.0))
        cfg.output.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None:
            self._truncate_log()

    def _check_resume(self, checkpoint: ckpt.Checkpoint) -> None:
        state = checkpoint.state
        if state.get("family") != FAMILY or state.get("task") != self.task:
            raise RestoreError(f"not a `restore train {self.task}` checkpoint (it is {state.get('family', 'image')}/{state.get('task')})", checkpoint.path)
        stored = type(self.config).from_json(state["config"])
        differences = config_mismatches(stored, self.config)
        if differences:
            raise RestoreError("cannot resume with different settings: " + "; ".join(differences), checkpoint.path)
        if state["data_fingerprint"] != self.data_fingerprint:
            raise RestoreError("the training images differ from those the checkpoint was trained on", checkpoint.path)

    def _load_val(self, severity: str) -> PatchPairs | None:
        cfg = self.config
        if cfg.val is None:
            return None
        images = load_image_set([cfg.val], cfg.channels, min_size=cfg.patch)
        rng, generator = validation_rng()
        return mixed_pairs(images, cfg.val_patches, cfg.patch, severity, rng, generator)

    def _truncate_log(self) -> None:
        from restore_cli.io.atomic import atomic_write_text

        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def _write_log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.observer.on_record(record)

    # checkpoints -----------------------------------------------------------------------------------
    def _save(self, elapsed: float) -> Path:
        cfg = self.config
        state = {
            "family": FAMILY,
            "task": self.task,
            "config": cfg.to_json(),
            "arch": cfg.arch,
            "model_config": cfg.model_config(),
            "precision": self.placement.precision,
            "world_size": 1,
            "rng": [self._rng_state()],
            "data_fingerprint": self.data_fingerprint,
            "images": len(self.images),
            "last_val": self.last_val,
            "elapsed_s": elapsed,
            "torch_version": torch.__version__,
            **self._state_extra(),
        }
        path = ckpt.save_checkpoint(cfg.output, self.step, self.model.state_dict(), self.optimizer.state_dict(), state,
                                    keep=cfg.keep_checkpoints)
        self._after_save()
        self._write_log({"kind": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def _after_save(self) -> None:
        pass

    # the loop --------------------------------------------------------------------------------------
    def _run_info(self) -> RunInfo:
        cfg = self.config
        return RunInfo(task=self.task, arch=cfg.arch, model_config=cfg.model_config(),
                       parameters=sum(p.numel() for p in self.model.parameters()), images=len(self.images),
                       skipped_images=len(self.images.skipped), val_images=self._val_count(),
                       start_step=self.step, total_steps=cfg.steps, device=str(self.device), precision=self.placement.precision,
                       world_size=1, output=cfg.output)

    def _val_count(self) -> int:
        if self.val_pairs is None:
            return 0
        shape = self.val_pairs.inputs.shape
        return int(shape[0] * shape[1]) if len(shape) == 5 else int(shape[0])

    def _prepare(self) -> str | None:
        """Work before the loop (the search cache); returns a stop reason if it was cut short."""
        return None

    def train(self) -> TrainResult:
        cfg = self.config
        self._setup()
        self.observer.on_start(self._run_info())
        self._write_log({"kind": "start", "step": self.step, "steps": cfg.steps, "device": str(self.device),
                         "precision": self.placement.precision, "images": len(self.images)})
        losses: list[float] = []
        checkpoint_path: Path | None = None
        self.loop_start = time.monotonic()
        try:
            with StopRequest().installed() as stop:
                early = self._prepare_with(stop)
                if early is not None:
                    reason: str = early
                else:
                    reason, checkpoint_path = self._loop(stop, losses)
        finally:
            self._finish()
        if checkpoint_path is None and cfg.resume is not None:
            checkpoint_path = ckpt.resolve_checkpoint(cfg.resume)
        result = TrainResult(step=self.step, reason=reason, checkpoint=checkpoint_path,  # type: ignore[arg-type]
                             model_state={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                             losses=losses, val_psnr=None if self.last_val is None else float(self.last_val["psnr"]))
        self._write_log({"kind": "stop", "step": self.step, "reason": reason})
        self.observer.on_finish(result)
        return result

    def _prepare_with(self, stop: StopRequest) -> str | None:
        self.stop_request = stop
        return self._prepare()

    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        return limit is not None and time.monotonic() - self.clock_start >= limit

    def _finish(self) -> None:
        pass

    def _loop(self, stop: StopRequest, losses: list[float]) -> tuple[str, Path | None]:
        cfg = self.config
        checkpoint_path: Path | None = None
        interval: list[float] = []
        interval_start, interval_step = time.monotonic(), self.step
        last_loss = math.nan
        while self.step < cfg.steps:
            before = self.step
            new = self._advance()
            losses.extend(new)
            interval.extend(new)
            if new:
                last_loss = new[-1]
                if not all(math.isfinite(v) for v in new):
                    raise RestoreError(f"training diverged: the loss is not finite at step {self.step}; resume from the "
                                       "last checkpoint with a lower --lr", cfg.output)
            self.observer.on_step(self.step, last_loss)
            interrupted, out_of_time = stop.requested, self._out_of_time()
            last = self.step >= cfg.steps
            if _crossed(before, self.step, cfg.log_every) or last:
                now = time.monotonic()
                record: dict[str, Any] = {"kind": "train" if interval else "explore", "step": self.step,
                                          "lr": self._learning_rate(),
                                          "steps_per_s": (self.step - interval_step) / max(now - interval_start, 1e-9),
                                          "elapsed_s": self.elapsed_before + now - self.loop_start, **self._log_extra()}
                if interval:
                    record["loss"] = float(np.mean(interval))
                self._write_log(record)
                interval, interval_start, interval_step = [], now, self.step
            if self.val_pairs is not None and (_crossed(before, self.step, cfg.val_every) or last):
                self.last_val = {"step": self.step, **self._validate()}
                self._write_log({"kind": "val", **self.last_val})
            if _crossed(before, self.step, cfg.checkpoint_every) or last or interrupted or out_of_time:
                checkpoint_path = self._save(self.elapsed_before + time.monotonic() - self.loop_start)
            if interrupted or out_of_time:
                return ("interrupted" if interrupted else "time_limit"), checkpoint_path
        return "completed", checkpoint_path

    def _log_extra(self) -> dict[str, Any]:
        return {}


class _ToolsRun(_Run):
    task = "tools"
    config: ToolsConfig

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        if cfg.init is not None and checkpoint is None:
            self._load_init(cfg.init)
        self.model.to(self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.milestones = cfg.resolved_milestones()
        self.agent: ToolchainAgent | None = None
        if cfg.mode == "joint":
            assert cfg.agent is not None
            resolved = resolve_toolchain_model(str(cfg.agent), "toolchain-agent", "--agent", "toolchain-agent", "restore train agent")
            self.agent = resolved.module.to(self.device).eval()  # type: ignore[assignment]
            for p in self.agent.parameters():  # type: ignore[union-attr]
                p.requires_grad_(False)
            self.agent_sha256 = resolved.sha256
            if checkpoint is not None and checkpoint.state.get("agent_sha256") != resolved.sha256:
                raise RestoreError("--agent differs from the agent the checkpoint was tuned with", checkpoint.path)
        self.val_pairs = self._load_val(cfg.severity) if cfg.mode != "single" else self._load_tool_val()
        self._produced = checkpoint.step if checkpoint is not None else 0
        self.rng_after: dict[str, Any] | None = None

    def _load_init(self, path: Path) -> None:
        resolved = resolve_toolchain_model(str(path), "toolbox", "--init", "toolbox", "restore train tools")
        self.model.load_state_dict(resolved.module.state_dict())
        self.init_sha256 = resolved.sha256

    def _load_tool_val(self) -> PatchPairs | None:
        cfg = self.config
        if cfg.val is None:
            return None
        images = load_image_set([cfg.val], cfg.channels, min_size=cfg.patch)
        rng, generator = validation_rng()
        per_tool = max(1, cfg.val_patches // len(TOOL_SPECS))
        pairs = [tool_pairs(images, spec, per_tool, cfg.patch, rng, generator) for spec in TOOL_SPECS]
        return PatchPairs(torch.stack([p.inputs for p in pairs]), torch.stack([p.targets for p in pairs]))

    def _make_batch(self) -> Any:
        cfg = self.config
        if cfg.mode == "single":
            batch: Any = toolbox_pairs(self.images, cfg.batch, cfg.patch, self.rng, self.generator)
        elif cfg.mode == "generic":
            batch = mixed_pairs(self.images, cfg.batch, cfg.patch, cfg.severity, self.rng, self.generator)
        else:
            index = self._produced % len(TOOL_SPECS)
            mixed = mixed_pairs(self.images, cfg.batch, cfg.patch, cfg.severity, self.rng, self.generator)
            single = tool_pairs(self.images, TOOL_SPECS[index], cfg.batch, cfg.patch, self.rng, self.generator)
            batch = (mixed, index, single)
        self._produced += 1
        return batch

    def _rng_state(self) -> dict[str, Any]:
        return self.rng_after if self.rng_after is not None else super()._rng_state()

    def _prepare(self) -> str | None:
        depth = self.config.prefetch if self.config.prefetch is not None else (2 if self.device.type == "cuda" else 0)
        self.rng_after = super()._rng_state()
        self.batches = BatchPrefetcher(self._make_batch, super()._rng_state, depth)
        self.model.train()
        return None

    def _finish(self) -> None:
        if hasattr(self, "batches"):
            self.batches.close()

    def _loss(self, batch: Any) -> Tensor:
        cfg, model, device = self.config, self.model, self.device
        if cfg.mode == "single":
            total = torch.zeros((), device=device)
            for index, pairs in enumerate(batch):
                pairs = pairs.to(device)
                with self.placement.autocast():
                    out = model(pairs.inputs.contiguous(memory_format=torch.channels_last), index)
                total = total + F.mse_loss(out.float(), pairs.targets)
            return total / len(batch)
        if cfg.mode == "generic":
            pairs = batch.to(device)
            with self.placement.autocast():
                out = model(pairs.inputs.contiguous(memory_format=torch.channels_last))
            return F.mse_loss(out.float(), pairs.targets)
        mixed, index, single = batch
        chain_loss = F.mse_loss(self._chain_output(mixed.inputs.to(device)), mixed.targets.to(device))
        single = single.to(device)
        with self.placement.autocast():
            out = model(single.inputs, index)
        return chain_loss + cfg.single_weight * F.mse_loss(out.float(), single.targets)

    def _chain_output(self, x: Tensor) -> Tensor:
        """The agent's greedy chain on each patch with gradients through the tools it used."""
        agent = self.agent
        assert agent is not None
        n = x.shape[0]
        state = agent.initial_state(n, self.device)
        previous = torch.full((n,), -1, dtype=torch.long, device=self.device)
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        current = x
        for _ in range(self.config.max_steps):
            with torch.no_grad():
                q, state = agent(current.detach().float(), previous, state)
            choice = q.argmax(dim=1)
            alive = alive & (choice != agent.stop_action)
            if not bool(alive.any()):
                break
            pieces = current.clone()
            for tool in torch.unique(choice[alive]).tolist():
                idx = torch.nonzero(alive & (choice == tool)).flatten()
                with self.placement.autocast():
                    out = self.model(current[idx], int(tool))
                pieces = pieces.index_copy(0, idx, out.float().clamp(0.0, 1.0))
            current = pieces
            previous = torch.where(alive, choice, torch.full_like(choice, -1))
        return current.float()

    def _advance(self) -> list[float]:
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.step, cfg.lr, self.milestones, cfg.lr_gamma)
        batch, self.rng_after = self.batches.next()
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return [float(loss.detach())]

    def _learning_rate(self) -> float:
        cfg = self.config
        return learning_rate_at(self.step - 1, cfg.lr, self.milestones, cfg.lr_gamma)

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        assert self.val_pairs is not None
        cfg, model = self.config, self.model
        model.eval()
        try:
            if cfg.mode == "single":
                gains = {}
                outs = []
                for index, spec in enumerate(TOOL_SPECS):
                    x, y = self.val_pairs.inputs[index].to(self.device), self.val_pairs.targets[index].to(self.device)
                    out = model(x, index).float().clamp(0.0, 1.0)
                    outs.append(float(patch_psnr(out, y).mean()))
                    gains[spec.name] = round(outs[-1] - float(patch_psnr(x, y).mean()), 3)
                return {"psnr": float(np.mean(outs)), "gain_per_tool": gains,
                        "protocol": f"{self.val_pairs.inputs.shape[1]} patches per tool in its range, RGB [0,1] PSNR"}
            x, y = self.val_pairs.inputs.to(self.device), self.val_pairs.targets.to(self.device)
            if cfg.mode == "generic":
                out = model(x).float().clamp(0.0, 1.0)
            else:
                out = self._chain_output(x)
            psnr_in, psnr_out = float(patch_psnr(x, y).mean()), float(patch_psnr(out, y).mean())
            return {"psnr": psnr_out, "gain": psnr_out - psnr_in,
                    "protocol": f"{x.shape[0]} {cfg.severity} patches, input {psnr_in:.2f} dB"}
        finally:
            model.train()

    def _state_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"mode": self.config.mode}
        if getattr(self, "init_sha256", None):
            extra["init_sha256"] = self.init_sha256
        if getattr(self, "agent_sha256", None):
            extra["agent_sha256"] = self.agent_sha256
        return extra


class _AgentRun(_Run):
    task = "agent"
    config: AgentConfig

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        toolbox = resolve_toolchain_model(cfg.toolbox, "toolbox", "--toolbox", DEFAULT_TOOLBOX, "restore train tools")
        if int(toolbox.config["channels"]) != cfg.channels:
            raise RestoreError(f"the toolbox takes {toolbox.config['channels']}-channel images; train the agent with --channels {toolbox.config['channels']}")
        self.toolbox_sha256 = toolbox.sha256
        if checkpoint is not None and checkpoint.state.get("toolbox_sha256") != toolbox.sha256:
            raise RestoreError("the toolbox differs from the one the checkpoint was trained with", checkpoint.path)
        self.env = ToolboxEnvironment(toolbox.module, self.images, cfg.patch, cfg.severity, cfg.single_share,
                                      self.device, self.placement)
        self.val_pairs = self._load_val(cfg.severity)
        self.agent: ToolchainAgent = self.model  # type: ignore[assignment]
        if cfg.method == "dqn":
            self.learner = DQNLearner(self.agent, self.env, cfg.dqn_settings(), self.device)
            self.optimizer = self.learner.optimizer
            if checkpoint is not None:
                self._load_dqn_file(checkpoint)
        else:
            self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.lr)  # type: ignore[arg-type]
            self.milestones = cfg.resolved_milestones()
        self.last_losses: list[float] = []
        self.last_episodes: list[Episode] = []

    # dqn extra state ---------------------------------------------------------------------------------
    def _load_dqn_file(self, checkpoint: ckpt.Checkpoint) -> None:
        info = checkpoint.state.get("dqn")
        if not info:
            raise RestoreError("the checkpoint has no DQN state (target network, replay memory)", checkpoint.path)
        path = self.config.output / info["file"] if (self.config.output / info["file"]).exists() else checkpoint.path.parent / info["file"]
        if not path.is_file():
            raise RestoreError(f"the DQN state file {info['file']} of this checkpoint is missing", path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != info["sha256"]:
            raise RestoreError("the DQN state file does not match its checkpoint (sha256 differs)", path)
        tensors = load_file(str(path))
        self.learner.target.load_state_dict({k[len("target."):]: v for k, v in tensors.items() if k.startswith("target.")})
        self.learner.memory.load_state({k: v for k, v in tensors.items() if k.startswith("replay.")}, int(info["counters"]["replay_written"]))
        self.learner.load_counters(info["counters"])

    def _write_dqn_file(self) -> dict[str, Any]:
        name = f"dqn-{self.step:07d}.safetensors"
        tensors = {f"target.{k}": v.detach().cpu().contiguous() for k, v in self.learner.target.state_dict().items()}
        tensors.update({k: v.contiguous() for k, v in self.learner.memory.state_tensors().items()})
        final = self.config.output / name
        tmp = self.config.output / f".{name}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
            digest = hashlib.sha256(handle.read()).hexdigest()
        os.replace(tmp, final)
        return {"file": name, "sha256": digest, "counters": self.learner.counters()}

    def _state_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"toolbox_sha256": self.toolbox_sha256, "method": self.config.method}
        if self.config.method == "dqn":
            extra["dqn"] = self._write_dqn_file()
        return extra

    def _after_save(self) -> None:
        if self.config.method != "dqn":
            return
        referenced = set()
        for _, path in ckpt.list_checkpoints(self.config.output):
            try:
                referenced.add(json.loads((path / ckpt.STATE_FILE).read_text(encoding="utf-8"))["dqn"]["file"])
            except (OSError, KeyError, json.JSONDecodeError):
                continue
        for entry in self.config.output.iterdir():
            if DQN_FILE_RE.match(entry.name) and entry.name not in referenced:
                entry.unlink(missing_ok=True)

    # search cache --------------------------------------------------------------------------------------
    def _search_fingerprint(self) -> str:
        cfg = self.config
        keys = {"toolbox": self.toolbox_sha256, "data": self.data_fingerprint, "seed": cfg.seed, "severity": cfg.severity,
                "single_share": cfg.single_share, "patch": cfg.patch, "channels": cfg.channels, "max_steps": cfg.max_steps,
                "beam": cfg.beam, "gamma": cfg.gamma, "chunk": cfg.search_chunk}
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()

    def _prepare(self) -> str | None:
        cfg = self.config
        if cfg.method != "search":
            return None
        folder = cfg.output / SEARCH_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fingerprint = self._search_fingerprint()
        chunks = -(-cfg.search_patches // cfg.search_chunk)
        parts: list[dict[str, Tensor]] = []
        started = time.monotonic()
        for index in range(chunks):
            path = folder / f"chunk-{index:05d}.safetensors"
            count = min(cfg.search_chunk, cfg.search_patches - index * cfg.search_chunk)
            if path.is_file():
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    stored = (handle.metadata() or {}).get("fingerprint")
                if stored != fingerprint:
                    raise RestoreError("search cache made with other settings or another toolbox; use another --output", path)
                tensors = load_file(str(path))
            else:
                if self.stop_request.requested or self._out_of_time():
                    return "interrupted" if self.stop_request.requested else "time_limit"
                rng = np.random.default_rng([cfg.seed, 7, index])
                generator = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, 7, index]).generate_state(1)[0]))
                pairs = self.env.sample(cfg.search_chunk, rng, generator)
                tensors = search_returns(self.env, PatchPairs(pairs.inputs[:count], pairs.targets[:count]), cfg.max_steps, cfg.beam, cfg.gamma)
                tmp = folder / f".{path.name}.tmp-{os.getpid()}"
                save_file(tensors, str(tmp), metadata={"fingerprint": fingerprint})
                os.replace(tmp, path)
                self._write_log({"kind": "search", "step": self.step, "chunk": index + 1, "chunks": chunks,
                                 "patches": min((index + 1) * cfg.search_chunk, cfg.search_patches),
                                 "seconds": time.monotonic() - started})
            parts.append(tensors)
        self.search = SearchSet({key: torch.cat([p[key] for p in parts]) for key in parts[0]})
        return None

    # steps ----------------------------------------------------------------------------------------------
    def _advance(self) -> list[float]:
        cfg = self.config
        if cfg.method == "dqn":
            self.last_episodes, losses = self.learner.run_round(self.rng, self.generator)
            self.step = self.learner.transitions
            self.last_losses = losses
            return losses
        lr = learning_rate_at(self.step, cfg.lr, self.milestones, cfg.lr_gamma)  # type: ignore[arg-type]
        loss = search_regression_step(self.agent, self.optimizer, self.search, cfg.batch, self.rng, self.device, lr)
        self.step += 1
        return [loss]

    def _learning_rate(self) -> float:
        cfg = self.config
        if cfg.method == "dqn":
            return self.learner.learning_rate(self.step)
        return learning_rate_at(max(self.step - 1, 0), cfg.lr, self.milestones, cfg.lr_gamma)  # type: ignore[arg-type]

    def _log_extra(self) -> dict[str, Any]:
        if self.config.method != "dqn":
            return {}
        returns = [float(e.rewards.sum()) for e in self.last_episodes]
        return {"epsilon": epsilon_at(self.step, self.learner.settings), "train_steps": self.learner.train_steps,
                "episode_return": float(np.mean(returns)) if returns else None}

    def _validate(self) -> dict[str, Any]:
        assert self.val_pairs is not None
        cfg = self.config
        rollout = greedy_rollout(self.env.apply, self.agent, self.val_pairs.inputs, self.val_pairs.targets, cfg.max_steps)
        self.agent.train()
        assert rollout.psnr_in is not None and rollout.psnr_out is not None
        psnr_in, psnr_out = float(rollout.psnr_in.mean()), float(rollout.psnr_out.mean())
        stops = float((rollout.actions[:, 0] == self.agent.stop_action).float().mean())
        return {"psnr": psnr_out, "gain": psnr_out - psnr_in, "stop_at_start": stops,
                "protocol": f"{self.val_pairs.inputs.shape[0]} {cfg.severity} patches, greedy per patch, input {psnr_in:.2f} dB"}


def run_tools_training(config: ToolsConfig, observer: Any = None) -> TrainResult:
    """Train the toolbox (or the generic CNN) as `config` says, from scratch or from `config.resume`."""
    return _ToolsRun(config, observer).train()


def run_agent_training(config: AgentConfig, observer: Any = None) -> TrainResult:
    """Train the agent on a frozen toolbox as `config` says, from scratch or from `config.resume`."""
    return _AgentRun(config, observer).train()


# --- export ----------------------------------------------------------------------------------------


def is_toolchain_checkpoint(checkpoint: Path) -> bool:
    """Whether a checkpoint (or run folder) was written by `restore train tools|agent`."""
    return ckpt.read_checkpoint_state(checkpoint).get("family") == FAMILY


def export_toolchain_checkpoint(checkpoint: Path, name: str, directory: Path | None = None,
                                metrics: dict[str, Any] | None = None, overwrite: bool = False) -> Any:
    """Write DIR/NAME.safetensors and its manifest entry from a tools/agent checkpoint.

    The toolbox is one file (tool01.… tool12.) with task `toolchain`, the agent another, whose
    metadata and manifest entry record the sha256 of the toolbox it was trained with."""
    from restore_cli.engine.weights import safetensors_bytes

    from restore_cli.engine.weights import ModelEntry, add_manifest_entry, load_manifest, sha256_file, weights_dir
    from restore_cli.io.atomic import atomic_write_bytes
    from restore_cli.models.architectures import build_model
    from restore_cli.train.export import MODEL_NAME_RE, ExportResult

    if not MODEL_NAME_RE.match(name):
        raise RestoreError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (not starting with a symbol)")
    path = ckpt.resolve_checkpoint(checkpoint)
    state = ckpt.read_checkpoint_state(path)
    if state.get("family") != FAMILY:
        raise RestoreError("not a toolchain checkpoint (restore train tools|agent)", path)
    arch, model_config, task = state["arch"], state["model_config"], state["task"]
    tensors = {k: v.to(torch.float32).contiguous() for k, v in ckpt.read_model_tensors(path).items()}
    try:
        build_model(arch, model_config).load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise RestoreError(f"checkpoint tensors do not fit {arch} {model_config} ({str(exc).splitlines()[0]})", path) from None
    directory = weights_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.safetensors"
    if not overwrite and (target.exists() or name in load_manifest(directory)):
        raise RestoreError(f"a model named {name!r} already exists; choose another --name or pass --overwrite", target)
    config = state["config"]
    manifest_task = MANIFEST_TASK[arch]
    metadata = {"arch": arch, "config": json.dumps(model_config), "task": manifest_task, "name": name}
    if arch == "toolbox":
        metadata["tools"] = ",".join(TOOL_NAMES)
    if arch == "toolchain-agent":
        metadata["toolbox_sha256"] = state.get("toolbox_sha256") or ""
        metadata["max_steps"] = str(config.get("max_steps", MAX_STEPS))
    atomic_write_bytes(target, safetensors_bytes(tensors, metadata=metadata))
    training = {
        "command": config.get("command_line", ""),
        "task": task,
        "mode": config.get("mode") or config.get("method"),
        "data": config.get("data"),
        "val": config.get("val"),
        "steps": int(state["step"]),
        "planned_steps": config.get("steps"),
        "seed": config.get("seed"),
        "batch": config.get("batch"),
        "patch": config.get("patch"),
        "lr": config.get("lr"),
        "severity": config.get("severity"),
        "precision": state.get("precision"),
        "data_fingerprint": state.get("data_fingerprint"),
        "images": state.get("images"),
        "last_val": state.get("last_val"),
        "elapsed_s": state.get("elapsed_s"),
        "checkpoint": str(path),
    }
    for key in ("toolbox_sha256", "init_sha256", "agent_sha256"):
        if state.get(key):
            training[key] = state[key]
    if arch == "toolbox":
        training["tool_ranges"] = {s.name: {"reference": s.reference, "distortion": s.distortion, "low": s.low, "high": s.high}
                                   for s in TOOL_SPECS}
    entry = ModelEntry(name=name, file=target.name, sha256=sha256_file(target), arch=arch, config=model_config,
                       task=manifest_task, scales=[1], channels=int(model_config.get("channels", 3)), tiling="safe",
                       training=training, metrics=dict(metrics or {}))
    manifest = add_manifest_entry(entry, directory)
    return ExportResult(weights=target, manifest=manifest, entry=entry)
