"""SFT-GAN training: the category prior network (`restore train sftgan-prior`) and the generator
in two stages (`restore train sftgan --stage 1|2`), with the checkpoints, exact resume, time limit,
progress records and DDP of the other trainers (train/checkpoint.py, train/distributed.py,
train/data.py, and the loop pieces of train/trainer.py).

- sftgan-prior: the categories are derived from the training data (`ops.texture_categories`:
  k-means on texture and colour statistics of HR windows, seeded), stored in the prior network's
  buffers, and the network learns to predict them from the LR image: the per-pixel
  probabilities, averaged over each window's 8×8 LR footprint, are scored with the negative log
  likelihood of the window's category.
- sftgan stage 1: the generator alone with an L1 pixel loss (the PSNR-oriented start), conditioned
  on the frozen prior network's predictions from the LR patch (what inference will feed it).
- sftgan stage 2 (ANCHORS 5.4): adversarial training against a VGG-style discriminator with a
  real/fake head and a category head (cross-entropy on patch categories, mixed patches ignored);
  the generator gets the vanilla GAN loss (5e-3), the category loss (5e-3), a perceptual term and
  a small L1 pixel term (1e-2). SFT and condition-network layers learn at 5× the learning rate;
  the rest of the generator waits `trunk_warmup` steps (the reference's 20k of 600k).
  Perceptual term: discriminator feature matching (L1 between the four stage outputs of the
  discriminator, in eval mode, for the output and the HR patch). The reference's VGG19 features
  are a downloaded ImageNet network, which this project does not use; the discriminator is
  trained here, on these images, and is always available, whereas the project's denoiser is a
  separate optional model whose features were trained for noise removal, not for texture.

One Adam optimizer holds every trainable group (generator trunk, SFT/condition layers,
discriminator); in each half-step only the parameters being trained have gradients (the others
are set to None), so Adam leaves them alone and the checkpoint code saves one optimizer.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restore_cli.engine.device import select_device, select_precision
from restore_cli.errors import RestoreError
from restore_cli.models.sft import SCALE, CategoryDiscriminator, CategoryPriorNet, SFTGenerator, upsample_prior
from restore_cli.models.sftgan_architectures import PRESETS as SFTGAN_PRESETS
from restore_cli.models.sftgan_architectures import (
    TEXTURE_TASK,
    combined_config,
    read_prior_config,
    split_sftgan_config,
)
from restore_cli.ops.colour import rgb_to_y
from restore_cli.ops.metrics import crop_border, psnr, quantize_to_uint8_levels
from restore_cli.ops.texture_categories import FEATURE_NAMES, WINDOW, fit_texture_clusters, window_features
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.data import BatchPrefetcher, ImageSet, load_image_set
from restore_cli.train.distributed import (
    DistributedContext,
    agree,
    gather_json,
    start_distributed,
    stop_distributed,
    sum_over_ranks,
)
from restore_cli.train.sftgan_data import (
    IGNORE,
    GanBatch,
    PriorBatch,
    clusters_of,
    gan_batch,
    lr_from_hr,
    pooled_window_probabilities,
    prior_batch,
    sample_cluster_windows,
    store_clusters,
    validation_crop,
    window_grids,
)
from restore_cli.train.trainer import (
    LOG_FILE,
    RunInfo,
    StopReason,
    StopRequest,
    TrainingObserver,
    TrainResult,
    SilentObserver,
    learning_rate_at,
    rank_generators,
)

SftganTask = Literal["sftgan-prior", "sftgan"]
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
FAMILY = "sftgan"
GENERATOR_OPTIONS = ("nf", "nb", "cond_nc", "cond_hidden", "sft_hidden")
PRIOR_OPTIONS = ("nf", "nb")
DEFAULT_LR: dict[tuple[str, int], float] = {("sftgan-prior", 1): 1e-3, ("sftgan", 1): 2e-4, ("sftgan", 2): 1e-4}
# Fields that may differ between a checkpoint's config and the config resuming it.
RESUME_FREE_FIELDS = frozenset(
    {"data", "val", "output", "steps", "milestones", "checkpoint_every", "keep_checkpoints", "time_limit", "val_every",
     "val_max_size", "log_every", "resume", "command_line", "device", "precision", "prefetch", "prior_model", "init"}
)
VAL_BORDER = SCALE
LSD_BAND = (0.25, 0.5)
CLUSTER_SEED_STREAM = 2  # the clustering draws come from default_rng([seed, CLUSTER_SEED_STREAM])


@dataclass(frozen=True)
class SftganTrainConfig:
    """Everything an SFT-GAN training run depends on, validated once here (RestoreError).

    `lr` defaults per task and stage (prior 1e-3, stage 1 2e-4, stage 2 1e-4); `d_lr` to `lr`.
    `milestones` and `trunk_warmup` are fractions of `steps` (< 1) or step numbers (≥ 1).
    `arch_config`: generator options (nf, nb, cond_nc, cond_hidden, sft_hidden; preset sftgan or
    sftgan-small) for task sftgan, prior options (nf, nb) for sftgan-prior.
    """

    task: SftganTask
    data: tuple[Path, ...]
    output: Path
    val: Path | None = None
    stage: int = 1
    arch_config: dict[str, Any] = field(default_factory=dict)
    categories: int = 8
    cluster_samples: int = 20_000
    prior_model: Path | None = None
    init: Path | None = None
    d_nf: int = 64
    patch: int = 96
    batch: int = 16
    steps: int = 100_000
    lr: float | None = None
    d_lr: float | None = None
    sft_lr_factor: float = 5.0
    trunk_warmup: float = 0.05
    pixel_weight: float = 1e-2
    feature_weight: float = 1.0
    gan_weight: float = 5e-3
    category_weight: float = 5e-3
    d_category_weight: float = 1.0
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    lr_gamma: float = 0.5
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
        if self.task not in get_args(SftganTask):
            raise RestoreError(f"unknown training task {self.task!r}; expected sftgan-prior or sftgan")
        set_("data", tuple(Path(p) for p in self.data))
        set_("output", Path(self.output))
        for name in ("val", "prior_model", "init", "resume"):
            if getattr(self, name) is not None:
                set_(name, Path(getattr(self, name)))
        set_("arch_config", dict(self.arch_config))
        set_("milestones", tuple(float(m) for m in self.milestones))
        if self.task == "sftgan-prior":
            set_("stage", 1)
        if self.stage not in (1, 2):
            raise RestoreError(f"--stage must be 1 or 2, got {self.stage}")
        if self.lr is None:
            set_("lr", DEFAULT_LR[(self.task, int(self.stage))])
        if self.d_lr is None:
            set_("d_lr", self.lr)
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RestoreError(message)

        need(len(self.data) > 0, "give at least one --data folder")
        need(self.patch % 16 == 0 and self.patch >= WINDOW, f"--patch must be a multiple of 16 and at least {WINDOW}, got {self.patch}")
        need(self.batch >= 1 and self.steps >= 1, "--batch and --steps must be >= 1")
        for name in ("lr", "d_lr"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"--{name.replace('_', '-')} must be > 0, got {value}")
        need(0 < self.lr_gamma <= 1, f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        for m in (*self.milestones, self.trunk_warmup):
            need(m >= 0 and (m < 1 or m == int(m)), f"{m:g} is neither a fraction in [0, 1) nor a step number")
        need(self.sft_lr_factor > 0, "--sft-lr-factor must be > 0")
        for name in ("pixel_weight", "feature_weight", "gan_weight", "category_weight", "d_category_weight"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0")
        need(2 <= self.categories <= 64, f"--categories must be from 2 to 64, got {self.categories}")
        need(self.cluster_samples >= 10 * self.categories, f"--cluster-samples must be at least 10 per category ({10 * self.categories})")
        need(self.d_nf >= 1, "discriminator width must be >= 1")
        need(self.precision in get_args(PrecisionName), f"--precision must be one of {', '.join(get_args(PrecisionName))}")
        need(self.checkpoint_every >= 1 and self.keep_checkpoints >= 0, "--checkpoint-every must be >= 1 and --keep >= 0")
        need(self.time_limit is None or self.time_limit > 0, "--time-limit must be positive")
        need(self.val_every >= 1 and self.log_every >= 1, "--val-every and --log-every must be >= 1")
        need(self.val_max_size >= WINDOW, f"validation crop must be at least {WINDOW} pixels")
        need(self.prefetch is None or self.prefetch >= 0, "prefetch depth must be >= 0")
        if self.task == "sftgan":
            need(self.resume is not None or self.init is not None or self.prior_model is not None,
                 "give --prior-model (a trained sftgan-prior) or --init (an sftgan run or weights file)")
            need(self.init is None or self.prior_model is None,
                 "--init brings its own prior network; do not combine it with --prior-model")
        else:
            need(self.init is None and self.prior_model is None, "--init and --prior-model apply to `train sftgan` only")
        self.arch_options()  # raises on bad --arch-config

    @property
    def arch(self) -> str:
        return "sftgan-prior" if self.task == "sftgan-prior" else "sftgan"

    def arch_options(self) -> dict[str, Any]:
        """The validated --arch-config: a preset's options, then the explicit keys."""
        overrides = dict(self.arch_config)
        allowed = PRIOR_OPTIONS if self.task == "sftgan-prior" else GENERATOR_OPTIONS
        options: dict[str, Any] = {}
        preset = overrides.pop("preset", None)
        if preset is not None:
            wanted = "sftgan-prior" if self.task == "sftgan-prior" else "sftgan"
            if preset not in SFTGAN_PRESETS or SFTGAN_PRESETS[preset][0] != wanted:
                known = ", ".join(n for n, (a, _) in SFTGAN_PRESETS.items() if a == wanted)
                raise RestoreError(f"--arch-config: unknown {wanted} preset {preset!r} (known: {known})")
            config = SFTGAN_PRESETS[preset][1]
            options = {key: config[key] for key in allowed}
        for key, value in overrides.items():
            if key not in allowed:
                raise RestoreError(f"--arch-config: {self.task} has no option {key!r}; options: {', '.join(allowed)}, preset")
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise RestoreError(f"--arch-config: {key} must be a positive integer, got {value!r}")
            options[key] = value
        return options

    def prior_config(self) -> dict[str, Any]:
        """Full config of the prior network trained by `sftgan-prior`."""
        base = dict(SFTGAN_PRESETS["sftgan-prior"][1])
        base.update(self.arch_options())
        base.update({"categories": self.categories, "features": len(FEATURE_NAMES)})
        return base

    def generator_config(self, categories: int) -> dict[str, Any]:
        """Full generator config for `categories` maps (the prior network's)."""
        base = {key: SFTGAN_PRESETS["sftgan-generator"][1][key] for key in SFTGAN_PRESETS["sftgan-generator"][1]}
        base.update(self.arch_options())
        base["categories"] = categories
        return base

    def resolved_milestones(self) -> tuple[int, ...]:
        return tuple(sorted(_as_step(m, self.steps) for m in self.milestones))

    def warmup_steps(self) -> int:
        return _as_step(self.trunk_warmup, self.steps)

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
    def from_json(cls, data: dict[str, Any]) -> SftganTrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("milestones", "data"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


def _as_step(value: float, steps: int) -> int:
    return int(round(value * steps)) if value < 1 else int(value)


def resume_mismatches(stored: SftganTrainConfig, current: SftganTrainConfig) -> list[str]:
    """Settings that differ between a checkpoint's config and the one resuming it (those that
    change the numbers of the run)."""
    differences = []
    for f in fields(SftganTrainConfig):
        if f.name in RESUME_FREE_FIELDS:
            continue
        a, b = getattr(stored, f.name), getattr(current, f.name)
        if a != b:
            differences.append(f"{f.name} {a!r} → {b!r}")
    if stored.resolved_milestones() != current.resolved_milestones():
        differences.append(f"milestones {list(stored.resolved_milestones())} → {list(current.resolved_milestones())} "
                           "(give --milestones as step numbers to extend --steps)")
    if stored.warmup_steps() != current.warmup_steps():
        differences.append(f"trunk warm-up {stored.warmup_steps()} → {current.warmup_steps()} steps")
    return differences


# --- weights sources ------------------------------------------------------------------------------


def read_weights_source(path: Path) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """(arch, config, tensors) of an SFT-GAN family `.safetensors` file, checkpoint or run folder;
    a training checkpoint's discriminator tensors are left out."""
    from restore_cli.engine.weights import read_safetensors
    from restore_cli.models.architectures import get_architecture

    path = Path(path)
    if path.suffix.lower() == ".safetensors" or path.is_file():
        tensors, metadata = read_safetensors(path)
        arch = metadata.get("arch")
        if arch not in ("sftgan", "sftgan-prior", "sftgan-generator"):
            raise RestoreError(f"expected SFT-GAN weights (sftgan or sftgan-prior), this file holds {arch or 'no arch metadata'}", path)
        try:
            config = json.loads(metadata["config"]) if "config" in metadata else get_architecture(arch).infer_config(tensors)
        except ValueError as exc:
            raise RestoreError(f"weights do not fit {arch} ({exc})", path) from None
        return arch, config, tensors
    checkpoint = ckpt.resolve_checkpoint(path)
    state = ckpt.read_checkpoint_state(checkpoint)
    if state.get("family") != FAMILY:
        raise RestoreError(f"not an SFT-GAN training checkpoint (task {state.get('task')!r})", checkpoint)
    tensors = {k: v for k, v in ckpt.read_model_tensors(checkpoint).items() if not k.startswith("discriminator.")}
    return state["arch"], state["model_config"], tensors


def _sub_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_prior_network(path: Path) -> CategoryPriorNet:
    """A trained prior network from an sftgan-prior (or sftgan) weights file, checkpoint or run."""
    arch, config, tensors = read_weights_source(path)
    if arch == "sftgan":
        tensors = _sub_state(tensors, "prior.")
        config = split_sftgan_config(config)[1]
    elif arch != "sftgan-prior":
        raise RestoreError(f"--prior-model needs sftgan-prior weights, this holds {arch}", path)
    net = CategoryPriorNet(**config)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise RestoreError(f"prior weights do not fit {config} ({str(exc).splitlines()[0]})", path) from None
    return net


def load_sftgan_init(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], CategoryPriorNet]:
    """(generator config, generator tensors, prior network) of an sftgan run, checkpoint or file."""
    arch, config, tensors = read_weights_source(path)
    if arch != "sftgan":
        raise RestoreError(f"--init needs an sftgan model (generator and prior), this holds {arch}", path)
    generator_config, prior_config = split_sftgan_config(config)
    prior = CategoryPriorNet(**prior_config)
    try:
        prior.load_state_dict(_sub_state(tensors, "prior."), strict=True)
    except RuntimeError as exc:
        raise RestoreError(f"prior weights do not fit {prior_config} ({str(exc).splitlines()[0]})", path) from None
    return generator_config, _sub_state(tensors, "generator."), prior


