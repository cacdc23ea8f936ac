"""What a training run tells its caller: `RunInfo` when it starts, a `TrainingObserver` for the
steps and log records, and `TrainResult` when it ends. Shared by every trainer and the CLI's
progress display."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from torch import Tensor

StopReason = Literal["completed", "interrupted", "time_limit"]


@dataclass(frozen=True)
class RunInfo:
    """What a run is about to do, for the progress display."""

    task: str
    arch: str
    model_config: dict[str, Any]
    parameters: int
    images: int
    skipped_images: int
    val_images: int
    start_step: int
    total_steps: int
    device: str
    precision: str
    world_size: int
    output: Path


@dataclass
class TrainResult:
    """How a run ended: the last step, why it stopped, its last checkpoint, and this process's
    final model tensors (CPU) and per-step losses (of this run, not of resumed history)."""

    step: int
    reason: StopReason
    checkpoint: Path | None
    model_state: dict[str, Tensor]
    losses: list[float]
    val_psnr: float | None
    rank: int = 0


class TrainingObserver(Protocol):
    """Receives progress on the main process only (rank 0)."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, step: int, loss: float) -> None: ...

    def on_record(self, record: dict[str, Any]) -> None: ...

    def on_finish(self, result: TrainResult) -> None: ...


class SilentObserver:
    def on_start(self, info: RunInfo) -> None:
        pass

    def on_step(self, step: int, loss: float) -> None:
        pass

    def on_record(self, record: dict[str, Any]) -> None:
        pass

    def on_finish(self, result: TrainResult) -> None:
        pass
