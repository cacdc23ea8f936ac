"""The configuration of RL-Restore toolchain training (`restore train tools|agent`, ANCHORS
4.1–4.5): typed, validated once, stored in checkpoints, and the settings a resumed run may not
change."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from restore_cli.engine.device import Placement, select_precision
from restore_cli.engine.toolchain import DEFAULT_TOOLBOX
from restore_cli.errors import RestoreError
from restore_cli.models.toolchain import MAX_STEPS, TOOL_SPECS
from restore_cli.ops.rl_restore import SEVERITY_WINDOWS
from restore_cli.train.run_config import as_step, changed_settings, config_from_json, config_to_json, milestone_change
from restore_cli.train.toolchain_dqn import DQNSettings

FAMILY = "toolchain"
ToolsMode = Literal["single", "joint", "generic"]
AgentMethod = Literal["dqn", "search"]
ToolsLoss = Literal["mse", "psnr"]
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
# Fields that may differ between a checkpoint's config and the config resuming it.
RESUME_FREE_FIELDS = frozenset({"data", "val", "output", "steps", "checkpoint_every", "keep_checkpoints", "time_limit",
                                "val_every", "log_every", "resume", "command_line", "device", "precision", "prefetch",
                                "milestones", "agent", "init", "toolbox", "fixed_chain_patches"})



# --- configuration ---------------------------------------------------------------------------------


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise RestoreError(message)


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
    loss: ToolsLoss = "mse"
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
        _need(self.loss in get_args(ToolsLoss), f"--loss must be mse or psnr, got {self.loss!r}")
        _need(1 <= self.max_steps <= 10, "--max-steps must be in 1..10")
        _need(self.prefetch is None or self.prefetch >= 0, "prefetch depth must be >= 0")

    @property
    def arch(self) -> str:
        return ARCH_OF_MODE[self.mode]

    def model_config(self) -> dict[str, Any]:
        from restore_cli.models.architectures import PRESETS

        return {**PRESETS[self.arch][1], "channels": self.channels}

    def resolved_milestones(self) -> tuple[int, ...]:
        return tuple(sorted(as_step(m, self.steps) for m in self.milestones))

    def to_json(self) -> dict[str, Any]:
        return {**config_to_json(self), "task": "tools"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolsConfig:
        return config_from_json(cls, data, ("data", "milestones"))


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
    clean_share: float = 0.0
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
    target_floor: float | None = -1.0  # search: targets below this (dB) are raised to it; None: raw
    # the best fixed chain on training patches (recorded with the agent; 0: not searched)
    fixed_chain_patches: int = 256
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
        _need(0 <= self.clean_share <= 1 - self.single_share + 1e-9,
              f"--clean-share must be in [0, 1 − --single-share], got {self.clean_share} with --single-share {self.single_share}")
        _need(self.clean_share == 0 or self.method == "search",
              "--clean-share needs --method search: DQN skips patches above 50 dB, as the reference does, so clean starts never reach it")
        _need(1 <= self.max_steps <= 10, "--max-steps must be in 1..10")
        _need(0 <= self.gamma <= 1, "--gamma must be in [0, 1]")
        _need(self.replay >= self.max_steps * self.parallel, "--replay must hold at least one round (max steps × --parallel transitions)")
        _need(self.learn_start >= 0 and self.train_every >= 1 and self.target_every >= 1, "--learn-start >= 0, --train-every and --target-every >= 1")
        _need(self.epsilon_steps >= 1 and 0 <= self.epsilon_end <= 1, "--epsilon-steps >= 1 and --epsilon-end in [0, 1]")
        _need(self.parallel >= 1, "--parallel must be >= 1")
        _need(self.lr_half_life >= 1 and self.lr_floor >= 0, "--lr-half-life >= 1 and --lr-floor >= 0")
        _need(self.search_patches >= 1 and self.search_chunk >= 1, "--search-patches and --search-chunk must be >= 1")
        _need(1 <= self.beam <= len(TOOL_SPECS), f"--beam must be in 1..{len(TOOL_SPECS)}")
        _need(self.fixed_chain_patches >= 0, "--fixed-chain-patches must be >= 0")
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
        return tuple(sorted(as_step(m, self.steps) for m in self.milestones))

    def dqn_settings(self) -> DQNSettings:
        assert self.lr is not None
        return DQNSettings(
            gamma=self.gamma, replay=self.replay, learn_start=self.learn_start, train_every=self.train_every,
            target_every=self.target_every, epsilon_steps=self.epsilon_steps, epsilon_end=self.epsilon_end,
            parallel=self.parallel, batch=self.batch, max_steps=self.max_steps, lr=self.lr,
            lr_half_life=self.lr_half_life, lr_floor=self.lr_floor, skip_psnr=self.skip_psnr,
        )

    def to_json(self) -> dict[str, Any]:
        return {**config_to_json(self), "task": "agent"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentConfig:
        return config_from_json(cls, data, ("data", "milestones"))


def config_mismatches(stored: Any, current: Any) -> list[str]:
    """Settings in which a resuming config differs from the checkpoint's (those that change the run)."""
    differences = changed_settings(stored, current, RESUME_FREE_FIELDS)
    uses_milestones = not (isinstance(stored, AgentConfig) and stored.method == "dqn")
    return differences + milestone_change(stored, current) if uses_milestones else differences


def training_placement(precision: str, device: torch.device) -> Placement:
    """fp32, or bf16 autocast (asked for, or `auto` on CUDA with bf16); fp16 is not used here."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return select_precision(precision, device)  # type: ignore[arg-type]
