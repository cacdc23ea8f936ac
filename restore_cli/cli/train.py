"""`restore train denoiser|usrnet|export`: parse options into a `TrainConfig`, run the trainer,
show progress on stderr; export a checkpoint into the weights store. No numerics here. The
toolchain and SFT-GAN families add their commands from `train_toolchain.py` and `train_sftgan.py`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from restore_cli.cli import train_sftgan, train_toolchain
from restore_cli.cli.common import examples_epilog, stderr_console
from restore_cli.cli.train_options import (
    PANEL_DEGRADATION,
    PANEL_MODEL,
    ArchConfigOpt,
    BatchOpt,
    ChannelsChoice,
    ChannelsOpt,
    CheckpointEveryOpt,
    DataOpt,
    DeviceOpt,
    GammaOpt,
    HyperInitChoice,
    KeepOpt,
    LogEveryOpt,
    LossChoice,
    LossOpt,
    LrOpt,
    MilestonesOpt,
    OutputOpt,
    PatchOpt,
    PrecisionChoice,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SeedOpt,
    SfmCenterOpt,
    SfmModeChoice,
    SfmRateOpt,
    SfmSpreadOpt,
    StepsOpt,
    TimeLimitOpt,
    TrainingProgress,
    ValEveryOpt,
    ValOpt,
    command_line,
    finish,
    parse_arch_config,
    parse_duration,
    parse_noise_range,
    parse_number_list,
)

train_app = typer.Typer(
    name="train",
    help="Train a noise-map denoiser (DRUNet layout) or USRNet from clean images, degraded on the fly; "
    "export a checkpoint into the weights store.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _run(config_kwargs: dict[str, Any], quiet: bool) -> None:
    from restore_cli.train.trainer import TrainConfig, run_training

    config = TrainConfig(**config_kwargs)
    finish(run_training(config, TrainingProgress(quiet)))


def _common(
    data: list[Path], val: Optional[Path], channels: ChannelsChoice, patch: int, batch: int, arch_config: list[str],
    steps: int, lr: float, milestones: str, lr_gamma: float, loss: LossChoice, seed: int, output: Path,
    checkpoint_every: int, keep: int, time_limit: Optional[str], resume: Optional[Path], device: str,
    precision: PrecisionChoice, val_every: int, log_every: int, noise_range: str, sfm_rate: float, sfm_mode: SfmModeChoice,
    sfm_center: float, sfm_spread: float,
) -> dict[str, Any]:
    return dict(
        data=tuple(data), val=val, channels=int(channels.value), patch=patch, batch=batch, arch_config=parse_arch_config(arch_config),
        steps=steps, lr=lr, milestones=parse_number_list(milestones, "--milestones"), lr_gamma=lr_gamma, loss=loss.value,
        seed=seed, output=output, checkpoint_every=checkpoint_every, keep_checkpoints=keep,
        time_limit=None if time_limit is None else parse_duration(time_limit), resume=resume, device=device,
        precision=precision.value, val_every=val_every, log_every=log_every, noise_range=parse_noise_range(noise_range),
        sfm_rate=sfm_rate, sfm_mode=sfm_mode.value, sfm_center=sfm_center, sfm_spread=sfm_spread, command_line=command_line(),
    )


@train_app.command(
    "denoiser",
    help="Train a non-blind Gaussian denoiser (ResUNet fed the image and a σ map, DRUNet layout: nc 64-128-256-512, nb 4) "
    "on clean images with AWGN, σ uniform over --noise-range per patch, unclipped. The network predicts the clean "
    "image; with SFM the clean patch is masked before the noise and the masked patch is the target.",
    epilog=examples_epilog(
        "restore train denoiser --data ../shared/datasets/Train400 --val ../shared/datasets/Set12 --channels 1 --arch-config nc=32,64,128,256 --arch-config nb=2 --steps 20000 -o runs/dn-gray",
        "torchrun --nproc_per_node=2 -m restore_cli train denoiser --data ../shared/datasets/BSDS500_train --data ../shared/datasets/BSDS500_test --sfm-rate 0.5 --time-limit 2h30m -o runs/dn-sfm",
    ),
)
def denoiser(
    data: DataOpt,
    val: ValOpt = None,
    channels: ChannelsOpt = ChannelsChoice.rgb,
    patch: PatchOpt = 96,
    batch: BatchOpt = 16,
    noise_range: Annotated[str, typer.Option("--noise-range", metavar="LOW,HIGH", help="σ range LOW,HIGH on the 0–255 scale, drawn uniformly per patch.", rich_help_panel=PANEL_DEGRADATION)] = "0,50",
    sfm_rate: SfmRateOpt = 0.0,
    sfm_mode: Annotated[SfmModeChoice, typer.Option("--sfm-mode", help="SFM band: targeted (denoising setting of the paper), central, random.", rich_help_panel=PANEL_DEGRADATION)] = SfmModeChoice.targeted,
    sfm_center: SfmCenterOpt = 0.85,
    sfm_spread: SfmSpreadOpt = 0.15,
    arch_config: ArchConfigOpt = [],  # noqa: B006 (Typer reads the default)
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from a resunet-denoiser .safetensors of the same widths and nb (fine-tuning); a colour file starts a gray model (input weights summed over RGB, output averaged) and vice versa.", rich_help_panel=PANEL_MODEL)] = None,
    steps: StepsOpt = 100_000,
    lr: LrOpt = 1e-4,
    milestones: MilestonesOpt = "0.5,0.75,0.9",
    lr_gamma: GammaOpt = 0.5,
    loss: LossOpt = LossChoice.l1,
    seed: SeedOpt = 0,
    output: OutputOpt = Path("runs/denoiser"),
    checkpoint_every: CheckpointEveryOpt = 1000,
    keep: KeepOpt = 2,
    time_limit: TimeLimitOpt = None,
    resume: ResumeOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = PrecisionChoice.auto,
    val_every: ValEveryOpt = 1000,
    log_every: LogEveryOpt = 100,
    quiet: QuietOpt = False,
) -> None:
    kwargs = _common(
        data, val, channels, patch, batch, arch_config, steps, lr, milestones, lr_gamma, loss, seed, output,
        checkpoint_every, keep, time_limit, resume, device, precision, val_every, log_every, noise_range, sfm_rate,
        sfm_mode, sfm_center, sfm_spread,
    )
    _run({"task": "denoiser", **kwargs, "init_weights": init}, quiet)


@train_app.command(
    "usrnet",
    help="Train USRNet for y = (x ⊗ k)↓s + n: one scale per step from --scales, a random 25×25 kernel per patch "
    "(half motion blur, half anisotropic Gaussian), wrap blur, upper-left decimation, σ = 0 for 1/9 of the "
    "patches and σ uniform over --noise-range otherwise. SFM (central) masks the HR patch before the degradation. "
    "Default size: the paper's (n_iter 8, h_nc 64, nc 64-128-256-512, nb 2); --arch-config usrnet-tiny for the tiny one.",
    epilog=examples_epilog(
        "restore train usrnet --data ../shared/datasets/T91 --val ../shared/datasets/Set5 --arch-config usrnet-tiny --steps 50000 -o runs/usrnet-tiny",
        "restore train usrnet --data ../shared/datasets/T91 --arch-config usrnet-tiny --batch 48 --sfm-rate 0.5 --time-limit 2h30m -o runs/usrnet-sfm",
    ),
)
def usrnet(
    data: DataOpt,
    val: ValOpt = None,
    channels: ChannelsOpt = ChannelsChoice.rgb,
    patch: PatchOpt = 96,
    batch: BatchOpt = 16,
    scales: Annotated[str, typer.Option("--scales", help="Scale factors, one drawn per step (1 = deblurring).", rich_help_panel=PANEL_DEGRADATION)] = "1,2,3,4",
    noise_range: Annotated[str, typer.Option("--noise-range", metavar="LOW,HIGH", help="σ range LOW,HIGH on the 0–255 scale for the 8/9 noisy patches.", rich_help_panel=PANEL_DEGRADATION)] = "0,25",
    sfm_rate: SfmRateOpt = 0.0,
    sfm_mode: Annotated[SfmModeChoice, typer.Option("--sfm-mode", help="SFM band: central (the SR setting of the paper), targeted, random.", rich_help_panel=PANEL_DEGRADATION)] = SfmModeChoice.central,
    sfm_center: SfmCenterOpt = 0.85,
    sfm_spread: SfmSpreadOpt = 0.15,
    arch_config: ArchConfigOpt = [],  # noqa: B006
    init: Annotated[Optional[Path], typer.Option("--init", "--init-prior", help="Start from a usrnet .safetensors of the same size (prior and H: fine-tuning), or the prior p alone from a resunet-denoiser .safetensors of the same widths and nb (a colour file starts a gray prior and vice versa).", rich_help_panel=PANEL_MODEL)] = None,
    freeze_prior: Annotated[bool, typer.Option("--freeze-prior", help="Keep the --init prior fixed and train H only (about 1/3 less work per step; the plug-and-play stage).", rich_help_panel=PANEL_MODEL)] = False,
    init_hyper: Annotated[HyperInitChoice, typer.Option("--init-hyper", help="Start H from random weights, or fitted to DPIR's schedule (σ_k log-spaced 49/255 → max(s, 255σ)/255, α_k = 0.23 σ²/σ_k²).", rich_help_panel=PANEL_MODEL)] = HyperInitChoice.random,
    steps: StepsOpt = 100_000,
    lr: LrOpt = 1e-4,
    milestones: MilestonesOpt = "0.5,0.75,0.9",
    lr_gamma: GammaOpt = 0.5,
    loss: LossOpt = LossChoice.l1,
    seed: SeedOpt = 0,
    output: OutputOpt = Path("runs/usrnet"),
    checkpoint_every: CheckpointEveryOpt = 1000,
    keep: KeepOpt = 2,
    time_limit: TimeLimitOpt = None,
    resume: ResumeOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = PrecisionChoice.auto,
    val_every: ValEveryOpt = 1000,
    log_every: LogEveryOpt = 100,
    quiet: QuietOpt = False,
) -> None:
    kwargs = _common(
        data, val, channels, patch, batch, arch_config, steps, lr, milestones, lr_gamma, loss, seed, output,
        checkpoint_every, keep, time_limit, resume, device, precision, val_every, log_every, noise_range, sfm_rate,
        sfm_mode, sfm_center, sfm_spread,
    )
    scale_values = tuple(int(s) for s in parse_number_list(scales, "--scales", integer=True))
    _run({"task": "usrnet", **kwargs, "scales": scale_values, "init_weights": init, "freeze_prior": freeze_prior, "init_hyper": init_hyper.value}, quiet)


@train_app.command(
    "export",
    help="Export a checkpoint (or a run folder's latest) as NAME.safetensors in the weights store, with its "
    "manifest entry (architecture, task, scales, channels, sha256, training settings). Prints the file path.",
    epilog=examples_epilog(
        "restore train export runs/dn-gray --name denoise-gray-small",
        "restore train export runs/usrnet-tiny/ckpt-0050000 --name usrnet-tiny-mine --weights-dir ~/restore-weights --metrics report.json",
    ),
)
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (ckpt-NNNNNNN) or run folder.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Model name (file NAME.safetensors, manifest key).", show_default=False)],
    weights_dir: Annotated[Optional[Path], typer.Option("--weights-dir", help="Weights store folder (default: $RESTORE_WEIGHTS_DIR or the installed store).")] = None,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="JSON evaluation report attached as the entry's metrics.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing model of that name.")] = False,
) -> None:
    from restore_cli.train.export import export_checkpoint, read_metrics_file

    report = None if metrics is None else read_metrics_file(metrics)
    result = export_checkpoint(checkpoint, name, weights_dir, metrics=report, overwrite=overwrite)
    stderr_console().print(f"exported {result.entry.arch} ({result.entry.task}) as {name}: sha256 {result.entry.sha256[:12]}…, manifest {result.manifest}", highlight=False)
    sys.stdout.write(f"{result.weights}\n")


train_toolchain.register(train_app)
train_sftgan.register(train_app)
