"""Texture realism vs fidelity of ×4 outputs (issue 7 targets). Prints a table; asserts nothing.

For every ground-truth image and every method folder: PSNR on Y (BT.601 studio range, uint8,
border 4; ANCHORS 6.1) and the log-spectral distance (dB) between the radially averaged power
spectra of output and ground truth on Y, over the upper half of the frequencies (0.25–0.5
cycles/pixel, Hann window; `ops.texture_categories`), plus the LSD over the lower half. The
targets: SFT-GAN's high-frequency LSD below the PSNR-trained usrnet's, its PSNR at most 2.5 dB
below.

Make the LR inputs (modcrop 4, MATLAB bicubic ×1/4, 8-bit) and run the models, e.g.:

    python tests/benchmarks/bench_sftgan_texture.py --gt ../shared/datasets/BSD100 --make-lr runs/bench/lr
    restore sr runs/bench/lr -o runs/bench/sftgan --model sftgan --suffix ""
    restore sr runs/bench/lr -o runs/bench/usrnet --model usrnet --kernel ../shared/datasets/kernels/kernels_bicubicx234.mat:3 --noise 0 --suffix ""
    python tests/benchmarks/bench_sftgan_texture.py --gt ../shared/datasets/BSD100 \\
        --method sftgan=runs/bench/sftgan --method usrnet=runs/bench/usrnet --baseline usrnet --json runs/bench/texture.json

Output files are matched to ground truths by stem (an output stem may carry a suffix after the
ground truth's stem, e.g. `_x4`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from restore_cli.io.images import SUPPORTED_SUFFIXES, ImageData, read_image, write_image
from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.metrics import crop_border, psnr, quantize_to_uint8_levels
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.texture_categories import image_log_spectral_distance

SCALE = 4
BORDER = 4
HIGH = (0.25, 0.5)
LOW = (0.0, 0.25)


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)


def rgb_levels(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """3×H×W float64 on the 0–255 scale (uint8 levels), cropped to `size` (gray replicated)."""
    pixels = read_image(path).pixels
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    if size is not None:
        pixels = pixels[: size[0], : size[1]]
    return quantize_to_uint8_levels(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))))


def y_channel(levels: torch.Tensor) -> torch.Tensor:
    return rgb_to_y(levels / 255.0) * 255.0  # 1×H×W, unrounded Y (BasicSR convention)


def make_lr(gt: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in images_in(gt):
        image = read_image(path)
        h, w = image.height // SCALE * SCALE, image.width // SCALE * SCALE
        hr = torch.from_numpy(np.ascontiguousarray(image.pixels[:h, :w].transpose(2, 0, 1))).double()
        lr = matlab_imresize(hr, scale=1.0 / SCALE).clamp(0, 1).numpy().transpose(1, 2, 0)
        write_image(out / f"{path.stem}.png", ImageData(pixels=lr.astype(np.float32), alpha=None, bit_depth=8,
                                                         icc_profile=None, exif=None, source_format="png"))
    print(f"wrote {len(images_in(out))} LR images to {out}")


def match(gt_stem: str, outputs: list[Path]) -> Path | None:
    exact = [p for p in outputs if p.stem == gt_stem]
    if exact:
        return exact[0]
    prefixed = sorted((p for p in outputs if p.stem.startswith(gt_stem + "_")), key=lambda p: len(p.stem))
    return prefixed[0] if prefixed else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", type=Path, required=True, help="folder of ground-truth HR images")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=DIR", help="a folder of ×4 outputs (repeat)")
    parser.add_argument("--baseline", help="method to compare the others with (e.g. usrnet)")
    parser.add_argument("--make-lr", type=Path, metavar="DIR", help="write the LR inputs of --gt to DIR and exit")
    parser.add_argument("--json", type=Path, help="write per-image and mean numbers to this file")
    args = parser.parse_args()
    if args.make_lr is not None:
        make_lr(args.gt, args.make_lr)
        return
    if not args.method:
        raise SystemExit("give at least one --method NAME=DIR (or --make-lr DIR)")
    methods = dict(item.split("=", 1) for item in args.method)
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in methods}
    for gt_path in images_in(args.gt):
        for name, folder in methods.items():
            out_path = match(gt_path.stem, images_in(Path(folder)))
            if out_path is None:
                print(f"{name}: no output for {gt_path.stem}")
                continue
            out = rgb_levels(out_path)
            ref = rgb_levels(gt_path, size=(out.shape[1], out.shape[2]))
            if ref.shape != out.shape:
                print(f"{name}: {out_path.name} is {tuple(out.shape[1:])}, larger than its ground truth; skipped")
                continue
            out_y, ref_y = y_channel(out), y_channel(ref)
            a, b = crop_border(out_y[0], BORDER).numpy(), crop_border(ref_y[0], BORDER).numpy()
            results[name][gt_path.stem] = {
                "psnr_y": psnr(out_y, ref_y, border=BORDER),
                "lsd_high": image_log_spectral_distance(a, b, HIGH),
                "lsd_low": image_log_spectral_distance(a, b, LOW),
            }
    print(f"{'method':<16} {'images':>6} {'PSNR-Y':>8} {'LSD high':>9} {'LSD low':>8}")
    means: dict[str, dict[str, float]] = {}
    for name, per_image in results.items():
        if not per_image:
            continue
        means[name] = {key: float(np.mean([r[key] for r in per_image.values()])) for key in ("psnr_y", "lsd_high", "lsd_low")}
        m = means[name]
        print(f"{name:<16} {len(per_image):>6} {m['psnr_y']:8.2f} {m['lsd_high']:9.2f} {m['lsd_low']:8.2f}")
    if args.baseline and args.baseline in means:
        base = means[args.baseline]
        for name, m in means.items():
            if name == args.baseline:
                continue
            d_psnr, d_lsd = m["psnr_y"] - base["psnr_y"], m["lsd_high"] - base["lsd_high"]
            verdict = "meets" if d_lsd < 0 and d_psnr >= -2.5 else "misses"
            print(f"{name} vs {args.baseline}: PSNR {d_psnr:+.2f} dB, high-frequency LSD {d_lsd:+.2f} dB → {verdict} "
                  "the issue-7 targets (LSD lower, PSNR at most 2.5 dB lower)")
    if args.json is not None:
        protocol = {"psnr": f"Y BT.601 studio, uint8, border {BORDER}", "lsd": f"Y, Hann window, bands {LOW} and {HIGH} cycles/pixel, border {BORDER}",
                    "lr": "modcrop 4, MATLAB bicubic x1/4"}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"protocol": protocol, "means": means, "images": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
