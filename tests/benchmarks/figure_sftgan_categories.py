"""README figure for the SFT-GAN texture categories: what each derived category captures.

For the first image: the image, its category map as the prior network predicts it from the ×4
MATLAB-bicubic LR image (colour-coded, the `--save-prior` palette), and an overlay. Then one row per
category: its colour, index, automatic description (from the cluster centre: tone, colour, texture
level, edges), its share of the image, and the 32×32 HR windows of all given images that the
prior network assigns to it most confidently.

    python tests/benchmarks/figure_sftgan_categories.py IMAGE [MORE_IMAGES_OR_FOLDERS ...] \\
        (--model sftgan | --prior-model runs/sftgan-prior | --prior-model weights/sftgan.safetensors) \\
        [--examples 8] -o sftgan_categories.png

Writes one PNG; prints the category table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from restore_cli.io.images import SUPPORTED_SUFFIXES, read_image
from restore_cli.io.prior_files import category_palette
from restore_cli.models.sft import SCALE, CategoryPriorNet
from restore_cli.ops.texture_categories import STRIDE, WINDOW, describe_category, extract_windows, window_origins
from restore_cli.train.sftgan_data import clusters_of, lr_from_hr, pooled_window_probabilities

PANEL = 320  # width of each of the three top panels
THUMB = 64  # example windows are shown ×2


def load_prior(model: str | None, prior_model: Path | None) -> CategoryPriorNet:
    if prior_model is not None:
        from restore_cli.train.sftgan_trainer import load_prior_network

        return load_prior_network(prior_model)
    from restore_cli.engine.registry import find_entry, load_entry

    resolved = load_entry(find_entry(model or "sftgan"))
    module = resolved.module
    if resolved.arch == "sftgan":
        return module.prior  # type: ignore[return-value]
    if resolved.arch == "sftgan-prior":
        return module  # type: ignore[return-value]
    raise SystemExit(f"model {resolved.name} ({resolved.arch}) has no prior network")


def image_files(items: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            files.append(item)
    return files


def rgb_tensor(path: Path) -> torch.Tensor:
    """1×3×H×W in [0, 1], cropped to multiples of 4 (gray replicated)."""
    pixels = read_image(path).pixels
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    h, w = pixels.shape[0] // SCALE * SCALE, pixels.shape[1] // SCALE * SCALE
    return torch.from_numpy(np.ascontiguousarray(pixels[:h, :w].transpose(2, 0, 1))).unsqueeze(0).float()


def to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))


def fit(image: Image.Image, width: int) -> Image.Image:
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.NEAREST if image.width < width // 2 else Image.Resampling.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, nargs="+", help="the image for the map, then more images or folders for examples")
    parser.add_argument("--model", help="manifest name of an sftgan or sftgan-prior model [default: sftgan]")
    parser.add_argument("--prior-model", type=Path, help="sftgan-prior run/checkpoint or .safetensors (instead of --model)")
    parser.add_argument("--examples", type=int, default=8, help="example windows per category")
    parser.add_argument("-o", "--output", type=Path, default=Path("sftgan_categories.png"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    prior = load_prior(args.model, args.prior_model).eval()
    k = prior.categories
    palette = category_palette(k)
    descriptions = [describe_category(c) for c in clusters_of(prior).raw_centres()]

    # Examples: every window of every image, scored by the pooled prior probability of each category.
    windows, scores = [], []
    for path in image_files(args.images):
        hr = rgb_tensor(path)
        if min(hr.shape[-2:]) < WINDOW:
            continue
        with torch.no_grad():
            pooled = pooled_window_probabilities(prior.probabilities(lr_from_hr(hr)))[0]  # K×R×C
        grid = extract_windows(hr[0].double().numpy())
        rows, cols = window_origins(hr.shape[-2]).size, window_origins(hr.shape[-1]).size
        windows.append(grid.reshape(rows, cols, 3, WINDOW, WINDOW)[: pooled.shape[1], : pooled.shape[2]].reshape(-1, 3, WINDOW, WINDOW))
        scores.append(pooled[:, :rows, :cols].reshape(k, -1).T.numpy())
    all_windows, all_scores = np.concatenate(windows), np.concatenate(scores)
    winners = all_scores.argmax(axis=1)

    # The map of the first image.
    first = rgb_tensor(args.images[0] if args.images[0].is_file() else image_files(args.images)[0])
    with torch.no_grad():
        probabilities = prior.probabilities(lr_from_hr(first))[0]
    labels = probabilities.argmax(dim=0).numpy()
    shares = np.bincount(labels.ravel(), minlength=k) / labels.size
    photo = to_image(first[0].numpy().transpose(1, 2, 0))
    category_map = Image.fromarray(palette[labels]).resize(photo.size, Image.Resampling.NEAREST)
    overlay = Image.blend(photo, category_map, 0.45)
    top = [fit(img, PANEL) for img in (photo, category_map, overlay)]

    row_height = THUMB + 8
    label_width = 300
    width = max(3 * PANEL + 20, label_width + args.examples * (THUMB + 4) + 10)
    height = top[0].height + 30 + k * row_height + 10
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, panel in enumerate(top):
        canvas.paste(panel, (i * (PANEL + 10), 0))
    y = top[0].height + 20
    print(f"{'cat':>3}  {'share':>6}  {'windows':>7}  description")
    for c in range(k):
        draw.rectangle((4, y + 4, 24, y + 24), fill=tuple(int(v) for v in palette[c]), outline=(0, 0, 0))
        draw.text((30, y + 4), f"{c}: {descriptions[c]}", fill=(0, 0, 0))
        draw.text((30, y + 20), f"{100 * shares[c]:.1f}% of the image", fill=(80, 80, 80))
        members = np.flatnonzero(winners == c)
        best = members[np.argsort(-all_scores[members, c])][: args.examples]
        for j, index in enumerate(best):
            thumb = to_image(all_windows[index].transpose(1, 2, 0)).resize((THUMB, THUMB), Image.Resampling.NEAREST)
            canvas.paste(thumb, (label_width + j * (THUMB + 4), y))
        if best.size == 0:
            draw.text((label_width, y + 20), "(no window of these images)", fill=(120, 120, 120))
        print(f"{c:>3}  {100 * shares[c]:5.1f}%  {members.size:>7}  {descriptions[c]}")
        y += row_height
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output)
    print(f"wrote {args.output} (windows {WINDOW}×{WINDOW} HR at stride {STRIDE}, categories predicted from the ×{SCALE} LR)")


if __name__ == "__main__":
    main()
