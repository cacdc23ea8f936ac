"""Pieces shared by the `restore train` commands of every model family: help panels, choice
enums, option types, parsers of option strings, and the progress display on stderr. No numerics,
no commands (they live in `train.py`, `train_toolchain.py` and `train_sftgan.py`)."""

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

from restore_cli.cli.common import EXIT_INTERRUPTED, stderr_console
from restore_cli.errors import RestoreError

if TYPE_CHECKING:
    from restore_cli.train.progress import RunInfo, TrainResult

PANEL_DATA = "Data"
PANEL_DEGRADATION = "Degradation"
PANEL_MODEL = "Model"
PANEL_OPTIM = "Optimisation"
PANEL_CKPT = "Checkpoints"
PANEL_DEVICE = "Device & precision"
PANEL_REPORTING = "Reporting"


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


def finish(result: TrainResult) -> None:
    """After a run: the checkpoint path on stdout (main process), exit 130 when interrupted."""
    if result.rank == 0 and result.checkpoint is not None:
        sys.stdout.write(f"{result.checkpoint}\n")
        sys.stdout.flush()
    if result.reason == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
