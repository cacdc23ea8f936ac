"""`restore sr`: non-blind super-resolution and deblurring with USRNet, and ×4 texture SR with
SFT-GAN models (dispatched on the chosen model's architecture)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from restore_cli.cli.batch_options import run_image_batch
from restore_cli.cli.common import (
    DEFAULT_MAX_PIXELS,
    PANEL_DEGRADATION,
    PANEL_MODEL,
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

if TYPE_CHECKING:
    from restore_cli.engine.sftgan import PriorRequest


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
--boundary wrap`), replicate.

With an SFT-GAN model (--model sftgan, or --weights of an sftgan file) the input is taken as a
bicubic ×4 downscale and super-resolved ×4 with realistic texture, guided by per-pixel category
probabilities: --prior auto (the model's own prior network), a file (.npy K×H×W probabilities or
a label image with an optional --prior-classes list, at LR or HR size), a folder with one such file
per input, category:N (one category everywhere) or uniform. --save-prior writes the categories
as NAME_prior.png beside each output. The kernel, noise and boundary options do not apply."""

PRIOR_SUFFIX = "_prior.png"


def register(app: typer.Typer) -> None:
    app.command(
        "sr",
        help=paragraphs(HELP),
        short_help="Super-resolve or deblur with USRNet given the kernel and noise level, or ×4 with SFT-GAN texture.",
        epilog=examples_epilog(
            "restore sr photo.png -o out/ --scale 4 --kernel k.npy --noise 5",
            "restore sr out/sample_degraded.png --params out/sample_degraded.json -o restored.png",
            "restore sr photo.png --model sftgan --save-prior -o out/",
            "restore sr photo.png --model sftgan --prior category:2 -o grass.png",
        ),
    )(sr)


