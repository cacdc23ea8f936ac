"""Training the denoiser and USRNet: typed configuration, model set-up, the training step and
validation; the loop, logging, checkpoints, exact resume and DDP are `train.run_loop`'s.

`run_training(config)` is the whole library entry point; the CLI only builds a `TrainConfig`.

Reproducibility: every random choice of a process comes from one numpy Generator and one CPU
torch Generator seeded from (seed, rank); model initialisation from `seed` alone. Checkpoints
carry both generator states of every rank, the optimizer state and the step; the learning rate
is a function of the step (MultiStepLR), so a run resumed at step k reaches step n with weights
bit-identical to an uninterrupted run on the same device and thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.engine.units import sigma_to_unit
from restore_cli.errors import RestoreError
from restore_cli.ops.dct import SfmMode
from restore_cli.ops.metrics import psnr, quantize_to_uint8_levels
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import ImageSet, center_crop, load_image_set, sample_patches, uint8_to_tensor
from restore_cli.train.model_export import weights_record
from restore_cli.train.progress import TrainingObserver, TrainResult
from restore_cli.train.run_config import as_step, changed_settings, config_from_json, config_to_json, milestone_change
from restore_cli.train.run_loop import TrainingRun, built_with_seed, train_in_process_group
from restore_cli.train.tasks import (
    VAL_DENOISER_SIGMA_255,
    VAL_USRNET_KERNEL_WIDTH,
    VAL_USRNET_SCALE,
    SfmSettings,
    TaskName,
    TrainingBatch,
    denoiser_batch,
    denoiser_validation_batch,
    usrnet_batch,
    usrnet_validation_batch,
)

PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
LossName = Literal["l1", "l2"]
HyperInit = Literal["random", "dpir"]

ARCH_OF_TASK: dict[str, str] = {"denoiser": "resunet-denoiser", "usrnet": "usrnet"}
MANIFEST_TASK: dict[str, str] = {"denoiser": "denoise", "usrnet": "sr"}
DEFAULT_NOISE_RANGE: dict[str, tuple[float, float]] = {"denoiser": (0.0, 50.0), "usrnet": (0.0, 25.0)}
DEFAULT_SFM_MODE: dict[str, str] = {"denoiser": "targeted", "usrnet": "central"}
# Architecture options a user may set (`--arch-config`); the channel counts follow --channels.
TUNABLE_KEYS: dict[str, tuple[str, ...]] = {"denoiser": ("nc", "nb"), "usrnet": ("n_iter", "h_nc", "nc", "nb")}
# Fields that may differ between a checkpoint's config and the config resuming it.
RESUME_FREE_FIELDS = frozenset(
    {"data", "val", "output", "steps", "milestones", "checkpoint_every", "keep_checkpoints", "time_limit",
     "val_every", "val_max_size", "log_every", "resume", "command_line", "device", "precision", "init_weights",
     "prefetch"}
)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on, validated once here (RestoreError on bad values).

    Noise levels are on the 0–255 scale. `milestones` are fractions of `steps` (< 1) or step
    numbers (≥ 1); the learning rate is multiplied by `lr_gamma` at each. `noise_range` and
    `sfm_mode` default per task (denoiser: 0–50, targeted; usrnet: 0–25, central).
    """

    task: TaskName
    data: tuple[Path, ...]
    output: Path
    val: Path | None = None
    channels: int = 3
    arch_config: dict[str, Any] = field(default_factory=dict)
    patch: int = 96
    batch: int = 16
    steps: int = 100_000
    lr: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    lr_gamma: float = 0.5
    loss: LossName = "l1"
    noise_range: tuple[float, float] | None = None
    scales: tuple[int, ...] = (1, 2, 3, 4)
    sfm_rate: float = 0.0
    sfm_mode: SfmMode | None = None
    sfm_center: float = 0.85
    sfm_spread: float = 0.15
    init_weights: Path | None = None
    freeze_prior: bool = False
    init_hyper: HyperInit = "random"
    seed: int = 0
    precision: PrecisionName = "auto"
    device: str = "auto"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    time_limit: float | None = None
    val_every: int = 1000
    val_max_size: int = 256
    log_every: int = 100
    resume: Path | None = None
    command_line: str = ""
    prefetch: int | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.task not in ARCH_OF_TASK:
            raise RestoreError(f"unknown training task {self.task!r}; expected denoiser or usrnet")
        set_("data", tuple(Path(p) for p in self.data))
        set_("output", Path(self.output))
        for name in ("val", "init_weights", "resume"):
            if getattr(self, name) is not None:
                set_(name, Path(getattr(self, name)))
        set_("arch_config", dict(self.arch_config))
        set_("milestones", tuple(float(m) for m in self.milestones))
        set_("scales", _ints(self.scales))
        noise = DEFAULT_NOISE_RANGE[self.task] if self.noise_range is None else self.noise_range
        set_("noise_range", (float(noise[0]), float(noise[1])))
        set_("sfm_mode", DEFAULT_SFM_MODE[self.task] if self.sfm_mode is None else self.sfm_mode)
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RestoreError(message)

        need(len(self.data) > 0, "give at least one --data folder")
        need(self.channels in (1, 3), f"--channels must be 1 or 3, got {self.channels}")
        need(self.batch >= 1, f"--batch must be >= 1, got {self.batch}")
        need(self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        need(self.patch >= 8, f"--patch must be >= 8, got {self.patch}")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0 < self.lr_gamma <= 1, f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        for m in self.milestones:
            need(m > 0 and (m < 1 or m == int(m)), f"--milestones: {m:g} is neither a fraction in (0, 1) nor a step number")
        need(self.loss in get_args(LossName), f"--loss must be l1 or l2, got {self.loss!r}")
        lo, hi = self.noise_range  # type: ignore[misc]
        need(0 <= lo <= hi <= 255, f"--noise-range must satisfy 0 <= low <= high <= 255, got {lo:g},{hi:g}")
        if self.task == "usrnet":
            need(len(self.scales) > 0 and all(s >= 1 for s in self.scales), f"--scales must be positive integers, got {self.scales}")
            bad = [s for s in self.scales if self.patch % s]
            need(not bad, f"--patch {self.patch} is not divisible by scale(s) {bad}")
        need(0 <= self.sfm_rate <= 1, f"--sfm-rate must be in [0, 1], got {self.sfm_rate}")
        need(self.sfm_mode in get_args(SfmMode), f"--sfm-mode must be one of {', '.join(get_args(SfmMode))}, got {self.sfm_mode!r}")
        need(0 <= self.sfm_center <= 1 and self.sfm_spread >= 0, "--sfm-center must be in [0, 1] and --sfm-spread >= 0")
        need(self.task == "usrnet" or not self.freeze_prior, "--freeze-prior applies to usrnet training only")
        need(self.task == "usrnet" or self.init_hyper == "random", "--init-hyper applies to usrnet training only")
        need(self.init_hyper in get_args(HyperInit), f"--init-hyper must be one of {', '.join(get_args(HyperInit))}")
        need(not self.freeze_prior or self.init_weights is not None, "--freeze-prior needs --init (a frozen random prior learns nothing)")
        need(self.precision in get_args(PrecisionName), f"--precision must be one of {', '.join(get_args(PrecisionName))}")
        need(self.checkpoint_every >= 1, "--checkpoint-every must be >= 1")
        need(self.keep_checkpoints >= 0, "--keep must be >= 0 (0 keeps every checkpoint)")
        need(self.time_limit is None or self.time_limit > 0, "--time-limit must be positive")
        need(self.val_every >= 1 and self.log_every >= 1, "--val-every and --log-every must be >= 1")
        need(self.val_max_size >= 16, "validation crop must be at least 16 pixels")
        need(self.prefetch is None or self.prefetch >= 0, "prefetch depth must be >= 0")
        self.model_config()  # raises on a bad --arch-config

    @property
    def arch(self) -> str:
        return ARCH_OF_TASK[self.task]

    def resolved_milestones(self) -> tuple[int, ...]:
        """Milestones as step numbers, sorted."""
        return tuple(sorted(as_step(m, self.steps) for m in self.milestones))

    def noise_range_unit(self) -> tuple[float, float]:
        lo, hi = self.noise_range  # type: ignore[misc]
        return sigma_to_unit(lo), sigma_to_unit(hi)

    def sfm(self) -> SfmSettings | None:
        if self.sfm_rate <= 0:
            return None
        return SfmSettings(rate=self.sfm_rate, mode=self.sfm_mode, center=self.sfm_center, spread=self.sfm_spread)  # type: ignore[arg-type]

    def model_config(self) -> dict[str, Any]:
        """The full architecture config: defaults (or a named preset), the --arch-config keys,
        and the channel counts from --channels."""
        from restore_cli.models.architectures import PRESETS, get_architecture

        architecture = get_architecture(self.arch)
        overrides = dict(self.arch_config)
        base: dict[str, Any] = dict(architecture.default_config)
        preset = overrides.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS or PRESETS[preset][0] != self.arch:
                known = ", ".join(name for name, (arch, _) in PRESETS.items() if arch == self.arch)
                raise RestoreError(f"--arch-config: unknown {self.arch} preset {preset!r} (known: {known})")
            base = dict(PRESETS[preset][1])
        allowed = TUNABLE_KEYS[self.task]
        for key, value in overrides.items():
            if key not in allowed:
                hint = " (set by --channels)" if key in ("channels", "in_nc", "out_nc") else ""
                raise RestoreError(f"--arch-config: {self.task} has no option {key!r}{hint}; options: {', '.join(allowed)}, preset")
            if key == "nc":
                ok = isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, int) and v >= 1 for v in value)
                if not ok:
                    raise RestoreError(f"--arch-config: nc must be 4 positive integers (one width per scale), got {value!r}")
            elif not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise RestoreError(f"--arch-config: {key} must be a positive integer, got {value!r}")
            base[key] = value
        if self.task == "denoiser":
            base["channels"] = self.channels
        else:
            base["in_nc"], base["out_nc"] = self.channels + 1, self.channels
        return architecture.full_config(base)

    def to_json(self) -> dict[str, Any]:
        return config_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_json(cls, data, ("milestones", "scales", "data", "noise_range"))


