"""`restore eval`: benchmark protocols of the field, with the protocol written into the report."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from restore_cli.cli.common import (
    PANEL_MODEL,
    PANEL_REPORTING,
    PANEL_TILING,
    DeviceOpt,
    QuietOpt,
    TileOpt,
    TileOverlapOpt,
    VerboseOpt,
    examples_epilog,
    paragraphs,
    parse_tile,
    stderr_console,
)
from restore_cli.errors import RestoreError
from restore_cli.eval.settings import ProtocolName

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from restore_cli.eval.degradations import Case
    from restore_cli.eval.report import Report

PANEL_PROTOCOL = "Protocol"
PANEL_DATA = "Data"


class BoundaryChoice(str, Enum):
    reflect = "reflect"
    circular = "circular"
    replicate = "replicate"


class ModelSigmaChoice(str, Enum):
    true = "true"
    estimate = "estimate"


HELP = """Evaluate a model (or the baselines) under a benchmark protocol of the field and report
per-image scores, averages and the protocol that produced them.

Protocols: [bold]denoise[/bold] (AWGN σ 15/25/50, seed 0 per image, unclipped; RGB or gray, no
border), [bold]usrnet-table1[/bold] (USRNet Table 1: 12 kernels × five scale/noise settings,
uint8-truncated wrap blur, RGB, border s²), [bold]bicubic-sr[/bold] (MATLAB bicubic LR, Y channel,
border s), [bold]deblur[/bold] (Levin09 kernels, σ 7.65 as DPIR, RGB, no border),
[bold]toolchain[/bold] (RL-Restore mild/moderate/severe mixtures), [bold]jpeg[/bold] (Pillow JPEG
q 10–40 on gray images, PSNR/SSIM/PSNR-B), [bold]sfm-sweep[/bold] (denoising at σ 10…100, several
models side by side), [bold]texture-sr[/bold] (×4 from MATLAB bicubic LR, SFT-GAN and USRNet side by
side: PSNR/SSIM on Y and the log-spectral distance and energy of the upper half of the frequencies
against the ground truth; --prior-swap forces each category in turn).

