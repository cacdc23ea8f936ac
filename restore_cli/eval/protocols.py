"""The evaluation protocols: how each makes its degraded inputs and scores the results
(ANCHORS §1.11, §2, §3.3, §4.5, §6), and the runner that goes through images × settings ×
methods and returns a `Report`.

Protocols (defaults; every one can be overridden from the command line):
- denoise: AWGN σ 15/25/50, KAIR noise (seed 0 per image), unclipped, unquantised; RGB (or gray), border 0.
- usrnet-table1: modcrop lcm(s, 8), uint8 wrap blur truncated to uint8, x[::s, ::s], seed-0 AWGN;
  ×2, ×3, ×3 σ 2.55, ×3 σ 7.65, ×4 with the 12 kernels; RGB, border s²; model pad "circular".
- bicubic-sr: modcrop s, MATLAB bicubic LR (uint8 class), approximate bicubic kernels; Y, border s.
- deblur: modcrop 8, the Table 1 blur at s = 1 with every kernel of Levin09.mat, σ 7.65 (DPIR); RGB, border 0.
- toolchain: RL-Restore mild/moderate/severe mixtures (blur → noise → JPEG); RGB, border 0.
- jpeg: Pillow JPEG at q 10/20/30/40 on gray (or Y) images; PSNR, SSIM, PSNR-B; border 0.
- sfm-sweep: the denoise protocol at σ 10…100 for several models side by side.
- texture-sr: the bicubic-sr input at ×4, scored by PSNR/SSIM and by how well the outputs' high
  frequencies match the ground truth's (`ops.spectrum`: log-spectral distance and band energy in
  the upper half of the frequencies); SFT-GAN and USRNet models side by side, --prior-swap.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from restore_cli.errors import RestoreError
from restore_cli.eval.degradations import (
    Case,
    awgn,
    bicubic_lr,
    gray_levels,
    jpeg_input,
    levels_tensor,
    modcrop,
    patches,
    to_tensor,
    toolchain_input,
    uint8_to_float32,
    usrnet_lr,
    wrap_blur_uint8,
)
from restore_cli.eval.methods import Method, restored_to_reference_size
from restore_cli.eval.report import Report
from restore_cli.eval.settings import (
    Channel,
    EvalConfig,
    KernelSet,
    ModelSigma,
    PadMode,
    TEXTURE_SCALE,
    ProtocolName,
    Setting,
    build_settings,
    default_channel,
    default_kernel_file,
    default_ssim,
)
from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.rl_restore import SEVERITY_WINDOWS
from restore_cli.ops.metrics import psnr, psnr_b, quantize_to_uint8_levels, ssim
from restore_cli.ops.spectrum import UPPER_HALF, hf_energy_db, lsd_hf
from restore_cli.ops.wiener import DEFAULT_ALPHA_FACTOR

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
NOISE_GENERATOR = ("numpy.random.RandomState(seed).normal(0, σ/255, H×W×C) per image and setting "
                   "(= KAIR np.random.seed(seed); np.random.normal), float64 noise added to the float32 image")
QUANTISATION = "outputs clamped to [0, 1], ×255, rounded half to even (KAIR/BasicSR uint8); metrics in float64"
SPECTRUM_DEFINITION = (
    "ops.spectrum on the scored channel(s) after the border crop: mean removed, Hann window, |FFT|²/Σw² (channels "
    "averaged), averaged over min(H, W)/2 rings up to 0.5 cycles/pixel; lsd_hf = RMS of 10·log10(P_out/P_ref) over the rings in "
    f"[{UPPER_HALF[0]}, {UPPER_HALF[1]}] cycles/pixel (0 is best), hf_db = 10·log10 of the power ratio in that band "
    "(< 0: smoother than the ground truth)")
SSIM_DEFINITION = "Wang et al. 2004: 11×11 Gaussian σ 1.5, K1 0.01, K2 0.03, valid filtering, mean over channels"


# -- configuration ---------------------------------------------------------------------------


def load_kernel_set(path: Path) -> KernelSet:
    """Every kernel of a kernel file, in file order (MATLAB cells in column-major order).

    .mat kernels are kept exactly as stored (float32 taps as float64, *not* renormalised): the
    references blur with `kernels[0, i].astype(np.float64)`, and since the uint8 blur truncates,
    renormalising by a sum that is 1 ± 1e-8 changes up to ~9 % of the blurred pixels by one
    level (kernels_12 k1 on CBSD68). Other files (.npy, .png) hold one kernel, normalised by the
    loader."""
    from restore_cli.engine.weights import sha256_file
    from restore_cli.io.kernel_files import load_kernel

    path = Path(path)
    if not path.is_file():
        raise RestoreError("kernel file not found", path)
    if path.suffix.lower() != ".mat":
        return KernelSet(path=path, sha256=sha256_file(path), kernels=(load_kernel(str(path))[0],))
    from restore_cli.io.kernel_files import read_mat_kernels

    kernels = []
    for index, raw in enumerate(read_mat_kernels(path), start=1):
        kernel = np.asarray(raw)
        if kernel.dtype == object or kernel.ndim != 2 or kernel.size == 0 or not np.issubdtype(kernel.dtype, np.number):
            raise RestoreError(f"kernel {index} is not a 2-D numeric array (shape {kernel.shape})", path)
        kernel = kernel.astype(np.float64)
        if not np.all(np.isfinite(kernel)) or not kernel.sum() > 0:
            raise RestoreError(f"kernel {index} has non-finite values or a sum ≤ 0", path)
        kernels.append(kernel)
    if not kernels:
        raise RestoreError("holds no kernels", path)
    return KernelSet(path=path, sha256=sha256_file(path), kernels=tuple(kernels))


def build_config(
    protocol: ProtocolName,
    data: Path,
    *,
    noise: tuple[float, ...] | None = None,
    scales: tuple[int, ...] | None = None,
    kernels: Path | None = None,
    qualities: tuple[int, ...] | None = None,
    levels: tuple[str, ...] | None = None,
    patch: int | None = None,
    seed: int = 0,
    clip_noise: bool | None = None,
    crop_border: int | None = None,
    y_channel: bool | None = None,
    boundary: PadMode | None = None,
    lr: str | None = None,
    lr_float: bool | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    model_sigma: ModelSigma | None = None,
    alpha_factor: float = DEFAULT_ALPHA_FACTOR,
    baseline: bool = False,
    ssim: bool | None = None,
    prior_swap: bool = False,
) -> EvalConfig:
    """Validate the options against the protocol once, load the kernel file, build the settings."""
    from restore_cli.eval.settings import PROTOCOL_OPTIONS

    given = {"noise": noise, "scale": scales, "kernels": kernels, "quality": qualities, "level": levels,
             "patch": patch, "clip_noise": clip_noise, "boundary": boundary, "lr": lr, "lr_float": lr_float,
             "model_sigma": model_sigma}
    allowed = PROTOCOL_OPTIONS[protocol]
    for name, value in given.items():
        if value is not None and name not in allowed:
            option = "--" + name.replace("_", "-")
            raise RestoreError(f"{option} does not apply to protocol {protocol.value}")
    data = Path(data)
    if not data.is_dir():
        raise RestoreError("data folder not found" if not data.exists() else "--data must be a folder of images", data)
    if limit is not None and limit < 1:
        raise RestoreError(f"--limit {limit}: must be at least 1")
    if crop_border is not None and crop_border < 0:
        raise RestoreError(f"--crop-border {crop_border}: must be ≥ 0")
    if patch is not None and patch != 0 and patch < 11:
        raise RestoreError(f"--patch {patch}: patches must be at least 11×11 (SSIM window), or 0 for whole images")
    if alpha_factor <= 0:
        raise RestoreError(f"--alpha-factor {alpha_factor}: must be > 0")
    kernel_set = None
    if prior_swap and protocol is not ProtocolName.texture_sr:
        raise RestoreError(f"--prior-swap does not apply to protocol {protocol.value}")
    if protocol in (ProtocolName.usrnet_table1, ProtocolName.bicubic_sr, ProtocolName.deblur, ProtocolName.texture_sr):
        kernel_set = load_kernel_set(kernels if kernels is not None else default_kernel_file(protocol))
    if protocol in (ProtocolName.bicubic_sr, ProtocolName.texture_sr) and kernel_set is not None:
        needed = (TEXTURE_SCALE if protocol is ProtocolName.texture_sr else max(scales or (2, 3, 4))) - 1
        if len(kernel_set) < needed:
            raise RestoreError(f"holds {len(kernel_set)} kernels; {protocol.value} takes kernel s−1 for ×s (needs {needed})",
                               kernel_set.path)
    settings = build_settings(protocol, noise=noise, scales=scales, kernel_count=0 if kernel_set is None else len(kernel_set),
                              qualities=qualities, levels=levels, crop_border=crop_border)
    channel: Channel = default_channel(protocol) if y_channel is None else ("y" if y_channel else "rgb")
    default_pad: PadMode = "circular" if protocol in (ProtocolName.usrnet_table1, ProtocolName.deblur) else "reflect"
    if lr is not None:
        lr_dirs = {lr.replace("{scale}", str(s.scale)) for s in settings}
        for folder in lr_dirs:
            if not Path(folder).is_dir():
                raise RestoreError("--lr folder not found", folder)
    return EvalConfig(
        protocol=protocol, data=data, settings=settings, channel=channel, seed=seed, clip_noise=bool(clip_noise),
        kernels=kernel_set, pad_mode=boundary or default_pad, lr_dir=lr, lr_uint8=not lr_float,
        patch=patch or 0, limit=limit, shard=shard, model_sigma=model_sigma or "true", alpha_factor=alpha_factor,
        baseline=baseline, crop_override=crop_border, ssim=default_ssim(protocol) if ssim is None else ssim,
        prior_swap=prior_swap,
    )


def describe_protocol(config: EvalConfig) -> dict[str, Any]:
    """Everything that fixes the numbers, for the JSON report (ANCHORS §6.4)."""
    p = config.protocol
    scales = sorted({s.scale for s in config.settings})
    if config.crop_override is not None:
        crop: Any = config.crop_override
    elif p is ProtocolName.usrnet_table1:
        crop = "s² (" + ", ".join(f"×{s}: {s * s}" for s in scales) + ")"
    elif p in (ProtocolName.bicubic_sr, ProtocolName.texture_sr):
        crop = "s (" + ", ".join(f"×{s}: {s}" for s in scales) + ")"
    else:
        crop = 0
    channel = "gray" if p is ProtocolName.jpeg else config.channel
    d: dict[str, Any] = {
        "name": p.value,
        "channel": channel,
        "channel_definition": ("the gray channel (of gray images, or round(Y) of colour ones)" if channel == "gray"
                               else "Y of MATLAB rgb2ycbcr (BT.601 studio range, 16 + 65.481R + 128.553G + 24.966B), "
                                    "unrounded; gray images: their one channel" if channel == "y"
                               else "all channels (RGB, or the one channel of gray images)"),
        "crop_border": crop,
        "quantisation": QUANTISATION,
        "ssim": SSIM_DEFINITION if config.ssim else "not computed (--ssim to add it)",
        "images": "read as 8-bit (16-bit files are rounded to 8 bits); alpha ignored",
        "seed": config.seed,
    }
    if p in (ProtocolName.denoise, ProtocolName.sfm_sweep, ProtocolName.usrnet_table1, ProtocolName.bicubic_sr,
             ProtocolName.deblur):
        d["noise"] = {"generator": NOISE_GENERATOR, "clipped": config.clip_noise, "quantised": False,
                      "levels_255": sorted({s.noise for s in config.settings})}
    if p in (ProtocolName.denoise, ProtocolName.sfm_sweep):
        d["model_sigma"] = ("true σ/255" if config.model_sigma == "true"
                            else "per-image estimate (ops.noise_estimation, Chen et al. 2015)")
        d["model_boundary"] = "the engine's: reflect padding (32 px context, size multiple 8)"
    if config.kernels is not None:
        d["kernel_file"] = {"path": str(config.kernels.path), "sha256": config.kernels.sha256,
                            "count": len(config.kernels),
                            "values": ("as stored (float32 taps as float64, not renormalised), as the references use them"
                                       if config.kernels.path.suffix.lower() == ".mat" else "normalised to sum 1")}
    if p in (ProtocolName.usrnet_table1, ProtocolName.deblur):
        d["modcrop"] = "lcm(s, 8)" if p is ProtocolName.usrnet_table1 else 8
        d["blur"] = ("scipy.ndimage.convolve(uint8 HR, k[..., None], mode='wrap'): true convolution per channel, "
                     "float64 sums truncated to uint8 (as the reference)")
        d["downsampler"] = "direct: upper-left pixel of each s×s block, x[::s, ::s]" if p is ProtocolName.usrnet_table1 else "none (s = 1)"
        d["model_input"] = "the float32 LR with noise; σ/255; the kernel as stored"
        d["model_boundary"] = config.pad_mode + (" (the input is periodic: whole-image runs need no context, "
                                                 "= the reference's whole-image run)" if config.pad_mode == "circular" else "")
    if p is ProtocolName.texture_sr:
        d["spectrum"] = SPECTRUM_DEFINITION
        d["prior"] = "SFT-GAN models: the category prior their own prior network estimates from the LR image (auto)" + (
            "; --prior-swap adds each model once per category, that category forced on every pixel" if config.prior_swap else "")
    if p in (ProtocolName.bicubic_sr, ProtocolName.texture_sr):
        d["modcrop"] = "s"
        if config.lr_dir is not None:
            d["downsampler"] = f"LR images read from {config.lr_dir}"
        elif config.lr_uint8:
            d["downsampler"] = ("MATLAB imresize(HR, 1/s, 'bicubic') with antialiasing, a = −0.5, in the uint8 class "
                                "(rounded after each axis: the distributed LR_bicubic files, bit for bit)")
        else:
            d["downsampler"] = "MATLAB imresize(HR/255, 1/s, 'bicubic') in float64, unquantised (KAIR imresize_np)"
        d["model_input"] = ("USRNet: LR, the approximate bicubic kernel s−1 of the kernel file (×2 → 1), σ as --noise (0)"
                            + ("; SFT-GAN: LR and its category maps" if p is ProtocolName.texture_sr else ""))
        d["model_boundary"] = (config.pad_mode + (" (stand-in for the reference's Liu & Jia wrap_boundary padding)"
                                                  if config.pad_mode == "reflect" else ""))
    if p is ProtocolName.toolchain:
        d["recipe"] = ("RL-Restore: Gaussian blur (21×21, replicate borders) → AWGN clipped to [0, 1] → Pillow JPEG at the "
                       "rounded quality; levels L_b + L_n + L_j − 2 in "
                       + ", ".join(f"{name} [{lo}, {hi}]" for name, (lo, hi) in SEVERITY_WINDOWS.items())
                       + " (light is this project's, below the reference's three)")
        d["patches"] = f"{config.patch}×{config.patch} non-overlapping, from the top-left" if config.patch else "whole images"
        d["draws"] = ("numpy Generator(seed, crc32(item), crc32(level)) for the levels and parameters, a torch Generator "
                      "seeded from it for the noise")
    if p is ProtocolName.jpeg:
        d["encoder"] = "Pillow (libjpeg) at integer quality, one-channel grayscale JPEG"
        d["gray"] = "gray images as they are; colour images → round(Y), Y of BT.601 studio range"
        d["psnr_b"] = "Yim & Bovik 2011, 8×8 blocks, blocking effect factor of the test image"
    return d


def protocol_layout(config: EvalConfig) -> dict[str, Any]:
    p = config.protocol
    if p is ProtocolName.usrnet_table1:
        n = len(config.kernels) if config.kernels is not None else 0
        columns = [f"k{i}" for i in range(1, n + 1)]
        summaries = []
        if n > 8:
            summaries.append({"label": "avg8", "columns": columns[:8]})
        summaries.append({"label": f"avg{n}", "columns": columns})
        return {"kind": "wide", "metric": "psnr", "summaries": summaries}
    if p is ProtocolName.deblur:
        n = len(config.kernels) if config.kernels is not None else 0
        return {"kind": "wide", "metric": "psnr", "summaries": [{"label": "avg", "columns": [f"k{i}" for i in range(1, n + 1)]}]}
    if p is ProtocolName.sfm_sweep:
        return {"kind": "wide", "metric": "psnr", "summaries": []}
    return {"kind": "long"}


def protocol_metrics(config: EvalConfig) -> list[str]:
    metrics = ["psnr", "ssim"] if config.ssim else ["psnr"]
    if config.protocol is ProtocolName.texture_sr:
        return metrics + ["lsd_hf", "hf_db"]
    return metrics + ["psnr_b"] if config.protocol is ProtocolName.jpeg else metrics


# -- data --------------------------------------------------------------------------------------


def list_images(folder: Path, limit: int | None = None, shard: tuple[int, int] | None = None) -> tuple[list[Path], int]:
    """Image files directly in `folder`, sorted by name (byte order); the first `limit` of them,
    of those every n-th from the k-th with `shard` (k, n), and how many there are in all."""
    files = sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.name)
    if not files:
        raise RestoreError("no images found (png, bmp, jpg, tif, webp)", folder)
    chosen = files[:limit] if limit else files
    if shard is not None:
        k, n = shard
        chosen = chosen[k - 1::n]
        if not chosen:
            raise RestoreError(f"--shard {k}/{n}: no images in this part ({len(files[:limit] if limit else files)} images)", folder)
    return chosen, len(files)


def read_levels(path: Path) -> np.ndarray:
    """An image file as uint8 H×W×C (C = 1 or 3)."""
    from restore_cli.io.images import read_image

    image = read_image(path)
    return np.clip(np.round(image.pixels.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def find_lr_image(template: str, stem: str, scale: int) -> Path:
    """The given LR image of `stem` at ×scale: <stem>x<s>, <stem>_x<s> or <stem> in the folder
    (`{scale}` in the folder name is replaced by the scale)."""
    folder = Path(template.replace("{scale}", str(scale)))
    for name in (f"{stem}x{scale}", f"{stem}_x{scale}", f"{stem}_LR_x{scale}", stem):
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    raise RestoreError(f"no LR image for {stem} at ×{scale} (looked for {stem}x{scale}.*, {stem}_x{scale}.*, {stem}.*)", folder)


# -- cases -------------------------------------------------------------------------------------


def _kernel(config: EvalConfig, setting: Setting) -> np.ndarray:
    assert config.kernels is not None and setting.kernel_index is not None
    return config.kernels.kernels[setting.kernel_index - 1]


def make_cases(config: EvalConfig, stem: str, source: Path, image: np.ndarray) -> Iterator[Case]:
    """The cases of one image, setting by setting (toolchain: patch by patch too)."""
    p = config.protocol
    blurred_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for setting in config.settings:
        if p in (ProtocolName.denoise, ProtocolName.sfm_sweep):
            noisy = awgn(uint8_to_float32(image), setting.noise, config.seed, config.clip_noise)
            yield Case(stem, setting, levels_tensor(image), to_tensor(noisy), sigma=setting.noise / 255.0)
        elif p in (ProtocolName.usrnet_table1, ProtocolName.deblur):
            kernel = _kernel(config, setting)
            key = (setting.modcrop, int(setting.kernel_index or 0))
            if key not in blurred_cache:
                hr = modcrop(image, setting.modcrop)
                if hr.shape[0] == 0 or hr.shape[1] == 0:
                    raise RestoreError(f"image is smaller than the modcrop multiple {setting.modcrop}", source)
                blurred_cache[key] = (hr, wrap_blur_uint8(hr, kernel))
            hr, blurred = blurred_cache[key]
            lr = usrnet_lr(blurred, setting.scale, setting.noise, config.seed, config.clip_noise)
            yield Case(stem, setting, levels_tensor(hr), to_tensor(lr), kernel=kernel, scale=setting.scale,
                       sigma=setting.noise / 255.0)
        elif p in (ProtocolName.bicubic_sr, ProtocolName.texture_sr):
            hr = modcrop(image, setting.scale)
            if config.lr_dir is not None:
                lr_path = find_lr_image(config.lr_dir, stem, setting.scale)
                lr = uint8_to_float32(read_levels(lr_path))
                expected = (hr.shape[0] // setting.scale, hr.shape[1] // setting.scale, hr.shape[2])
                if lr.shape != expected:
                    raise RestoreError(f"LR image is {lr.shape[1]}×{lr.shape[0]}×{lr.shape[2]}, expected "
                                       f"{expected[1]}×{expected[0]}×{expected[2]} for {source.name} at ×{setting.scale}", lr_path)
            else:
                lr = bicubic_lr(hr, setting.scale, uint8=config.lr_uint8)
            lr = awgn(lr, setting.noise, config.seed, config.clip_noise)
            yield Case(stem, setting, levels_tensor(hr), to_tensor(lr), kernel=_kernel(config, setting),
                       scale=setting.scale, sigma=setting.noise / 255.0)
        elif p is ProtocolName.toolchain:
            assert setting.level is not None
            for suffix, part in patches(image, config.patch):
                item = f"{stem}_{suffix}" if suffix else stem
                degraded, details = toolchain_input(part, setting.level, config.seed, item)
                yield Case(item, setting, levels_tensor(part), degraded, details=details)
        elif p is ProtocolName.jpeg:
            assert setting.quality is not None
            gray = gray_levels(image)
            yield Case(stem, setting, levels_tensor(gray), jpeg_input(gray, setting.quality))
        else:  # pragma: no cover
            raise RestoreError(f"unknown protocol {p}")


# -- scoring -----------------------------------------------------------------------------------


def metric_view(levels: Tensor, channel: Channel) -> Tensor:
    """C×H×W levels (0–255) → the channel(s) scored: Y (unrounded, 0–255 scale) or as they are."""
    if channel == "y" and levels.shape[0] == 3:
        return rgb_to_y(levels / 255.0) * 255.0
    return levels


def score(output_levels: Tensor, reference: Tensor, metrics: list[str], channel: Channel, border: int,
          item: str) -> dict[str, float]:
    a, b = metric_view(output_levels, channel), metric_view(reference, channel)
    functions = {"psnr": psnr, "ssim": ssim, "psnr_b": psnr_b, "lsd_hf": lsd_hf, "hf_db": hf_energy_db}
    try:
        return {m: functions[m](a, b, border=border) for m in metrics}
    except ValueError as exc:
        raise RestoreError(f"cannot score {item}: {exc}") from None


# -- the runner --------------------------------------------------------------------------------


@dataclass
class SaveOptions:
    folder: Path
    inputs: bool = False


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text)


def output_name(case: Case, method: Method) -> str:
    """`<item>_<setting>.png` for the (first) model; other methods add `_<key or label>`."""
    base = f"{case.item}_{case.setting.name}"
    if method.key == "model":
        return f"{base}.png"
    if method.kind == "model":
        return f"{base}_{_slug(method.label)}.png"
    return f"{base}_{method.key}.png"


def _write_levels(path: Path, levels: Tensor) -> None:
    from restore_cli.io.images import ImageData, write_image

    pixels = (levels.permute(1, 2, 0).numpy() / 255.0).astype(np.float32)
    write_image(path, ImageData(pixels, None, 8, None, None, "png"), format="png")


ProgressCallback = Callable[[int, int, Case, dict[str, dict[str, float]]], None]


def software_versions() -> dict[str, str]:
    import PIL
    import scipy

    from restore_cli import __version__

    return {"restore": __version__, "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version(), "platform": platform.platform()}


def evaluate(config: EvalConfig, methods: list[Method], *, save: SaveOptions | None = None,
             on_case: ProgressCallback | None = None, command: str | None = None,
             run_details: dict[str, Any] | None = None) -> Report:
    """Run every method on every (image, setting) and score it; returns the report.
    `run_details` (e.g. the tiling) is recorded in the report's "run" block."""
    if not methods:
        raise RestoreError("nothing to evaluate: no model and no baselines (add --baseline)")
    files, total_files = list_images(config.data, config.limit, config.shard)
    metrics = protocol_metrics(config)
    started = time.time()
    clock = time.perf_counter()
    method_seconds = {m.key: 0.0 for m in methods}
    records: list[dict[str, Any]] = []
    if save is not None:
        save.folder.mkdir(parents=True, exist_ok=True)
    total = len(files) * len(config.settings)
    done = 0
    items: set[str] = set()
    channel_counts: set[int] = set()
    for path in files:
        stem = path.stem
        image = read_levels(path)
        channel_counts.add(int(image.shape[-1]))
        previous_setting = None
        for case in make_cases(config, stem, path, image):
            scores: dict[str, dict[str, float]] = {}
            items.add(case.item)
            for method in methods:
                t0 = time.perf_counter()
                restored = restored_to_reference_size(method.restore(case), case)
                method_seconds[method.key] += time.perf_counter() - t0
                levels = quantize_to_uint8_levels(restored[0])
                values = score(levels, case.reference, metrics, config.channel, case.setting.crop_border, case.item)
                scores[method.key] = values
                record: dict[str, Any] = {"image": case.item, "setting": case.setting.name, "method": method.key, **values}
                if case.details:
                    record["details"] = dict(case.details)
                records.append(record)
                if save is not None and method.save_outputs:
                    _write_levels(save.folder / output_name(case, method), levels)
            if save is not None and save.inputs:
                _write_levels(save.folder / f"{case.item}_{case.setting.name}_input.png", quantize_to_uint8_levels(case.degraded[0]))
            if case.setting is not previous_setting:
                done += 1
                previous_setting = case.setting
            if on_case is not None:
                on_case(done, total, case, scores)
    wall = time.perf_counter() - clock
    described = [m.describe() for m in methods]
    placements = sorted({(mm["device"], mm["precision"]) for d in described for mm in d.get("models", [])})
    run = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_time_s": round(wall, 3),
        "method_time_s": {k: round(v, 3) for k, v in method_seconds.items()},
        "device": ", ".join(d for d, _ in placements) or "cpu (baselines only)",
        "precision": ", ".join(sorted({p for _, p in placements})) or "fp64 (baselines)",
        "command": command or " ".join(sys.argv),
        **(run_details or {}),
    }
    data = {"dir": str(config.data), "name": Path(config.data).resolve().name, "count": len(files),
            "total_in_dir": total_files, "limit": config.limit, "images": [p.name for p in files],
            "image_channels": sorted(channel_counts)}
    if config.shard is not None:
        data["shard"] = f"{config.shard[0]}/{config.shard[1]}"
    if config.protocol is ProtocolName.toolchain and config.patch:
        data["items"] = len(items)
    return Report(
        protocol=config.protocol.value, protocol_details=describe_protocol(config), data=data,
        settings=[s.to_json() for s in config.settings], methods=described, metrics=metrics, records=records,
        layout=protocol_layout(config), software=software_versions(), run=run,
    )


def settings_summary(config: EvalConfig) -> str:
    """One line for -v: what is about to run."""
    names = [s.name for s in config.settings]
    shown = ", ".join(names[:6]) + (f", … ({len(names)} settings)" if len(names) > 6 else "")
    extra = f", kernels {config.kernels.path.name} ({len(config.kernels)})" if config.kernels is not None else ""
    return (f"{config.protocol.value}: {shown}; channel {config.channel}, seed {config.seed}{extra}, "
            f"boundary {config.pad_mode}" + (", noise clipped" if config.clip_noise else ""))

