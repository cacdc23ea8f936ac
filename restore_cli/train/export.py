"""Export a training checkpoint into the weights store: NAME.safetensors plus its manifest entry.

The weights file holds the model tensors only (fp32, contiguous) with safetensors metadata
`arch` and `config` (JSON), so that `--weights FILE` works without the manifest; the manifest
entry records the architecture, task, scales, channels, sha256 and how the model was trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from restore_cli.errors import RestoreError
from restore_cli.train.checkpoint import read_checkpoint_state, read_model_tensors, resolve_checkpoint
from restore_cli.train.model_export import ExportResult, check_model_name, fitted_model, write_model
from restore_cli.train.trainer import MANIFEST_TASK, TrainConfig


def training_record(config: TrainConfig, state: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The manifest's `training` table: data, recipe, optimisation, SFM and the command line."""
    return {
        "data": [str(p) for p in config.data],
        "val": None if config.val is None else str(config.val),
        "steps": int(state["step"]),
        "planned_steps": config.steps,
        "seed": config.seed,
        "batch": config.batch,
        "patch": config.patch,
        "processes": int(state.get("world_size", 1)),
        "lr": config.lr,
        "milestones": list(config.resolved_milestones()),
        "lr_gamma": config.lr_gamma,
        "loss": config.loss,
        "optimizer": "adam(0.9, 0.999)",
        "noise_range": list(config.noise_range),  # type: ignore[arg-type]
        "scales": list(config.scales) if config.task == "usrnet" else [1],
        "precision": state.get("precision"),
        "sfm": None if config.sfm_rate <= 0 else {
            "rate": config.sfm_rate, "mode": config.sfm_mode, "center": config.sfm_center, "spread": config.sfm_spread,
        },
        "init_weights": None if config.init_weights is None else str(config.init_weights),
        "init": state.get("init"),  # that file's sha256 and training record, read when the run started
        "freeze_prior": config.freeze_prior,
        "init_hyper": config.init_hyper,
        "data_fingerprint": state.get("data_fingerprint"),
        "images": state.get("images"),
        "last_val": state.get("last_val"),
        "elapsed_s": state.get("elapsed_s"),
        "checkpoint": str(checkpoint),
        "command": config.command_line,
    }


def read_metrics_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RestoreError("metrics file not found", path) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RestoreError(f"cannot read the metrics file as JSON ({exc})", path) from None
    if not isinstance(data, dict):
        raise RestoreError("metrics file must hold a JSON object", path)
    return metrics_summary(data)


# What a manifest keeps of a `restore eval` report: the protocol and the averages, not the
# per-image records (those stay in the report file).
REPORT_SUMMARY_KEYS = ("protocol", "protocol_details", "methods", "averages", "software", "run")


def metrics_summary(report: dict[str, Any]) -> dict[str, Any]:
    """A `restore eval --json` report reduced to what a manifest entry needs; other JSON as is."""
    if "averages" not in report or "protocol" not in report:
        return report
    summary = {key: report[key] for key in REPORT_SUMMARY_KEYS if key in report}
    data = report.get("data")
    if isinstance(data, dict):
        summary["data"] = {k: v for k, v in data.items() if k != "images"}
    return summary


def export_checkpoint(
    checkpoint: Path,
    name: str,
    directory: Path | None = None,
    metrics: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write DIR/NAME.safetensors and add NAME to DIR/manifest.json (DIR: the weights store).

    `checkpoint` is a checkpoint folder or a run folder (its `latest`). Refuses to replace an
    existing model of that name unless `overwrite`.
    """
    check_model_name(name)
    path = resolve_checkpoint(checkpoint)
    state = read_checkpoint_state(path)
    # Model families with their own checkpoint layout have their own exporter.
    if state.get("family") == "sftgan":
        from restore_cli.train.sftgan_export import export_sftgan_checkpoint

        return export_sftgan_checkpoint(checkpoint, name, directory, metrics, overwrite)
    if state.get("family") == "toolchain":
        from restore_cli.train.toolchain_export import export_toolchain_checkpoint

        return export_toolchain_checkpoint(checkpoint, name, directory, metrics, overwrite)
    config = TrainConfig.from_json(state["config"])
    arch, model_config = state["arch"], state["model_config"]
    tensors = {k: v.to(torch.float32).contiguous() for k, v in read_model_tensors(path).items()}
    fitted_model(arch, model_config, tensors, path)
    return write_model(
        name, directory, tensors, arch=arch, model_config=model_config, task=MANIFEST_TASK[config.task],
        scales=list(config.scales) if config.task == "usrnet" else [1], channels=config.channels,
        training=training_record(config, state, path), metrics=metrics, overwrite=overwrite,
    )
