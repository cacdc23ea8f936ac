"""`restore train denoiser|usrnet|export`: parse options into a `TrainConfig`, run the trainer,
show progress on stderr; export a checkpoint into the weights store. No numerics here."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from restore_cli.cli.common import EXIT_INTERRUPTED, examples_epilog, stderr_console
from restore_cli.errors import RestoreError

if TYPE_CHECKING:
    from restore_cli.train.trainer import RunInfo, TrainResult

PANEL_DATA = "Data"
PANEL_DEGRADATION = "Degradation"
PANEL_MODEL = "Model"
PANEL_OPTIM = "Optimisation"
PANEL_CKPT = "Checkpoints"
PANEL_DEVICE = "Device & precision"
PANEL_REPORTING = "Reporting"

train_app = typer.Typer(
    name="train",
    help="Train a noise-map denoiser (DRUNet layout) or USRNet from clean images, degraded on the fly; "
    "export a checkpoint into the weights store.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class SfmModeChoice(str, Enum):
    targeted = "targeted"
    central = "central"
    random = "random"


class ChannelsChoice(str, Enum):
    gray = "1"
    rgb = "3"


class LossChoice(str, Enum):
    l1 = "l1"
    l2 = "l2"


class HyperInitChoice(str, Enum):
    random = "random"
    dpir = "dpir"


class PrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# --- parsing -----------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms])")


def parse_duration(text: str) -> float:
    """`2h30m`, `90m`, `1.5h`, `45s` or plain seconds → seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_RE.findall(value)
        if not parts or _DURATION_RE.sub("", value).strip():
            raise RestoreError(f"--time-limit {text!r}: expected a duration such as 2h30m, 90m, 1.5h or 3600") from None
        seconds = sum(float(n) * {"h": 3600.0, "m": 60.0, "s": 1.0}[unit] for n, unit in parts)
    if seconds <= 0:
        raise RestoreError(f"--time-limit {text!r}: must be positive")
    return seconds


