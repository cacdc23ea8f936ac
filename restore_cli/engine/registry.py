"""The model registry: a name gives architecture, config, weights file, hash and task.

It joins the architecture table (`restore_cli.models.architectures`) with the weights store
(`weights/manifest.json`). Models are built here and nowhere else, from a verified manifest
entry or from an explicit `--weights FILE.safetensors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from restore_cli.engine.weights import ModelEntry, load_manifest, read_safetensors, verify_entry
from restore_cli.errors import RestoreError


@dataclass
class ResolvedModel:
    """A built model with the facts the engine needs about it."""

    module: nn.Module
    name: str
    arch: str
    config: dict[str, Any]
    task: str
    scales: list[int]
    channels: int
    tiling: str
    weights_path: Path | None
    sha256: str | None
    metadata: dict[str, str] = field(default_factory=dict)  # the file's safetensors metadata


def _architecture(arch: str):
    from restore_cli.models.architectures import ARCHITECTURES

    if arch not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise RestoreError(f"unknown architecture '{arch}' (known: {known})")
    return ARCHITECTURES[arch]


def _build(arch: str, config: dict[str, Any], tensors: dict[str, torch.Tensor], source: Path) -> nn.Module:
    from restore_cli.models.architectures import build_model

    module = build_model(arch, config)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RestoreError(f"weights do not fit architecture '{arch}' ({first})", source) from None
    return module.eval()


def load_entry(entry: ModelEntry, directory: Path | None = None) -> ResolvedModel:
    """Verify the file's sha256, then build the model."""
    path = verify_entry(entry, directory)
    tensors, metadata = read_safetensors(path)
    module = _build(entry.arch, entry.config, tensors, path)
    return ResolvedModel(module, entry.name, entry.arch, entry.config, entry.task, list(entry.scales),
                         entry.channels, entry.tiling, path, entry.sha256, metadata)


def load_weights_file(path: Path, task: str, arch: str | None = None) -> ResolvedModel:
    """Build a model from any compatible `.safetensors` file (`--weights`).

    The architecture comes from the file's metadata (written by `restore train export` and
    `restore models import`) or from `arch`; the config is read from the tensor shapes.
    """
    from restore_cli.engine.weights import sha256_file

    tensors, metadata = read_safetensors(path)
    arch = arch or metadata.get("arch")
    if not arch:
        raise RestoreError("the file does not say its architecture (no 'arch' metadata); pass --arch", path)
    architecture = _architecture(arch)
    if architecture.task and architecture.task != task:
        raise RestoreError(f"these are '{arch}' weights, made for `restore {architecture.task}`, not `{task}`", path)
    config = json.loads(metadata["config"]) if "config" in metadata else architecture.infer_config(tensors)
    module = _build(arch, config, tensors, path)
    channels = int(config.get("channels", config.get("out_nc", 3)))
    scales = [1] if task == "denoise" else [1, 2, 3, 4]
    return ResolvedModel(module, Path(path).stem, arch, config, task, scales, channels, "safe", Path(path),
                         sha256_file(path), metadata)


def find_entry(name: str, directory: Path | None = None) -> ModelEntry:
    entries = load_manifest(directory)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none installed"
        raise RestoreError(f"unknown model '{name}' (available: {known}); see `restore models list`")
    return entries[name]


def default_model_name(task: str, channels: int, directory: Path | None = None) -> str:
    """The shipped model for a task and channel count (e.g. denoise + 1 → denoise-gray)."""
    candidates = [e for e in load_manifest(directory).values() if e.task == task]
    exact = [e for e in candidates if e.channels == channels]
    chosen = exact or candidates
    if not chosen:
        raise RestoreError(
            f"no trained model for task '{task}' is installed; give --weights FILE.safetensors "
            "or train one with `restore train`"
        )
    return sorted(chosen, key=lambda e: e.name)[0].name


def import_pickle(path: Path, preset: str) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Read a PyTorch state dict without executing pickled code (`weights_only=True`), check that
    it fits the named preset/architecture, and return (tensors, arch, config)."""
    from restore_cli.models.architectures import ARCHITECTURES, PRESETS

    if preset in ARCHITECTURES:  # an architecture name: the config is read from the shapes
        arch, config = preset, {}
    elif preset in PRESETS:  # a preset: the shapes must match its config
        arch, config = PRESETS[preset]
    else:
        known = ", ".join(sorted(set(PRESETS) | set(ARCHITECTURES)))
        raise RestoreError(f"unknown --arch '{preset}' (known: {known})")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RestoreError("file not found", path) from None
    except Exception as exc:  # unpickling refuses anything but tensors and plain containers
        raise RestoreError(f"not a plain PyTorch state dict ({type(exc).__name__}: {str(exc).splitlines()[0]})", path) from None
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(raw, dict) and key in raw and isinstance(raw[key], dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise RestoreError("does not hold a state dict of tensors", path)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in raw.items()}
    if not config:
        config = _architecture(arch).infer_config(tensors)
    else:
        inferred = _architecture(arch).infer_config(tensors)
        if inferred != _architecture(arch).full_config(config):
            raise RestoreError(f"weights do not match --arch {preset} (they look like {inferred})", path)
    _build(arch, config, tensors, Path(path))
    return tensors, arch, config
