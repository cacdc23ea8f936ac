"""Export of a toolchain training checkpoint (toolbox, agent or generic CNN) into the weights
store with its manifest entry; an agent's entry records the sha256 of its toolbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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
        raise RestoreError("not a toolchain checkpoint (restore train tools|agent)", path)
    arch, model_config, task = state["arch"], state["model_config"], state["task"]
    tensors = {k: v.to(torch.float32).contiguous() for k, v in ckpt.read_model_tensors(path).items()}
    try:
        build_model(arch, model_config).load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise RestoreError(f"checkpoint tensors do not fit {arch} {model_config} ({str(exc).splitlines()[0]})", path) from None
    directory = weights_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.safetensors"
    if not overwrite and (target.exists() or name in load_manifest(directory)):
        raise RestoreError(f"a model named {name!r} already exists; choose another --name or pass --overwrite", target)
    config = state["config"]
    manifest_task = MANIFEST_TASK[arch]
    metadata = {"arch": arch, "config": json.dumps(model_config), "task": manifest_task, "name": name}
    if arch == "toolbox":
        metadata["tools"] = ",".join(TOOL_NAMES)
    if arch == "toolchain-agent":
        metadata["toolbox_sha256"] = state.get("toolbox_sha256") or ""
        metadata["max_steps"] = str(config.get("max_steps", MAX_STEPS))
    atomic_write_bytes(target, safetensors_bytes(tensors, metadata=metadata))
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
        "severity": config.get("severity"),
        "precision": state.get("precision"),
        "data_fingerprint": state.get("data_fingerprint"),
        "images": state.get("images"),
        "last_val": state.get("last_val"),
        "elapsed_s": state.get("elapsed_s"),
        "checkpoint": str(path),
    }
    for key in ("toolbox_sha256", "init_sha256", "agent_sha256"):
        if state.get(key):
            training[key] = state[key]
    if arch == "toolbox":
        training["tool_ranges"] = {s.name: {"reference": s.reference, "distortion": s.distortion, "low": s.low, "high": s.high}
                                   for s in TOOL_SPECS}
    entry = ModelEntry(name=name, file=target.name, sha256=sha256_file(target), arch=arch, config=model_config,
                       task=manifest_task, scales=[1], channels=int(model_config.get("channels", 3)), tiling="safe",
                       training=training, metrics=dict(metrics or {}))
    manifest = add_manifest_entry(entry, directory)
    return ExportResult(weights=target, manifest=manifest, entry=entry)
