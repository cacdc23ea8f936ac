"""Accuracy of `restore denoise --noise auto` (issue 3). Prints a table; asserts nothing.

Synthetic AWGN (unclipped, seed = image index) on CBSD68 at σ ∈ {5, 15, 25, 50}; for each level the
mean signed error, mean |error| and max |error| of the PCA-based estimate (0–255 scale).

    python tests/benchmarks/bench_noise_estimation.py [--limit N] [--gray]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from restore_cli.io.images import read_image
from restore_cli.ops.colour import rgb_to_gray
from restore_cli.ops.noise_estimation import estimate_noise_sigma

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "CBSD68"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0 = all 68)")
    parser.add_argument("--gray", action="store_true", help="convert to gray first (BSD68-like)")
    args = parser.parse_args()
    files = sorted(args.data.glob("*.png"))
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise SystemExit(f"no images in {args.data}")
    levels = (5.0, 15.0, 25.0, 50.0)
    errors = {s: [] for s in levels}
    for index, path in enumerate(files):
        x = torch.from_numpy(read_image(path).pixels.transpose(2, 0, 1).copy()).double()
        if args.gray:
            x = rgb_to_gray(x)
        for sigma in levels:
            g = torch.Generator().manual_seed(index)
            noisy = x + torch.randn(x.shape, generator=g, dtype=torch.float64) * sigma / 255
            errors[sigma].append(estimate_noise_sigma(noisy) * 255 - sigma)
    channel = "gray" if args.gray else "RGB"
    print(f"CBSD68 ({channel}), {len(files)} images, unclipped AWGN, seed = image index")
    print(f"{'σ':>5} {'mean error':>11} {'mean |error|':>13} {'max |error|':>12}")
    for sigma in levels:
        e = np.array(errors[sigma])
        print(f"{sigma:>5.0f} {e.mean():>11.3f} {np.abs(e).mean():>13.3f} {np.abs(e).max():>12.3f}")


if __name__ == "__main__":
    main()
