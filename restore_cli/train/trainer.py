"""The training loop for the denoiser and USRNet: typed configuration, set-up, steps,
validation, logging, checkpoints, exact resume and several processes (DDP).

`run_training(config)` is the whole library entry point; the CLI only builds a `TrainConfig`.

Reproducibility: every random choice of a process comes from one numpy Generator and one CPU
torch Generator seeded from (seed, rank); model initialisation from `seed` alone. Checkpoints
carry both generator states of every rank, the optimizer state and the step; the learning rate
is a function of the step (MultiStepLR), so a run resumed at step k reaches step n with weights
bit-identical to an uninterrupted run on the same device and thread count.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.engine.device import select_device, select_precision
from restore_cli.engine.units import sigma_to_unit
from restore_cli.errors import RestoreError
from restore_cli.ops.dct import SfmMode
from restore_cli.ops.metrics import psnr, quantize_to_uint8_levels
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import BatchPrefetcher, ImageSet, center_crop, load_image_set, sample_patches, uint8_to_tensor
from restore_cli.train.distributed import (
    DistributedContext,
    agree,
    gather_json,
    start_distributed,
    stop_distributed,
    sum_over_ranks,
)
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
StopReason = Literal["completed", "interrupted", "time_limit"]

ARCH_OF_TASK: dict[str, str] = {"denoiser": "resunet-denoiser", "usrnet": "usrnet"}
MANIFEST_TASK: dict[str, str] = {"denoiser": "denoise", "usrnet": "sr"}
DEFAULT_NOISE_RANGE: dict[str, tuple[float, float]] = {"denoiser": (0.0, 50.0), "usrnet": (0.0, 25.0)}
DEFAULT_SFM_MODE: dict[str, str] = {"denoiser": "targeted", "usrnet": "central"}
# Architecture options a user may set (`--arch-config`); the channel counts follow --channels.
TUNABLE_KEYS: dict[str, tuple[str, ...]] = {"denoiser": ("nc", "nb"), "usrnet": ("n_iter", "h_nc", "nc", "nb")}
LOG_FILE = "log.jsonl"
# Weights, activations and optimizer state in channels_last (see the measurements in the report).
TRAINING_MEMORY_FORMAT = torch.channels_last
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
        need(not self.freeze_prior or self.init_weights is not None, "--freeze-prior needs --init-prior (a frozen random prior learns nothing)")
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
        return tuple(sorted(int(round(m * self.steps)) if m < 1 else int(m) for m in self.milestones))

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
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("milestones", "scales", "data", "noise_range"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class RunInfo:
    """What a run is about to do, for the progress display."""

    task: str
    arch: str
    model_config: dict[str, Any]
    parameters: int
    images: int
    skipped_images: int
    val_images: int
    start_step: int
    total_steps: int
    device: str
    precision: str
    world_size: int
    output: Path


@dataclass
class TrainResult:
    """How a run ended: the last step, why it stopped, its last checkpoint, and this process's
    final model tensors (CPU) and per-step losses (of this run, not of resumed history)."""

    step: int
    reason: StopReason
    checkpoint: Path | None
    model_state: dict[str, Tensor]
    losses: list[float]
    val_psnr: float | None
    rank: int = 0


class TrainingObserver(Protocol):
    """Receives progress on the main process only (rank 0)."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, step: int, loss: float) -> None: ...

    def on_record(self, record: dict[str, Any]) -> None: ...

    def on_finish(self, result: TrainResult) -> None: ...


class SilentObserver:
    def on_start(self, info: RunInfo) -> None:
        pass

    def on_step(self, step: int, loss: float) -> None:
        pass

    def on_record(self, record: dict[str, Any]) -> None:
        pass

    def on_finish(self, result: TrainResult) -> None:
        pass


# --- small pure pieces ---------------------------------------------------------------------------


def learning_rate_at(step: int, base_lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """MultiStepLR: base_lr · gamma^(number of milestones ≤ step), `step` = optimizer steps done."""
    return base_lr * gamma ** sum(1 for m in milestones if m <= step)


def rank_generators(seed: int, rank: int) -> tuple[np.random.Generator, torch.Generator]:
    """The two generators of one process: numpy (recipe draws) and CPU torch (tensor draws)."""
    rng = np.random.default_rng([seed, rank, 0])
    torch_seed = int(np.random.SeedSequence([seed, rank, 1]).generate_state(1, dtype=np.uint64)[0]) % (2**63)
    return rng, torch.Generator().manual_seed(torch_seed)


def build_training_model(config: TrainConfig) -> nn.Module:
    """The network, initialised from `config.seed` (the global torch RNG is forked, not touched)."""
    from restore_cli.models.architectures import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.arch, config.model_config())


