"""Export: NAME.safetensors plus a manifest entry that verifies and rebuilds the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from restore_cli.engine.weights import load_manifest, read_safetensors, sha256_file, verify_entry
from restore_cli.errors import RestoreError
from restore_cli.models.architectures import ARCHITECTURES, build_model
from restore_cli.train.export import export_checkpoint
from restore_cli.train.trainer import TrainConfig, run_training


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one intra-op thread, and stay fast when the machine is busy
    (two OpenMP threads on a loaded 2-core machine were measured 10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(data / f"{i}.png")
    runs = {}
    for task, arch_config, extra in (
        ("denoiser", {"nc": [8, 16, 16, 16], "nb": 1}, {"sfm_rate": 0.5}),
        ("usrnet", {"nc": [8, 16, 16, 16], "nb": 1, "n_iter": 2, "h_nc": 8}, {"scales": (2, 4)}),
    ):
        config = TrainConfig(task=task, data=(data,), output=root / task, channels=1, arch_config=arch_config,
                             patch=16, batch=2, steps=2, command_line=f"restore train {task} …", **extra)
        run_training(config)
        runs[task] = root / task
    return runs


@pytest.mark.parametrize("task", ["denoiser", "usrnet"])
def test_export_writes_verified_weights_and_manifest_entry(tmp_path: Path, trained_runs: dict[str, Path], task: str) -> None:
    result = export_checkpoint(trained_runs[task], f"my-{task}", tmp_path, metrics={"set12": {"psnr": 1.0}})
    assert result.weights == tmp_path / f"my-{task}.safetensors"
    entry = load_manifest(tmp_path)[f"my-{task}"]
    assert entry.sha256 == sha256_file(result.weights)
    assert verify_entry(entry, tmp_path) == result.weights
    assert entry.task == ("denoise" if task == "denoiser" else "sr")
    assert entry.scales == ([1] if task == "denoiser" else [2, 4])
    assert entry.channels == 1 and entry.tiling == "safe" and entry.metrics == {"set12": {"psnr": 1.0}}
    assert entry.training["steps"] == 2 and entry.training["batch"] == 2 and entry.training["patch"] == 16
    assert entry.training["command"] == f"restore train {task} …"
    assert (entry.training["sfm"] is not None) == (task == "denoiser")

    tensors, metadata = read_safetensors(result.weights)
    arch = "resunet-denoiser" if task == "denoiser" else "usrnet"
    assert metadata["arch"] == arch == entry.arch
    assert all(t.dtype == torch.float32 for t in tensors.values())
    # The weights rebuild from their shapes alone and equal the checkpoint's model.
    config = ARCHITECTURES[arch].infer_config(tensors)
    assert config == {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(metadata["config"]).items()}
    model = build_model(arch, config)
    model.load_state_dict(tensors, strict=True)
    with safe_open(str(trained_runs[task] / (trained_runs[task] / "latest").read_text().strip() / "model.safetensors"), "pt") as f:
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), tensors[key])


def test_export_refuses_to_replace_a_model_unless_asked(tmp_path: Path, trained_runs: dict[str, Path]) -> None:
    export_checkpoint(trained_runs["denoiser"], "dn", tmp_path)
    with pytest.raises(RestoreError, match="already exists"):
        export_checkpoint(trained_runs["denoiser"], "dn", tmp_path)
    export_checkpoint(trained_runs["denoiser"], "dn", tmp_path, overwrite=True)
    with pytest.raises(RestoreError, match="model name"):
        export_checkpoint(trained_runs["denoiser"], "../evil", tmp_path)


def test_eval_reports_are_summarised_for_the_manifest() -> None:
    from restore_cli.train.export import metrics_summary

    report = {"protocol": "denoise", "protocol_details": {"seed": 0}, "averages": [{"setting": "n15", "psnr": 30.0}],
              "records": [{"item": "a.png"}] * 3, "data": {"name": "CBSD68", "count": 68, "images": ["a.png"]}}
    summary = metrics_summary(report)
    assert "records" not in summary and summary["averages"] == report["averages"]
    assert summary["data"] == {"name": "CBSD68", "count": 68}
    assert metrics_summary({"psnr": 1.0}) == {"psnr": 1.0}
