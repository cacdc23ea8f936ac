"""What an evaluation run is: the protocol, its settings (one row or cell each), and every
choice that fixes how inputs are made and scored (ANCHORS §1.11, §6.4).

Everything here is configuration, validated once by `build_config` and then trusted. Noise
levels are on the 0–255 scale, as on the command line and in reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final, Literal

import numpy as np

from restore_cli.errors import RestoreError
from restore_cli.ops.rl_restore import SEVERITY_WINDOWS


class ProtocolName(str, Enum):
    denoise = "denoise"
    usrnet_table1 = "usrnet-table1"
    bicubic_sr = "bicubic-sr"
    deblur = "deblur"
    toolchain = "toolchain"
    jpeg = "jpeg"
    sfm_sweep = "sfm-sweep"
    texture_sr = "texture-sr"


Channel = Literal["rgb", "y"]
PadMode = Literal["reflect", "replicate", "circular"]
ModelSigma = Literal["true", "estimate"]

#: texture-sr runs at ×4 only (SFT-GAN's scale).
TEXTURE_SCALE: Final[int] = 4
#: The five rows of USRNet Table 1: (scale, σ on the 0–255 scale).
TABLE1_SETTINGS: Final[tuple[tuple[int, float], ...]] = ((2, 0.0), (3, 0.0), (3, 2.55), (3, 7.65), (4, 0.0))
DENOISE_NOISE: Final[tuple[float, ...]] = (15.0, 25.0, 50.0)
SFM_NOISE: Final[tuple[float, ...]] = tuple(float(s) for s in range(10, 101, 10))
SR_SCALES: Final[tuple[int, ...]] = (2, 3, 4)
JPEG_QUALITIES: Final[tuple[int, ...]] = (10, 20, 30, 40)
DEBLUR_NOISE: Final[float] = 7.65  # DPIR main_dpir_deblur.py
# The reference's three levels; "light" is measured when asked for (--level light,…).
TOOLCHAIN_LEVELS: Final[tuple[str, ...]] = ("mild", "moderate", "severe")

#: Default kernel files, looked up under ../shared/datasets/kernels (see `default_kernel_file`).
DEFAULT_KERNEL_FILES: Final[dict[ProtocolName, str]] = {
    ProtocolName.usrnet_table1: "kernels_12.mat",
    ProtocolName.bicubic_sr: "kernels_bicubicx234.mat",
    ProtocolName.deblur: "Levin09.mat",
    ProtocolName.texture_sr: "kernels_bicubicx234.mat",
}

#: Which optional settings each protocol takes (anything else given is a usage error).
PROTOCOL_OPTIONS: Final[dict[ProtocolName, frozenset[str]]] = {
    ProtocolName.denoise: frozenset({"noise", "clip_noise", "model_sigma"}),
    ProtocolName.usrnet_table1: frozenset({"noise", "scale", "kernels", "clip_noise", "boundary"}),
    ProtocolName.bicubic_sr: frozenset({"noise", "scale", "kernels", "clip_noise", "boundary", "lr", "lr_float"}),
    ProtocolName.deblur: frozenset({"noise", "kernels", "clip_noise", "boundary"}),
    ProtocolName.toolchain: frozenset({"level", "patch"}),
    ProtocolName.jpeg: frozenset({"quality"}),
    ProtocolName.sfm_sweep: frozenset({"noise", "clip_noise", "model_sigma"}),
    ProtocolName.texture_sr: frozenset({"kernels", "boundary", "lr", "lr_float"}),
}

#: The engine task of the models each protocol runs (None: no model exists yet).
MODEL_TASK: Final[dict[ProtocolName, str]] = {
    ProtocolName.denoise: "denoise",
    ProtocolName.usrnet_table1: "sr",
    ProtocolName.bicubic_sr: "sr",
    ProtocolName.deblur: "sr",
    ProtocolName.toolchain: "toolchain",
    ProtocolName.jpeg: "jpeg",
    ProtocolName.sfm_sweep: "denoise",
    ProtocolName.texture_sr: "sr",
}


@dataclass(frozen=True)
class Setting:
    """One degradation setting: a row (long tables) or a cell (wide tables) of the report.

    `name` is used in file names (`<stem>_<name>.png`) and JSON; `group`/`column` place the
    setting in a wide table (rows = groups, columns = columns), e.g. group "×4 σ 0", column "k3".
    """

    name: str
    label: str
    scale: int = 1
    noise: float = 0.0  # σ of the added noise, 0–255 scale
    kernel_index: int | None = None  # 1-based index into the kernel file
    quality: int | None = None  # JPEG quality
    level: str | None = None  # toolchain severity
    crop_border: int = 0
    modcrop: int = 1  # the reference image is cropped to a multiple of this
    group: str = ""
    column: str = ""

    def to_json(self) -> dict:
        data = {"name": self.name, "label": self.label, "scale": self.scale, "noise": self.noise,
                "crop_border": self.crop_border, "modcrop": self.modcrop}
        for key in ("kernel_index", "quality", "level"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.group or self.column:
            data["group"], data["column"] = self.group, self.column
        return data


@dataclass(frozen=True)
class KernelSet:
    """The kernels of a kernel file, in file order, with the file's path and sha256."""

    path: Path
    sha256: str
    kernels: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.kernels)