def build_training_model(config: TrainConfig) -> nn.Module:
    """The network, initialised from `config.seed` (the global torch RNG is forked, not touched)."""
    from restore_cli.models.architectures import build_model

    return built_with_seed(config.seed, lambda: build_model(config.arch, config.model_config()))


def load_init_weights(model: nn.Module, config: TrainConfig) -> str:
    """Load `config.init_weights` into the denoiser, or for USRNet into the whole model (a usrnet
    file: fine-tuning) or its prior p (a resunet-denoiser file); "exact"/"converted"."""
    from restore_cli.engine.weights import read_safetensors
    from restore_cli.train.init import load_resunet_weights, load_usrnet_weights

    assert config.init_weights is not None
    tensors, metadata = read_safetensors(config.init_weights)
    if config.task == "usrnet" and metadata.get("arch") == "usrnet":
        if config.init_hyper != "random":
            raise RestoreError("--init-hyper dpir would replace the H of this usrnet file; leave it out to fine-tune", config.init_weights)
        return load_usrnet_weights(model, tensors, config.init_weights)
    if config.task == "usrnet":
        return load_resunet_weights(model.p, tensors, metadata, config.init_weights, "--init")  # type: ignore[arg-type]
    return load_resunet_weights(model, tensors, metadata, config.init_weights, "--init")


