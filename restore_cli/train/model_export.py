"""Writing a trained model into the weights store, the same way for every model family:
the name check, the check that the tensors fit the architecture, NAME.safetensors (fp32 tensors,
metadata `arch`, `config`, `task`, `name`), and the manifest entry with its sha256."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from restore_cli.engine.weights import ModelEntry, add_manifest_entry, load_manifest, safetensors_bytes, sha256_file, weights_dir
from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_bytes

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ExportResult:
    weights: Path
    manifest: Path
    entry: ModelEntry


def check_model_name(name: str) -> None:
    if not MODEL_NAME_RE.match(name):
        raise RestoreError(f"model name {name!r} must be letters, digits, '.', '_' or '-' (not starting with a symbol)")


def fitted_model(arch: str, model_config: dict[str, Any], tensors: dict[str, Tensor], checkpoint: Path) -> nn.Module:
    """The architecture built from `model_config` with `tensors` loaded strictly; RestoreError otherwise."""
    from restore_cli.models.architectures import build_model

    model = build_model(arch, model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise RestoreError(f"checkpoint tensors do not fit {arch} {model_config} ({str(exc).splitlines()[0]})", checkpoint) from None
    return model


def weights_record(path: Path) -> dict[str, Any]:
    """What a run started from when that was a weights file: its path and sha256, and, where the
    manifest beside it or the weights store's manifest (a copy taken out of the store) has an entry
    with that sha256, the entry's name and `training` table, so that an exported model keeps the
    history of the model it was fine-tuned from (read when the run starts: the file may be
    replaced later, for example by the export itself)."""
    path = Path(path)
    sha = sha256_file(path)
    record: dict[str, Any] = {"weights": str(path), "sha256": sha}
    for directory in dict.fromkeys((path.parent.resolve(), weights_dir().resolve())):
        try:
            entries = load_manifest(directory)
        except RestoreError:
            continue
        for entry in entries.values():
            if entry.sha256 == sha:
                record.update(name=entry.name, training=entry.training)
                return record
    return record


def write_model(
    name: str,
    directory: Path | None,
    tensors: dict[str, Tensor],
    *,
    arch: str,
    model_config: dict[str, Any],
    task: str,
    scales: list[int],
    channels: int,
    training: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
    extra_metadata: dict[str, str] | None = None,
) -> ExportResult:
    """DIR/NAME.safetensors (written atomically) and NAME's manifest entry (DIR: the weights store
    by default). Refuses to replace an existing model of that name unless `overwrite`."""
    directory = weights_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.safetensors"
    if not overwrite and (target.exists() or name in load_manifest(directory)):
        raise RestoreError(f"a model named {name!r} already exists; choose another --name or pass --overwrite", target)
    metadata = {"arch": arch, "config": json.dumps(model_config), "task": task, "name": name, **(extra_metadata or {})}
    atomic_write_bytes(target, safetensors_bytes(tensors, metadata=metadata))
    entry = ModelEntry(name=name, file=target.name, sha256=sha256_file(target), arch=arch, config=model_config,
                       task=task, scales=list(scales), channels=int(channels), tiling="safe", training=training,
                       metrics=dict(metrics or {}))
    manifest = add_manifest_entry(entry, directory)
    return ExportResult(weights=target, manifest=manifest, entry=entry)