Every choice has a default from the reference and can be overridden; the JSON report records
what was used. --baseline adds what a user would otherwise do (the input itself, bicubic
upsampling, a Wiener / least-squares inverse with the true kernel). --compare A.json B.json
lays two earlier reports side by side (no model run)."""


def register(app: typer.Typer) -> None:
    app.command(
        "eval",
        help=paragraphs(HELP),
        short_help="Benchmark protocols (denoise, usrnet-table1, bicubic-sr, deblur, toolchain, jpeg, sfm-sweep, texture-sr).",
        epilog=examples_epilog(
            "restore eval usrnet-table1 --data ../shared/datasets/CBSD68 --model usrnet --baseline --json table1.json --markdown table1.md",
            "restore eval usrnet-table1 --data ../shared/datasets/CBSD68 --shard 2/4 --json part2.json -q",
            "restore eval --merge part1.json --merge part2.json --merge part3.json --merge part4.json --json table1.json",
            "restore eval texture-sr --data ../shared/datasets/BSD100 --model sftgan --model usrnet --baseline",
            "restore eval --compare before.json after.json",
        ),
    )(eval_command)


def _list(value: Optional[str], option: str, parse: Callable[[str, str], tuple]) -> Optional[tuple]:
    return None if value is None else parse(value, option)


def eval_command(
    protocol: Annotated[Optional[ProtocolName], typer.Argument(help="The benchmark protocol (not needed with --compare).", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Folder of ground-truth images (sorted by name).", rich_help_panel=PANEL_DATA, show_default=False)] = None,
    lr: Annotated[Optional[str], typer.Option("--lr", help="bicubic-sr: read the LR images from this folder instead of making them ('{scale}' in the name is replaced by the scale; files <stem>x<s>.*, <stem>_x<s>.* or <stem>.*).", rich_help_panel=PANEL_DATA, show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate only the first N images (a quick look).", rich_help_panel=PANEL_DATA, show_default=False)] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Evaluate part K of N: images K, K+N, K+2N, … of the sorted list (after --limit), e.g. 2/4; join the parts' --json reports with --merge.", rich_help_panel=PANEL_DATA, show_default=False)] = None,
    noise: Annotated[Optional[str], typer.Option("--noise", help="Noise σ list on the 0–255 scale, e.g. 15,25,50 \\[default: per protocol: 15,25,50; Table 1 rows; 0; 7.65 for deblur; 10,…,100 for sfm-sweep].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    scale: Annotated[Optional[str], typer.Option("-s", "--scale", help="Scale list, e.g. 2,3,4 \\[default: Table 1 rows / 2,3,4].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    kernels: Annotated[Optional[Path], typer.Option("--kernels", help="Kernel file (.mat with many kernels, .npy, .png) \\[default: ../shared/datasets/kernels/kernels_12.mat, kernels_bicubicx234.mat or Levin09.mat].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    quality: Annotated[Optional[str], typer.Option("--quality", help="jpeg: JPEG quality list \\[default: 10,20,30,40].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    level: Annotated[Optional[str], typer.Option("--level", help="toolchain: severity list \\[default: mild,moderate,severe].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    patch: Annotated[Optional[int], typer.Option("--patch", min=0, help="toolchain: cut images into non-overlapping N×N patches (RL-Restore uses 63) \\[default: 0, whole images].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the noise (numpy RandomState per image, as KAIR) and of the toolchain draws.", rich_help_panel=PANEL_PROTOCOL)] = 0,
    clip_noise: Annotated[Optional[bool], typer.Option("--clip-noise/--no-clip-noise", help="Clip the noisy input to [0, 1] (the SFM paper's protocol) \\[default: unclipped].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    crop_border: Annotated[Optional[int], typer.Option("--crop-border", min=0, help="Pixels shaved from each border before scoring \\[default: s² for usrnet-table1, s for bicubic-sr, else 0].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    y_channel: Annotated[Optional[bool], typer.Option("--y-channel/--rgb", help="Score the Y channel (BT.601 studio range) or all channels \\[default: Y for bicubic-sr, else RGB/gray].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    boundary: Annotated[Optional[BoundaryChoice], typer.Option("--boundary", help="Image boundary the SR model assumes \\[default: circular for usrnet-table1 and deblur (periodic inputs), reflect for bicubic-sr].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    lr_float: Annotated[Optional[bool], typer.Option("--float-lr/--uint8-lr", help="bicubic-sr: resize in float64 without rounding (USRNet's script) or in MATLAB's uint8 class (the distributed LR files) \\[default: uint8].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    model_sigma: Annotated[Optional[ModelSigmaChoice], typer.Option("--model-sigma", help="denoise, sfm-sweep: give the model the true σ or its per-image estimate \\[default: true].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    ssim: Annotated[Optional[bool], typer.Option("--ssim/--no-ssim", help="Compute SSIM besides PSNR \\[default: yes, except usrnet-table1 and deblur, whose references report PSNR only].", rich_help_panel=PANEL_PROTOCOL, show_default=False)] = None,
    model: Annotated[Optional[list[str]], typer.Option("-m", "--model", help="Model name from `restore models list`; repeat for several (sfm-sweep) \\[default: the shipped one].", rich_help_panel=PANEL_MODEL, show_default=False)] = None,
    weights: Annotated[Optional[list[Path]], typer.Option("--weights", help="A compatible .safetensors file; repeat for several.", rich_help_panel=PANEL_MODEL, show_default=False)] = None,
    baseline: Annotated[bool, typer.Option("--baseline", help="Add baseline rows: the input itself, bicubic upsampling, Wiener / least squares with the true kernel.", rich_help_panel=PANEL_MODEL)] = False,
    no_model: Annotated[bool, typer.Option("--no-model", help="Run the baselines only (implies --baseline).", rich_help_panel=PANEL_MODEL)] = False,
    chain: Annotated[Optional[list[str]], typer.Option("--chain", help="toolchain: also score this fixed chain of tools on every input, e.g. noise-3,blur-2 (repeat for several); --baseline adds the agent's recorded best fixed chain.", rich_help_panel=PANEL_MODEL, show_default=False)] = None,
    ablate_stop: Annotated[bool, typer.Option("--ablate-stop", help="toolchain: also score each agent with its stop action masked out (always --max-steps tools).", rich_help_panel=PANEL_MODEL)] = False,
    prior_swap: Annotated[bool, typer.Option("--prior-swap", help="texture-sr: also run each SFT-GAN model with every category forced on all pixels (the paper's prior swap).", rich_help_panel=PANEL_MODEL)] = False,
    alpha_factor: Annotated[float, typer.Option("--alpha-factor", min=0.0, help="Baselines: α = FACTOR·max(σ, 0.5/255)² of the Wiener / least-squares inverse.", rich_help_panel=PANEL_MODEL)] = 200.0,
    tile: TileOpt = "0",
    tile_overlap: TileOverlapOpt = 32,
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16 \\[default: fp32, so that results match the reference].", rich_help_panel=PANEL_TILING)] = "fp32",
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Write the full report (per-image scores, averages, protocol, model, versions, timing) to FILE; '-' for stdout.", rich_help_panel=PANEL_REPORTING, show_default=False)] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Write the table as it goes into README.", rich_help_panel=PANEL_REPORTING, show_default=False)] = None,
    save_images: Annotated[Optional[Path], typer.Option("--save-images", help="Keep the restored images here, as <stem>_<setting>.png (baselines: _<name>).", rich_help_panel=PANEL_REPORTING, show_default=False)] = None,
    save_inputs: Annotated[bool, typer.Option("--save-inputs", help="With --save-images, also keep the degraded inputs (<stem>_<setting>_input.png, quantised).", rich_help_panel=PANEL_REPORTING)] = False,
    compare: Annotated[Optional[tuple[Path, Path]], typer.Option("--compare", help="Lay two JSON reports side by side with their differences (no model run).", rich_help_panel=PANEL_REPORTING, show_default=False)] = None,
    merge: Annotated[Optional[list[Path]], typer.Option("--merge", help="Join the --json reports of a run split with --shard into one (repeat: --merge a.json --merge b.json …; no model run); print and write it like a run's.", rich_help_panel=PANEL_REPORTING, show_default=False)] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    console = stderr_console()
    if compare is not None and all(c is not None for c in compare):
        if protocol is not None or data is not None:
            raise RestoreError("--compare takes two reports and no protocol or --data")
        _compare(compare[0], compare[1], json_file, markdown, quiet)
        return
    if merge:
        if protocol is not None or data is not None or compare is not None:
            raise RestoreError("--merge takes reports and no protocol, --data or --compare")
        _merge(merge, json_file, markdown, quiet)
        return
    if protocol is None:
        raise RestoreError("give a protocol (denoise, usrnet-table1, bicubic-sr, deblur, toolchain, jpeg, sfm-sweep, texture-sr) "
                           "or --compare A.json B.json")
    if data is None:
        raise RestoreError(f"--data DIR is required for `restore eval {protocol.value}`")
    if save_inputs and save_images is None:
        raise RestoreError("--save-inputs needs --save-images DIR")
    if no_model and (model or weights):
        raise RestoreError("--no-model excludes --model and --weights")

    from restore_cli.eval.baselines import baseline_methods
    from restore_cli.eval.methods import EngineOptions, ModelSpec, model_methods, prior_swap_methods, toolchain_extra_methods
    from restore_cli.eval.protocols import SaveOptions, build_config, evaluate, settings_summary
    from restore_cli.eval.settings import parse_float_list, parse_int_list, parse_levels, parse_shard

    config = build_config(
        protocol, data,
        noise=_list(noise, "--noise", parse_float_list),
        scales=_list(scale, "--scale", lambda v, o: parse_int_list(v, o, 1, 4)),
        kernels=kernels,
        qualities=_list(quality, "--quality", lambda v, o: parse_int_list(v, o, 1, 100)),
        levels=None if level is None else parse_levels(level),
        patch=patch, seed=seed, clip_noise=clip_noise, crop_border=crop_border, y_channel=y_channel,
        boundary=None if boundary is None else boundary.value, lr=lr, lr_float=lr_float, limit=limit,
        shard=None if shard is None else parse_shard(shard),
        model_sigma=None if model_sigma is None else model_sigma.value,  # type: ignore[arg-type]
        alpha_factor=alpha_factor, baseline=baseline or no_model, ssim=ssim, prior_swap=prior_swap,
    )
    log = (lambda m: console.print(m, highlight=False)) if verbose else None
    if verbose:
        console.print(settings_summary(config), highlight=False)
    specs = [ModelSpec(name=n) for n in (model or [])] + [ModelSpec(weights=w) for w in (weights or [])]
    engine = EngineOptions(device=device, precision=precision, tile=parse_tile(tile), tile_overlap=tile_overlap)
    methods = [] if no_model else model_methods(config, specs, engine, log)
    methods += (prior_swap_methods(config, methods) + baseline_methods(config)
                + toolchain_extra_methods(config, methods, list(chain or []), ablate_stop))

    save = None if save_images is None else SaveOptions(save_images, save_inputs)
    tiling = {"tile": engine.tile if engine.tile is not None else "auto", "tile_overlap": engine.tile_overlap}
    report = _run(console, lambda on_case: evaluate(config, methods, save=save, on_case=on_case,
                                                    command="restore " + " ".join(sys.argv[1:]), run_details=tiling),
                  config.protocol.value, quiet, verbose)
    _output(console, report, f"{report.data['count']} images, {report.run['wall_time_s']:.1f} s", json_file, markdown, quiet)


def _output(console: Console, report: Report, footer: str, json_file: Optional[Path], markdown: Optional[Path],
            quiet: bool) -> None:
    """The report's table on stderr (unless quiet), its JSON and Markdown where asked."""
    from restore_cli.eval.report import markdown_table, report_json_text, report_table, rich_table

    table = report_table(report)
    if not quiet:
        _print_table(console, rich_table(table))
        console.print(footer, highlight=False)
    if json_file is not None:
        _write_text(json_file, report_json_text(report))
    if markdown is not None:
        _write_text(markdown, markdown_table(table))