def initialise_model(model: nn.Module, config: TrainConfig) -> None:
    """The starting point of a fresh run: --init/--init-prior weights, H fitted to the DPIR
    schedule (--init-hyper dpir), the prior frozen (--freeze-prior)."""
    if config.init_weights is not None:
        load_init_weights(model, config)
    if config.task != "usrnet":
        return
    if config.init_hyper == "dpir":
        from restore_cli.train.init import fit_hyper_schedule

        fit_hyper_schedule(model.h, model.n_iter, config.scales, config.noise_range_unit()[1], seed=config.seed)  # type: ignore[arg-type]


def resume_mismatches(stored: TrainConfig, current: TrainConfig) -> list[str]:
    """The settings in which `current` differs from the checkpoint's `stored` config (those that
    change the numbers of the run); an empty list means the run can continue."""
    differences = changed_settings(stored, current, RESUME_FREE_FIELDS | {"arch_config"})
    if stored.model_config() != current.model_config():
        differences.append(f"architecture {stored.model_config()} → {current.model_config()}")
    return differences + milestone_change(stored, current)


# --- the run ---------------------------------------------------------------------------------------


def run_training(config: TrainConfig, observer: TrainingObserver | None = None) -> TrainResult:
    """Train as `config` says (from scratch or from `config.resume`); returns how it ended.

    Under torchrun (WORLD_SIZE > 1) each process trains on its own patches and DDP keeps the
    weights identical; only rank 0 writes checkpoints and the log and talks to `observer`.
    """
    return train_in_process_group(_ImageTaskRun, config, observer)


