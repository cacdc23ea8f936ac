"""Searched returns for the toolchain agent (`restore train agent --method search`): a beam
search over chains of tools gives every visited state its Q-targets, and the agent learns them
by Huber regression along the searched paths."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from restore_cli.models.toolchain import ToolchainAgent
from restore_cli.ops.patches import patch_psnr
from restore_cli.train.toolchain_data import PatchPairs
from restore_cli.train.toolchain_dqn import ToolEnvironment, huber, unroll


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
                           rng: np.random.Generator, device: torch.device, lr: float,
                           target_floor: float | None = None) -> float:
    """One Huber-regression step of all Q-values to their searched targets along `batch` random
    paths (a random patch, a random expanded node, its path from the root); groups by length.

    `target_floor` (dB) raises every target below it to it: a tool that loses more than that is
    simply bad, whatever the amount. Without it the targets reach far below zero (blur-4 at the
    first step: mean −13.5 dB on moderate patches), the tanh-bounded LSTM state saturates to fit
    them, and the Q-values stop depending on the input (measured: a constant policy after 3,000
    steps)."""
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
        if target_floor is not None:
            targets = targets.clamp(min=target_floor)
        total = total + huber(q, targets.to(device)).mean() * (len(members) / batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return float(total.detach())
