"""README figure: the same crop of several images side by side, each with a caption.

    python tests/benchmarks/figure_side_by_side.py A.png B.png C.png --label input --label output \\
        --label clean [--crop X,Y,W,H] [--zoom 2] -o figure.jpg

All images must have the same size. The crop is taken at the same place in each, enlarged by
`--zoom` (nearest neighbour, so that pixels stay visible), and written as one JPEG (quality 90)
or PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

CAPTION = 22
GAP = 6


def parse_crop(text: str | None, size: tuple[int, int]) -> tuple[int, int, int, int]:
    if text is None:
        return 0, 0, size[0], size[1]
    x, y, w, h = (int(v) for v in text.split(","))
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > size[0] or y + h > size[1]:
        raise SystemExit(f"--crop {text} is outside the {size[0]}×{size[1]} image")
    return x, y, x + w, y + h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--label", action="append", default=[], help="caption of each image, in order")
    parser.add_argument("--crop", help="X,Y,W,H in pixels of the images (default: whole image)")
    parser.add_argument("--zoom", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if args.label and len(args.label) != len(args.images):
        raise SystemExit(f"{len(args.label)} labels for {len(args.images)} images")
    images = [Image.open(path).convert("RGB") for path in args.images]
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise SystemExit(f"the images differ in size: {sorted(sizes)}")
    box = parse_crop(args.crop, images[0].size)
    tiles = [image.crop(box) for image in images]
    tiles = [tile.resize((tile.width * args.zoom, tile.height * args.zoom), Image.NEAREST) for tile in tiles]
    width, height = tiles[0].size
    canvas = Image.new("RGB", (len(tiles) * width + (len(tiles) - 1) * GAP, height + CAPTION), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        x = i * (width + GAP)
        canvas.paste(tile, (x, CAPTION))
        draw.text((x + 4, 5), args.label[i] if args.label else args.images[i].name, fill=(0, 0, 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output, quality=90)
    print(f"{args.output}: {canvas.width}×{canvas.height}")


if __name__ == "__main__":
    main()