class _ImageTaskRun(TrainingRun):
    """A denoiser or USRNet run of one process (`TrainingRun` does set-up, loop and checkpoints)."""

    config: TrainConfig

    def _load_data(self) -> None:
        cfg = self.config
        self.images: ImageSet = load_image_set(cfg.data, cfg.channels, min_size=cfg.patch)
        self.data_fingerprint = self.images.fingerprint()
        self.val_images: list[Tensor] = []
        if cfg.val is not None and self.context.is_main:
            multiple = VAL_USRNET_SCALE if cfg.task == "usrnet" else 1
            val_set = load_image_set([cfg.val], cfg.channels, min_size=multiple)
            self.val_images = [
                uint8_to_tensor(center_crop(image, cfg.val_max_size, multiple)[None]) for image in val_set.images
            ]

    def _config_mismatches(self, stored: TrainConfig) -> list[str]:
        return resume_mismatches(stored, self.config)

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        self.model = build_training_model(cfg)
        if checkpoint is None:
            initialise_model(self.model, cfg)
            if cfg.init_weights is not None:
                self.init_record = weights_record(cfg.init_weights)
        if cfg.freeze_prior:
            self.model.p.requires_grad_(False)  # type: ignore[union-attr]
        self.model.to(self.device, memory_format=self.memory_format)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.base_lrs = [cfg.lr]

    def _finish_setup(self) -> None:
        self.net = self._distributed(self.model)
        self.loss_fn: Callable[[Tensor, Tensor], Tensor] = F.l1_loss if self.config.loss == "l1" else F.mse_loss

    def _start_fields(self) -> dict[str, Any]:
        return {**super()._start_fields(), "skipped_images": [str(p) for p in self.images.skipped]}

    def _before_loop(self) -> None:
        self.model.train()

    def _make_batch(self) -> TrainingBatch:
        cfg = self.config
        clean = sample_patches(self.images, cfg.batch, cfg.patch, self.rng)
        if cfg.task == "denoiser":
            return denoiser_batch(clean, cfg.noise_range_unit(), self.rng, self.generator, cfg.sfm())
        return usrnet_batch(clean, cfg.scales, cfg.noise_range_unit(), self.rng, self.generator, cfg.sfm())

    def _step(self, cpu_batch: TrainingBatch) -> dict[str, float]:
        batch = cpu_batch.to(self.device, self.memory_format)
        with self.placement.autocast():
            output = self.net(*batch.model_args())
        loss = self.loss_fn(output.float(), batch.target)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._optimizer_step()
        return {"loss": float(loss.detach().item())}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        """Mean PSNR (uint8 levels) over the validation images, fp32. Denoiser: σ 25, border 0;
        USRNet: ×4, Gaussian width 1.6, no noise, border 4."""
        cfg = self.config
        self.model.eval()
        values = []
        for index, clean in enumerate(self.val_images):
            if cfg.task == "denoiser":
                batch: TrainingBatch = denoiser_validation_batch(clean, index)
                border = 0
            else:
                batch = usrnet_validation_batch(clean)
                border = VAL_USRNET_SCALE
            batch = batch.to(self.device)
            output = self.model(*batch.model_args())
            values.append(psnr(quantize_to_uint8_levels(output[0]), quantize_to_uint8_levels(clean[0]), border=border))
        self.model.train()
        return {"psnr": float(np.mean(values)), "protocol": self._val_protocol()}

    def _val_protocol(self) -> str:
        if self.config.task == "denoiser":
            return f"sigma {VAL_DENOISER_SIGMA_255:g}, seed 0+index, unclipped, centre crop <= {self.config.val_max_size}, border 0"
        return (
            f"x{VAL_USRNET_SCALE}, gaussian:{VAL_USRNET_KERNEL_WIDTH:g},25 wrap, sigma 0, "
            f"centre crop <= {self.config.val_max_size}, border {VAL_USRNET_SCALE}"
        )
