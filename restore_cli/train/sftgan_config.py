"""The configuration of SFT-GAN training (`restore train sftgan-prior|sftgan`): typed, validated
once, stored in checkpoints, and the settings a resumed run may not change."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from restore_cli.errors import RestoreError
from restore_cli.models.sftgan_architectures import PRESETS as SFTGAN_PRESETS
from restore_cli.ops.texture_categories import FEATURE_NAMES, WINDOW
from restore_cli.train.run_config import as_step, changed_settings, config_from_json, config_to_json, milestone_change

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
        return tuple(sorted(as_step(m, self.steps) for m in self.milestones))

    def warmup_steps(self) -> int:
        return as_step(self.trunk_warmup, self.steps)

    def to_json(self) -> dict[str, Any]:
        return config_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SftganTrainConfig:
        return config_from_json(cls, data, ("milestones", "data"))


def resume_mismatches(stored: SftganTrainConfig, current: SftganTrainConfig) -> list[str]:
    """Settings that differ between a checkpoint's config and the one resuming it (those that
    change the numbers of the run)."""
    differences = changed_settings(stored, current, RESUME_FREE_FIELDS) + milestone_change(stored, current)
    if stored.warmup_steps() != current.warmup_steps():
        differences.append(f"trunk warm-up {stored.warmup_steps()} → {current.warmup_steps()} steps")
    return differences
