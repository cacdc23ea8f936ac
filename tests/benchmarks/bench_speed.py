"""Speed and memory benchmark of the engine (issue 3). Prints figures; asserts nothing.

Each case runs in its own process so that its peak resident memory (ru_maxrss) is its own.
Weights are random (speed does not depend on them). Run from the repository root:

    python tests/benchmarks/bench_speed.py               # all cases
    python tests/benchmarks/bench_speed.py --quick       # smaller inputs, for a smoke run
    python tests/benchmarks/bench_speed.py --case usrnet-tiny-x4 --precision fp32 --tile 0

Cases: ×4 USRNet-tiny 256×256 → 1024×1024; the denoiser on 1024×1024; USRNet-tiny ×4 for a
4K output (960×540 → 3840×2160), tiled. For each: seconds per image (best of --repeat), output
megapixels per second, peak RSS. Tile "plain" is the reference way of running (one whole-image
module call, NCHW float32, no engine); "0" is the engine untiled (channels_last); N is tiled.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = {
    # name: (arch or preset, config, task, input h, w, scale)
    "usrnet-tiny-x4": ("usrnet-tiny", None, "sr", 256, 256, 4),
    "denoiser-1024": ("resunet-denoiser", {"channels": 3, "nc": [32, 64, 128, 256], "nb": 2}, "denoise", 1024, 1024, 1),
    "usrnet-tiny-4k": ("usrnet-tiny", None, "sr", 540, 960, 4),
}


def run_case(name: str, precision: str, tile: str, repeat: int, quick: bool) -> dict:
    import torch

    from restore_cli.engine.device import select_precision
    from restore_cli.engine.registry import ResolvedModel
    from restore_cli.engine.restore import Restorer, TileRequest
    from restore_cli.models.architectures import PRESETS, build_model
    from restore_cli.ops.kernels import real_image_kernel

    preset, config, task, h, w, scale = CASES[name]
    if quick:
        h, w = h // 4, w // 4
    if config is None:
        arch, config = PRESETS[preset]
    else:
        arch = preset
    torch.manual_seed(0)
    module = build_model(arch, config)
    channels = 3
    model = ResolvedModel(module, name, arch, dict(config), task, [1, 2, 3, 4], channels, "safe", None, None)
    placement = select_precision(precision, torch.device("cpu"))  # type: ignore[arg-type]
    tiles = TileRequest(None if tile == "auto" else 0 if tile == "plain" else int(tile), 16 if task == "sr" else 32)
    restorer = Restorer(model, placement, tiles)
    if tile == "plain":
        module = module.to(memory_format=torch.contiguous_format)
    x = torch.rand(1, channels, h, w)
    kernel = real_image_kernel(scale)

    sigma_t = torch.full((1, 1, 1, 1), (2 if task == "sr" else 25) / 255)
    k_t = torch.from_numpy(kernel).float()[None, None]

    def plain() -> None:
        """The reference way: one whole-image call in NCHW float32, no engine."""
        with torch.inference_mode():
            module(x, k_t, scale, sigma_t) if task == "sr" else module(x, sigma_t)

    def once() -> None:
        if tile == "plain":
            plain()
        elif task == "sr":
            restorer.super_resolve(x, kernel, scale, 2 / 255)
        else:
            restorer.denoise(x, 25 / 255)

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    best = min(times)
    out_mp = h * scale * w * scale / 1e6
    return {
        "case": name,
        "precision": placement.precision,
        "tile": tile,
        "input": f"{w}x{h}",
        "output": f"{w * scale}x{h * scale}",
        "seconds": round(best, 3),
        "output_mp_per_s": round(out_mp / best, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--precision", choices=["fp32", "bf16"])
    parser.add_argument("--tile")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.case, args.precision, args.tile, args.repeat, args.quick)))
        return
    plan = []
    for case in [args.case] if args.case else list(CASES):
        # bf16 is measured on request (--precision bf16): on CPUs without native bf16 it is
        # many times slower than fp32 and the engine never picks it there.
        precisions = [args.precision] if args.precision else ["fp32"]
        if case.endswith("4k"):
            tiles = [args.tile] if args.tile else ["128", "auto"]
        else:
            tiles = [args.tile] if args.tile else ["plain", "0", "128"]
        plan += [(case, p, t) for p in precisions for t in tiles]
    print(f"{'case':<16} {'precision':<9} {'tile':<5} {'input':>9} {'output':>10} {'s/image':>8} {'MP/s':>7} {'peak RSS MiB':>12}")
    for case, precision, tile in plan:
        command = [sys.executable, __file__, "--child", "--case", case, "--precision", precision, "--tile", tile,
                   "--repeat", str(args.repeat)] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            print(f"{case:<16} {precision:<9} {tile:<5} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['case']:<16} {r['precision']:<9} {r['tile']:<5} {r['input']:>9} {r['output']:>10} "
              f"{r['seconds']:>8.2f} {r['output_mp_per_s']:>7.3f} {r['peak_rss_mib']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