def load_init_weights(model: nn.Module, config: TrainConfig) -> str:
    """Load `config.init_weights` into the denoiser, or into USRNet's prior p; "exact"/"converted"."""
    from restore_cli.engine.weights import read_safetensors
    from restore_cli.train.init import load_resunet_weights

    assert config.init_weights is not None
    tensors, metadata = read_safetensors(config.init_weights)
    if config.task == "usrnet":
        return load_resunet_weights(model.p, tensors, metadata, config.init_weights, "--init-prior")  # type: ignore[arg-type]
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
    differences = []
    for f in fields(TrainConfig):
        if f.name in RESUME_FREE_FIELDS or f.name == "arch_config":
            continue
        a, b = getattr(stored, f.name), getattr(current, f.name)
        if a != b:
            differences.append(f"{f.name} {a!r} → {b!r}")
    if stored.model_config() != current.model_config():
        differences.append(f"architecture {stored.model_config()} → {current.model_config()}")
    if stored.resolved_milestones() != current.resolved_milestones():
        differences.append(
            f"milestones {list(stored.resolved_milestones())} → {list(current.resolved_milestones())} "
            "(give --milestones as step numbers to extend --steps)"
        )
    return differences


# --- interruption ---------------------------------------------------------------------------------


class StopRequest:
    """Set by SIGINT/SIGTERM while training: finish the step, save, stop. A second SIGINT
    raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


# --- the run ---------------------------------------------------------------------------------------


def run_training(config: TrainConfig, observer: TrainingObserver | None = None) -> TrainResult:
    """Train as `config` says (from scratch or from `config.resume`); returns how it ended.

    Under torchrun (WORLD_SIZE > 1) each process trains on its own patches and DDP keeps the
    weights identical; only rank 0 writes checkpoints and the log and talks to `observer`.
    """
    device = select_device(config.device)
    context = start_distributed(device.type == "cuda")
    try:
        if context.enabled and device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
        return _Run(config, observer or SilentObserver(), context, device).train()
    finally:
        stop_distributed(context)


class _Run:
    """One training run of one process; `train()` does set-up and the loop."""

    def __init__(self, config: TrainConfig, observer: TrainingObserver, context: DistributedContext, device: torch.device) -> None:
        self.config = config
        self.observer = observer if context.is_main else SilentObserver()
        self.context = context
        self.device = device
        # auto: bf16 (fp16 where unsupported) on CUDA, fp32 on the CPU; reduced precision is
        # autocast (weights, optimizer state and loss stay fp32), fp16 with loss scaling.
        self.placement = select_precision(config.precision, device)
        self.memory_format = TRAINING_MEMORY_FORMAT
        self.milestones = config.resolved_milestones()
        self.log_path = config.output / LOG_FILE
        self.clock_start = time.monotonic()  # --time-limit counts from here, set-up included

    # set-up ----------------------------------------------------------------------------------

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

    def _check_fresh_output(self) -> None:
        latest = self.config.output / ckpt.LATEST_NAME
        if latest.exists():
            raise RestoreError(
                "already holds a training run; continue it with --resume "
                f"{self.config.output} or choose another --output",
                self.config.output,
            )

    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        state = checkpoint.state
        stored = TrainConfig.from_json(state["config"])
        differences = resume_mismatches(stored, self.config)
        if differences:
            raise RestoreError("cannot resume with different settings: " + "; ".join(differences), checkpoint.path)
        if state["world_size"] != self.context.world_size:
            raise RestoreError(
                f"checkpoint was written by {state['world_size']} process(es); resume it with the same number "
                f"(now {self.context.world_size})",
                checkpoint.path,
            )
        if state["data_fingerprint"] != self.data_fingerprint:
            raise RestoreError("the training images differ from those the checkpoint was trained on", checkpoint.path)
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        rng_state = state["rng"][self.context.rank]
        self.rng = ckpt.numpy_rng_from_state(rng_state["numpy"])
        ckpt.set_torch_rng_state(self.generator, rng_state["torch"])
        if rng_state.get("cuda") and self.device.type == "cuda":
            ckpt.set_cuda_rng_state(self.device, rng_state["cuda"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = checkpoint.step
        self.last_val = state.get("last_val")
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    def _truncate_log(self) -> None:
        """Drop log records past the resumed step (written after that checkpoint, then lost)."""
        from restore_cli.io.atomic import atomic_write_text

        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def _setup(self) -> None:
        cfg = self.config
        checkpoint = ckpt.load_checkpoint(cfg.resume) if cfg.resume is not None else None
        if checkpoint is None:
            self._check_fresh_output()
        self._load_data()
        self.rng, self.generator = rank_generators(cfg.seed, self.context.rank)
        self.model = build_training_model(cfg)
        if checkpoint is None:
            initialise_model(self.model, cfg)
        if cfg.freeze_prior:
            self.model.p.requires_grad_(False)  # type: ignore[union-attr]
        self.model.to(self.device, memory_format=self.memory_format)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.scaler = torch.amp.GradScaler("cuda") if self.placement.precision == "fp16" else None
        self.step = 0
        self.last_val = None
        self.elapsed_before = 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        if self.context.is_main:
            cfg.output.mkdir(parents=True, exist_ok=True)
            if checkpoint is not None:
                self._truncate_log()
        self.net: nn.Module = self.model
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.loss_fn: Callable[[Tensor, Tensor], Tensor] = F.l1_loss if cfg.loss == "l1" else F.mse_loss

    # pieces of a step --------------------------------------------------------------------------

    def _make_batch(self) -> TrainingBatch:
        """The next training batch, on the CPU (called by the prefetcher only)."""
        cfg = self.config
        clean = sample_patches(self.images, cfg.batch, cfg.patch, self.rng)
        if cfg.task == "denoiser":
            return denoiser_batch(clean, cfg.noise_range_unit(), self.rng, self.generator, cfg.sfm())
        return usrnet_batch(clean, cfg.scales, cfg.noise_range_unit(), self.rng, self.generator, cfg.sfm())

    def _rng_snapshot(self) -> dict[str, Any]:
        return {"numpy": ckpt.numpy_rng_state(self.rng), "torch": ckpt.torch_rng_state(self.generator)}

    def _train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.step, self.config.lr, self.milestones, self.config.lr_gamma)
        cpu_batch, self.rng_state = self.batches.next()
        batch = cpu_batch.to(self.device, self.memory_format)
        with self.placement.autocast():
            output = self.net(*batch.model_args())
        loss = self.loss_fn(output.float(), batch.target)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.step += 1
        return float(loss.detach().item())

    @torch.no_grad()
    def _validate(self) -> float:
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
        return float(np.mean(values))

    def _write_log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.observer.on_record(record)

    def _save(self, elapsed: float) -> Path | None:
        rng_state = dict(self.rng_state)  # where the batch after the last one consumed starts
        if self.device.type == "cuda":
            rng_state["cuda"] = ckpt.cuda_rng_state(self.device)
        all_rng = gather_json(self.context, rng_state, self._collective_device())
        if not self.context.is_main:
            return None
        state = {
            "config": self.config.to_json(),
            "arch": self.config.arch,
            "model_config": self.config.model_config(),
            "task": self.config.task,
            "precision": self.placement.precision,
            "world_size": self.context.world_size,
            "rng": all_rng,
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data_fingerprint": self.data_fingerprint,
            "images": len(self.images),
            "last_val": self.last_val,
            "elapsed_s": elapsed,
            "torch_version": torch.__version__,
        }
        path = ckpt.save_checkpoint(
            self.config.output, self.step, self.model.state_dict(), self.optimizer.state_dict(), state, keep=self.config.keep_checkpoints
        )
        self._write_log({"kind": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # the loop --------------------------------------------------------------------------------------

    def _run_info(self) -> RunInfo:
        cfg = self.config
        return RunInfo(
            task=cfg.task,
            arch=cfg.arch,
            model_config=cfg.model_config(),
            parameters=sum(p.numel() for p in self.model.parameters()),
            images=len(self.images),
            skipped_images=len(self.images.skipped),
            val_images=len(self.val_images),
            start_step=self.step,
            total_steps=cfg.steps,
            device=str(self.device),
            precision=self.placement.precision,
            world_size=self.context.world_size,
            output=cfg.output,
        )

    def _log_interval(self, losses: list[float], interval_start: float) -> None:
        """One `train` record: mean loss over the interval and all ranks, lr, steps/s."""
        cfg = self.config
        total_loss, count = sum_over_ranks(self.context, [sum(losses), len(losses)], self._collective_device())
        now = time.monotonic()
        self._write_log({
            "kind": "train",
            "step": self.step,
            "loss": total_loss / max(count, 1),
            "lr": learning_rate_at(self.step - 1, cfg.lr, self.milestones, cfg.lr_gamma),
            "steps_per_s": len(losses) / max(now - interval_start, 1e-9),
            "elapsed_s": self.elapsed_before + now - self.loop_start,
        })

    def _loop(self, stop: StopRequest, losses: list[float]) -> tuple[StopReason, Path | None]:
        """Steps until `steps`, Ctrl-C/SIGTERM or the time limit; returns why and the last checkpoint."""
        cfg = self.config
        checkpoint_path: Path | None = None
        interval_start, interval_from = time.monotonic(), 0
        while self.step < cfg.steps:
            loss = self._train_step()
            losses.append(loss)
            self.observer.on_step(self.step, loss)
            out_of_time = cfg.time_limit is not None and time.monotonic() - self.clock_start >= cfg.time_limit
            interrupted, out_of_time, diverged = agree(
                self.context, [stop.requested, out_of_time, not math.isfinite(loss)], self._collective_device()
            )
            if diverged:
                raise RestoreError(
                    f"training diverged: the loss is not finite at step {self.step}; resume from the last "
                    "checkpoint with a lower --lr (or fp32 precision)",
                    cfg.output,
                )
            last = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last:
                self._log_interval(losses[interval_from:], interval_start)
                interval_start, interval_from = time.monotonic(), len(losses)
            if self.val_images and (self.step % cfg.val_every == 0 or last):
                self.last_val = {"step": self.step, "psnr": self._validate(), "protocol": self._val_protocol()}
                self._write_log({"kind": "val", **self.last_val})
            if self.step % cfg.checkpoint_every == 0 or last or interrupted or out_of_time:
                elapsed = self.elapsed_before + time.monotonic() - self.loop_start
                checkpoint_path = self._save(elapsed) or checkpoint_path
            if interrupted or out_of_time:
                return ("interrupted" if interrupted else "time_limit"), checkpoint_path
        return "completed", checkpoint_path

    def train(self) -> TrainResult:
        cfg = self.config
        self._setup()
        self.observer.on_start(self._run_info())
        self._write_log({"kind": "start", "step": self.step, "steps": cfg.steps, "device": str(self.device),
                         "precision": self.placement.precision, "world_size": self.context.world_size,
                         "images": len(self.images), "skipped_images": [str(p) for p in self.images.skipped]})
        # Batches are made on the CPU; on CUDA a thread makes them ahead while the GPU computes.
        depth = cfg.prefetch if cfg.prefetch is not None else (2 if self.device.type == "cuda" else 0)
        self.rng_state = self._rng_snapshot()
        self.batches = BatchPrefetcher(self._make_batch, self._rng_snapshot, depth)
        losses: list[float] = []
        self.loop_start = time.monotonic()
        self.model.train()
        try:
            with StopRequest().installed() as stop:
                reason, checkpoint_path = self._loop(stop, losses)
        finally:
            self.batches.close()
        if checkpoint_path is None and cfg.resume is not None and self.context.is_main:
            checkpoint_path = ckpt.resolve_checkpoint(cfg.resume)  # nothing was left to train
        result = TrainResult(
            step=self.step,
            reason=reason,
            checkpoint=checkpoint_path,
            model_state={k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()},
            losses=losses,
            val_psnr=None if self.last_val is None else float(self.last_val["psnr"]),
            rank=self.context.rank,
        )
        self._write_log({"kind": "stop", "step": self.step, "reason": reason})
        self.observer.on_finish(result)
        return result

    def _val_protocol(self) -> str:
        if self.config.task == "denoiser":
            return f"sigma {VAL_DENOISER_SIGMA_255:g}, seed 0+index, unclipped, centre crop <= {self.config.val_max_size}, border 0"
        return (
            f"x{VAL_USRNET_SCALE}, gaussian:{VAL_USRNET_KERNEL_WIDTH:g},25 wrap, sigma 0, "
            f"centre crop <= {self.config.val_max_size}, border {VAL_USRNET_SCALE}"
        )
