"""`restore denoise`: denoise images at a given or estimated noise level."""

from __future__ import annotations

from typing import Annotated

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
from restore_cli.errors import RestoreError

HELP = """Denoise images (additive white Gaussian noise) with a ResUNet denoiser that takes the
noise level as an input map. --noise is σ on the 0–255 scale, or 'auto' to estimate it per
image (PCA-based estimator of Chen et al., ICCV 2015)."""


def register(app: typer.Typer) -> None:
    app.command(
        "denoise",
        help=paragraphs(HELP),
        short_help="Denoise images at a given or estimated noise level.",
        epilog=examples_epilog(
            "restore denoise tests/data/sample.png -o out/ --noise 25",
            "restore denoise scans/ -r -o clean/ --noise auto --json",
        ),
    )(denoise)


def parse_noise(value: str) -> float | None:
    """`--noise SIGMA|auto` → σ (0–255) or None for auto."""
    if value.strip().lower() == "auto":
        return None
    try:
        sigma = float(value)
    except ValueError:
        raise RestoreError(f"--noise {value}: expected a number (0–255 scale) or 'auto'") from None
    if not 0 <= sigma <= 255:
        raise RestoreError(f"--noise {value}: must be within 0–255")
    return sigma


def denoise(
    inputs: InputsArg,
    output: OutputOpt = None,
    recursive: RecursiveOpt = False,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names.", rich_help_panel="Input/Output")] = "_denoised",
    format: FormatOpt = ImageFormat.same,
    quality: QualityOpt = 95,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    noise: Annotated[str, typer.Option("--noise", help="Noise σ on the 0–255 scale, or auto (estimated per image).", rich_help_panel=PANEL_DEGRADATION)] = "auto",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = 32,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from restore_cli.engine.pipeline import denoise_image
    from restore_cli.engine.restore import TileRequest
    from restore_cli.engine.session import ModelChoice, RestorerCache
    from restore_cli.io.images import read_image, write_image

    sigma = parse_noise(noise)
    console = stderr_console()
    choice = ModelChoice(task="denoise", name=model, weights=weights, device=device, precision=precision,
                         tiles=TileRequest(parse_tile(tile), tile_overlap))
    cache = RestorerCache(choice, log=(lambda m: console.print(m, highlight=False)) if verbose else None)

    def process(job: Job) -> dict:
        image = read_image(job.source, max_pixels=max_pixels)
        restorer = cache.for_channels(image.pixels.shape[2])
        result, details = denoise_image(restorer, image, sigma)
        write_image(job.target, result, format=None, quality=quality, strip_metadata=strip_metadata)
        return details

    run_image_batch(
        label="denoise", inputs=inputs, output=output, recursive=recursive, suffix=suffix,
        format=format.value, skip_existing=skip_existing, overwrite=overwrite,
        json_output=json_output, quiet=quiet, verbose=verbose, process=process,
    )
