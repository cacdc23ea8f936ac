"""`restore degrade`: make degraded images with the USRNet model or an RL-Restore preset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from restore_cli.cli.batch_options import run_image_batch
from restore_cli.cli.common import (
    DEFAULT_MAX_PIXELS,
    PANEL_DEGRADATION,
    FormatOpt,
    ImageFormat,
    InputsArg,
    JsonOpt,
    MaxPixelsOpt,
    OutputOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    RecursiveOpt,
    SkipExistingOpt,
    StripMetadataOpt,
    VerboseOpt,
    examples_epilog,
    paragraphs,
)
from restore_cli.engine.batch import Job
from restore_cli.errors import RestoreError


class BoundaryChoice(str, Enum):
    wrap = "wrap"
    reflect = "reflect"
    replicate = "replicate"


class DownChoice(str, Enum):
    direct = "direct"
    bicubic = "bicubic"


class PresetChoice(str, Enum):
    light = "light"
    mild = "mild"
    moderate = "moderate"
    severe = "severe"


HELP = """Degrade images: y = (x ⊗ k)↓s + n, then optional JPEG (the USRNet degradation model),
or an RL-Restore mixed-distortion preset (blur → noise → JPEG).

Each output gets a JSON sidecar (NAME.json) recording scale, kernel, noise, seed, JPEG and
boundary, so that `restore sr --params NAME.json` can undo exactly this degradation.
Kernel specs: gaussian:SIGMA[,SIZE], aniso:L1,L2,THETA (eigenvalues, angle in degrees),
motion:SEED, random:SEED (the USRNet training mix), or a file: k.npy, k.png, kernels_12.mat:3
(1-based index)."""


def register(app: typer.Typer) -> None:
    app.command(
        "degrade",
        help=paragraphs(HELP),
        short_help="Degrade images with a known blur, scale, noise and JPEG, or an RL-Restore preset.",
        epilog=examples_epilog(
            "restore degrade tests/data/sample.png -o out/ --scale 4 --kernel gaussian:1.6 --noise 5 --seed 0",
            "restore degrade photos/ -r -o degraded/ --preset moderate --seed 1 --json",
        ),
    )(degrade)


def degrade(
    inputs: InputsArg,
    output: OutputOpt = None,
    recursive: RecursiveOpt = False,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names.", rich_help_panel="Input/Output")] = "_degraded",
    format: FormatOpt = ImageFormat.same,
    quality: QualityOpt = 95,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    scale: Annotated[int, typer.Option("-s", "--scale", min=1, max=4, help="Down-scaling factor s (1 = blur only). With s > 1 the input is first cropped to a multiple of s (bottom rows, right columns; the benchmarks' modcrop), so the output is exactly H/s × W/s of the image it pairs with.", rich_help_panel=PANEL_DEGRADATION)] = 1,
    kernel: Annotated[Optional[str], typer.Option("-k", "--kernel", help="Blur kernel spec or file (see above); default: no blur.", rich_help_panel=PANEL_DEGRADATION)] = None,
    noise: Annotated[float, typer.Option("--noise", min=0.0, help="AWGN σ on the 0–255 scale, added after decimation.", rich_help_panel=PANEL_DEGRADATION)] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the noise (and of a preset's draw); the same for every image.", rich_help_panel=PANEL_DEGRADATION)] = 0,
    jpeg: Annotated[Optional[float], typer.Option("--jpeg", min=1, max=100, help="JPEG quality applied last.", rich_help_panel=PANEL_DEGRADATION)] = None,
    boundary: Annotated[BoundaryChoice, typer.Option("--boundary", help="Blur boundary: wrap = circular convolution (the benchmark convention).", rich_help_panel=PANEL_DEGRADATION)] = BoundaryChoice.wrap,
    down: Annotated[DownChoice, typer.Option("--down", help="direct = keep the upper-left pixel of each s×s block; bicubic = MATLAB imresize (the 'BI' benchmark LR: bit-exact for 8-bit inputs without --kernel).", rich_help_panel=PANEL_DEGRADATION)] = DownChoice.direct,
    preset: Annotated[Optional[PresetChoice], typer.Option("--preset", help="RL-Restore mixed distortion level (replaces kernel/noise/JPEG).", rich_help_panel=PANEL_DEGRADATION)] = None,
    save_kernel: Annotated[Optional[Path], typer.Option("--save-kernel", help="Write the kernel used (.npy or .png).", rich_help_panel=PANEL_DEGRADATION)] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from restore_cli.engine.degrade import DegradeSettings, degrade_image, modcrop_size
    from restore_cli.io.images import read_image, write_image
    from restore_cli.io.kernel_files import load_kernel, save_kernel as save_kernel_file
    from restore_cli.io.sidecar import write_sidecar

    taps, description = (None, None) if kernel is None else load_kernel(kernel)
    settings = DegradeSettings(
        scale=scale,
        kernel=taps,
        kernel_description=description,
        noise=noise,
        seed=seed,
        jpeg_quality=jpeg,
        boundary=boundary.value,
        down=down.value,
        preset=None if preset is None else preset.value,
    ).validate().resolved()
    if save_kernel is not None:
        if settings.kernel is None:
            raise RestoreError("--save-kernel: no kernel is used (give --kernel or a --preset with blur)")
        save_kernel_file(save_kernel, settings.kernel)

    def process(job: Job) -> dict:
        image = read_image(job.source, max_pixels=max_pixels)
        degraded, record = degrade_image(image, settings, source=str(job.source))
        write_image(job.target, degraded, format=None, quality=quality, strip_metadata=strip_metadata)
        sidecar = job.sibling(".json")
        write_sidecar(sidecar, record)
        details = {"sidecar": str(sidecar), "kernel": record.kernel, "noise": record.noise,
                   "jpeg": record.jpeg_quality, "scale": record.scale}
        cropped = modcrop_size(image.height, image.width, settings.scale)
        if cropped != (image.height, image.width):
            details["cropped_to"] = list(cropped)  # [height, width] of the input actually degraded
        return details

    run_image_batch(
        label="degrade", inputs=inputs, output=output, recursive=recursive, suffix=suffix,
        format=format.value, skip_existing=skip_existing, overwrite=overwrite,
        json_output=json_output, quiet=quiet, verbose=verbose, process=process, companions=(".json",),
    )