def sr(
    inputs: InputsArg,
    output: OutputOpt = None,
    recursive: RecursiveOpt = False,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Appended to output file names \\[default: _xS].", rich_help_panel="Input/Output", show_default=False)] = None,
    format: FormatOpt = ImageFormat.same,
    quality: QualityOpt = 95,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    scale: Annotated[Optional[int], typer.Option("-s", "--scale", min=1, max=4, help="Scale factor (1 = deblur only) \\[default: 4, or the sidecar's].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    kernel: Annotated[Optional[str], typer.Option("-k", "--kernel", help="Blur kernel: gaussian:SIGMA, aniso:L1,L2,THETA, motion:SEED, k.npy, k.png, kernels_12.mat:3 \\[default: real-image recipe].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    kernel_width: Annotated[Optional[float], typer.Option("--kernel-width", min=0.05, help="Width of the real-image recipe's Gaussian (without --kernel).", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    noise: Annotated[Optional[float], typer.Option("--noise", min=0.0, max=255.0, help="Noise σ of the input on the 0–255 scale \\[default: 2, the real-image recipe's level for clean photos, or the sidecar's].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="A `restore degrade` sidecar (NAME.json) to undo exactly.", rich_help_panel=PANEL_DEGRADATION)] = None,
    boundary: Annotated[Optional[SrBoundary], typer.Option("--boundary", help="Image boundary model \\[default: reflect, or wrap from a wrap-blur sidecar].", rich_help_panel=PANEL_DEGRADATION, show_default=False)] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    prior: Annotated[Optional[str], typer.Option("--prior", help="SFT-GAN category prior: auto (the model's prior network), FILE (.npy K×H×W probabilities or a label image), FOLDER (NAME.npy/NAME.png per input), category:N, or uniform \\[default: auto].", rich_help_panel=PANEL_MODEL, show_default=False)] = None,
    prior_classes: Annotated[Optional[Path], typer.Option("--prior-classes", help="Class list for a label-image prior: lines 'LABEL CATEGORY' (CATEGORY an index or 'uniform').", rich_help_panel=PANEL_MODEL)] = None,
    save_prior: Annotated[bool, typer.Option("--save-prior", help="SFT-GAN: write the categories used as a colour-coded NAME_prior.png beside each output (a valid --prior label image).", rich_help_panel=PANEL_MODEL)] = False,
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
    from restore_cli.engine.sftgan import texture_architecture
    from restore_cli.io.images import read_image, write_image

    if texture_architecture(model, weights) is not None:
        _sr_texture(
            inputs=inputs, output=output, recursive=recursive, suffix=suffix, format=format, quality=quality,
            skip_existing=skip_existing, overwrite=overwrite, strip_metadata=strip_metadata, max_pixels=max_pixels,
            scale=scale, not_applicable={"--kernel": kernel, "--kernel-width": kernel_width, "--noise": noise,
                                         "--params": params, "--boundary": boundary},
            model=model, weights=weights, prior=prior, prior_classes=prior_classes, save_prior=save_prior, tile=tile,
            tile_overlap=tile_overlap, device=device, precision=precision, json_output=json_output, quiet=quiet,
            verbose=verbose,
        )
        return
    if prior is not None or prior_classes is not None or save_prior:
        raise RestoreError("--prior, --prior-classes and --save-prior apply to SFT-GAN models (e.g. --model sftgan)")

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


def parse_prior(value: str | None, classes: Path | None) -> PriorRequest:
    """`--prior auto|uniform|category:N|FILE|FOLDER` (+ `--prior-classes`) → a PriorRequest."""
    from restore_cli.engine.sftgan import PriorRequest

    text = "auto" if value is None else value.strip()
    lowered = text.lower()
    request: PriorRequest
    if lowered in ("auto", "uniform"):
        request = PriorRequest(kind=lowered)  # type: ignore[arg-type]
    elif lowered.startswith("category:"):
        try:
            request = PriorRequest(kind="category", category=int(text.split(":", 1)[1]))
        except ValueError:
            raise RestoreError(f"--prior {text}: expected category:N with an integer N") from None
    else:
        path = Path(text)
        if path.is_dir():
            request = PriorRequest(kind="folder", path=path, classes=classes)
        elif path.is_file():
            request = PriorRequest(kind="file", path=path, classes=classes)
        else:
            raise RestoreError("--prior: no such file or folder (or use auto, uniform, category:N)", path)
    if classes is not None and request.kind not in ("file", "folder"):
        raise RestoreError(f"--prior-classes applies to a label-image prior, not to --prior {text}")
    return request


def _sr_texture(*, inputs: list[str], output: Optional[Path], recursive: bool, suffix: Optional[str], format: ImageFormat,
                quality: int, skip_existing: bool, overwrite: bool, strip_metadata: bool, max_pixels: int,
                scale: Optional[int], not_applicable: dict[str, object], model: Optional[str], weights: Optional[Path],
                prior: Optional[str], prior_classes: Optional[Path], save_prior: bool, tile: str, tile_overlap: int,
                device: str, precision: str, json_output: bool, quiet: bool, verbose: bool) -> None:
    """`restore sr` with an SFT-GAN model: ×4, prior as asked, optional category-map PNGs."""
    from restore_cli.engine.restore import TileRequest
    from restore_cli.engine.sftgan import SCALE, open_texture_resolver, super_resolve_texture_image
    from restore_cli.io.images import read_image, write_image
    from restore_cli.io.prior_files import write_prior_png

    given = [name for name, value in not_applicable.items() if value is not None]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise RestoreError(f"{', '.join(given)} {verb} not apply to SFT-GAN models (×4 from bicubic-downscaled input, no kernel or noise model)")
    if scale is not None and scale != SCALE:
        raise RestoreError(f"SFT-GAN models super-resolve ×{SCALE} only, not --scale {scale}")
    request = parse_prior(prior, prior_classes)
    console = stderr_console()
    log = (lambda m: console.print(m, highlight=False)) if verbose else None
    resolver = open_texture_resolver(model, weights, device, precision, TileRequest(parse_tile(tile), tile_overlap), log)
    if request.kind == "auto" and not resolver.has_prior_net:
        raise RestoreError(f"model '{resolver.model.name}' is a generator without a prior network: give --prior FILE, category:N or uniform")

    def process(job: Job) -> dict:
        image = read_image(job.source, max_pixels=max_pixels)
        result, details, maps = super_resolve_texture_image(resolver, image, request, job.source)
        write_image(job.target, result, format=None, quality=quality, strip_metadata=strip_metadata)
        if save_prior:
            prior_path = job.sibling(PRIOR_SUFFIX)
            write_prior_png(prior_path, maps)
            details["prior_map"] = str(prior_path)
        return details

    run_image_batch(
        label="sr", inputs=inputs, output=output, recursive=recursive,
        suffix=f"_x{SCALE}" if suffix is None else suffix,
        format=format.value, skip_existing=skip_existing, overwrite=overwrite,
        json_output=json_output, quiet=quiet, verbose=verbose, process=process,
        companions=(PRIOR_SUFFIX,) if save_prior else (),
    )
