"""Build `Restorer`s for a command: which model, on which device, in which precision.

A batch can mix gray and colour images; each channel count gets its model once (cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from restore_cli.engine.device import select_device, select_precision
from restore_cli.engine.registry import ResolvedModel, default_model_name, find_entry, load_entry, load_weights_file
from restore_cli.engine.restore import Restorer, TileRequest


@dataclass
class ModelChoice:
    """What the user asked for: a model name, a weights file, or the default for the task."""

    task: str
    name: str | None = None
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    tiles: TileRequest = field(default_factory=TileRequest)


class RestorerCache:
    def __init__(self, choice: ModelChoice, log: Callable[[str], None] | None = None) -> None:
        self.choice = choice
        self.log = log or (lambda message: None)
        self.device = select_device(choice.device)
        select_precision(choice.precision, self.device)  # type: ignore[arg-type]  # validate early
        self._by_channels: dict[int, Restorer] = {}
        self._check()

    def _check(self) -> None:
        """Fail before the batch starts (usage error) when the requested model cannot exist."""
        choice = self.choice
        if choice.weights is not None:
            self._fixed: ResolvedModel | None = load_weights_file(choice.weights, choice.task)
        else:
            self._fixed = None
            if choice.name is not None:
                find_entry(choice.name)
            else:
                default_model_name(choice.task, 3)

    def _resolve(self, channels: int) -> ResolvedModel:
        choice = self.choice
        if self._fixed is not None:
            return self._fixed
        name = choice.name or default_model_name(choice.task, channels)
        return load_entry(find_entry(name))

    def for_channels(self, channels: int) -> Restorer:
        if channels not in self._by_channels:
            model = self._resolve(channels)
            loss = model_bf16_loss(model)
            placement = select_precision(self.choice.precision, self.device, loss)  # type: ignore[arg-type]
            self.log(f"model {model.name} ({model.arch}) on {placement.describe()}")
            self._by_channels[channels] = Restorer(model, placement, self.choice.tiles, self.log)
        return self._by_channels[channels]


def model_bf16_loss(model: ResolvedModel) -> float | None:
    """The measured PSNR loss of CPU bf16 against fp32 recorded for a shipped model, if any."""
    from restore_cli.engine.weights import load_manifest

    entry = load_manifest().get(model.name)
    if entry is None:
        return None
    value = entry.metrics.get("cpu_bf16_psnr_loss_db")
    return None if value is None else float(value)