@dataclass(frozen=True)
class EvalConfig:
    """A validated evaluation run (see `build_config`)."""

    protocol: ProtocolName
    data: Path
    settings: tuple[Setting, ...]
    channel: Channel
    seed: int = 0
    clip_noise: bool = False
    kernels: KernelSet | None = None
    pad_mode: PadMode = "reflect"
    lr_dir: str | None = None  # bicubic-sr: folder (or template with {scale}) of given LR images
    lr_uint8: bool = True  # bicubic-sr: LR rounded to uint8 after each resize axis (MATLAB uint8 imresize)
    patch: int = 0  # toolchain: P×P patches (0: whole images)
    limit: int | None = None
    shard: tuple[int, int] | None = None  # (k, n): the k-th of n interleaved parts of the images (1-based)
    model_sigma: ModelSigma = "true"
    alpha_factor: float = 200.0
    baseline: bool = False
    crop_override: int | None = None
    ssim: bool = True
    prior_swap: bool = False  # texture-sr: also run SFT-GAN models with each category forced everywhere
    notes: tuple[str, ...] = field(default_factory=tuple)


def format_number(value: float) -> str:
    """7.65 → "7.65", 25.0 → "25": the shortest exact form, for names and labels."""
    return f"{value:g}"


def parse_float_list(text: str, option: str, low: float = 0.0, high: float = 255.0) -> tuple[float, ...]:
    """"15,25,50" → (15.0, 25.0, 50.0), each within [low, high]."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise RestoreError(f"{option} {text}: {part!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise RestoreError(f"{option} {text}: {part} is outside {format_number(low)}–{format_number(high)}")
        values.append(value)
    if not values:
        raise RestoreError(f"{option}: give at least one value")
    return tuple(values)


def parse_int_list(text: str, option: str, low: int, high: int) -> tuple[int, ...]:
    values = parse_float_list(text, option, low, high)
    if any(v != int(v) for v in values):
        raise RestoreError(f"{option} {text}: expected integers")
    return tuple(int(v) for v in values)


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard 2/4` → (2, 4): images 2, 6, 10, … of the sorted list (after --limit)."""
    parts = text.split("/")
    try:
        k, n = (int(part) for part in parts)
    except ValueError:
        raise RestoreError(f"--shard {text}: expected K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise RestoreError(f"--shard {text}: K must be in 1..N")
    return k, n


def parse_levels(text: str) -> tuple[str, ...]:
    levels = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [level for level in levels if level not in SEVERITY_WINDOWS]
    if unknown or not levels:
        raise RestoreError(f"--level {text}: expected a list of {', '.join(SEVERITY_WINDOWS)}")
    return levels


def default_crop(protocol: ProtocolName, scale: int) -> int:
    """ANCHORS §6.4: s² for USRNet Table 1, s for bicubic SR, 0 otherwise."""
    if protocol is ProtocolName.usrnet_table1:
        return scale * scale
    if protocol in (ProtocolName.bicubic_sr, ProtocolName.texture_sr):
        return scale
    return 0


def default_ssim(protocol: ProtocolName) -> bool:
    """SSIM besides PSNR, except for usrnet-table1 and deblur, whose references report PSNR only
    (and whose many settings would make the float64 SSIM the slowest part of the run)."""
    return protocol not in (ProtocolName.usrnet_table1, ProtocolName.deblur)


def default_channel(protocol: ProtocolName) -> Channel:
    """Y (BT.601 studio) for bicubic SR, RGB (or the gray channel) for the others; jpeg turns its
    images gray first, so its one channel is scored either way."""
    return "y" if protocol in (ProtocolName.bicubic_sr, ProtocolName.texture_sr) else "rgb"


def _check_scales(scales: tuple[int, ...]) -> None:
    for s in scales:
        if s not in (1, 2, 3, 4):
            raise RestoreError(f"--scale {s}: USRNet handles scales 1–4")


def build_settings(
    protocol: ProtocolName,
    *,
    noise: tuple[float, ...] | None = None,
    scales: tuple[int, ...] | None = None,
    kernel_count: int = 0,
    qualities: tuple[int, ...] | None = None,
    levels: tuple[str, ...] | None = None,
    crop_border: int | None = None,
) -> tuple[Setting, ...]:
    """The settings of a protocol, from its defaults or the given lists (see module docs)."""
    settings: list[Setting] = []

    def crop(scale: int) -> int:
        return default_crop(protocol, scale) if crop_border is None else crop_border

    if protocol in (ProtocolName.denoise, ProtocolName.sfm_sweep):
        default = DENOISE_NOISE if protocol is ProtocolName.denoise else SFM_NOISE
        for sigma in noise or default:
            n = format_number(sigma)
            column = f"σ {n}" if protocol is ProtocolName.sfm_sweep else ""
            settings.append(Setting(f"n{n}", f"σ {n}", noise=sigma, crop_border=crop(1), column=column))
    elif protocol is ProtocolName.usrnet_table1:
        if scales is None and noise is None:
            pairs = list(TABLE1_SETTINGS)
        else:
            _check_scales(scales or SR_SCALES)
            pairs = [(s, sigma) for s in (scales or SR_SCALES) for sigma in (noise or (0.0,))]
        for s, sigma in pairs:
            n = format_number(sigma)
            for k in range(1, kernel_count + 1):
                settings.append(Setting(f"k{k:02d}_x{s}_n{n}", f"×{s} σ {n} k{k}", scale=s, noise=sigma, kernel_index=k,
                                        crop_border=crop(s), modcrop=math.lcm(s, 8), group=f"×{s} σ {n}", column=f"k{k}"))
    elif protocol is ProtocolName.bicubic_sr:
        _check_scales(scales or SR_SCALES)
        for s in scales or SR_SCALES:
            if s == 1:
                raise RestoreError("--scale 1: bicubic-sr needs scales 2–4")
            for sigma in noise or (0.0,):
                n = format_number(sigma)
                name = f"x{s}" if sigma == 0 else f"x{s}_n{n}"
                label = f"×{s}" if sigma == 0 else f"×{s} σ {n}"
                settings.append(Setting(name, label, scale=s, noise=sigma, kernel_index=s - 1, crop_border=crop(s), modcrop=s))
    elif protocol is ProtocolName.texture_sr:
        s = TEXTURE_SCALE
        settings.append(Setting(f"x{s}", f"×{s}", scale=s, kernel_index=s - 1, crop_border=crop(s), modcrop=s))
    elif protocol is ProtocolName.deblur:
        for sigma in noise or (DEBLUR_NOISE,):
            n = format_number(sigma)
            for k in range(1, kernel_count + 1):
                settings.append(Setting(f"k{k:02d}_n{n}", f"σ {n} k{k}", noise=sigma, kernel_index=k, crop_border=crop(1),
                                        modcrop=8, group=f"σ {n}", column=f"k{k}"))
    elif protocol is ProtocolName.toolchain:
        for level in levels or TOOLCHAIN_LEVELS:
            settings.append(Setting(level, level, level=level, crop_border=crop(1)))
    elif protocol is ProtocolName.jpeg:
        for q in qualities or JPEG_QUALITIES:
            settings.append(Setting(f"q{q}", f"q {q}", quality=q, crop_border=crop(1)))
    else:  # pragma: no cover - the enum is exhaustive
        raise RestoreError(f"unknown protocol {protocol}")
    if not settings:
        raise RestoreError(f"protocol {protocol.value} has no settings to run (empty kernel file?)")
    return tuple(settings)


def shared_dir_candidates() -> list[Path]:
    """Where ../shared is looked for: beside the working directory, then beside the repository."""
    here = Path.cwd()
    repo = Path(__file__).resolve().parents[2]
    return [here.parent / "shared", here / "shared", repo.parent / "shared"]


def default_kernel_file(protocol: ProtocolName) -> Path:
    """The protocol's default kernel file under ../shared/datasets/kernels, or a usage error."""
    name = DEFAULT_KERNEL_FILES[protocol]
    tried = []
    for shared in shared_dir_candidates():
        path = shared / "datasets" / "kernels" / name
        if path.is_file():
            return path
        tried.append(str(path))
    raise RestoreError(f"default kernel file {name} not found (looked at {', '.join(tried)}); give --kernels FILE")
