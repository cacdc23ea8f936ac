"""Export of an SFT-GAN training checkpoint (prior network or generator with its prior) into the
weights store, with the manifest's `training` table and the categories the prior learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from restore_cli.errors import RestoreError
from restore_cli.models.sft import SCALE, CategoryPriorNet
from restore_cli.models.sftgan_architectures import TEXTURE_TASK
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.sftgan_config import FAMILY, SftganTrainConfig
from restore_cli.train.sftgan_data import clusters_of

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
    # The stages this run started from (stage 2 ← stage 1 ← prior network), each as its own record,
    # as read when the run started (carried in its checkpoints); checkpoints of runs started before
    # that was kept are read now.
    record.update(state.get("init") or started_from(config))
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


def started_from(config: SftganTrainConfig) -> dict[str, Any]:
    """The records of what a run starts from: {"init": …, "prior_model": …} for those given."""
    sources = {"init": config.init, "prior_model": config.prior_model}
    return {key: source_record(path) for key, path in sources.items() if path is not None}


def source_record(path: Path) -> dict[str, Any]:
    """What a run started from (--init, --prior-model): a run or checkpoint → its training record
    (recursively, so an exported stage-2 model lists stage 1 and the prior run); a weights file
    → `model_export.weights_record`; something no longer readable → its path and why."""
    from restore_cli.train.model_export import weights_record

    path = Path(path)
    if path.is_file():
        return weights_record(path)
    try:
        checkpoint = ckpt.resolve_checkpoint(path)
        state = ckpt.read_checkpoint_state(checkpoint)
        config = SftganTrainConfig.from_json(state["config"])
    except (RestoreError, KeyError, ValueError, OSError) as exc:
        return {"path": str(path), "unavailable": str(exc)}
    return training_record(config, state, checkpoint)


def export_sftgan_checkpoint(checkpoint: Path, name: str, directory: Path | None = None,
                             metrics: dict[str, Any] | None = None, overwrite: bool = False) -> Any:
    """Write DIR/NAME.safetensors (arch sftgan or sftgan-prior; the discriminator is left out) and
    its manifest entry (task TEXTURE_TASK, ×4, RGB). Same rules as `train.export.export_checkpoint`."""
    from restore_cli.train.model_export import check_model_name, fitted_model, write_model

    check_model_name(name)
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
    model = fitted_model(arch, model_config, tensors, path)
    prior = model.prior if arch == "sftgan" else model
    training = {**training_record(config, state, path), "categories": category_descriptions(prior)}  # type: ignore[arg-type]
    return write_model(name, directory, tensors, arch=arch, model_config=model_config, task=TEXTURE_TASK,
                       scales=[SCALE], channels=3, training=training, metrics=metrics, overwrite=overwrite)


def category_descriptions(prior: CategoryPriorNet) -> list[str]:
    """What each category of a trained prior network captures (from its cluster centres)."""
    from restore_cli.ops.texture_categories import describe_category

    return [describe_category(centre) for centre in clusters_of(prior).raw_centres()]