def _run(console: Console, run: Callable[[Callable[..., None]], Report], label: str, quiet: bool,
         verbose: bool) -> Report:
    """`run(on_case)` with a progress bar on a terminal (nothing with -q; per-case lines with -v)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = None
    task = None
    if not quiet and console.is_terminal:
        progress = Progress(TextColumn(f"[bold]eval {label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        progress.start()
        task = progress.add_task("eval", total=1)

    def on_case(done: int, total: int, case: Case, scores: dict[str, dict[str, float]]) -> None:
        if progress is not None:
            progress.update(task, total=total, completed=done)
        if verbose and not quiet:
            text = "  ".join(f"{key} {values['psnr']:.2f}" for key, values in scores.items())
            line = f"{case.item} {case.setting.name}: {text}"
            (progress.console if progress is not None else console).print(line, highlight=False)

    try:
        return run(on_case)
    finally:
        if progress is not None:
            progress.stop()


def _print_table(console: Console, table: Table) -> None:
    """Print a Rich table whole: numbers are never cut off, even where the console is narrower
    than the table (a pipe, an 80-column default), at the cost of long lines."""
    from rich.console import Console
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update(width=10_000), table).maximum
    if needed > console.width:
        console = Console(stderr=True, width=needed, no_color=console.no_color, highlight=False)
    console.print(table)


def _write_text(path: Path, text: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from restore_cli.io.atomic import atomic_write_text

    try:
        atomic_write_text(Path(path), text)
    except OSError as exc:
        raise RestoreError(f"cannot write ({exc.strerror})", path) from None


def _merge(paths: list[Path], json_file: Optional[Path], markdown: Optional[Path], quiet: bool) -> None:
    from restore_cli.eval.report import merge_reports, read_report

    report = merge_reports([(read_report(path), str(path)) for path in paths])
    _output(stderr_console(), report, f"{report.data['count']} images from {len(paths)} reports", json_file, markdown, quiet)


def _compare(a: Path, b: Path, json_file: Optional[Path], markdown: Optional[Path], quiet: bool) -> None:
    import json

    from restore_cli.eval.report import compare_reports, markdown_table, read_report, rich_table

    console = stderr_console()
    comparison = compare_reports(read_report(a), read_report(b), name_a=Path(a).stem, name_b=Path(b).stem)
    if not quiet:
        for line in comparison.differences:
            console.print(f"[yellow]note[/yellow]: protocols differ: {line}", highlight=False, soft_wrap=True)
        _print_table(console, rich_table(comparison.table))
    if json_file is not None:
        payload = {"a": str(a), "b": str(b), "protocol_differences": comparison.differences, "rows": comparison.rows}
        _write_text(json_file, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    if markdown is not None:
        _write_text(markdown, markdown_table(comparison.table))
