"""How far the agent's chains are from the best chains the toolbox allows: on the toolchain
protocol's 63×63 patches (CBSD68 by default, seed 0, the `restore eval toolchain` draws), the
agent's greedy per-patch gain beside the gain of the best chain a beam search finds with the
ground truth (beam 3, ≤ 3 tools, stop allowed). The oracle bounds what any agent can reach with
these tools: where it is below a target, the tools must improve, not the agent.

    python tests/benchmarks/toolchain_oracle_gap.py --data ../shared/datasets/CBSD68 --limit 8

Prints one line per level: patches, input PSNR, agent gain, oracle gain (dB, RGB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restore_cli.engine.toolchain import ToolFn, apply_tool_batched, greedy_rollout, load_toolchain, module_tools
from restore_cli.eval.degradations import patches, to_tensor, toolchain_input, uint8_to_float32
from restore_cli.train.toolchain_data import PatchPairs
from restore_cli.train.toolchain_search import search_returns


class _Tools:
    """The frozen toolbox as the environment `search_returns` expects."""

    n_tools = 12

    def __init__(self, run: ToolFn) -> None:
        self.run = run

    @torch.no_grad()
    def apply(self, x: torch.Tensor, tool: int) -> torch.Tensor:
        return apply_tool_batched(self.run, tool, x, batch=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/CBSD68"))
    parser.add_argument("--limit", type=int, default=8, help="first N images (sorted)")
    parser.add_argument("--level", default="mild,moderate,severe")
    parser.add_argument("--toolbox", default=None, help="model name or .safetensors (default: the shipped toolbox)")
    parser.add_argument("--agent", default=None, help="model name or .safetensors (default: the shipped agent)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runner = load_toolchain(args.toolbox, args.agent, device="cpu", precision="fp32")
    run = module_tools(runner.toolbox.module.eval())
    tools = _Tools(run)
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in {".png", ".bmp", ".jpg", ".tif"})[: args.limit]
    for level in args.level.split(","):
        xs, gts = [], []
        for path in files:
            image = np.array(Image.open(path).convert("RGB"))
            for suffix, part in patches(image, 63):
                degraded, _ = toolchain_input(part, level, args.seed, f"{path.stem}_{suffix}")
                xs.append(degraded.reshape(3, 63, 63))
                gts.append(to_tensor(uint8_to_float32(part)).reshape(3, 63, 63))
        x, gt = torch.stack(xs), torch.stack(gts)
        rollout = greedy_rollout(run, runner.agent, x, gt)
        searched = search_returns(tools, PatchPairs(x, gt), max_steps=3, beam=3, gamma=1.0)
        oracle = searched["targets.0"][:, 0].max(dim=1).values.clamp_min(0.0)
        agent_gain = rollout.psnr_out - rollout.psnr_in
        print(f"{level:9s} {len(x):5d} patches  input {float(rollout.psnr_in.mean()):.2f} dB  "
              f"agent +{float(agent_gain.mean()):.2f}  oracle +{float(oracle.mean()):.2f}", flush=True)


if __name__ == "__main__":
    main()
