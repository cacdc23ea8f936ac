"""The weights store: `weights/manifest.json`, sha256 verification and safetensors loading.

Every shipped model has one manifest entry (architecture, config, file, sha256, task, scales,
channels, tiling, how it was trained, measured metrics). A file whose hash does not match its
entry is refused. Pickle files (`.pth`, `.pt`, `.ckpt`) are never loaded here: importing one is
an explicit step (`restore models import`), done with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from restore_cli.errors import RestoreError
from restore_cli.io.atomic import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHTS_ENV = "RESTORE_WEIGHTS_DIR"
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".bin")


@dataclass
class ModelEntry:
    """One model of the store: what it is, where its file is, and how it was made."""

    name: str
    file: str
    sha256: str
    arch: str
    config: dict[str, Any]
    task: str
    scales: list[int] = field(default_factory=lambda: [1])
    channels: int = 3
    tiling: str = "safe"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("name")
        return data


def weights_dir() -> Path:
    """Where weights are looked for: $RESTORE_WEIGHTS_DIR, else the installed package data,
    else the repository's `weights/` folder (source checkout)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    try:
        import restore_cli._weights as packaged  # installed: weights/ mapped as package data

        return Path(next(iter(packaged.__path__)))
    except ImportError:
        return Path(__file__).resolve().parents[2] / "weights"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory: Path | None = None) -> dict[str, ModelEntry]:
    """Read `manifest.json`; an absent manifest is an empty store."""
    directory = weights_dir() if directory is None else Path(directory)
    path = directory / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RestoreError(f"cannot read the weights manifest ({exc})", path) from None
    models = raw.get("models", {}) if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise RestoreError("weights manifest has no 'models' table", path)
    entries = {}
    for name, data in models.items():
        try:
            entries[name] = ModelEntry(name=name, **data)
        except TypeError as exc:
            raise RestoreError(f"manifest entry '{name}' is malformed ({exc})", path) from None
    return entries


def add_manifest_entry(entry: ModelEntry, directory: Path | None = None) -> Path:
    """Add or replace one entry and rewrite the manifest atomically; returns its path."""
    directory = weights_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = load_manifest(directory)
    entries[entry.name] = entry
    payload = {
        "format": MANIFEST_FORMAT,
        "models": {name: entries[name].to_json() for name in sorted(entries)},
    }
    path = directory / MANIFEST_NAME
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def entry_path(entry: ModelEntry, directory: Path | None = None) -> Path:
    directory = weights_dir() if directory is None else Path(directory)
    return directory / entry.file


def verify_entry(entry: ModelEntry, directory: Path | None = None) -> Path:
    """Check that the entry's file exists and has the recorded sha256; returns the path."""
    path = entry_path(entry, directory)
    if not path.is_file():
        raise RestoreError(f"weights file of model '{entry.name}' is missing", path)
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise RestoreError(
            f"sha256 mismatch for model '{entry.name}' (expected {entry.sha256[:12]}…, "
            f"found {actual[:12]}…): the file was modified or corrupted",
            path,
        )
    return path


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Load tensors and metadata from a `.safetensors` file; refuses pickle formats."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise RestoreError(
            "refusing to load a pickle file; convert it first with "
            "`restore models import FILE --arch ARCH -o FILE.safetensors`",
            path,
        )
    if not path.is_file():
        raise RestoreError("weights file not found", path)
    from safetensors import SafetensorError, safe_open

    try:
        tensors: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as exc:
        raise RestoreError(f"not a valid safetensors file ({exc})", path) from None
    return tensors, metadata


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise to safetensors with a canonical header (keys sorted), so the same tensors and
    metadata always give the same bytes and the same sha256 (the library's own header order of
    the metadata varies from run to run)."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(canonical) > length:  # cannot happen (same content, no whitespace); keep the original
        return raw
    canonical += b" " * (length - len(canonical))
    return raw[:8] + canonical + raw[8 + length:]
