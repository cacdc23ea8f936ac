"""Each tool of one or more toolboxes on its own distortion: 63×63 patches cut from clean images
(Set14 by default, fixed seed), each distorted with the tool's single distortion drawn uniformly
over the tool's range (the `restore train tools` recipe), restored by the tool, RGB PSNR gain
over the input (dB, [0, 1] data, fp32 on the CPU). The same patches for every toolbox given, so
the lines compare like for like.

    python tests/benchmarks/toolbox_per_tool.py weights/toolbox.safetensors other/toolbox.safetensors

Prints one line per toolbox: the twelve gains (blur-1…4, noise-1…4, jpeg-1…4) and their mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from restore_cli.engine.toolchain import resolve_toolchain_model
from restore_cli.models.toolchain import TOOL_SPECS
from restore_cli.train.data import load_image_set
from restore_cli.train.toolchain_data import toolbox_pairs
from restore_cli.train.toolchain_trainer import tool_psnrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("toolbox", nargs="+", help="model name or .safetensors")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/Set14"))
    parser.add_argument("--patches", type=int, default=48, help="patches per tool")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    images = load_image_set([args.data], 3, min_size=63)
    rng, generator = np.random.default_rng([args.seed, 99]), torch.Generator().manual_seed(args.seed)
    pairs = toolbox_pairs(images, args.patches, 63, rng, generator)
    print(f"{args.patches} {args.data.name} patches per tool, seed {args.seed}; gains in dB: "
          + " ".join(spec.name for spec in TOOL_SPECS))
    for name in args.toolbox:
        box = resolve_toolchain_model(name, "toolbox", "toolbox", "toolbox", "restore train tools").module.eval()
        gains = [gain for _, gain in tool_psnrs(box, pairs)]
        print(f"{name}: " + " ".join(f"{g:+.2f}" for g in gains) + f"  mean {np.mean(gains):+.2f}", flush=True)


if __name__ == "__main__":
    main()
