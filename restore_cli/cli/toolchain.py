"""`restore toolchain`: undo unknown mixed blur, noise and JPEG with a chain of small tools chosen
step by step by a learned agent (RL-Restore)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from restore_cli.cli.batch_options import run_image_batch
from restore_cli.cli.common import (
    DEFAULT_MAX_PIXELS,
    PANEL_IO,
    PANEL_MODEL,
    DeviceOpt,
    FormatOpt,
    ImageFormat,
    InputsArg,
    JsonOpt,
    MaxPixelsOpt,
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
    examples_epilog,
    paragraphs,
    parse_tile,
    stderr_console,
)
from restore_cli.engine.batch import Job
from restore_cli.errors import RestoreError

HELP = """Restore images with unknown mixed damage (Gaussian blur, noise, JPEG artefacts) by a short
chain of small tools: twelve residual CNNs (blur-1…4, noise-1…4, jpeg-1…4, mild to strong) and an
LSTM agent that picks the next tool, or stop, after looking at the image (RL-Restore, Yu et al.
2018).

At each step every non-overlapping 63×63 patch of the image votes for an action; the majority
wins and the chosen tool runs on the whole image. The chain is printed per image
(blur-2 → noise-3 → stop); --json adds the votes and the mean Q-values (the agent's predicted
PSNR gain in dB of each action) of every step."""

MAX_STEPS_LIMIT = 3


def register(app: typer.Typer) -> None:
    app.command(
        "toolchain",
        help=paragraphs(HELP),
        short_help="Undo unknown mixed blur, noise and JPEG with a learned chain of small tools (RL-Restore).",
        epilog=examples_epilog(
            "restore toolchain distorted.jpg -o restored.png",
            "restore toolchain photos/ -r -o out/ --tools noise,jpeg --max-steps 2 --json",
        ),
    )(toolchain)


def parse_max_steps(value: int) -> int:
    if not 1 <= value <= MAX_STEPS_LIMIT:
        raise RestoreError(f"--max-steps {value}: must be 1, 2 or 3 (the agent was trained for chains of at most 3 tools)")
    return value


def toolchain(
    inputs: InputsArg,
    output: OutputOpt = None,
    recursive: RecursiveOpt = False,
    suffix: Annotated[str, typer.Option("--suffix", help="Appended to output file names.", rich_help_panel=PANEL_IO)] = "_restored",
    format: FormatOpt = ImageFormat.same,
    quality: QualityOpt = 95,
    skip_existing: SkipExistingOpt = False,
    overwrite: OverwriteOpt = False,
    strip_metadata: StripMetadataOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    toolbox: Annotated[Optional[str], typer.Option("--toolbox", metavar="NAME|FILE", help="Toolbox weights: a model name from `restore models list` or a .safetensors file (default: the shipped 'toolbox').", rich_help_panel=PANEL_MODEL)] = None,
    agent: Annotated[Optional[str], typer.Option("--agent", metavar="NAME|FILE", help="Agent weights: a model name or a .safetensors file (default: the shipped 'toolchain-agent').", rich_help_panel=PANEL_MODEL)] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Longest chain (1–3 tools); the agent may stop earlier.", rich_help_panel=PANEL_MODEL)] = 3,
    tools: Annotated[Optional[str], typer.Option("--tools", metavar="LIST", help="Only these tools, comma-separated: names (blur-1 … jpeg-4), tool01 … tool12, or a kind (blur, noise, jpeg). Default: all twelve.", rich_help_panel=PANEL_MODEL)] = None,
    tile: TileOpt = "auto",
    tile_overlap: TileOverlapOpt = 16,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from restore_cli.engine.restore import TileRequest
    from restore_cli.engine.toolchain import load_toolchain, parse_tool_list, toolchain_image
    from restore_cli.io.images import read_image, write_image

    steps = parse_max_steps(max_steps)
    allowed = None if tools is None else parse_tool_list(tools)
    tiles = TileRequest(parse_tile(tile), tile_overlap)
    console = stderr_console()
    log = (lambda m: console.print(m, highlight=False)) if verbose else None
    runner = load_toolchain(toolbox, agent, device=device, precision=precision, tiles=tiles, allowed_tools=allowed,
                            max_steps=steps, log=log)

    def process(job: Job) -> dict:
        image = read_image(job.source, max_pixels=max_pixels)
        result, details = toolchain_image(runner, image)
        write_image(job.target, result, format=None, quality=quality, strip_metadata=strip_metadata)
        if not quiet:
            console.print(f"{job.source}: {chain_line(details)}", highlight=False, soft_wrap=True)
        return details

    run_image_batch(
        label="toolchain", inputs=inputs, output=output, recursive=recursive, suffix=suffix,
        format=format.value, skip_existing=skip_existing, overwrite=overwrite,
        json_output=json_output, quiet=quiet, verbose=verbose, process=process,
    )


def chain_line(details: dict) -> str:
    """`blur-2 (30/40) → noise-3 (22/40) → stop (35/40)`: each action with its share of the votes."""
    parts = [f"{s['action']} ({s['votes'].get(s['action'], 0)}/{s['patches']})" for s in details["steps"]]
    text = " → ".join(parts)
    return text if details["stopped"] else f"{text} (max {details['max_steps']} steps)"