def _fresh_module(seed: int, build: Any) -> Any:
    """Build a module with the global torch RNG forked and seeded (the global state is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _is_sft_parameter(name: str) -> bool:
    """SFT and condition-network parameters (5× learning rate in stage 2)."""
    return "SFT_" in name or name.startswith("CondNet.")


# --- the runs -------------------------------------------------------------------------------------


class _Run:
    """Shared set-up, checkpointing, logging and loop; subclasses build the networks and the step."""

    def __init__(self, config: SftganTrainConfig, observer: TrainingObserver, context: DistributedContext, device: torch.device) -> None:
        self.config = config
        self.observer = observer if context.is_main else SilentObserver()
        self.context = context
        self.device = device
        self.placement = select_precision(config.precision, device)
        self.memory_format = torch.channels_last
        self.milestones = config.resolved_milestones()
        self.log_path = config.output / LOG_FILE
        self.clock_start = time.monotonic()
        self.base_lrs: list[float] = []

    # what subclasses provide ---------------------------------------------------------------------

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        raise NotImplementedError

    def _make_batch(self) -> Any:
        raise NotImplementedError

    def _step(self, batch: Any) -> dict[str, float]:
        raise NotImplementedError

    def _validate(self) -> dict[str, Any]:
        raise NotImplementedError

    def _finish_setup(self) -> None:
        """After weights are final (fresh or restored): derived state and the DDP wrappers."""

    # set-up ------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.config
        checkpoint = ckpt.load_checkpoint(cfg.resume) if cfg.resume is not None else None
        if checkpoint is None and (cfg.output / ckpt.LATEST_NAME).exists():
            raise RestoreError(f"already holds a training run; continue it with --resume {cfg.output} or choose another --output", cfg.output)
        if checkpoint is not None and checkpoint.state.get("family") != FAMILY:
            raise RestoreError(f"not an SFT-GAN checkpoint (task {checkpoint.state.get('task')!r})", checkpoint.path)
        self.images: ImageSet = load_image_set(cfg.data, 3, min_size=cfg.patch)
        self.data_fingerprint = self.images.fingerprint()
        self.rng, self.generator = rank_generators(cfg.seed, self.context.rank)
        self._build(checkpoint)
        self.optimizer = torch.optim.Adam(self.param_groups, betas=(0.9, 0.999), weight_decay=0.0)
        self.scaler = torch.amp.GradScaler("cuda") if self.placement.precision == "fp16" else None
        self.step, self.last_val, self.elapsed_before = 0, None, 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        self.val_images: list[Tensor] = []
        if cfg.val is not None and self.context.is_main:
            val_set = load_image_set([cfg.val], 3, min_size=WINDOW)
            self.val_images = [validation_crop(image, cfg.val_max_size) for image in val_set.images]
        if self.context.is_main:
            cfg.output.mkdir(parents=True, exist_ok=True)
            if checkpoint is not None:
                self._truncate_log()
        self._finish_setup()

    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        state = checkpoint.state
        stored = SftganTrainConfig.from_json(state["config"])
        differences = resume_mismatches(stored, self.config)
        if differences:
            raise RestoreError("cannot resume with different settings: " + "; ".join(differences), checkpoint.path)
        if state["world_size"] != self.context.world_size:
            raise RestoreError(f"checkpoint was written by {state['world_size']} process(es); resume it with the same number "
                               f"(now {self.context.world_size})", checkpoint.path)
        if state["data_fingerprint"] != self.data_fingerprint:
            raise RestoreError("the training images differ from those the checkpoint was trained on", checkpoint.path)
        self.state_module.load_state_dict(checkpoint.model, strict=True)
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

    # plumbing ---------------------------------------------------------------------------------------

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _rng_snapshot(self) -> dict[str, Any]:
        return {"numpy": ckpt.numpy_rng_state(self.rng), "torch": ckpt.torch_rng_state(self.generator)}

    def _set_learning_rates(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = learning_rate_at(self.step, base, self.milestones, self.config.lr_gamma)

    def _backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _write_log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.observer.on_record(record)

    def _save(self, elapsed: float) -> Path | None:
        rng_state = dict(self.rng_state)
        if self.device.type == "cuda":
            rng_state["cuda"] = ckpt.cuda_rng_state(self.device)
        all_rng = gather_json(self.context, rng_state, self._collective_device())
        if not self.context.is_main:
            return None
        state = {
            "family": FAMILY,
            "config": self.config.to_json(),
            "arch": self.config.arch,
            "model_config": self.model_config,
            "task": self.config.task,
            "stage": self.config.stage,
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
        path = ckpt.save_checkpoint(self.config.output, self.step, self.state_module.state_dict(), self.optimizer.state_dict(),
                                    state, keep=self.config.keep_checkpoints)
        self._write_log({"kind": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def _log_interval(self, records: list[dict[str, float]], interval_start: float) -> None:
        keys = sorted(records[0]) if records else []
        totals = sum_over_ranks(self.context, [sum(r[k] for r in records) for k in keys] + [len(records)], self._collective_device())
        count = max(totals[-1], 1)
        means = {k: totals[i] / count for i, k in enumerate(keys)}
        now = time.monotonic()
        self._write_log({
            "kind": "train",
            "step": self.step,
            "loss": means.get("loss", float("nan")),
            "losses": means,
            "lr": learning_rate_at(self.step - 1, self.base_lrs[0], self.milestones, self.config.lr_gamma),
            "steps_per_s": len(records) / max(now - interval_start, 1e-9),
            "elapsed_s": self.elapsed_before + now - self.loop_start,
        })

    def _run_info(self) -> RunInfo:
        trainable = sum(p.numel() for group in self.param_groups for p in group["params"])
        return RunInfo(task=self.config.task if self.config.task == "sftgan-prior" else f"sftgan stage {self.config.stage}",
                       arch=self.config.arch, model_config=self.model_config, parameters=trainable, images=len(self.images),
                       skipped_images=len(self.images.skipped), val_images=len(self.val_images), start_step=self.step,
                       total_steps=self.config.steps, device=str(self.device), precision=self.placement.precision,
                       world_size=self.context.world_size, output=self.config.output)

    # the loop ---------------------------------------------------------------------------------------

    def _loop(self, stop: StopRequest, losses: list[float]) -> tuple[StopReason, Path | None]:
        cfg = self.config
        checkpoint_path: Path | None = None
        interval_start = time.monotonic()
        interval: list[dict[str, float]] = []
        while self.step < cfg.steps:
            self._set_learning_rates()
            cpu_batch, self.rng_state = self.batches.next()
            record = self._step(cpu_batch.to(self.device, self.memory_format))
            self.step += 1
            losses.append(record["loss"])
            interval.append(record)
            self.observer.on_step(self.step, record["loss"])
            out_of_time = cfg.time_limit is not None and time.monotonic() - self.clock_start >= cfg.time_limit
            interrupted, out_of_time, diverged = agree(
                self.context, [stop.requested, out_of_time, not all(math.isfinite(v) for v in record.values())],
                self._collective_device(),
            )
            if diverged:
                raise RestoreError(f"training diverged: a loss is not finite at step {self.step}; resume from the last "
                                   "checkpoint with a lower --lr (or fp32 precision)", cfg.output)
            last = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last:
                self._log_interval(interval, interval_start)
                interval_start, interval = time.monotonic(), []
            if self.val_images and (self.step % cfg.val_every == 0 or last):
                self.last_val = {"step": self.step, **self._validate()}
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
        self._write_log({"kind": "start", "step": self.step, "steps": cfg.steps, "task": cfg.task, "stage": cfg.stage,
                         "device": str(self.device), "precision": self.placement.precision,
                         "world_size": self.context.world_size, "images": len(self.images)})
        depth = cfg.prefetch if cfg.prefetch is not None else (2 if self.device.type == "cuda" else 0)
        self.rng_state = self._rng_snapshot()
        self.batches = BatchPrefetcher(self._make_batch, self._rng_snapshot, depth)
        losses: list[float] = []
        self.loop_start = time.monotonic()
        try:
            with StopRequest().installed() as stop:
                reason, checkpoint_path = self._loop(stop, losses)
        finally:
            self.batches.close()
        if checkpoint_path is None and cfg.resume is not None and self.context.is_main:
            checkpoint_path = ckpt.resolve_checkpoint(cfg.resume)
        val = None if self.last_val is None else self.last_val.get("psnr")
        result = TrainResult(step=self.step, reason=reason, checkpoint=checkpoint_path,
                             model_state={k: v.detach().to("cpu").clone() for k, v in self.state_module.state_dict().items()},
                             losses=losses, val_psnr=None if val is None else float(val), rank=self.context.rank)
        self._write_log({"kind": "stop", "step": self.step, "reason": reason})
        self.observer.on_finish(result)
        return result


class _PriorRun(_Run):
    """Clustering, then the prior network trained to predict the window categories from LR."""

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        config = dict(checkpoint.state["model_config"]) if checkpoint is not None else cfg.prior_config()
        self.model_config = config
        net: CategoryPriorNet = _fresh_module(cfg.seed, lambda: CategoryPriorNet(**config))
        if checkpoint is None:
            rng = np.random.default_rng([cfg.seed, CLUSTER_SEED_STREAM])
            if min(min(image.shape[:2]) for image in self.images.images) < WINDOW:
                raise RestoreError(f"every training image must be at least {WINDOW}×{WINDOW}")
            features = window_features(sample_cluster_windows(self.images, cfg.cluster_samples, rng))
            store_clusters(net, fit_texture_clusters(features, cfg.categories, rng))
        self.net = net.to(self.device, memory_format=self.memory_format)
        self.state_module: nn.Module = self.net
        self.param_groups = [{"params": list(self.net.parameters()), "lr": cfg.lr, "name": "prior"}]
        self.base_lrs = [float(cfg.lr)]  # type: ignore[list-item]
        self.forward_net: nn.Module = self.net

    def _finish_setup(self) -> None:
        self.clusters = clusters_of(self.net)
        self._write_log({"kind": "categories", "step": self.step, "descriptions": category_descriptions(self.net)})
        self.val_labels = [torch.from_numpy(window_grids(image, self.clusters)[0]) for image in self.val_images]
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_net = DistributedDataParallel(self.net, device_ids=ids)

    def _make_batch(self) -> PriorBatch:
        return prior_batch(self.images, self.config.batch, self.config.patch, self.rng, self.clusters)

    def _step(self, batch: PriorBatch) -> dict[str, float]:
        with self.placement.autocast():
            logits = self.forward_net(batch.lr)
        pooled = pooled_window_probabilities(torch.softmax(logits.float(), dim=1))
        loss = F.nll_loss(torch.log(pooled.clamp_min(1e-8)), batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._optimizer_step()
        accuracy = (pooled.argmax(dim=1) == batch.labels).float().mean()
        return {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        self.net.eval()
        correct = total = 0
        nll = 0.0
        for hr, labels in zip(self.val_images, self.val_labels):
            pooled = pooled_window_probabilities(self.net.probabilities(lr_from_hr(hr).to(self.device)).float()).cpu()
            correct += int((pooled.argmax(dim=1)[0] == labels).sum())
            total += labels.numel()
            nll += float(F.nll_loss(torch.log(pooled.clamp_min(1e-8)), labels[None], reduction="sum"))
        self.net.train()
        return {"accuracy": correct / max(total, 1), "nll": nll / max(total, 1),
                "protocol": f"window categories ({WINDOW}×{WINDOW} HR, stride 16) of centre crops <= {self.config.val_max_size}"}


class _GanRun(_Run):
    """Stage 1 (pixel loss) or stage 2 (adversarial, category-aware discriminator)."""

    def _build(self, checkpoint: ckpt.Checkpoint | None) -> None:
        cfg = self.config
        if checkpoint is not None:
            generator_config, prior_config = split_sftgan_config(checkpoint.state["model_config"])
            prior = CategoryPriorNet(**prior_config)
            init_tensors: dict[str, Tensor] | None = None
        elif cfg.init is not None:
            generator_config, init_tensors, prior = load_sftgan_init(cfg.init)
            wanted = cfg.generator_config(generator_config["categories"])
            if cfg.arch_config and wanted != generator_config:
                raise RestoreError(f"--arch-config {cfg.arch_options()} does not match the --init generator {generator_config}", cfg.init)
        else:
            assert cfg.prior_model is not None
            prior = load_prior_network(cfg.prior_model)
            generator_config = cfg.generator_config(prior.categories)
            init_tensors = None
        generator: SFTGenerator = _fresh_module(cfg.seed, lambda: SFTGenerator(**generator_config))
        if init_tensors is not None:
            generator.load_state_dict(init_tensors, strict=True)
        self.model_config = combined_config(generator_config, read_prior_config(prior.state_dict()))
        modules: dict[str, nn.Module] = {"generator": generator, "prior": prior}
        if cfg.stage == 2:
            modules["discriminator"] = _fresh_module(cfg.seed + 1, lambda: CategoryDiscriminator(
                generator_config["in_nc"], generator_config["categories"], cfg.d_nf, cfg.patch))
        self.state_module = nn.ModuleDict(modules).to(self.device, memory_format=self.memory_format)
        self.gen: SFTGenerator = self.state_module["generator"]  # type: ignore[assignment]
        self.prior: CategoryPriorNet = self.state_module["prior"]  # type: ignore[assignment]
        self.prior.eval().requires_grad_(False)
        self.disc: CategoryDiscriminator | None = self.state_module["discriminator"] if cfg.stage == 2 else None  # type: ignore[assignment]
        assert cfg.lr is not None and cfg.d_lr is not None
        if cfg.stage == 1:
            self.param_groups = [{"params": list(self.gen.parameters()), "lr": cfg.lr, "name": "generator"}]
            self.base_lrs = [cfg.lr]
        else:
            assert self.disc is not None
            named = list(self.gen.named_parameters())
            self.trunk = [p for n, p in named if not _is_sft_parameter(n)]
            sft = [p for n, p in named if _is_sft_parameter(n)]
            self.param_groups = [
                {"params": self.trunk, "lr": cfg.lr, "name": "generator-trunk"},
                {"params": sft, "lr": cfg.lr * cfg.sft_lr_factor, "name": "generator-sft"},
                {"params": list(self.disc.parameters()), "lr": cfg.d_lr, "name": "discriminator"},
            ]
            self.base_lrs = [cfg.lr, cfg.lr * cfg.sft_lr_factor, cfg.d_lr]
        self.gen_forward: nn.Module = self.gen
        self.disc_forward: nn.Module | None = self.disc

    def _finish_setup(self) -> None:
        self.clusters = clusters_of(self.prior) if self.config.stage == 2 else None
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.gen_forward = DistributedDataParallel(self.gen, device_ids=ids)
            if self.disc is not None:
                self.disc_forward = DistributedDataParallel(self.disc, device_ids=ids)

    def _make_batch(self) -> GanBatch:
        return gan_batch(self.images, self.config.batch, self.config.patch, self.rng, self.clusters)

    def _condition(self, lr: Tensor) -> Tensor:
        with torch.no_grad():
            return upsample_prior(self.prior.probabilities(lr).float())

    def _step(self, batch: GanBatch) -> dict[str, float]:
        if self.config.stage == 1:
            return self._pixel_step(batch)
        return self._adversarial_step(batch)

    def _pixel_step(self, batch: GanBatch) -> dict[str, float]:
        prior = self._condition(batch.lr)
        with self.placement.autocast():
            output = self.gen_forward(batch.lr, prior)
        loss = F.l1_loss(output.float(), batch.hr)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._optimizer_step()
        return {"loss": float(loss.detach())}

    def _adversarial_step(self, batch: GanBatch) -> dict[str, float]:
        cfg = self.config
        disc, disc_forward = self.disc, self.disc_forward
        assert disc is not None and disc_forward is not None
        labelled = bool((batch.category != IGNORE).any())
        if self.context.enabled:
            # BatchNorm statistics move with each process's batches; start every step from rank 0's
            # (which the checkpoint saves), so that a resumed run repeats an uninterrupted one.
            import torch.distributed as dist

            for buffer in disc.buffers():
                dist.broadcast(buffer, 0)
        prior = self._condition(batch.lr)
        ones = torch.ones(batch.hr.shape[0], device=self.device)
        zeros = torch.zeros_like(ones)

        # Generator half-step: the discriminator's weights take no gradient.
        disc.requires_grad_(False)
        with self.placement.autocast():
            fake = self.gen_forward(batch.lr, prior)
            fake_logit, fake_category = disc(fake)
        fake32 = fake.float()
        pixel = F.l1_loss(fake32, batch.hr)
        gan = F.binary_cross_entropy_with_logits(fake_logit.float(), ones)
        category = F.cross_entropy(fake_category.float(), batch.category, ignore_index=IGNORE) if labelled else fake32.new_zeros(())
        disc.eval()  # feature matching on running statistics: batch statistics would hide shifts
        with self.placement.autocast():
            with torch.no_grad():
                real_features = disc.features(batch.hr)
            fake_features = disc.features(fake)
        disc.train()
        matching = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_features, real_features)) / len(real_features)
        g_loss = cfg.pixel_weight * pixel + cfg.feature_weight * matching + cfg.gan_weight * gan + cfg.category_weight * category
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(g_loss)
        disc.requires_grad_(True)
        if self.step < cfg.warmup_steps():
            for p in self.trunk:  # the reference updates only SFT/condition layers at first
                p.grad = None
        self._optimizer_step()

        # Discriminator half-step: real and fake each with their own backward (DDP-friendly).
        self.optimizer.zero_grad(set_to_none=True)
        with self.placement.autocast():
            real_logit, real_category = disc_forward(batch.hr)
        d_real = F.binary_cross_entropy_with_logits(real_logit.float(), ones)
        d_category = F.cross_entropy(real_category.float(), batch.category, ignore_index=IGNORE) if labelled else real_logit.new_zeros(())
        self._backward(d_real + cfg.d_category_weight * d_category)
        with self.placement.autocast():
            fake_logit_d, fake_category_d = disc_forward(fake.detach())
        # The category head is not trained on fakes; its zero-weighted term keeps every parameter in
        # the graph, which DDP requires.
        d_fake = F.binary_cross_entropy_with_logits(fake_logit_d.float(), zeros) + 0.0 * fake_category_d.float().sum()
        self._backward(d_fake)
        self._optimizer_step()
        return {"loss": float(g_loss.detach()), "pixel": float(pixel.detach()), "feature": float(matching.detach()),
                "gan": float(gan.detach()), "category": float(category.detach()), "d_real": float(d_real.detach()),
                "d_fake": float(d_fake.detach()), "d_category": float(d_category.detach())}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        from restore_cli.ops.texture_categories import image_log_spectral_distance

        self.gen.eval()
        psnrs, lsds = [], []
        for hr in self.val_images:
            lr = lr_from_hr(hr).to(self.device)
            output = self.gen(lr, self._condition(lr)).float().cpu()
            out_y = rgb_to_y(quantize_to_uint8_levels(output[0]) / 255.0) * 255.0
            ref_y = rgb_to_y(quantize_to_uint8_levels(hr[0]) / 255.0) * 255.0
            psnrs.append(psnr(out_y, ref_y, border=VAL_BORDER))
            a, b = crop_border(out_y[0], VAL_BORDER).numpy(), crop_border(ref_y[0], VAL_BORDER).numpy()
            lsds.append(image_log_spectral_distance(a, b, LSD_BAND))
        self.gen.train()
        return {"psnr": float(np.mean(psnrs)), "lsd_high": float(np.mean(lsds)),
                "protocol": f"x{SCALE} MATLAB bicubic LR (8-bit), Y, border {VAL_BORDER}; LSD over {LSD_BAND[0]}–{LSD_BAND[1]} "
                            f"cycles/pixel; centre crops <= {self.config.val_max_size}"}


def run_sftgan_training(config: SftganTrainConfig, observer: TrainingObserver | None = None) -> TrainResult:
    """Train as `config` says (fresh or from `config.resume`); under torchrun every process trains
    on its own patches and DDP keeps the weights identical; rank 0 writes checkpoints and the log."""
    device = select_device(config.device)
    context = start_distributed(device.type == "cuda")
    try:
        if context.enabled and device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
        run_class = _PriorRun if config.task == "sftgan-prior" else _GanRun
        return run_class(config, observer or SilentObserver(), context, device).train()
    finally:
        stop_distributed(context)


# --- export -----------------------------------------------------------------------------------------


def training_record(config: SftganTrainConfig, state: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The manifest's `training` table of an exported SFT-GAN model."""
    record: dict[str, Any] = {
        "task": config.task,
        "stage": config.stage,
        "data": [str(p) for p in config.data],
        "val": None if config.val is None else str(config.val),
        "steps": int(state["step"]),
        "planned_steps": config.steps,
        "seed": config.seed,
        "batch": config.batch,
        "patch": config.patch,
        "lr_from": "matlab bicubic x1/4 of the HR patch, 8-bit",
        "processes": int(state.get("world_size", 1)),
        "lr": config.lr,
        "milestones": list(config.resolved_milestones()),
        "lr_gamma": config.lr_gamma,
        "optimizer": "adam(0.9, 0.999)",
        "precision": state.get("precision"),
        "data_fingerprint": state.get("data_fingerprint"),
        "images": state.get("images"),
        "last_val": state.get("last_val"),
        "elapsed_s": state.get("elapsed_s"),
        "checkpoint": str(checkpoint),
        "command": config.command_line,
    }
    if config.task == "sftgan-prior":
        record.update(cluster_samples=config.cluster_samples)
    elif config.stage == 2:
        record.update(d_lr=config.d_lr, sft_lr_factor=config.sft_lr_factor, trunk_warmup_steps=config.warmup_steps(),
                      losses={"pixel_l1": config.pixel_weight, "discriminator_feature_matching": config.feature_weight,
                              "gan_vanilla": config.gan_weight, "category": config.category_weight,
                              "discriminator_category": config.d_category_weight})
    else:
        record.update(losses={"pixel_l1": 1.0})
    return record


