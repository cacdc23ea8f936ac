"""The weights store: manifest round trip, sha256 verification, refusal of tampered files and
of pickle formats, and the weights directory override."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from restore_cli.engine.registry import default_model_name, find_entry, load_entry
from restore_cli.engine.weights import (
    ModelEntry,
    add_manifest_entry,
    load_manifest,
    read_safetensors,
    sha256_file,
    verify_entry,
    weights_dir,
)
from restore_cli.errors import RestoreError
from restore_cli.models.architectures import build_model

CONFIG = {"channels": 1, "nc": (8, 16, 16, 16), "nb": 1}


def install_denoiser(directory: Path, name: str = "tiny-gray") -> ModelEntry:
    torch.manual_seed(0)
    model = build_model("resunet-denoiser", CONFIG)
    path = directory / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    entry = ModelEntry(name=name, file=path.name, sha256=sha256_file(path), arch="resunet-denoiser",
                       config={**CONFIG, "nc": list(CONFIG["nc"])}, task="denoise", scales=[1], channels=1)
    add_manifest_entry(entry, directory)
    return entry


def test_manifest_round_trip_and_verify(tmp_path: Path) -> None:
    entry = install_denoiser(tmp_path)
    entries = load_manifest(tmp_path)
    assert list(entries) == ["tiny-gray"]
    assert entries["tiny-gray"].sha256 == entry.sha256
    assert verify_entry(entries["tiny-gray"], tmp_path) == tmp_path / "tiny-gray.safetensors"
    model = load_entry(entries["tiny-gray"], tmp_path)
    assert model.channels == 1 and model.task == "denoise"


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    entry = install_denoiser(tmp_path)
    path = tmp_path / entry.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(RestoreError, match="sha256 mismatch"):
        verify_entry(entry, tmp_path)
    with pytest.raises(RestoreError, match="sha256 mismatch"):
        load_entry(entry, tmp_path)


def test_missing_file_and_bad_manifest(tmp_path: Path) -> None:
    entry = install_denoiser(tmp_path)
    (tmp_path / entry.file).unlink()
    with pytest.raises(RestoreError, match="missing"):
        verify_entry(entry, tmp_path)
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RestoreError, match="manifest"):
        load_manifest(tmp_path)


def test_absent_manifest_is_an_empty_store(tmp_path: Path) -> None:
    assert load_manifest(tmp_path) == {}
    with pytest.raises(RestoreError, match="no trained model"):
        default_model_name("denoise", 3, tmp_path)
    with pytest.raises(RestoreError, match="unknown model"):
        find_entry("nope", tmp_path)


def test_pickle_files_are_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(RestoreError, match="refusing to load a pickle"):
        read_safetensors(path)


def test_garbage_safetensors_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 20)
    with pytest.raises(RestoreError, match="not a valid safetensors"):
        read_safetensors(path)


def test_weights_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORE_WEIGHTS_DIR", str(tmp_path))
    assert weights_dir() == tmp_path
    install_denoiser(tmp_path, "env-model")
    assert default_model_name("denoise", 1) == "env-model"


def test_default_weights_dir_is_the_repository_or_package_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESTORE_WEIGHTS_DIR", raising=False)
    assert weights_dir().name in ("weights", "_weights")


def test_safetensors_bytes_are_deterministic_and_loadable(tmp_path: Path) -> None:
    from restore_cli.engine.weights import safetensors_bytes

    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4)}
    metadata = {f"key{i}": str(i) for i in range(12)}
    blobs = {safetensors_bytes(tensors, metadata) for _ in range(5)}
    assert len(blobs) == 1
    path = tmp_path / "x.safetensors"
    path.write_bytes(blobs.pop())
    loaded, meta = read_safetensors(path)
    assert meta == metadata and torch.equal(loaded["b"], tensors["b"]) and torch.equal(loaded["a"], tensors["a"])


def test_every_shipped_model_started_from_weights_names_their_sha256() -> None:
    """A shipped model fine-tuned from (or built on) another weights file keeps that file's sha256
    and name in `training.init`, so its lineage survives the file being re-exported later."""
    repo_weights = Path(__file__).resolve().parents[2] / "weights"
    entries = load_manifest(repo_weights)
    assert entries, "the repository ships no manifest"
    started_from_file = [e for e in entries.values() if e.training.get("init_weights")]
    assert started_from_file, "expected at least one shipped model started from a weights file (usrnet)"
    for entry in started_from_file:
        init = entry.training.get("init")
        assert isinstance(init, dict), f"{entry.name}: no training.init record"
        assert len(init.get("sha256", "")) == 64 and init.get("name"), f"{entry.name}: incomplete init record {init}"
