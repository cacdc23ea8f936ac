"""Running an RL-Restore toolchain: the agent picks tools step by step, the tools restore.

Whole images (ANCHORS 4.7): at each step the agent looks at every non-overlapping 63×63 patch of
the current image (leftover borders ignored), a majority vote picks one action, and the chosen
tool runs on the whole image through the tiled runner (`run_with_oom_backoff`); a vote for stop,
or the step limit, ends the chain. Each patch keeps its own LSTM state, and every patch's
"previous tool" is the tool that was applied. Tool outputs are clamped to [0, 1] after every step.

Patch sets (training, evaluation): `greedy_rollout` lets each patch follow its own chain, and
`rank_fixed_chains` / `best_fixed_chain` find the best single chain of ≤ 3 tools for a set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from restore_cli.engine.device import Placement, select_device, select_precision
from restore_cli.engine.registry import ResolvedModel, find_entry, load_entry, load_weights_file
from restore_cli.engine.restore import TileRequest, tile_memory_budget
from restore_cli.engine.tiling import TileSettings, auto_tile_size, run_with_oom_backoff
from restore_cli.errors import RestoreError
from restore_cli.models.toolchain import ACTION_NAMES, MAX_STEPS, STOP_NAME, TOOL_NAMES, TOOL_SPECS, ToolchainAgent
from restore_cli.ops.patches import majority_vote, patch_psnr, voting_patches

DEFAULT_TOOLBOX = "toolbox"
DEFAULT_AGENT = "toolchain-agent"
TASK = "toolchain"
# Receptive radius of both tool layouts (3-layer: 4+2+2; 8-layer: 2+1+1+1+1+2): tiles with this
# much context give the whole-image result.
TOOL_CONTEXT = 8
# Widest feature map of the tools (the 8-layer tools' 64 channels): the engine's calibrated rule
# counts about ten maps of the first width alive at once.
TOOL_WIDTH = 64
AGENT_BATCH = 4096  # patches per agent forward pass
# Agent metadata: the best single chain of tools on the agent's training patches ("noise-3,blur-2").
FIXED_CHAIN_KEY = "fixed_chain"

ToolFn = Callable[[Tensor, int], Tensor]  # (N×C×H×W, tool index) → N×C×H×W


# --- names -------------------------------------------------------------------------------------


def parse_tool_list(text: str) -> tuple[int, ...]:
    """`--tools blur-1,noise-2,tool12` → sorted tool indices; names, reference ids (tool01…tool12)
    or the kinds `blur`, `noise`, `jpeg` (all four of that kind)."""
    indices: set[int] = set()
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        matches = [i for i, spec in enumerate(TOOL_SPECS) if item in (spec.name, spec.reference, spec.distortion)]
        if not matches:
            raise RestoreError(f"--tools: unknown tool {raw.strip()!r} (tools: {', '.join(TOOL_NAMES)}; or blur, noise, jpeg)")
        indices.update(matches)
    if not indices:
        raise RestoreError("--tools: give at least one tool")
    return tuple(sorted(indices))


def parse_chain(text: str) -> tuple[int, ...]:
    """`--chain noise-3,blur-2` → tool indices in the given order (repeats allowed), by name or
    reference id (tool01…tool12)."""
    chain: list[int] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        matches = [i for i, spec in enumerate(TOOL_SPECS) if item in (spec.name, spec.reference)]
        if not matches:
            raise RestoreError(f"--chain: unknown tool {raw.strip()!r} (tools: {', '.join(TOOL_NAMES)})")
        chain.append(matches[0])
    if not chain:
        raise RestoreError("--chain: give at least one tool")
    return tuple(chain)


def chain_text(chain: Sequence[int]) -> str:
    """(6, 1) → "noise-3,blur-2": the form `--chain` takes and agent metadata stores."""
    return ",".join(TOOL_NAMES[i] for i in chain)


def action_name(index: int) -> str:
    return ACTION_NAMES[index] if 0 <= index < len(ACTION_NAMES) else f"action-{index}"


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainStep:
    """One decision on a whole image: the action, the votes per action, and the mean Q-value of
    every allowed action over the voting patches."""

    action: int
    votes: dict[str, int]
    q_values: dict[str, float]
    patches: int

    @property
    def name(self) -> str:
        return action_name(self.action)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.name, "votes": dict(self.votes), "q_values": {k: round(v, 4) for k, v in self.q_values.items()},
                "patches": self.patches}


@dataclass
class ChainResult:
    """The chain chosen for one image: its steps (the last one is the stop vote when `stopped`)."""

    steps: list[ChainStep] = field(default_factory=list)
    max_steps: int = MAX_STEPS

    @property
    def stopped(self) -> bool:
        return bool(self.steps) and self.steps[-1].name == STOP_NAME

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    @property
    def tools(self) -> list[str]:
        return [name for name in self.names if name != STOP_NAME]

    def describe(self) -> str:
        """`blur-2 → noise-3 → stop`, or `… (max 3 steps)` when the step limit ended the chain."""
        text = " → ".join(self.names)
        return text if self.stopped else f"{text} (max {self.max_steps} steps)"


def to_model_channels(x: Tensor, channels: int, what: str) -> Tensor:
    """A 1×C×H×W float image as the model's channels: gray is repeated into RGB for an RGB model."""
    if x.shape[1] == 1 and channels == 3:
        return x.float().expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] != channels:
        raise RestoreError(f"the {what} takes {channels}-channel images, this one has {x.shape[1]}")
    return x.float()