def export_sftgan_checkpoint(checkpoint: Path, name: str, directory: Path | None = None,
                             metrics: dict[str, Any] | None = None, overwrite: bool = False) -> Any:
    """Write DIR/NAME.safetensors (arch sftgan or sftgan-prior; the discriminator is left out) and
    its manifest entry (task TEXTURE_TASK, ×4, RGB). Same rules as `train.export.export_checkpoint`."""
    from restore_cli.engine.weights import safetensors_bytes

    from restore_cli.engine.weights import ModelEntry, add_manifest_entry, load_manifest, sha256_file, weights_dir
    from restore_cli.io.atomic import atomic_write_bytes
    from restore_cli.models.architectures import build_model
    from restore_cli.train.export import MODEL_NAME_RE, ExportResult

    if not MODEL_NAME_RE.match(name):
        raise RestoreError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (not starting with a symbol)")
    path = ckpt.resolve_checkpoint(checkpoint)
    state = ckpt.read_checkpoint_state(path)
    if state.get("family") != FAMILY:
        raise RestoreError(f"not an SFT-GAN training checkpoint (task {state.get('task')!r})", path)
    config = SftganTrainConfig.from_json(state["config"])
    arch, model_config = state["arch"], state["model_config"]
    tensors = {k: v.to(torch.float32).contiguous() for k, v in ckpt.read_model_tensors(path).items()
               if not k.startswith("discriminator.")}
    if arch not in ("sftgan", "sftgan-prior"):
        raise RestoreError(f"cannot export architecture {arch!r} here", path)
    model = build_model(arch, model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise RestoreError(f"checkpoint tensors do not fit {arch} {model_config} ({str(exc).splitlines()[0]})", path) from None
    directory = weights_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.safetensors"
    if not overwrite and (target.exists() or name in load_manifest(directory)):
        raise RestoreError(f"a model named {name!r} already exists; choose another --name or pass --overwrite", target)
    metadata = {"arch": arch, "config": json.dumps(model_config), "task": TEXTURE_TASK, "name": name}
    atomic_write_bytes(target, safetensors_bytes(tensors, metadata=metadata))
    prior = model.prior if arch == "sftgan" else model
    training = {**training_record(config, state, path), "categories": category_descriptions(prior)}  # type: ignore[arg-type]
    entry = ModelEntry(name=name, file=target.name, sha256=sha256_file(target), arch=arch, config=model_config,
                       task=TEXTURE_TASK, scales=[SCALE], channels=3, tiling="safe", training=training,
                       metrics=dict(metrics or {}))
    manifest = add_manifest_entry(entry, directory)
    return ExportResult(weights=target, manifest=manifest, entry=entry)


def category_descriptions(prior: CategoryPriorNet) -> list[str]:
    """What each category of a trained prior network captures (from its cluster centres)."""
    from restore_cli.ops.texture_categories import describe_category

    return [describe_category(centre) for centre in clusters_of(prior).raw_centres()]
