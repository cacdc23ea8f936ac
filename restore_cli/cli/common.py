"""What every subcommand shares: option types and help panels, consoles, and error handling.

Only parsing and reporting live in `cli/`; numerics happen in the engine.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from restore_cli.errors import RestoreError

PANEL_IO = "Input/Output"
PANEL_DEGRADATION = "Degradation"
PANEL_MODEL = "Model"
PANEL_TILING = "Tiling & device"
PANEL_REPORTING = "Reporting"

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def stderr_console() -> Console:
    """Human-facing output: stderr, colour only on a terminal and without NO_COLOR."""
    return Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    print(f"restore: error: {message}", file=sys.stderr)
    return typer.Exit(code)


class ImageFormat(str, Enum):
    same = "same"
    png = "png"
    jpg = "jpg"
    tif = "tif"
    webp = "webp"
    bmp = "bmp"


def examples_epilog(*lines: str) -> str:
    """Help epilog with copy-pasteable examples, one per paragraph so Rich keeps them apart."""
    body = "\n\n".join(f"  $ {line}" for line in lines)
    return f"[bold]Examples[/bold]\n\n{body}"


# Option types shared by the image subcommands (batch runner options).
InputsArg = Annotated[
    list[str],
    typer.Argument(
        help="Input images: files, folders, globs (quoted), or @list.txt (one path per line).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option(
        "-o",
        "--output",
        help="Output folder (mirrors the input tree) or, for a single input, an output file. "
        "Default: beside each input, with --suffix.",
        rich_help_panel=PANEL_IO,
    ),
]
RecursiveOpt = Annotated[
    bool, typer.Option("-r", "--recursive", help="Descend into sub-folders.", rich_help_panel=PANEL_IO)
]
FormatOpt = Annotated[
    ImageFormat,
    typer.Option("--format", help="Output format; 'same' keeps the input's.", rich_help_panel=PANEL_IO),
]
QualityOpt = Annotated[
    int,
    typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality of the outputs.", rich_help_panel=PANEL_IO),
]
SkipExistingOpt = Annotated[
    bool,
    typer.Option("--skip-existing", help="Skip inputs whose output exists (resume a batch).", rich_help_panel=PANEL_IO),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs (never an input).", rich_help_panel=PANEL_IO)
]
StripMetadataOpt = Annotated[
    bool,
    typer.Option("--strip-metadata", help="Do not carry the ICC profile and EXIF to the outputs.", rich_help_panel=PANEL_IO),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this (decompression bombs).", rich_help_panel=PANEL_IO),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="One JSON line per file and a summary line on stdout.", rich_help_panel=PANEL_REPORTING),
]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress on stderr.", rich_help_panel=PANEL_REPORTING)]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="More detail on stderr.", rich_help_panel=PANEL_REPORTING)]

DEFAULT_MAX_PIXELS = 200_000_000


def existing_policy(skip_existing: bool, overwrite: bool) -> str:
    if skip_existing and overwrite:
        raise RestoreError("--skip-existing and --overwrite exclude each other")
    return "skip" if skip_existing else "overwrite" if overwrite else "error"

# Model, tiling and device options shared by the model-running subcommands.
ModelOpt = Annotated[
    Optional[str],
    typer.Option("-m", "--model", help="Model name from `restore models list` (default: the shipped one for the task).",
                 rich_help_panel=PANEL_MODEL),
]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option("--weights", help="Run this compatible .safetensors file instead of a named model.",
                 rich_help_panel=PANEL_MODEL),
]
TileOpt = Annotated[
    str,
    typer.Option("-t", "--tile", help="Tile size in input pixels: auto (from free memory, halved on out-of-memory), N, or 0 (whole image).",
                 rich_help_panel=PANEL_TILING),
]
TileOverlapOpt = Annotated[
    int, typer.Option("--tile-overlap", min=0, help="Overlap of neighbouring tiles (input pixels), blended smoothly.", rich_help_panel=PANEL_TILING)
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA if available), cpu, cuda or cuda:N.", rich_help_panel=PANEL_TILING)
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision", help="auto, fp32, bf16 or fp16 (auto: bf16/fp16 on CUDA; on the CPU bf16 only where measured within 0.05 dB of fp32).",
                 rich_help_panel=PANEL_TILING),
]


def parse_tile(value: str) -> int | None:
    """`--tile auto|N|0` → None (auto) or an integer ≥ 0."""
    text = value.strip().lower()
    if text == "auto":
        return None
    try:
        tile = int(text)
    except ValueError:
        raise RestoreError(f"--tile {value}: expected auto, 0 or a positive integer") from None
    if tile < 0:
        raise RestoreError(f"--tile {value}: must be ≥ 0")
    return tile


def paragraphs(text: str) -> str:
    """Help text written as wrapped paragraphs → one line per paragraph (Rich re-wraps it)."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))
