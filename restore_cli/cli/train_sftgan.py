"""`restore train sftgan-prior` and `restore train sftgan` (stages 1 and 2): parse options into an
`SftganTrainConfig`, run the trainer, show progress on stderr. No numerics here. `cli/train.py`
adds these commands to `restore train` with `register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from restore_cli.cli.common import examples_epilog
from restore_cli.cli.train_options import (
    PANEL_CKPT,
    PANEL_MODEL,
    PANEL_OPTIM,
    ArchConfigOpt,
    BatchOpt,
    CheckpointEveryOpt,
    DataOpt,
    DeviceOpt,
    GammaOpt,
    KeepOpt,
    LogEveryOpt,
    MilestonesOpt,
    PatchOpt,
    PrecisionChoice,
    PrecisionOpt,
    QuietOpt,
    ResumeOpt,
    SeedOpt,
    StepsOpt,
    TimeLimitOpt,
    TrainingProgress,
    ValEveryOpt,
    ValOpt,
    command_line,
    finish,
    parse_arch_config,
    parse_duration,
    parse_number_list,
)

PANEL_LOSSES = "Losses (stage 2)"


class SftganProgress(TrainingProgress):
    """The shared progress display, with the validation records of these runs."""

    def on_record(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "categories":
            for index, text in enumerate(record["descriptions"]):
                self._print(f"category {index}: {text}")
        elif record.get("kind") != "val":
            super().on_record(record)
        elif "accuracy" in record:
            self._print(f"step {record['step']}: validation category accuracy {record['accuracy']:.3f}, "
                        f"NLL {record['nll']:.4f} ({record['protocol']})")
        else:
            self._print(f"step {record['step']}: validation PSNR {record['psnr']:.2f} dB, high-frequency LSD "
                        f"{record['lsd_high']:.2f} dB ({record['protocol']})")


def _run(kwargs: dict[str, Any], quiet: bool) -> None:
    from restore_cli.train.sftgan_config import SftganTrainConfig
    from restore_cli.train.sftgan_trainer import run_sftgan_training

    config = SftganTrainConfig(**kwargs)
    finish(run_sftgan_training(config, SftganProgress(quiet)))


def _shared(data: list[Path], val: Optional[Path], patch: int, batch: int, arch_config: list[str], steps: int,
            lr: Optional[float], milestones: str, lr_gamma: float, seed: int, output: Path, checkpoint_every: int, keep: int,
            time_limit: Optional[str], resume: Optional[Path], device: str, precision: PrecisionChoice, val_every: int,
            log_every: int) -> dict[str, Any]:
    return dict(
        data=tuple(data), val=val, patch=patch, batch=batch, arch_config=parse_arch_config(arch_config), steps=steps, lr=lr,
        milestones=parse_number_list(milestones, "--milestones"), lr_gamma=lr_gamma, seed=seed, output=output,
        checkpoint_every=checkpoint_every, keep_checkpoints=keep, time_limit=None if time_limit is None else parse_duration(time_limit),
        resume=resume, device=device, precision=precision.value, val_every=val_every, log_every=log_every,
        command_line=command_line(),
    )


LrOpt = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Adam learning rate (betas 0.9, 0.999) [default: prior 1e-3, stage 1 2e-4, stage 2 1e-4].", rich_help_panel=PANEL_OPTIM, show_default=False)]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="Run folder: checkpoints, latest, log.jsonl.", rich_help_panel=PANEL_CKPT)]


def sftgan_prior(
    data: DataOpt,
    val: ValOpt = None,
    categories: Annotated[int, typer.Option("--categories", min=2, max=64, help="Number of texture categories K (the generator's prior channels; the reference has 8).", rich_help_panel=PANEL_MODEL)] = 8,
    cluster_samples: Annotated[int, typer.Option("--cluster-samples", min=20, help="Random 32×32 HR windows clustered (k-means, seeded) to define the categories.", rich_help_panel=PANEL_MODEL)] = 20_000,
    patch: PatchOpt = 96,
    batch: BatchOpt = 16,
    arch_config: ArchConfigOpt = [],  # noqa: B006 (Typer reads the default)
    steps: StepsOpt = 20_000,
    lr: LrOpt = None,
    milestones: MilestonesOpt = "0.5,0.75,0.9",
    lr_gamma: GammaOpt = 0.5,
    seed: SeedOpt = 0,
    output: OutputOpt = Path("runs/sftgan-prior"),
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
    kwargs = _shared(data, val, patch, batch, arch_config, steps, lr, milestones, lr_gamma, seed, output, checkpoint_every,
                     keep, time_limit, resume, device, precision, val_every, log_every)
    _run({"task": "sftgan-prior", **kwargs, "categories": categories, "cluster_samples": cluster_samples}, quiet)


def sftgan(
    data: DataOpt,
    stage: Annotated[int, typer.Option("--stage", min=1, max=2, help="1: pixel (L1) loss; 2: adversarial with the category-aware discriminator.", rich_help_panel=PANEL_MODEL)] = 1,
    prior_model: Annotated[Optional[Path], typer.Option("--prior-model", metavar="RUN|FILE", help="The trained category prior (a `train sftgan-prior` run or exported .safetensors); frozen.", rich_help_panel=PANEL_MODEL)] = None,
    init: Annotated[Optional[Path], typer.Option("--init", metavar="RUN|FILE", help="Start from an sftgan run or .safetensors (generator and prior), e.g. stage 1's result for stage 2.", rich_help_panel=PANEL_MODEL)] = None,
    val: ValOpt = None,
    patch: PatchOpt = 96,
    batch: BatchOpt = 16,
    arch_config: ArchConfigOpt = [],  # noqa: B006
    steps: StepsOpt = 100_000,
    lr: LrOpt = None,
    d_lr: Annotated[Optional[float], typer.Option("--d-lr", min=0.0, help="Discriminator learning rate [default: --lr].", rich_help_panel=PANEL_OPTIM, show_default=False)] = None,
    sft_lr_factor: Annotated[float, typer.Option("--sft-lr-factor", min=0.0, help="Stage 2: learning-rate factor of the SFT and condition layers (reference: 5).", rich_help_panel=PANEL_OPTIM)] = 5.0,
    trunk_warmup: Annotated[float, typer.Option("--trunk-warmup", min=0.0, help="Stage 2: steps (or fraction of --steps) before the non-SFT generator layers are updated (reference: 20k of 600k).", rich_help_panel=PANEL_OPTIM)] = 0.05,
    milestones: MilestonesOpt = "0.5,0.75,0.9",
    lr_gamma: GammaOpt = 0.5,
    pixel_weight: Annotated[float, typer.Option("--pixel-weight", min=0.0, help="L1 pixel loss weight.", rich_help_panel=PANEL_LOSSES)] = 1e-2,
    feature_weight: Annotated[float, typer.Option("--feature-weight", min=0.0, help="Perceptual term: discriminator feature matching (L1 over its four stages).", rich_help_panel=PANEL_LOSSES)] = 1.0,
    gan_weight: Annotated[float, typer.Option("--gan-weight", min=0.0, help="Vanilla GAN loss weight (reference: 5e-3).", rich_help_panel=PANEL_LOSSES)] = 5e-3,
    category_weight: Annotated[float, typer.Option("--category-weight", min=0.0, help="Generator's category-classification loss weight (reference: 5e-3).", rich_help_panel=PANEL_LOSSES)] = 5e-3,
    d_category_weight: Annotated[float, typer.Option("--d-category-weight", min=0.0, help="Discriminator's category-classification loss weight.", rich_help_panel=PANEL_LOSSES)] = 1.0,
    d_width: Annotated[int, typer.Option("--d-width", min=1, help="Discriminator base width (VGG-style, 64 → 512 channels).", rich_help_panel=PANEL_LOSSES)] = 64,
    seed: SeedOpt = 0,
    output: OutputOpt = Path("runs/sftgan"),
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
    kwargs = _shared(data, val, patch, batch, arch_config, steps, lr, milestones, lr_gamma, seed, output, checkpoint_every,
                     keep, time_limit, resume, device, precision, val_every, log_every)
    _run({"task": "sftgan", **kwargs, "stage": stage, "prior_model": prior_model, "init": init, "d_lr": d_lr,
          "sft_lr_factor": sft_lr_factor, "trunk_warmup": trunk_warmup, "pixel_weight": pixel_weight,
          "feature_weight": feature_weight, "gan_weight": gan_weight, "category_weight": category_weight,
          "d_category_weight": d_category_weight, "d_nf": d_width}, quiet)


def register(train_app: typer.Typer) -> None:
    """Add this family's training commands to `restore train`."""
    train_app.command(
        "sftgan-prior",
        help="Derive K texture categories from the training images (k-means on DCT band energies, colour and edge "
        "statistics of 32×32 HR windows; category 0 the flattest) and train the small prior network that predicts "
        "them per pixel from the ×4 MATLAB-bicubic LR image. The categories are stored with the network.",
        epilog=examples_epilog(
            "restore train sftgan-prior --data ../shared/datasets/BSDS500_train --data ../shared/datasets/T91 --val ../shared/datasets/Set14 --steps 20000 -o runs/sftgan-prior",
        ),
    )(sftgan_prior)
    train_app.command(
        "sftgan",
        help="Train the SFT-GAN ×4 generator (64 channels, 16 SFT residual blocks) conditioned on the frozen prior "
        "network's category maps, LR made on the fly (MATLAB bicubic, 96 HR / 24 LR). Stage 1: L1 pixel loss. Stage 2: "
        "vanilla GAN with a discriminator that also classifies categories, discriminator feature matching as the "
        "perceptual term, SFT/condition layers at 5× the learning rate. Export with `restore train export`.",
        epilog=examples_epilog(
            "restore train sftgan --stage 1 --prior-model runs/sftgan-prior --data ../shared/datasets/BSDS500_train --val ../shared/datasets/Set14 --steps 100000 -o runs/sftgan-s1",
            "restore train sftgan --stage 2 --init runs/sftgan-s1 --data ../shared/datasets/BSDS500_train --steps 100000 --time-limit 8h -o runs/sftgan-s2",
        ),
    )(sftgan)

