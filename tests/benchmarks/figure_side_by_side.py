"""README figure: several images of the same size side by side, each with a caption.

    python tests/benchmarks/figure_side_by_side.py A.png B.png C.png --label input --label output \\
        --label clean -o figure.jpg

Written as one JPEG (quality 90) or PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

CAPTION = 22
GAP = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--label", action="append", default=[], help="caption of each image, in order")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if args.label and len(args.label) != len(args.images):
        raise SystemExit(f"{len(args.label)} labels for {len(args.images)} images")
    images = [Image.open(path).convert("RGB") for path in args.images]
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise SystemExit(f"the images differ in size: {sorted(sizes)}")
    width, height = images[0].size
    canvas = Image.new("RGB", (len(images) * width + (len(images) - 1) * GAP, height + CAPTION), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, image in enumerate(images):
        x = i * (width + GAP)
        canvas.paste(image, (x, CAPTION))
        draw.text((x + 4, 5), args.label[i] if args.label else args.images[i].name, fill=(0, 0, 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output, quality=90)
    print(f"{args.output}: {canvas.width}×{canvas.height}")


if __name__ == "__main__":
    main()
