"""Export of a toolchain training checkpoint (toolbox, agent or generic CNN) into the weights
store with its manifest entry; an agent's entry records the sha256 of its toolbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from restore_cli.engine.toolchain import FIXED_CHAIN_KEY
from restore_cli.errors import RestoreError
from restore_cli.models.toolchain import MAX_STEPS, TOOL_NAMES, TOOL_SPECS
from restore_cli.train import checkpoint as ckpt
from restore_cli.train.toolchain_config import FAMILY, MANIFEST_TASK


def is_toolchain_checkpoint(checkpoint: Path) -> bool:
    """Whether a checkpoint (or run folder) was written by `restore train tools|agent`."""
    return ckpt.read_checkpoint_state(checkpoint).get("family") == FAMILY


def export_toolchain_checkpoint(checkpoint: Path, name: str, directory: Path | None = None,
                                metrics: dict[str, Any] | None = None, overwrite: bool = False) -> Any:
    """Write DIR/NAME.safetensors and its manifest entry from a tools/agent checkpoint.

    The toolbox is one file (tool01.… tool12.) with task `toolchain`, the agent another, whose
    metadata and manifest entry record the sha256 of the toolbox it was trained with."""
    from restore_cli.train.model_export import check_model_name, fitted_model, write_model

    check_model_name(name)
    path = ckpt.resolve_checkpoint(checkpoint)
    state = ckpt.read_checkpoint_state(path)
    if state.get("family") != FAMILY:
        raise RestoreError("not a toolchain checkpoint (restore train tools|agent)", path)
    arch, model_config, task = state["arch"], state["model_config"], state["task"]
    tensors = {k: v.to(torch.float32).contiguous() for k, v in ckpt.read_model_tensors(path).items()}
    fitted_model(arch, model_config, tensors, path)
    config = state["config"]
    extra: dict[str, str] = {}
    if arch == "toolbox":
        extra["tools"] = ",".join(TOOL_NAMES)
    if arch == "toolchain-agent":
        extra["toolbox_sha256"] = state.get("toolbox_sha256") or ""
        extra["max_steps"] = str(config.get("max_steps", MAX_STEPS))
        fixed = state.get("fixed_chain")
        if fixed and fixed.get("chain"):
            extra[FIXED_CHAIN_KEY] = fixed["chain"]
    training = {
        "command": config.get("command_line", ""),
        "task": task,
        "mode": config.get("mode") or config.get("method"),
        "data": config.get("data"),
        "val": config.get("val"),
        "steps": int(state["step"]),
        "planned_steps": config.get("steps"),
        "seed": config.get("seed"),
        "batch": config.get("batch"),
        "patch": config.get("patch"),
        "lr": config.get("lr"),
        "milestones": config.get("milestones"),
        "lr_gamma": config.get("lr_gamma"),
        "loss": config.get("loss"),
        "severity": config.get("severity"),
        "single_share": config.get("single_share"),
        "clean_share": config.get("clean_share"),
        "precision": state.get("precision"),
        "data_fingerprint": state.get("data_fingerprint"),
        "images": state.get("images"),
        "last_val": state.get("last_val"),
        "elapsed_s": state.get("elapsed_s"),
        "checkpoint": str(path),
    }
    for key in ("toolbox_sha256", "init", "agent_sha256", "fixed_chain"):
        if state.get(key):
            training[key] = state[key]
    if arch == "toolbox":
        training["tool_ranges"] = {s.name: {"reference": s.reference, "distortion": s.distortion, "low": s.low, "high": s.high}
                                   for s in TOOL_SPECS}
    return write_model(name, directory, tensors, arch=arch, model_config=model_config, task=MANIFEST_TASK[arch],
                       scales=[1], channels=int(model_config.get("channels", 3)), training=training, metrics=metrics,
                       overwrite=overwrite, extra_metadata=extra)