def parse_number_list(text: str, option: str, integer: bool = False) -> tuple[float, ...]:
    """`0.5,0.75,0.9` → (0.5, 0.75, 0.9); integers only with `integer`."""
    try:
        values = tuple((int if integer else float)(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise RestoreError(f"{option} {text!r}: expected comma-separated {kind}") from None
    if not values:
        raise RestoreError(f"{option} {text!r}: expected at least one value")
    return values


def parse_noise_range(text: str) -> tuple[float, float]:
    values = parse_number_list(text, "--noise-range")
    if len(values) != 2:
        raise RestoreError(f"--noise-range {text!r}: expected LOW,HIGH on the 0–255 scale")
    return values[0], values[1]


def _config_value(key: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        return [int(p) for p in raw.split(",")]
    except ValueError:
        raise RestoreError(f"--arch-config {key}={raw}: expected an integer or a comma-separated list of integers") from None


def parse_arch_config(items: list[str]) -> dict[str, Any]:
    """`--arch-config` items: a JSON object, `key=value` (integers; `nc=16,32,64,64`), or a preset
    name (`usrnet-tiny`, `drunet`); later items override earlier ones."""
    config: dict[str, Any] = {}
    for item in items:
        text = item.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RestoreError(f"--arch-config {text!r}: not valid JSON ({exc.msg})") from None
            if not isinstance(data, dict):
                raise RestoreError(f"--arch-config {text!r}: expected a JSON object")
            config.update(data)
        elif "=" in text:
            key, _, raw = text.partition("=")
            config[key.strip()] = _config_value(key.strip(), raw.strip())
        elif text:
            config["preset"] = text
    return config


def command_line() -> str:
    return " ".join(["restore", *(shlex.quote(a) for a in sys.argv[1:])])


# --- progress on stderr --------------------------------------------------------------------------


class _SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.speed
        return Text("– steps/s" if speed is None else f"{speed:.2f} steps/s")


REFRESH_HZ = 4.0


class TrainingProgress:
    """A Rich bar (step, loss, steps/s, ETA) on a terminal, plain lines per log record otherwise,
    nothing with quiet (errors still reach stderr through the app)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = stderr_console()
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.last_refresh = 0.0

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False, soft_wrap=True)

    def on_start(self, info: RunInfo) -> None:
        config = " ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in info.model_config.items())
        self._print(
            f"train {info.task}: {info.arch} ({config}; {info.parameters:,} parameters), {info.images} images"
            f"{f' ({info.skipped_images} smaller than the patch left out)' if info.skipped_images else ''}"
            f"{f', {info.val_images} for validation' if info.val_images else ''}, {info.device} {info.precision}"
            f"{f', {info.world_size} processes' if info.world_size > 1 else ''}; steps {info.start_step}→{info.total_steps}; "
            f"output {info.output}"
        )
        if self.quiet or not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("[bold]train[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            _SpeedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            # No refresh thread beside the training threads: the bar is redrawn from on_step, at
            # most REFRESH_HZ times a second.
            auto_refresh=False,
        )
        self.progress.start()
        self.task_id = self.progress.add_task("train", total=info.total_steps, completed=info.start_step, loss="–")

    def on_step(self, step: int, loss: float) -> None:
        if self.progress is None:
            return
        self.progress.update(self.task_id, completed=step, loss=f"{loss:.4g}")
        now = time.monotonic()
        if now - self.last_refresh >= 1.0 / REFRESH_HZ:
            self.progress.refresh()
            self.last_refresh = now

    def on_record(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "train" and self.progress is None:
            self._print(
                f"step {record['step']}: loss {record['loss']:.5g}, lr {record['lr']:.3g}, "
                f"{record['steps_per_s']:.2f} steps/s"
            )
        elif kind == "val":
            self._print(f"step {record['step']}: validation PSNR {record['psnr']:.2f} dB ({record['protocol']})")
        elif kind == "checkpoint":
            self._print(f"step {record['step']}: checkpoint {record['path']}")

    def on_finish(self, result: TrainResult) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        words = {"completed": "finished", "interrupted": "interrupted", "time_limit": "stopped at the time limit"}
        self._print(f"train: {words[result.reason]} at step {result.step}; checkpoint {result.checkpoint}")


# --- shared options ------------------------------------------------------------------------------

DataOpt = Annotated[list[Path], typer.Option("--data", metavar="DIR", help="Folder of clean training images (recursive; repeat for several).", rich_help_panel=PANEL_DATA, show_default=False)]
ValOpt = Annotated[Optional[Path], typer.Option("--val", metavar="DIR", help="Folder of clean validation images (centre-cropped to 256×256).", rich_help_panel=PANEL_DATA)]
ChannelsOpt = Annotated[ChannelsChoice, typer.Option("--channels", help="1 = gray (colour images converted with MATLAB rgb2gray), 3 = RGB (gray images replicated).", rich_help_panel=PANEL_DATA)]
PatchOpt = Annotated[int, typer.Option("--patch", min=8, help="Training patch size (HR for usrnet).", rich_help_panel=PANEL_DATA)]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Patches per step and process.", rich_help_panel=PANEL_DATA)]
SfmRateOpt = Annotated[float, typer.Option("--sfm-rate", min=0.0, max=1.0, help="Share of patches DCT-band masked before the degradation (SFM; 0 = off, paper: 0.5).", rich_help_panel=PANEL_DEGRADATION)]
SfmCenterOpt = Annotated[float, typer.Option("--sfm-center", min=0.0, max=1.0, help="targeted mode: band centre as a fraction of r_max.", rich_help_panel=PANEL_DEGRADATION)]
SfmSpreadOpt = Annotated[float, typer.Option("--sfm-spread", min=0.0, help="targeted mode: band half-width spread as a fraction of r_max.", rich_help_panel=PANEL_DEGRADATION)]
ArchConfigOpt = Annotated[list[str], typer.Option("--arch-config", metavar="KEY=VALUE|JSON|PRESET", help="Network size: key=value (nc=16,32,64,64 nb=2 …), a JSON object, or a preset name; repeatable.", rich_help_panel=PANEL_MODEL)]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps in all.", rich_help_panel=PANEL_OPTIM)]
LrOpt = Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (betas 0.9, 0.999; 1e-4 as in DRUNet and USRNet).", rich_help_panel=PANEL_OPTIM)]
MilestonesOpt = Annotated[str, typer.Option("--milestones", help="Where the lr is multiplied by --lr-gamma: fractions of --steps (<1) or step numbers.", rich_help_panel=PANEL_OPTIM)]
GammaOpt = Annotated[float, typer.Option("--lr-gamma", min=0.0, max=1.0, help="Learning-rate factor at each milestone.", rich_help_panel=PANEL_OPTIM)]
LossOpt = Annotated[LossChoice, typer.Option("--loss", help="Pixel loss against the clean target (l1, as DRUNet and USRNet were trained).", rich_help_panel=PANEL_OPTIM)]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of initialisation, patches, kernels and noise (process r uses seed and r).", rich_help_panel=PANEL_OPTIM)]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="Run folder: checkpoints, latest, log.jsonl.", rich_help_panel=PANEL_CKPT)]
CheckpointEveryOpt = Annotated[int, typer.Option("--checkpoint-every", min=1, help="Save a checkpoint every N steps (and at the end, on Ctrl-C and at --time-limit).", rich_help_panel=PANEL_CKPT)]
KeepOpt = Annotated[int, typer.Option("--keep", min=0, help="Checkpoints kept (newest); 0 keeps all.", rich_help_panel=PANEL_CKPT)]
TimeLimitOpt = Annotated[Optional[str], typer.Option("--time-limit", metavar="DURATION", help="Stop cleanly and save after this long, e.g. 2h30m, 90m, 3600.", rich_help_panel=PANEL_CKPT)]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", metavar="CKPT|RUN", help="Continue exactly from a checkpoint folder, or a run folder's latest; give the same options as before (--steps may grow when --milestones are step numbers).", rich_help_panel=PANEL_CKPT)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu, cuda or cuda:N.", rich_help_panel=PANEL_DEVICE)]
PrecisionOpt = Annotated[PrecisionChoice, typer.Option("--precision", help="auto = bf16 on CUDA (fp16 where unsupported), fp32 on the CPU; bf16/fp16 are autocast with channels_last.", rich_help_panel=PANEL_DEVICE)]
ValEveryOpt = Annotated[int, typer.Option("--val-every", min=1, help="Validation PSNR every N steps (with --val).", rich_help_panel=PANEL_REPORTING)]
LogEveryOpt = Annotated[int, typer.Option("--log-every", min=1, help="Write mean loss, lr and steps/s to log.jsonl every N steps.", rich_help_panel=PANEL_REPORTING)]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress on stderr.", rich_help_panel=PANEL_REPORTING)]


def _run(config_kwargs: dict[str, Any], quiet: bool) -> None:
    from restore_cli.train.trainer import TrainConfig, run_training

    config = TrainConfig(**config_kwargs)
    result = run_training(config, TrainingProgress(quiet))
    if result.rank == 0 and result.checkpoint is not None:
        sys.stdout.write(f"{result.checkpoint}\n")
        sys.stdout.flush()
    if result.reason == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)


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
    init_prior: Annotated[Optional[Path], typer.Option("--init-prior", help="Initialise the prior p from a resunet-denoiser .safetensors of the same widths and nb (a colour file starts a gray prior and vice versa).", rich_help_panel=PANEL_MODEL)] = None,
    freeze_prior: Annotated[bool, typer.Option("--freeze-prior", help="Keep the --init-prior weights fixed and train H only (about 1/3 less work per step; the plug-and-play stage).", rich_help_panel=PANEL_MODEL)] = False,
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
    _run({"task": "usrnet", **kwargs, "scales": scale_values, "init_weights": init_prior, "freeze_prior": freeze_prior, "init_hyper": init_hyper.value}, quiet)


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



def _register_families() -> None:
    from restore_cli.cli import train_sftgan, train_toolchain

    train_toolchain.register(train_app)
    train_sftgan.register(train_app)


_register_families()
