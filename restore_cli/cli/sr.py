"""`restore sr`: non-blind super-resolution and deblurring with USRNet."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from restore_cli.cli.batch_options import run_image_batch
from restore_cli.cli.common import (
    DEFAULT_MAX_PIXELS,
    PANEL_DEGRADATION,
    DeviceOpt,
    FormatOpt,
    ImageFormat,
    InputsArg,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    OutputOpt,
    OverwriteOpt,
    PrecisionOpt,
    QualityOpt,
    QuietOpt,
    RecursiveOpt,
    SkipExistingOpt,
    StripMetadataOpt,
    TileOpt,
    TileOverlapOpt,
    VerboseOpt,
    WeightsOpt,
    examples_epilog,
    paragraphs,
    parse_tile,
    stderr_console,
)
from restore_cli.engine.batch import Job


class SrBoundary(str, Enum):
    reflect = "reflect"
    wrap = "wrap"
    replicate = "replicate"


HELP = """Super-resolve (scale 2–4) or deblur (scale 1) images whose blur kernel and noise level
are known, with USRNet: y = (x ⊗ k)↓s + n is inverted by unfolded half-quadratic splitting.

Without --kernel the USRNet real-image recipe is used: an isotropic Gaussian of width
0.4 / 0.7 / 1.5 / 2.0 for scale 1 / 2 / 3 / 4 (or --kernel-width), shifted by (s−1)/2 pixels to the
upper left to match the decimation convention. --params NAME.json takes scale, kernel, noise and
boundary from a `restore degrade` sidecar; options given explicitly override it.
Boundary: reflect (real photos, default), wrap (images made by circular blur, e.g. `degrade
--boundary wrap`), replicate."""


def register(app: typer.Typer) -> None:
    app.command(
        "sr",
        help=paragraphs(HELP),
        short_help="Super-resolve or deblur with USRNet, given the kernel and noise level.",
        epilog=examples_epilog(
            "restore sr photo.png -o out/ --scale 4 --kernel k.npy --noise 5",
            "restore sr out/sample_degraded.png --params out/sample_degraded.json -o restored.png",
        ),
    )(sr)


def sr(
    inputs: InputsArg,
    output: OutputOpt = None,
    recursive: RecursiveOpt = False,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Appended to output file names [default: _xS].", rich_help_panel="Input/Output", show_default=False)] = None,
    format: FormatOpt = ImageFormat.same,
    quality: QualityOpt = 95,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    scale: Annotated[Optional[int], typer.Option("-s", "--scale", min=1, max=4, help="Scale factor (1 = deblur only) [default: 4, or the sidecar's].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    kernel: Annotated[Optional[str], typer.Option("-k", "--kernel", help="Blur kernel: gaussian:SIGMA, aniso:L1,L2,THETA, motion:SEED, k.npy, k.png, kernels_12.mat:3 [default: real-image recipe].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    kernel_width: Annotated[Optional[float], typer.Option("--kernel-width", min=0.05, help="Width of the real-image recipe's Gaussian (without --kernel).", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    noise: Annotated[Optional[float], typer.Option("--noise", min=0.0, max=255.0, help="Noise σ of the input on the 0–255 scale [default: 2, the real-image recipe's level for clean photos, or the sidecar's].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="A `restore degrade` sidecar (NAME.json) to undo exactly.", rich_help_panel=PANEL_DEGRADATION)] = None,
    boundary: Annotated[Optional[SrBoundary], typer.Option("--boundary", help="Image boundary model [default: reflect, or wrap from a wrap-blur sidecar].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = 16,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from restore_cli.engine.pipeline import super_resolve_image
    from restore_cli.engine.restore import TileRequest
    from restore_cli.engine.session import ModelChoice, RestorerCache
    from restore_cli.engine.sr_settings import resolve_sr_settings
    from restore_cli.io.images import read_image, write_image

    settings = resolve_sr_settings(
        scale=scale, kernel=kernel, kernel_width=kernel_width, noise=noise, params=params,
        boundary=None if boundary is None else boundary.value,
    )
    console = stderr_console()
    choice = ModelChoice(task="sr", name=model, weights=weights, device=device, precision=precision,
                         tiles=TileRequest(parse_tile(tile), tile_overlap))
    cache = RestorerCache(choice, log=(lambda m: console.print(m, highlight=False)) if verbose else None)
    if verbose:
        console.print(f"scale {settings.scale}, kernel {settings.kernel_description}, noise {settings.noise}, "
                      f"boundary {settings.pad_mode}", highlight=False)

    def process(job: Job) -> dict:
        image = read_image(job.source, max_pixels=max_pixels)
        restorer = cache.for_channels(image.pixels.shape[2])
        result, details = super_resolve_image(restorer, image, settings.kernel, settings.scale, settings.noise,
                                              pad_mode=settings.pad_mode)
        write_image(job.target, result, format=None, quality=quality, strip_metadata=strip_metadata)
        return details | {"kernel": settings.kernel_description}

    run_image_batch(
        label="sr", inputs=inputs, output=output, recursive=recursive,
        suffix=f"_x{settings.scale}" if suffix is None else suffix,
        format=format.value, skip_existing=skip_existing, overwrite=overwrite,
        json_output=json_output, quiet=quiet, verbose=verbose, process=process,
    )
