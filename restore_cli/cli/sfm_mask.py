"""`restore sfm-mask`: stochastic frequency masking of images in the DCT domain."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import numpy as np
import typer

from restore_cli.cli.batch_options import run_image_batch
from restore_cli.cli.common import (
    DEFAULT_MAX_PIXELS,
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

PANEL_SFM = "Degradation"


class SfmModeChoice(str, Enum):
    central = "central"
    targeted = "targeted"
    random = "random"


HELP = """Stochastic frequency masking (SFM): drop one radial band of the orthonormal DCT-II
spectrum (one mask shared by the channels), as used to train restoration networks that do not
over-fit to one degradation.

Modes: central (both band radii uniform), targeted (band around --center × the largest radius,
half-normal offsets of --spread × that radius), random (each coefficient dropped with p = 0.5)."""


def register(app: typer.Typer) -> None:
    app.command(
        "sfm-mask",
        help=paragraphs(HELP),
        short_help="Stochastic frequency masking of images in the DCT domain.",
        epilog=examples_epilog(
            "restore sfm-mask tests/data/sample.png -o out/ --mode targeted --seed 3 --save-mask --save-spectrum",
            "restore sfm-mask photos/ -o masked/ --mode central --seed 0 --json",
        ),
    )(sfm_mask)


def sfm_mask(
    inputs: InputsArg,
    output: OutputOpt = None,
    recursive: RecursiveOpt = False,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names.", rich_help_panel="Input/Output")] = "_sfm",
    format: FormatOpt = ImageFormat.same,
    quality: QualityOpt = 95,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    mode: Annotated[SfmModeChoice, typer.Option("--mode", help="Masking mode.", rich_help_panel=PANEL_SFM)] = SfmModeChoice.targeted,
    center: Annotated[float, typer.Option("--center", help="targeted: band centre as a fraction of the largest DCT radius.", rich_help_panel=PANEL_SFM)] = 0.85,
    spread: Annotated[float, typer.Option("--spread", help="targeted: σ of the half-normal band offsets, as a fraction of that radius.", rich_help_panel=PANEL_SFM)] = 0.15,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the mask draw (the same for every image).", rich_help_panel=PANEL_SFM)] = 0,
    save_mask: Annotated[bool, typer.Option("--save-mask", help="Also write the mask as NAME_mask.png (white = kept).", rich_help_panel=PANEL_SFM)] = False,
    save_spectrum: Annotated[bool, typer.Option("--save-spectrum", help="Also write NAME_spectrum.png: log-magnitude DCT before | after.", rich_help_panel=PANEL_SFM)] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from restore_cli.engine.sfm_mask import SfmSettings, mask_image
    from restore_cli.io.images import ImageData, read_image, write_image

    settings = SfmSettings(mode=mode.value, seed=seed, center=center, spread=spread).validate()

    def gray_png(pixels: np.ndarray) -> ImageData:
        return ImageData(pixels=pixels[..., None].astype(np.float32), alpha=None, bit_depth=8,
                         icc_profile=None, exif=None, source_format="png")

    def process(job: Job) -> dict:
        image = read_image(job.source, max_pixels=max_pixels)
        result = mask_image(image, settings)
        write_image(job.target, result.image, format=None, quality=quality, strip_metadata=strip_metadata)
        details: dict = {"mode": settings.mode, "seed": settings.seed, "kept_fraction": float(result.mask.mean())}
        if save_mask:
            path = job.sibling("_mask.png")
            write_image(path, gray_png(result.mask))
            details["mask"] = str(path)
        if save_spectrum:
            path = job.sibling("_spectrum.png")
            write_image(path, gray_png(result.spectrum))
            details["spectrum"] = str(path)
        return details

    run_image_batch(
        label="sfm-mask", inputs=inputs, output=output, recursive=recursive, suffix=suffix,
        format=format.value, skip_existing=skip_existing, overwrite=overwrite,
        json_output=json_output, quiet=quiet, verbose=verbose, process=process,
        companions=(("_mask.png",) if save_mask else ()) + (("_spectrum.png",) if save_spectrum else ()),
    )