def from_model_channels(y: Tensor, input_channels: int) -> Tensor:
    """Back to the input's channels: the mean of RGB for a gray input."""
    return y.mean(dim=1, keepdim=True) if input_channels == 1 and y.shape[1] == 3 else y


# --- whole images --------------------------------------------------------------------------------


class ToolchainRunner:
    """A toolbox and an agent placed on a device, ready to restore whole images."""

    def __init__(self, toolbox: ResolvedModel, agent: ResolvedModel, placement: Placement,
                 tiles: TileRequest = TileRequest(), allowed_tools: Sequence[int] | None = None,
                 max_steps: int = MAX_STEPS, log: Callable[[str], None] | None = None, allow_stop: bool = True) -> None:
        check_compatible(toolbox, agent)
        if max_steps < 1:
            raise RestoreError(f"--max-steps {max_steps}: must be at least 1")
        self.toolbox = toolbox
        self.agent_model = agent
        self.placement = placement
        self.tiles = tiles
        self.max_steps = max_steps
        self.log = log or (lambda message: None)
        self.toolbox_module = toolbox.module.to(placement.device).eval().to(memory_format=torch.channels_last)
        self.agent: ToolchainAgent = agent.module.to(placement.device).eval()  # type: ignore[assignment]
        tools = len(TOOL_SPECS)
        self.allowed_tools = tuple(range(tools)) if allowed_tools is None else tuple(sorted(set(allowed_tools)))
        self.allowed = torch.zeros(tools + 1, dtype=torch.bool)
        self.allowed[list(self.allowed_tools)] = True
        self.allowed[tools] = allow_stop  # without stop (an ablation) every chain runs max_steps tools
        self.allow_stop = allow_stop
        self._tile_after_oom: int | None = None

    @property
    def channels(self) -> int:
        return int(self.toolbox.config.get("channels", 3))

    def _settings(self, x: Tensor) -> TileSettings:
        tile = self._tile_after_oom if self._tile_after_oom is not None else self.tiles.tile
        if tile is None:
            element = 2 if self.placement.precision in ("bf16", "fp16") else 4
            tile = auto_tile_size(tile_memory_budget(self.placement.device), 10 * TOOL_WIDTH * element, 1, TOOL_CONTEXT)
        whole = tile <= 0 or tile >= max(x.shape[-2:])
        return TileSettings(tile=0 if whole else tile, overlap=self.tiles.overlap, context=TOOL_CONTEXT, pad_mode="reflect")

    def apply_tool(self, index: int, x: Tensor) -> Tensor:
        """Tool `index` on a whole 1×C×H×W image (C = the toolbox's channels), tiled as set, clamped."""
        placement, tool = self.placement, self.toolbox_module.tool(index)

        def fn(region: Tensor) -> Tensor:
            region = region.to(placement.device, torch.float32).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), placement.autocast():
                out = tool(region)
            return out.float()

        settings = self._settings(x)
        y, used = run_with_oom_backoff(
            x, fn, 1, settings,
            on_retry=lambda old, new: self.log(f"out of memory with {old}-pixel tiles; retrying with {new}"),
        )
        if used.tile != settings.tile:
            self._tile_after_oom = used.tile
        return y.clamp(0.0, 1.0)

    @torch.inference_mode()
    def _q_values(self, patches: Tensor, previous: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The agent on every patch (fp32, in batches): Q (P×actions, CPU) and the new state."""
        device = self.placement.device
        qs, hs, cs = [], [], []
        for start in range(0, patches.shape[0], AGENT_BATCH):
            end = start + AGENT_BATCH
            q, (h, c) = self.agent(patches[start:end].to(device, torch.float32), previous[start:end].to(device),
                                   (state[0][start:end], state[1][start:end]))
            qs.append(q.float().cpu())
            hs.append(h)
            cs.append(c)
        return torch.cat(qs), (torch.cat(hs), torch.cat(cs))

    def decide(self, image: Tensor, previous: Tensor, state: tuple[Tensor, Tensor]) -> tuple[ChainStep, tuple[Tensor, Tensor]]:
        """One vote over the 63×63 patches of `image` (1×C×H×W)."""
        patches = voting_patches(image, self.agent.patch)
        q, state = self._q_values(patches, previous, state)
        masked = q.masked_fill(~self.allowed, -math.inf)
        choices = masked.argmax(dim=1)
        vote = majority_vote(choices, self.agent.actions, scores=q.masked_fill(~self.allowed, 0.0))
        votes = {action_name(a): n for a, n in enumerate(vote.counts) if n}
        means = q.mean(dim=0)
        q_values = {action_name(a): float(means[a]) for a in range(self.agent.actions) if bool(self.allowed[a])}
        return ChainStep(vote.winner, votes, q_values, patches.shape[0]), state

    def run(self, x: Tensor) -> tuple[Tensor, ChainResult]:
        """Restore a 1×C×H×W image in [0, 1] (C = 1 or the toolbox's); returns the restored image
        (float32, CPU) and the chain with its votes."""
        channels = x.shape[1]
        current = to_model_channels(x, self.channels, "toolbox")
        n = voting_patches(current, self.agent.patch).shape[0]
        state = self.agent.initial_state(n, self.placement.device)
        previous = torch.full((n,), -1, dtype=torch.long)
        result = ChainResult(max_steps=self.max_steps)
        for _ in range(self.max_steps):
            step, state = self.decide(current, previous, state)
            result.steps.append(step)
            if step.action == self.agent.stop_action:
                break
            self.log(f"step {len(result.steps)}: {step.name} ({step.votes.get(step.name, 0)}/{step.patches} patches)")
            current = self.apply_tool(step.action, current)
            previous = torch.full((n,), step.action, dtype=torch.long)
        return from_model_channels(current, channels), result

    def without_stop(self) -> ToolchainRunner:
        """The same models and settings with the stop action masked out (the stop ablation)."""
        return ToolchainRunner(self.toolbox, self.agent_model, self.placement, self.tiles, self.allowed_tools,
                               self.max_steps, self.log, allow_stop=False)

    def run_chain(self, x: Tensor, chain: Sequence[int]) -> Tensor:
        """A fixed chain of tools on a 1×C×H×W image (no agent): the "fixed chain" baseline."""
        current = to_model_channels(x, self.channels, "toolbox")
        for index in chain:
            current = self.apply_tool(int(index), current)
        return from_model_channels(current, x.shape[1])

    @property
    def fixed_chain(self) -> tuple[int, ...] | None:
        """The best fixed chain recorded with the agent at training (metadata `fixed_chain`), if any."""
        text = self.agent_model.metadata.get(FIXED_CHAIN_KEY)
        return parse_chain(text) if text else None

    def describe_models(self) -> dict[str, Any]:
        return {"toolbox": self.toolbox.name, "agent": self.agent_model.name}


def check_compatible(toolbox: ResolvedModel, agent: ResolvedModel) -> None:
    """The agent must choose among exactly this toolbox's tools, at its channel count."""
    tools = int(agent.config.get("tools", -1))
    if tools != len(TOOL_SPECS):
        raise RestoreError(f"agent '{agent.name}' chooses among {tools} tools, the toolbox has {len(TOOL_SPECS)}", agent.weights_path)
    if int(agent.config.get("channels", 3)) != int(toolbox.config.get("channels", 3)):
        raise RestoreError(
            f"agent '{agent.name}' looks at {agent.config.get('channels')}-channel patches, toolbox '{toolbox.name}' "
            f"takes {toolbox.config.get('channels')} channels", agent.weights_path)


def _looks_like_file(spec: str) -> bool:
    return spec.lower().endswith(".safetensors") or "/" in spec or Path(spec).is_file()


def resolve_toolchain_model(spec: str | Path | None, arch: str, option: str, default: str, train_hint: str) -> ResolvedModel:
    """A shipped model name or a .safetensors file (`--toolbox`, `--agent`), checked to be `arch`."""
    if spec is None:
        try:
            entry = find_entry(default)
        except RestoreError:
            raise RestoreError(
                f"no trained {arch} is installed (model '{default}'); give {option} FILE.safetensors "
                f"or train one with `{train_hint}`"
            ) from None
        model = load_entry(entry)
    elif isinstance(spec, Path) or _looks_like_file(str(spec)):
        model = load_weights_file(Path(spec), TASK)
    else:
        model = load_entry(find_entry(str(spec)))
    if model.arch != arch:
        raise RestoreError(f"{option} needs '{arch}' weights, these are '{model.arch}'", model.weights_path or spec)
    return model


def load_toolchain(toolbox: str | Path | None = None, agent: str | Path | None = None, device: str = "auto",
                   precision: str = "auto", tiles: TileRequest = TileRequest(), allowed_tools: Sequence[int] | None = None,
                   max_steps: int = MAX_STEPS, log: Callable[[str], None] | None = None) -> ToolchainRunner:
    """Resolve, verify and place the toolbox and the agent (names from the weights store or files)."""
    from restore_cli.engine.session import model_bf16_loss

    target = select_device(device)
    select_precision(precision, target)  # type: ignore[arg-type]  # validate before loading anything
    box = resolve_toolchain_model(toolbox, "toolbox", "--toolbox", DEFAULT_TOOLBOX, "restore train tools")
    chooser = resolve_toolchain_model(agent, "toolchain-agent", "--agent", DEFAULT_AGENT, "restore train agent")
    placement = select_precision(precision, target, model_bf16_loss(box))  # type: ignore[arg-type]
    runner = ToolchainRunner(box, chooser, placement, tiles, allowed_tools, max_steps, log)
    (log or (lambda m: None))(f"toolbox {box.name}, agent {chooser.name} on {placement.describe()}")
    return runner


GENERIC_ARCH = "generic-cnn"


def model_arch(name: str | None, weights: Path | None) -> str | None:
    """The architecture of a model name or weights file (None for neither: the default agent)."""
    if weights is not None:
        from restore_cli.engine.weights import read_safetensors

        return read_safetensors(Path(weights))[1].get("arch")
    return find_entry(name).arch if name else None


class GenericRunner:
    """The generic CNN baseline (one residual CNN of the toolbox's size for all mixed
    distortions), placed on a device: `run(x)` restores a 1×C×H×W image in one pass, clamped."""

    def __init__(self, model: ResolvedModel, placement: Placement) -> None:
        if model.arch != GENERIC_ARCH:
            raise RestoreError(f"needs '{GENERIC_ARCH}' weights, these are '{model.arch}'", model.weights_path)
        self.model = model
        self.placement = placement
        self.module = model.module.to(placement.device).eval().to(memory_format=torch.channels_last)
        self.channels = int(model.config.get("channels", 3))

    @torch.inference_mode()
    def run(self, x: Tensor) -> Tensor:
        current = to_model_channels(x, self.channels, "generic CNN")
        with self.placement.autocast():
            y = self.module(current.to(self.placement.device).contiguous(memory_format=torch.channels_last))
        return from_model_channels(y.float().cpu().clamp(0.0, 1.0), x.shape[1])


def load_generic(name: str | None, weights: Path | None, device: str = "auto", precision: str = "auto") -> GenericRunner:
    """A generic CNN from the weights store (name) or a file, verified and placed."""
    target = select_device(device)
    placement = select_precision(precision, target)  # type: ignore[arg-type]
    model = load_weights_file(Path(weights), "toolchain-baseline") if weights is not None else load_entry(find_entry(str(name)))
    return GenericRunner(model, placement)


def toolchain_image(runner: ToolchainRunner, image: Any) -> tuple[Any, dict[str, Any]]:
    """Restore one `ImageData` (alpha untouched); details for the report: models, device, chain,
    votes and Q-values per step."""
    from restore_cli.engine.units import image_to_tensor, tensor_to_image

    y, chain = runner.run(image_to_tensor(image.pixels))
    details = {
        "model": runner.describe_models(),
        "device": str(runner.placement.device),
        "precision": runner.placement.precision,
        "chain": chain.names,
        "stopped": chain.stopped,
        "max_steps": runner.max_steps,
        "tools": [TOOL_NAMES[i] for i in runner.allowed_tools],
        "steps": [step.to_json() for step in chain.steps],
    }
    return replace(image, pixels=tensor_to_image(y)), details


# --- patch sets ------------------------------------------------------------------------------------


def apply_tool_batched(tools: ToolFn, index: int, x: Tensor, batch: int = 256) -> Tensor:
    """Tool `index` on N patches in batches, clamped to [0, 1]."""
    outs = [tools(x[start:start + batch], index).clamp(0.0, 1.0) for start in range(0, x.shape[0], batch)]
    return torch.cat(outs) if outs else x.clone()


@dataclass
class Rollout:
    """Per-patch chains: the final patches, the actions (N×max_steps, −1 after the chain ended;
    the stop action where the agent stopped) and the PSNR before and after, when targets are given."""

    outputs: Tensor
    actions: Tensor
    psnr_in: Tensor | None = None
    psnr_out: Tensor | None = None


@torch.no_grad()
def greedy_rollout(tools: ToolFn, agent: ToolchainAgent, x: Tensor, target: Tensor | None = None,
                   max_steps: int = MAX_STEPS, allowed: Tensor | None = None, batch: int = 256) -> Rollout:
    """Each patch follows the agent's greedy chain on its own (no vote): the synthetic-set mode of
    the reference. x: N×C×P×P in [0, 1]; `allowed`: a bool mask over the actions (stop always)."""
    n = x.shape[0]
    device = next(agent.parameters()).device
    state = agent.initial_state(n, device)
    previous = torch.full((n,), -1, dtype=torch.long, device=device)
    current = x.clone()
    actions = torch.full((n, max_steps), -1, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    stop = agent.stop_action
    for t in range(max_steps):
        q, state = agent(current.to(device), previous, state)
        q = q.float().cpu()
        if allowed is not None:
            q = q.masked_fill(~allowed.cpu(), -math.inf)
        choice = q.argmax(dim=1)
        choice[~alive] = -1
        actions[:, t] = choice
        alive &= choice != stop
        for tool in torch.unique(choice[alive]).tolist():
            idx = torch.nonzero(choice == tool).flatten()
            current[idx] = apply_tool_batched(tools, int(tool), current[idx], batch)
        previous = torch.where(alive, choice, torch.full_like(choice, -1)).to(device)
        if not bool(alive.any()):
            break
    if target is None:
        return Rollout(current, actions)
    return Rollout(current, actions, patch_psnr(x, target), patch_psnr(current, target))


@dataclass(frozen=True)
class FixedChain:
    """One chain of tools applied to every patch of a set, with its mean PSNR there."""

    chain: tuple[int, ...]
    psnr: float

    @property
    def names(self) -> list[str]:
        return [TOOL_NAMES[i] if i < len(TOOL_NAMES) else f"tool-{i}" for i in self.chain]


@torch.no_grad()
def _chain_order(chain: FixedChain) -> tuple[float, int, tuple[int, ...]]:
    return (-chain.psnr, len(chain.chain), chain.chain)


def rank_fixed_chains(tools: ToolFn, inputs: Tensor, targets: Tensor, n_tools: int = len(TOOL_SPECS),
                      max_steps: int = MAX_STEPS, allowed: Sequence[int] | None = None, batch: int = 256,
                      beam: int | None = None) -> list[FixedChain]:
    """Chains of 0..max_steps tools (the empty chain is the input itself) applied to all patches,
    by mean PSNR, best first (ties: shorter, then lexicographically smaller).

    beam None: every chain, 1 + 12 + 144 + 1,728 for 12 tools and 3 steps, depth-first so that
    prefixes are computed once (1,884 tool runs per patch). beam B: level by level, only the B
    best chains of each length are extended (12·(1 + B·(max_steps − 1)) runs per patch); the
    result lists the chains evaluated."""
    candidates = list(range(n_tools)) if allowed is None else sorted(set(allowed))
    results: list[FixedChain] = []
    if beam is None:
        def visit(chain: tuple[int, ...], current: Tensor) -> None:
            results.append(FixedChain(chain, float(patch_psnr(current, targets).mean())))
            if len(chain) == max_steps:
                return
            for tool in candidates:
                visit((*chain, tool), apply_tool_batched(tools, tool, current, batch))

        visit((), inputs)
        return sorted(results, key=_chain_order)
    if beam < 1:
        raise ValueError("beam must be >= 1")
    results.append(FixedChain((), float(patch_psnr(inputs, targets).mean())))
    frontier: list[tuple[tuple[int, ...], Tensor]] = [((), inputs)]
    for _ in range(max_steps):
        level: list[tuple[FixedChain, Tensor]] = []
        for chain, current in frontier:
            for tool in candidates:
                out = apply_tool_batched(tools, tool, current, batch)
                level.append((FixedChain((*chain, tool), float(patch_psnr(out, targets).mean())), out))
        level.sort(key=lambda item: _chain_order(item[0]))
        results.extend(item[0] for item in level)
        frontier = [(item[0].chain, item[1]) for item in level[:beam]]
    return sorted(results, key=_chain_order)


def best_fixed_chain(tools: ToolFn, inputs: Tensor, targets: Tensor, n_tools: int = len(TOOL_SPECS),
                     max_steps: int = MAX_STEPS, allowed: Sequence[int] | None = None, batch: int = 256,
                     beam: int | None = None) -> FixedChain:
    """The single chain of ≤ max_steps tools with the best mean PSNR over a set of patches (the
    "best fixed chain" baseline; `beam` as in `rank_fixed_chains`)."""
    return rank_fixed_chains(tools, inputs, targets, n_tools, max_steps, allowed, batch, beam)[0]


def module_tools(toolbox: nn.Module) -> ToolFn:
    """A toolbox module as a ToolFn, evaluated without gradients on the module's device."""
    device = next(toolbox.parameters()).device

    def run(x: Tensor, index: int) -> Tensor:
        with torch.no_grad():
            return toolbox(x.to(device), index).to(x.device)

    return run
