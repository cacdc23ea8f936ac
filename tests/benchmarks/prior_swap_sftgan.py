"""Prior-swap experiment (issue 7): the same LR input super-resolved with the estimated prior and
with each category forced everywhere (`--prior category:N`), side by side in one figure.

If the SFT layers use the prior, the forced categories give visibly different textures on the
same content. The table gives, per run, the mean high-frequency power of the output's Y
(0.25–0.5 cycles/pixel, radially averaged spectrum) relative to the auto-prior run and the PSNR
between each run and the auto-prior run (how much swapping the prior changes the output).

    python tests/benchmarks/prior_swap_sftgan.py IMAGE (--model sftgan | --weights FILE) \\
        [--hr] [--crop 48] -o prior_swap.png

IMAGE is the LR input; with --hr it is a ground truth, downscaled first (MATLAB bicubic ×1/4).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from restore_cli.engine.restore import TileRequest
from restore_cli.engine.sftgan import PriorRequest, open_texture_resolver, resolve_prior
from restore_cli.io.images import read_image
from restore_cli.io.prior_files import category_palette
from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.resize import matlab_imresize
from restore_cli.ops.spectrum import radial_power_spectrum

SCALE = 4


def high_frequency_power(x: torch.Tensor) -> float:
    y = rgb_to_y(x.clamp(0, 1))[0, 0].double().numpy() * 255.0
    freqs, power = radial_power_spectrum(y)
    return float(np.nanmean(power[freqs >= 0.25]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--model", help="manifest name of an SFT-GAN model [default: sftgan]")
    parser.add_argument("--weights", type=Path, help="an sftgan .safetensors instead of --model")
    parser.add_argument("--hr", action="store_true", help="IMAGE is a ground truth: downscale ×1/4 first")
    parser.add_argument("--crop", type=int, default=48, help="LR crop (centre) shown and processed, 0 = whole image")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--output", type=Path, default=Path("prior_swap.png"))
    args = parser.parse_args()

    pixels = read_image(args.image).pixels
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).unsqueeze(0).float()
    if args.hr:
        h, w = x.shape[-2] // SCALE * SCALE, x.shape[-1] // SCALE * SCALE
        x = (torch.round(matlab_imresize(x[..., :h, :w].double(), scale=1 / SCALE).clamp(0, 1) * 255) / 255).float()
    if args.crop:
        top, left = max(0, (x.shape[-2] - args.crop) // 2), max(0, (x.shape[-1] - args.crop) // 2)
        x = x[..., top:top + args.crop, left:left + args.crop].contiguous()

    resolver = open_texture_resolver(args.model if args.weights is None else None, args.weights, args.device,
                                     tiles=TileRequest(0))
    k = resolver.categories
    runs: list[tuple[str, torch.Tensor, int | None]] = []
    if resolver.has_prior_net:
        prior, _ = resolve_prior(resolver, PriorRequest(kind="auto"), x)
        runs.append(("auto prior", resolver.super_resolve(x, prior), None))
    for category in range(k):
        prior, _ = resolve_prior(resolver, PriorRequest(kind="category", category=category), x)
        runs.append((f"category {category}", resolver.super_resolve(x, prior), category))

    reference = runs[0][1]
    base_power = high_frequency_power(reference)
    print(f"{'run':<14} {'HF power vs first':>17} {'PSNR vs first':>14}")
    for name, out, _ in runs:
        mse = float(((out.clamp(0, 1) - reference.clamp(0, 1)) ** 2).mean())
        value = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        print(f"{name:<14} {high_frequency_power(out) / base_power:17.3f} {value:14.2f}")

    side = reference.shape[-1]
    columns = min(len(runs) + 1, 5)
    rows = math.ceil((len(runs) + 1) / columns)
    cell_w, cell_h = side, reference.shape[-2] + 18
    canvas = Image.new("RGB", (columns * (cell_w + 6), rows * (cell_h + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False)
    palette = category_palette(k)
    for index, (name, out, category) in enumerate([("LR (bicubic view)", bicubic, None), *runs]):
        col, row = index % columns, index // columns
        ox, oy = col * (cell_w + 6), row * (cell_h + 6)
        image = np.clip(np.rint(out[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        canvas.paste(Image.fromarray(image), (ox, oy + 18))
        if category is not None:
            draw.rectangle((ox, oy + 2, ox + 12, oy + 14), fill=tuple(int(v) for v in palette[category]))
        draw.text((ox + 16, oy + 2), name, fill=(0, 0, 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
